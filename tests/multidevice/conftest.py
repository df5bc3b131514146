"""A test session on 8 simulated CPU devices, started by ``tests/test_multidevice.py``.

Run on its own with ``GRADTX_MULTIDEVICE=1 XLA_FLAGS=--xla_force_host_platform_device_count=8
python -m pytest tests/multidevice``; the main session leaves this folder out (the device count
is fixed when JAX starts, and the main session runs on one device).
"""

import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: _digits, registry

assert jax.device_count() == 8, (
    f"tests/multidevice needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8), "
    f"got {jax.device_count()}"
)
