"""Flax NNX with array hyperparameters: the documented one-line form keeps sweeps possible.

``nnx.Optimizer`` keeps its transform as a static attribute, where NNX refuses arrays, so a
gradtx optimizer built from Python numbers works as it is (tests/test_migration.py runs the
NNX, Linen and Equinox tutorials), and array hyperparameters go in the optimizer *state* with
``inject_hyperparams``: NNX then treats them as data, so changing one compiles nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import gradtx


def _train(library, learning_rates):
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    tx = library.inject_hyperparams(library.adamw)(learning_rate=learning_rates[0])
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
    traces = []

    @nnx.jit
    def step(model, optimizer):
        traces.append(1)
        grads = nnx.grad(lambda m: jnp.sum(jnp.sin(m(x)) ** 2))(model)
        optimizer.update(model, grads)

    kernels = [np.asarray(model.kernel[...])]
    for lr in learning_rates:
        optimizer.opt_state.hyperparams["learning_rate"][...] = lr
        step(model, optimizer)
        kernels.append(np.asarray(model.kernel[...]))
    return np.stack(kernels), len(traces)


def test_nnx_optimizer_with_injected_array_hyperparameters_matches_optax_and_compiles_once():
    rates = [1e-3, 1e-2, 3e-2, 1e-1]
    ours, traces = _train(gradtx, rates)
    theirs, _ = _train(optax, rates)
    assert traces == 1
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    # each edited learning rate reached its update: Adam's largest step is about the rate
    steps = np.abs(np.diff(ours, axis=0)).max((1, 2))
    np.testing.assert_allclose(steps, rates, rtol=0.05)


def test_nnx_refuses_array_hyperparameters_in_the_transform_itself():
    # Flax's own rule (arrays are data, never static); the README gives the one-line form above.
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="static attribute 'tx'"):
        nnx.Optimizer(model, gradtx.adamw(jnp.asarray(1e-3)), wrt=nnx.Param)
    nnx.Optimizer(model, gradtx.adamw(1e-3), wrt=nnx.Param)  # numbers: accepted


def test_a_gradtx_optimizer_is_hashable_so_it_can_be_static():
    # Flax Linen's TrainState and NNX keep the transform in the static part of a pytree, which
    # jit hashes: equal optimizers hash equal, different ones differ.
    a, b, c = gradtx.adamw(1e-3), gradtx.adamw(1e-3), gradtx.adamw(2e-3)
    assert hash(a) == hash(b) and a == b
    assert a != c
    traces = []

    def step(tx, g):
        traces.append(1)
        return tx.update(g, tx.init(g), g)[0]

    jitted = jax.jit(step, static_argnums=0)
    g = jnp.ones(2)
    jitted(a, g), jitted(b, g)
    np.testing.assert_allclose(np.asarray(jitted(c, g)), -2e-3 * (1 + 1e-4), rtol=1e-4)
    assert len(traces) == 2  # a and b share one compilation
