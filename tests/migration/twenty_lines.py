"""A typical 20-line optax training script: an MLP on scikit-learn's digits with adamw, a
warmup-cosine schedule, gradient clipping and optax's cross-entropy."""

import jax
import jax.numpy as jnp
import optax
from sklearn.datasets import load_digits

x, y = load_digits(return_X_y=True)
x, y = jnp.asarray(x / 16.0, jnp.float32)[:512], jnp.asarray(y)[:512]
k1, k2 = jax.random.split(jax.random.PRNGKey(0))
params = {
    "w1": 0.1 * jax.random.normal(k1, (64, 32)),
    "b1": jnp.zeros(32),
    "w2": 0.1 * jax.random.normal(k2, (32, 10)),
    "b2": jnp.zeros(10),
}


def loss_fn(p, x, y):
    logits = jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 10, 60, end_value=1e-4)
tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4))
state = tx.init(params)


@jax.jit
def train_step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss


losses = []
for i in range(60):
    xb, yb = x[(i % 4) * 128 : (i % 4 + 1) * 128], y[(i % 4) * 128 : (i % 4 + 1) * 128]
    params, state, loss = train_step(params, state, xb, yb)
    losses.append(loss)

RESULT = {"losses": jnp.stack(losses), "params": params}
