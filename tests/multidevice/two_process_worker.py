"""One of two processes training the digits MLP data-parallel over ``jax.distributed``.

``python two_process_worker.py PROCESS_ID PORT OUT.npz``: joins the coordinator on
``localhost:PORT`` (process 0 runs it), takes its half of every batch, trains with AdamW and
writes the final parameters (its own copy) to ``OUT.npz``. ``train`` is also the single-process
reference that ``tests/test_multidevice.py`` compares against.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: _digits

from _digits import digits, init_mlp, loss  # noqa: E402

import gradtx  # noqa: E402

STEPS, BATCH, SIZES = 5, 64, (64, 32, 10)


def batches():
    x, y, _, _ = digits()
    return x[: STEPS * BATCH].reshape(STEPS, BATCH, -1), y[: STEPS * BATCH].reshape(STEPS, BATCH)


def _step(opt, params, state, x, y):
    g = jax.grad(loss)(params, x, y)
    u, state = opt.update(g, state, params)
    return gradtx.apply_updates(params, u), state


def train(put_params, put_batch):
    """Train from the same start; ``put_params``/``put_batch`` place host arrays on devices."""
    opt = gradtx.adamw(1e-2, weight_decay=1e-3)
    params = put_params(jax.device_get(init_mlp(jax.random.PRNGKey(0), SIZES)))
    state = jax.jit(opt.init)(params)
    step = jax.jit(functools.partial(_step, opt))
    xs, ys = batches()
    for t in range(STEPS):
        params, state = step(params, state, put_batch(xs[t]), put_batch(ys[t].astype(np.int32)))
    return params


def main(process_id: int, port: int, out: str) -> None:
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}",
        num_processes=2,
        process_id=process_id,
        initialization_timeout=60,
    )
    assert jax.process_count() == 2 and jax.device_count() == 2
    mesh = Mesh(np.array(jax.devices()), ("data",))
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

    def put_params(tree):
        return jax.tree_util.tree_map(
            lambda a: jax.make_array_from_callback(a.shape, replicated, lambda i: a[i]), tree
        )

    def put_batch(a):  # this process's half of the global batch
        half = len(a) // 2
        local = a[process_id * half : (process_id + 1) * half]
        return jax.make_array_from_process_local_data(split, local, a.shape)

    params = train(put_params, put_batch)
    leaves = [np.asarray(x.addressable_data(0)) for x in jax.tree_util.tree_leaves(params)]
    np.savez(out, *leaves)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
