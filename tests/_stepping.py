"""Run an optimizer (gradtx, optax, or a float64 NumPy reference) on ``random_problem``.

Shared by the layer-wise/sign and step-size-free tests: each library is stepped with the same
NumPy gradient oracle evaluated at its own iterate, so trajectories can be compared leaf by leaf.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradtx


def flat(tree) -> list[np.ndarray]:
    """Leaves as float64 NumPy arrays (shapes kept)."""
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]


def moved(a, b) -> float:
    """The largest absolute difference between two trees' leaves, in float64."""
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def zeros_like_all(xs) -> list[np.ndarray]:
    """NumPy zeros shaped like each array of ``xs`` (a reference's initial moments)."""
    return [np.zeros_like(x) for x in xs]


def run_library(
    opt, params0, grad, steps: int, dtype, *, lib: str = "gradtx", value_fn=None, apply=None
):
    """``steps`` jitted steps of ``opt`` (a gradtx or optax transform); returns the params.

    ``value_fn(params, grads) -> float`` supplies ``value=`` (for Polyak's step size).
    """
    if apply is None:
        apply = gradtx.apply_updates if lib == "gradtx" else optax.apply_updates
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params0)
    state = opt.init(params)

    @jax.jit
    def step(params, state, g, value):
        kw = {} if value is None else {"value": value}
        u, state = opt.update(g, state, params, **kw)
        return apply(params, u), state

    for t in range(steps):
        pn = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params)
        gn = grad(pn, t)
        g = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), gn)
        value = None if value_fn is None else jnp.asarray(value_fn(pn, gn), dtype)
        params, state = step(params, state, g, value)
    return params


def run_numpy(init_fn, step_fn, params0, grad, steps: int, *, value_fn=None):
    """A float64 NumPy reference on the list of leaves.

    ``init_fn(xs) -> state``; ``step_fn(xs, gs, state, t, value) -> (xs, state)`` with ``t``
    starting at 0 and ``xs``, ``gs`` lists of float64 arrays in leaf order.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params0)
    xs = [np.array(x, np.float64) for x in leaves]
    state = init_fn(xs)
    for t in range(steps):
        p = jax.tree_util.tree_unflatten(treedef, xs)
        gtree = grad(p, t)
        gs = [np.asarray(g, np.float64) for g in treedef.flatten_up_to(gtree)]
        value = None if value_fn is None else float(value_fn(p, gtree))
        xs, state = step_fn(xs, gs, state, t, value)
    return jax.tree_util.tree_unflatten(treedef, xs)


def assert_trees_close(a, b, rtol: float, atol: float = 0.0) -> None:
    fa, fb = flat(a), flat(b)
    assert len(fa) == len(fb)
    for x, y in zip(fa, fb, strict=True):
        assert np.all(np.isfinite(x)) and np.all(np.isfinite(y)), "the run diverged"
        np.testing.assert_allclose(np.reshape(x, np.shape(y)), y, rtol=rtol, atol=atol)


def loss_value(params, grads) -> float:
    """A positive stand-in for ``f(θ)`` (any deterministic function of the iterate works for
    comparing step-size rules): ``0.5 Σ‖g‖² + 0.1``."""
    return 0.5 * sum(float(np.sum(np.square(g))) for g in jax.tree_util.tree_leaves(grads)) + 0.1
