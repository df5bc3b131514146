"""The digits MLP the optimizer tests train: scikit-learn's bundled digits (no download),
standardised, a 75/25 stratified split, and a ReLU MLP with cross-entropy loss."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import gradtx


def digits():
    """``(x_train, y_train, x_test, y_test)``, inputs standardised on the training split."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-3
    return (x_tr - mean) / std, y_tr, (x_te - mean) / std, y_te


def init_mlp(key, sizes=(64, 64, 10)):
    """Glorot-normal weights and zero biases: a list of ``{"w", "b"}`` layers."""
    glorot = jax.nn.initializers.glorot_normal()
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": glorot(k, (a, b), jnp.float32), "b": jnp.zeros(b, jnp.float32)}
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def logits(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def loss(params, x, y):
    logp = jax.nn.log_softmax(logits(params, x))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def accuracy(params, x, y) -> float:
    return float(jnp.mean(jnp.argmax(logits(params, x), -1) == y))


def demo_accuracy(
    opt, *, epochs=40, batch=64, seed=0, pass_value=False, pass_objective=False, eval_params=None
):
    """Train ``make demo``'s own MLP (examples/digits_mlp.py: its data, model and loss) with
    ``opt`` for ``epochs`` of shuffled mini-batches in one jitted ``lax.scan``; return its test
    accuracy. ``pass_value`` gives ``update`` the batch loss as ``value=`` (MoMo, Polyak),
    ``pass_objective`` the batch loss function as ``obj_fn=`` (Sophia);
    ``eval_params(state, params)`` picks the parameters to evaluate (Schedule-Free)."""
    path = Path(__file__).parents[1] / "examples" / "digits_mlp.py"
    spec = importlib.util.spec_from_file_location("digits_mlp", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    x_train, y_train, x_test, y_test = demo.load_data(seed)
    params = demo.init_mlp(jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)
    n = len(x_train) // batch
    order = np.concatenate([rng.permutation(len(x_train))[: n * batch] for _ in range(epochs)])
    xb = jnp.asarray(x_train[order].reshape(epochs * n, batch, -1))
    yb = jnp.asarray(y_train[order].reshape(epochs * n, batch))

    @jax.jit
    def train(params):
        def step(carry, b):
            p, s = carry
            obj = lambda q: demo.loss_fn(q, *b)  # noqa: E731
            value, g = jax.value_and_grad(obj)(p)
            extra = {"value": value} if pass_value else {}
            if pass_objective:
                extra["obj_fn"] = obj
            u, s = opt.update(g, s, p, **extra)
            return (gradtx.apply_updates(p, u), s), None

        (p, s), _ = jax.lax.scan(step, (params, opt.init(params)), (xb, yb))
        return eval_params(s, p) if eval_params is not None else p

    return float(demo.accuracy(train(params), x_test, y_test))
