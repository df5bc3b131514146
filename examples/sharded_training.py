"""The digits MLP trained on 8 devices: data parallel, FSDP and ZeRO-1, and Muon on whole matrices.

The devices are simulated on the CPU (``--xla_force_host_platform_device_count=8``), so this
runs anywhere; on a machine with 8 accelerators, drop that flag and it runs on them unchanged.
gradtx adds no communication: the step is one ``jax.jit``, the parameters, batches and
optimizer state carry ``NamedSharding``s, and XLA inserts the collectives.

* **Data parallel**: parameters and state replicated, each device takes 1/8 of every batch.
* **FSDP**: parameters split along their first axis over the devices; the state follows them
  (``gradtx.state_sharding``), so each device holds 1/8 of both.
* **ZeRO-1**: parameters replicated, the optimizer state split over the devices
  (``zero_axis="data"``): 1/8 of the moments per device, one gather of the updated parameters.
* **Muon, whole matrices**: with FSDP, Muon's Newton–Schulz iteration on a split matrix needs
  collectives in every iteration; ``muon(..., mesh=, mesh_axis=)`` gives each device whole
  matrices instead. The script prints the collectives of both compiled updates.

It prints, for each layout, the final training loss, the test accuracy and the optimizer-state
bytes held by one device. Run it after ``make test``::

    .venv/bin/python examples/sharded_training.py             # 10 epochs, under a minute
    GRADTX_SMALL=1 .venv/bin/python examples/sharded_training.py   # 1 epoch, a smoke run
"""

from __future__ import annotations

import os

# 8 simulated devices; the second flag keeps their collectives in one order (XLA's CPU scheduler
# may otherwise start independent collectives in different orders on different simulated
# devices, and they wait for each other for ever). Accelerators need neither flag.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_force_host_platform_device_count=8 "
    "--xla_cpu_enable_concurrency_optimized_scheduler=false",
)

import functools  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NamedTuple  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import digits_mlp  # noqa: E402  (the demo's data, model and loss)

import gradtx  # noqa: E402

SIZES = (64, 256, 10)
BATCH = 128  # 16 examples per device


class Result(NamedTuple):
    loss: float
    accuracy: float
    state_bytes_per_device: int
    state_bytes_total: int
    params: list


def _fsdp_spec(x) -> P:
    """Split the first axis over the devices when it divides evenly, else replicate."""
    return P("data") if x.shape[0] % jax.device_count() == 0 else P()


def _step(opt, params, state, x, y):
    loss, grads = jax.value_and_grad(digits_mlp.loss_fn)(params, x, y)
    updates, state = opt.update(grads, state, params)
    return gradtx.apply_updates(params, updates), state, loss


def train(opt, mesh: Mesh, layout: str, epochs: int, seed: int = 0) -> Result:
    """Train ``opt`` with the parameters and state laid out as ``layout`` says."""
    x_train, y_train, x_test, y_test = digits_mlp.load_data(seed)
    params = digits_mlp.init_mlp(jax.random.PRNGKey(seed), SIZES)
    if layout == "fsdp":
        p_sh = jax.tree_util.tree_map(lambda x: NamedSharding(mesh, _fsdp_spec(x)), params)
    else:
        p_sh = jax.tree_util.tree_map(lambda _: NamedSharding(mesh, P()), params)
    params = jax.device_put(params, p_sh)
    s_sh = gradtx.state_sharding(opt, params, zero_axis="data" if layout == "zero1" else None)
    state = jax.jit(opt.init, out_shardings=s_sh)(params)
    step = jax.jit(functools.partial(_step, opt), out_shardings=(p_sh, s_sh, None))
    batch = NamedSharding(mesh, P("data"))  # every layout splits the batch over the devices
    rng = np.random.default_rng(seed)
    n = len(x_train) // BATCH
    for _ in range(epochs):
        order = rng.permutation(len(x_train))[: n * BATCH].reshape(n, BATCH)
        losses = []
        for idx in order:
            x, y = jax.device_put((x_train[idx], y_train[idx]), batch)
            # one step in flight at a time: simulated CPU devices share a few threads, and two
            # programs each waiting for all 8 devices at a collective can starve each other
            params, state, loss = jax.block_until_ready(step(params, state, x, y))
            losses.append(loss)
    leaves = jax.tree_util.tree_leaves(state)
    first = jax.devices()[0]
    per_device = sum(
        s.data.nbytes for x in leaves for s in x.addressable_shards if s.device == first
    )
    return Result(
        loss=float(np.mean(jax.device_get(losses))),
        accuracy=float(digits_mlp.accuracy(jax.device_get(params), x_test, y_test)),
        state_bytes_per_device=per_device,
        state_bytes_total=sum(x.nbytes for x in leaves),
        params=jax.device_get(params),
    )


def collectives(opt, mesh: Mesh) -> dict[str, int]:
    """The collectives in the compiled update of ``opt`` for FSDP-split 256 x 256 matrices."""
    rng = np.random.default_rng(0)
    params = {f"w{i}": rng.standard_normal((256, 256), np.float32) for i in range(8)}
    params = jax.device_put(params, NamedSharding(mesh, P("data")))
    state = jax.jit(opt.init)(params)
    text = jax.jit(opt.update).lower(params, state, params).compile().as_text()
    kinds = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
    return {k: len(re.findall(rf"\b{k}(?:-start)?\(", text)) for k in kinds}


def main(epochs: int) -> dict[str, Result]:
    mesh = Mesh(np.array(jax.devices()), ("data",))
    adamw = gradtx.adamw(3e-3, weight_decay=1e-4)
    runs = {
        "data parallel": train(adamw, mesh, "dp", epochs),
        "FSDP": train(adamw, mesh, "fsdp", epochs),
        "ZeRO-1": train(adamw, mesh, "zero1", epochs),
        "Muon, FSDP": train(gradtx.muon(0.02), mesh, "fsdp", epochs),
        "Muon, FSDP, whole matrices": train(
            gradtx.muon(0.02, mesh=mesh, mesh_axis="data"), mesh, "fsdp", epochs
        ),
    }
    print(f"{jax.device_count()} devices, AdamW unless named, {epochs} epochs")
    print(f"{'layout':28s} {'loss':>7s} {'test acc':>8s} {'state bytes/device':>19s} {'total':>8s}")
    for name, r in runs.items():
        print(
            f"{name:28s} {r.loss:7.4f} {r.accuracy:8.3f} "
            f"{r.state_bytes_per_device:19,d} {r.state_bytes_total:8,d}"
        )
    naive = collectives(gradtx.scale_by_muon(), mesh)
    whole = collectives(gradtx.scale_by_muon(mesh=mesh, mesh_axis="data"), mesh)
    print("Muon update on 8 FSDP-split 256x256 matrices, collectives in the compiled program:")
    print(f"  split matrices: {naive}\n  whole matrices: {whole}")
    return runs


if __name__ == "__main__":
    main(epochs=1 if os.environ.get("GRADTX_SMALL") else 10)
