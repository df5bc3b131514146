"""Train a small MLP on scikit-learn's bundled 8x8 digits with ``gradtx.adamw``.

Plain JAX: the model is a list of (W, b) pairs with Glorot-normal weights from
``jax.nn.initializers``; one epoch is a jitted ``lax.scan`` over shuffled mini-batches. The
optimizer is passed to the jitted epoch as an argument, so changing its learning rate or
weight decay would not recompile. Run with ``make demo``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import trange

import gradtx


def load_data(seed: int = 0):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)  # pixel values are 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


def init_mlp(key, sizes=(64, 128, 10)):
    glorot = jax.nn.initializers.glorot_normal()
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (glorot(k, (n_in, n_out), jnp.float32), jnp.zeros(n_out, jnp.float32))
        for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def predict(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def loss_fn(params, x, y):
    logits = predict(params, x)
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * jax.nn.one_hot(y, 10), axis=-1))


@jax.jit
def train_epoch(opt, params, state, xb, yb):
    """One pass over the mini-batches ``xb: (n_batches, batch, 64)`` with ``opt``."""

    def step(carry, batch):
        params, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
        updates, state = opt.update(grads, state, params)
        return (gradtx.apply_updates(params, updates), state), loss

    (params, state), losses = jax.lax.scan(step, (params, state), (xb, yb))
    return params, state, losses.mean()


@jax.jit
def accuracy(params, x, y):
    return jnp.mean(jnp.argmax(predict(params, x), axis=-1) == y)


def train(epochs: int = 40, batch_size: int = 64, seed: int = 0, progress: bool = True) -> float:
    """Train and return the test accuracy."""
    x_train, y_train, x_test, y_test = load_data(seed)
    params = init_mlp(jax.random.PRNGKey(seed))
    opt = gradtx.adamw(learning_rate=2e-3, weight_decay=1e-4)
    state = opt.init(params)
    rng = np.random.default_rng(seed)
    n_batches = len(x_train) // batch_size
    bar = trange(epochs, desc="digits MLP", disable=not progress)
    for _ in bar:
        perm = rng.permutation(len(x_train))[: n_batches * batch_size]
        xb = x_train[perm].reshape(n_batches, batch_size, -1)
        yb = y_train[perm].reshape(n_batches, batch_size)
        params, state, loss = train_epoch(opt, params, state, xb, yb)
        bar.set_postfix(loss=f"{float(loss):.4f}")
    return float(accuracy(params, x_test, y_test))


if __name__ == "__main__":
    start = time.perf_counter()
    acc = train()
    print(f"test accuracy: {acc:.2%} ({time.perf_counter() - start:.1f} s)")
