"""Every classic optimizer matches optax's same-named optimizer (same arguments), 200 steps, f32.

optax is an oracle here, never a source: both libraries are stepped on the same random pytree
problem and their parameter trajectories compared to rtol 1e-5.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import F32_ORACLE_ATOL, random_problem

import gradtx

STEPS = 200

# (name, kwargs): gradtx.<name>(**kwargs) vs optax.<name>(**kwargs)
CONFIGS = [
    ("sgd", dict(learning_rate=0.01)),
    ("sgd", dict(learning_rate=0.01, momentum=0.9)),
    ("sgd", dict(learning_rate=0.01, momentum=0.9, nesterov=True)),
    ("adagrad", dict(learning_rate=0.1)),
    ("adagrad", dict(learning_rate=0.1, initial_accumulator_value=0.5, eps=1e-6)),
    ("rmsprop", dict(learning_rate=0.01)),
    ("rmsprop", dict(learning_rate=0.01, eps_in_sqrt=False, bias_correction=True)),
    ("rmsprop", dict(learning_rate=0.01, centered=True, eps=1e-6)),
    ("rmsprop", dict(learning_rate=0.01, momentum=0.9, nesterov=True, initial_scale=0.1)),
    ("adadelta", dict(learning_rate=0.5)),
    ("adadelta", dict(learning_rate=0.5, rho=0.95, eps=1e-5, weight_decay=0.01)),
    ("adam", dict(learning_rate=1e-3)),
    ("adam", dict(learning_rate=1e-2, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8)),
    ("adam", dict(learning_rate=1e-2, nesterov=True)),
    ("adamw", dict(learning_rate=1e-2)),
    (
        "adamw",
        dict(
            learning_rate=1e-2,
            weight_decay=0.1,
            mask={"dense": {"w": True, "b": False}, "scale": True},
        ),
    ),
    ("nadam", dict(learning_rate=1e-2)),
    ("nadamw", dict(learning_rate=1e-2, weight_decay=0.05)),
    ("adamax", dict(learning_rate=1e-2)),
    ("adamaxw", dict(learning_rate=1e-2, weight_decay=0.05)),
    ("amsgrad", dict(learning_rate=1e-2)),
    ("amsgrad", dict(learning_rate=1e-2, bias_correction_mu=False, bias_correction_nu=False)),
]


def trajectory(opt, params, grad, steps=STEPS):
    p = jax.tree_util.tree_map(jnp.asarray, params)
    state = opt.init(p)
    step = jax.jit(lambda u, s, p: opt.update(u, s, p))
    out = []
    for t in range(steps):
        g = jax.tree_util.tree_map(
            lambda x: jnp.asarray(x, jnp.float32), grad(jax.tree_util.tree_map(np.asarray, p), t)
        )
        u, state = step(g, state, p)
        p = jax.tree_util.tree_map(lambda a, b: (a + b).astype(a.dtype), p, u)
        out.append(np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(p)]))
    return np.stack(out)


@pytest.mark.parametrize(
    "name,kwargs", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)]
)
def test_matches_optax(name, kwargs):
    params, grad = random_problem(seed=3, dtype=np.float32)
    ours = trajectory(getattr(gradtx, name)(**kwargs), params, grad)
    theirs = trajectory(getattr(optax, name)(**kwargs), params, grad)
    assert np.all(np.isfinite(theirs))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=F32_ORACLE_ATOL)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("trace", dict(decay=0.9)),
        ("trace", dict(decay=0.5, nesterov=True)),
        ("ema", dict(decay=0.9)),
        ("ema", dict(decay=0.9, debias=False)),
        ("scale_by_adam", dict()),
        ("scale_by_amsgrad", dict()),
        ("scale_by_adamax", dict()),
        ("scale_by_rms", dict(bias_correction=True)),
        ("scale_by_stddev", dict(eps_in_sqrt=False)),
        ("scale_by_rss", dict()),
        ("scale_by_adadelta", dict()),
        ("clip", dict(max_delta=0.3)),
        ("clip_by_global_norm", dict(max_norm=0.5)),
        ("clip_by_block_rms", dict(threshold=0.4)),
        ("scale", dict(step_size=-0.5)),
        ("scale_by_schedule", dict(step_size_fn=lambda t: 1.0 / (1.0 + t))),
        ("scale_by_learning_rate", dict(learning_rate=lambda t: 0.1 / (1.0 + t))),
        ("add_decayed_weights", dict(weight_decay=0.3)),
    ],
)
def test_building_block_matches_optax(name, kwargs):
    params, grad = random_problem(seed=4, dtype=np.float32)
    lr = gradtx.scale(-1e-2)
    ours = trajectory(gradtx.chain(getattr(gradtx, name)(**kwargs), lr), params, grad, steps=50)
    theirs = trajectory(
        optax.chain(getattr(optax, name)(**kwargs), optax.scale(-1e-2)), params, grad, steps=50
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=F32_ORACLE_ATOL)
