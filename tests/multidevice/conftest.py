"""A test session on 8 simulated CPU devices, started by ``tests/test_multidevice.py``.

Run on its own with ``GRADTX_MULTIDEVICE=1 XLA_FLAGS=--xla_force_host_platform_device_count=8
python -m pytest tests/multidevice``; the main session leaves this folder out (the device count
is fixed when JAX starts, and the main session runs on one device).

The training loops wait for each step (``jax.block_until_ready``) before dispatching the next:
the simulated devices run on the host's thread pool, and two programs in flight, each with
threads waiting at a collective for all 8 devices, can starve each other until XLA aborts
("Expected 8 threads to join the rendezvous"). One program at a time never does.

Within one program the same can happen between independent collectives: XLA's CPU scheduler
that optimises for concurrency may start them in different orders on different simulated
devices (16 whole factors of SOAP, split 8 ways, hung every time). The session runs with
``--xla_cpu_enable_concurrency_optimized_scheduler=false``, which keeps them in one order.
Accelerators order their collectives and need neither.
"""

import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: _digits, registry

assert jax.device_count() == 8, (
    f"tests/multidevice needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8), "
    f"got {jax.device_count()}"
)
