"""Saving and restoring an optimizer state with orbax, then training on from the restored one."""

import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp

xs = jax.random.normal(jax.random.PRNGKey(0), (32, 3))
ys = xs @ jnp.array([1.0, 2.0, 3.0])


def loss(params):
    return jnp.mean((xs @ params["w"] - ys) ** 2)


opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(0.05))
params = {"w": jnp.zeros(3)}
state = opt.init(params)


@jax.jit
def step(params, state):
    grads = jax.grad(loss)(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state


for _ in range(10):
    params, state = step(params, state)

with tempfile.TemporaryDirectory() as tmp:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(Path(tmp) / "ckpt", {"params": params, "opt_state": state})
    checkpointer.wait_until_finished()
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": state})
    restored = checkpointer.restore(Path(tmp) / "ckpt", target)

params, state = restored["params"], restored["opt_state"]
for _ in range(10):
    params, state = step(params, state)

RESULT = {"w": params["w"], "count": optax.tree_utils.tree_get(state, "count")}
