"""optax's "Getting started": fit a linear model with a chained optimizer and a hand-written loop.

Runs unchanged with ``import gradtx as optax`` (tests/test_migration.py runs it both ways).
"""

import jax
import jax.numpy as jnp
import optax

key = jax.random.PRNGKey(0)
xs = jax.random.normal(key, (64, 5))
true_w = jnp.arange(1.0, 6.0)
ys = xs @ true_w + 0.1 * jax.random.normal(jax.random.PRNGKey(1), (64,))


def loss(params, x, y):
    pred = x @ params["w"] + params["b"]
    return optax.l2_loss(pred, y).mean()


params = {"w": jnp.zeros(5), "b": jnp.zeros(())}
optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(learning_rate=0.1))
opt_state = optimizer.init(params)


@jax.jit
def step(params, opt_state):
    value, grads = jax.value_and_grad(loss)(params, xs, ys)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value


losses = []
for _ in range(100):
    params, opt_state, value = step(params, opt_state)
    losses.append(value)

RESULT = {"losses": jnp.stack(losses), "w": params["w"], "b": params["b"]}
