"""MADGRAD, MoMo and MoMo-Adam against their papers and optax.contrib.

- a float64 NumPy reference written from Algorithm 1 of Defazio & Jelassi (arXiv 2101.11075),
  cited line by line and never calling gradtx, matches gradtx for 100 steps at rtol 1e-8 under
  x64 (constant and scheduled step sizes, weight decay, an ``eps`` large enough to matter);
- float32 runs match optax.contrib for 100 steps (tolerances of tests/conftest.py) with
  ``learning_rate + eps``, the argument that reproduces optax's ``λ_k = (γ + ε)√(k+1)``, and
  differ from it without;
- state names and dtypes, low-precision params, ``jax.eval_shape`` init, bad arguments named
  in the user's words, a learning rate vmapped over and differentiated through;
- MoMo and MoMo-Adam: float64 references from Algorithms 1 and 2 of Schaipp et al. (arXiv
  2305.07583) match for 100 steps at rtol 1e-8 under x64, on data that takes every branch of
  the step size (the cap ``α``, the Polyak-type step and the zero step when the model is below
  ``f*``), with weight decay in the paper's exact model step; float32 runs match optax.contrib
  without weight decay and differ from it with (optax divides only ``x`` by ``1 + αλ``);
- MoMo* (``adapt_lower_bound=True``, the paper's online estimate of ``f*``, as in the authors'
  ``use_fstar``): a float64 reference for both methods at rtol 1e-8 through every branch of
  the reset and the update of the estimate; float32 runs match optax.contrib; a step by hand;
  the signatures are optax.contrib's;
- the digits MLP reaches 95% test accuracy with each method (MoMo given the minibatch loss).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _digits import demo_accuracy
from _stepping import assert_trees_close, loss_value, run_library, run_numpy
from _stepping import moved as _moved
from conftest import F32_ORACLE_ATOL, F32_ORACLE_RTOL, random_problem

import gradtx
from gradtx.transforms.adam_relatives_2021 import (
    MadgradState,
    MomoAdamState,
    MomoState,
    madgrad,
    momo,
    momo_adam,
    scale_by_madgrad,
)

STEPS = 100


# ----------------------------------------------------------------------------------------------
# MADGRAD: Defazio & Jelassi, arXiv 2101.11075, Algorithm 1.


def _madgrad_ref(gamma, momentum, eps, wd):
    """``gamma(k)`` is the step size γ_k; ``c = 1 − momentum`` is the paper's c_{k+1}."""
    c = 1 - momentum

    def init(xs):
        # line 1: s_0 = 0, ν_0 = 0; x_0 is kept for the dual-averaging point
        return {"s": [np.zeros_like(x) for x in xs], "nu": [np.zeros_like(x) for x in xs],
                "x0": [x.copy() for x in xs]}  # fmt: skip

    def step(xs, gs, st, k, _):
        lam = gamma(k) * np.sqrt(k + 1)  # line 4: λ_k = γ_k √(k+1)
        out = []
        for i, (x, g) in enumerate(zip(xs, gs, strict=True)):
            g = g + wd * x  # the L2 term added to the gradient (the authors' weight decay)
            st["s"][i] = st["s"][i] + lam * g  # line 5: s_{k+1} = s_k + λ_k g_k
            st["nu"][i] = st["nu"][i] + lam * g * g  # line 6: ν_{k+1} = ν_k + λ_k g_k²
            z = st["x0"][i] - st["s"][i] / (np.cbrt(st["nu"][i]) + eps)  # line 7
            out.append((1 - c) * x + c * z)  # line 8: x_{k+1} = (1 − c) x_k + c z_{k+1}
        return out, st

    return init, step


MADGRAD_PAPER = {
    "defaults": (dict(momentum=0.9, eps=1e-6, wd=0.0), 1e-2),
    "no_momentum_big_eps_decay": (dict(momentum=0.0, eps=0.5, wd=0.05), 3e-2),
    "scheduled": (dict(momentum=0.8, eps=1e-6, wd=0.0), "schedule"),
}


def _inverse_time(k):
    # γ_k = 0.05 / (1 + k/10), formed in float64 (an int32 count divided by 10 is float32)
    return 0.05 / (1 + jnp.asarray(k, jnp.float64) / 10)


@pytest.mark.parametrize("name", sorted(MADGRAD_PAPER))
def test_madgrad_matches_algorithm_1(x64, name):
    kw, lr = MADGRAD_PAPER[name]
    gamma = (lambda k: 0.05 / (1 + k / 10)) if lr == "schedule" else (lambda k: lr)
    ours_lr = _inverse_time if lr == "schedule" else lr
    params, grad = random_problem(0)
    opt = madgrad(ours_lr, momentum=kw["momentum"], weight_decay=kw["wd"], eps=kw["eps"])
    ours = run_library(opt, params, grad, STEPS, jnp.float64)
    init, step = _madgrad_ref(gamma, **kw)
    ref = run_numpy(init, step, params, grad, STEPS)
    assert_trees_close(ours, ref, rtol=1e-8)
    assert _moved(ref, params) > 0.1


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_madgrad_matches_optax_with_lr_plus_eps(wd):
    params, grad = random_problem(1)
    lr, eps = 1e-2, 1e-3  # a large eps, so that γ and γ + ε give different runs
    theirs = run_library(
        optax.contrib.madgrad(lr, weight_decay=wd, eps=eps), params, grad, STEPS, jnp.float32,
        lib="optax",
    )  # fmt: skip
    ours = run_library(madgrad(lr + eps, weight_decay=wd, eps=eps), params, grad, STEPS,
                       jnp.float32)  # fmt: skip
    assert_trees_close(ours, theirs, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    assert _moved(ours, params) > 0.1
    # the paper's λ_k = γ √(k+1) (our default) is not optax's
    paper = run_library(madgrad(lr, weight_decay=wd, eps=eps), params, grad, STEPS, jnp.float32)
    assert _moved(paper, theirs) > 1e-3


def test_madgrad_state_matches_optax_layout():
    params = {"w": jnp.arange(3.0), "b": jnp.ones(2, jnp.bfloat16)}
    state = scale_by_madgrad(1e-2).init(params)
    assert isinstance(state, MadgradState)
    assert MadgradState._fields == optax.contrib.MadgradState._fields
    assert state.count.dtype == jnp.int32
    np.testing.assert_array_equal(state.x0["w"], params["w"])
    assert state.s["b"].dtype == state.grad_sum_sq["b"].dtype == jnp.bfloat16


def test_madgrad_complex_params_use_the_modulus():
    # ν accumulates |g|² (real); z and the update are complex. One step, no momentum, eps = 0:
    # z = x0 − λ g / ∛(λ |g|²) with λ = γ.
    params = jnp.array([1.0 + 1.0j])
    g = jnp.array([3.0 - 4.0j])
    tx = scale_by_madgrad(0.5, momentum=0.0, eps=0.0)
    state = tx.init(params)
    assert state.grad_sum_sq.dtype == jnp.float32
    u, state = tx.update(g, state, params)
    z = 1.0 + 1.0j - 0.5 * (3 - 4j) / np.cbrt(0.5 * 25.0)
    np.testing.assert_allclose(np.asarray(u), [z - (1.0 + 1.0j)], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(state.grad_sum_sq), [12.5], rtol=1e-6)


OPTIMIZERS = {
    "madgrad": lambda: madgrad(1e-2),
    "momo": lambda: momo(),
    "momo_adam": lambda: momo_adam(),
}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_low_precision_params_keep_their_dtypes(name, dtype):
    opt = OPTIMIZERS[name]()
    params = {"w": jnp.linspace(-1, 1, 6, dtype=dtype).reshape(2, 3), "b": jnp.zeros(3, dtype)}
    state = opt.init(params)
    want = jax.tree_util.tree_map(lambda x: x.dtype, state)

    @jax.jit
    def step(p, s, t):
        g = jax.tree_util.tree_map(lambda x: (x - 0.3 * jnp.cos(x * (t + 1))).astype(x.dtype), p)
        u, s = opt.update(g, s, p, value=jnp.asarray(1.0 + t, dtype))
        return gradtx.apply_updates(p, u), s, u

    for t in range(4):
        params, state, u = step(params, state, t)
        assert all(x.dtype == jnp.dtype(dtype) for x in jax.tree_util.tree_leaves(u))
        assert jax.tree_util.tree_map(lambda x: x.dtype, state) == want
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(params))
    assert _moved(params, {"w": jnp.linspace(-1, 1, 6).reshape(2, 3), "b": jnp.zeros(3)}) > 0


def test_madgrad_learning_rate_is_a_leaf_vmap_and_grad():
    params = jnp.array([1.0, -2.0])
    g = jnp.array([0.5, 1.5])

    def first_update(lr):
        tx = scale_by_madgrad(lr, momentum=0.0, eps=0.0)
        return tx.update(g, tx.init(params), params)[0]

    # one step, c = 1, eps = 0: u = −λ g / ∛(λ g²) = −λ^{2/3} g / |g|^{2/3}
    lrs = jnp.array([0.1, 0.2])
    want = -(np.asarray(lrs)[:, None] ** (2 / 3)) * np.sign(g) * np.abs(g) ** (1 / 3)
    np.testing.assert_allclose(jax.vmap(first_update)(lrs), want, rtol=1e-5)
    d = jax.grad(lambda lr: first_update(lr)[0])(0.1)
    np.testing.assert_allclose(d, -(2 / 3) * 0.1 ** (-1 / 3) * 0.5 ** (1 / 3), rtol=1e-5)


def test_madgrad_update_needs_params():
    tx = scale_by_madgrad(1e-2)
    with pytest.raises(ValueError, match="scale_by_madgrad: update needs params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


@pytest.mark.parametrize(
    "build,error,message",
    [
        (lambda: madgrad(-1e-2), ValueError, r"madgrad: learning_rate must be in \[0, inf\]"),
        (lambda: madgrad(1e-2, momentum=1.0), ValueError, r"madgrad: momentum must be in \[0, 1\)"),
        (lambda: madgrad(1e-2, eps=-1.0), ValueError, r"madgrad: eps must be in \[0, inf\], got"),
        (
            lambda: madgrad(1e-2, weight_decay=-1.0),
            ValueError,
            r"madgrad: weight_decay must be in \[0, inf\], got -1.0",
        ),
        (lambda: madgrad("x"), TypeError, r"madgrad: learning_rate must be a number"),
        (
            lambda: scale_by_madgrad(1e-2, momentum=-0.1),
            ValueError,
            r"scale_by_madgrad: momentum must be in \[0, 1\), got -0.1",
        ),
    ],
)
def test_bad_arguments_are_named(build, error, message):
    with pytest.raises(error, match=message):
        build()


# ----------------------------------------------------------------------------------------------
# MoMo and MoMo-Adam: Schaipp, Ohana, Eickenberg, Defazio & Gower, arXiv 2305.07583,
# Algorithm 1 (MoMo) and Algorithm 2 (MoMo-Adam); weight decay as the exact solution of the
# model step of f + λ/2 ‖x‖², x⁺ = (x − τ D⁻¹ d) / (1 + αλ). The stand-in loss f is
# tests/_stepping.py's loss_value (any deterministic function of the iterate compares rules).


def _dot(a, b):
    return sum(float(np.sum(x * y)) for x, y in zip(a, b, strict=True))


def _branch(num, dn, cap, seen):
    t1 = max(num, 0.0) / dn
    seen.add("zero" if num <= 0 else ("cap" if cap <= t1 else "polyak"))
    return min(cap, t1)


def _momo_ref(alpha, beta, f_star, wd, seen):
    def init(xs):
        return {"d": [np.zeros_like(x) for x in xs], "fbar": 0.0, "gamma": 0.0}

    def step(xs, gs, st, k, f):
        b = (
            0.0 if k == 0 else beta
        )  # initialisation: d_{-1} = g_0, f̄_{-1} = f_0, γ_{-1} = ⟨g_0, x_0⟩
        st["d"] = [(1 - b) * g + b * d for g, d in zip(gs, st["d"], strict=True)]  # line 3
        st["fbar"] = (1 - b) * f + b * st["fbar"]  # line 4
        st["gamma"] = (1 - b) * _dot(gs, xs) + b * st["gamma"]  # line 5
        # lines 6-7: h = f̄ + ⟨d, x⟩ − γ; τ = min(α, (h − f*)_+ / ‖d‖²), with weight decay
        num = (1 + alpha * wd) * (st["fbar"] - f_star - st["gamma"]) + _dot(st["d"], xs)
        tau = _branch(num, _dot(st["d"], st["d"]), alpha, seen)
        return [(x - tau * d) / (1 + alpha * wd) for x, d in zip(xs, st["d"], strict=True)], st

    return init, step


def _momo_adam_ref(alpha, b1, b2, eps, f_star, wd, seen):
    def init(xs):
        z = [np.zeros_like(x) for x in xs]
        return {"d": z, "v": list(z), "fbar": 0.0, "gamma": 0.0}

    def step(xs, gs, st, k, f):
        st["d"] = [b1 * d + (1 - b1) * g for g, d in zip(gs, st["d"], strict=True)]  # line 3
        st["v"] = [b2 * v + (1 - b2) * g * g for g, v in zip(gs, st["v"], strict=True)]  # line 4
        rho1, rho2 = 1 - b1 ** (k + 1), 1 - b2 ** (k + 1)
        D = [eps + np.sqrt(v / rho2) for v in st["v"]]  # line 5: D_k = diag(ε + √(v/ρ2))
        st["fbar"] = b1 * st["fbar"] + (1 - b1) * f  # line 6
        st["gamma"] = b1 * st["gamma"] + (1 - b1) * _dot(gs, xs)  # line 7
        # lines 8-9: τ = min(α/ρ1, ((1+αλ)(f̄ − ρ1 f* − γ) + ⟨d, x⟩)_+ / ‖d‖²_{D⁻¹})
        num = (1 + alpha * wd) * (st["fbar"] - rho1 * f_star - st["gamma"]) + _dot(st["d"], xs)
        dn = sum(float(np.sum(d * d / q)) for d, q in zip(st["d"], D, strict=True))
        tau = _branch(num, dn, alpha / rho1, seen)
        out = [(x - tau * d / q) / (1 + alpha * wd) for x, d, q in zip(xs, st["d"], D, strict=True)]
        return out, st

    return init, step


MOMO_PAPER = {
    "momo": (
        lambda kw: momo(kw["alpha"], kw["beta"], kw["f_star"], kw["wd"]),
        _momo_ref,
        dict(alpha=0.3, beta=0.9, f_star=2.0, wd=0.0),
    ),
    "momo_decay": (
        lambda kw: momo(kw["alpha"], kw["beta"], kw["f_star"], kw["wd"]),
        _momo_ref,
        dict(alpha=0.3, beta=0.8, f_star=2.0, wd=0.1),
    ),
    "momo_adam": (
        lambda kw: momo_adam(kw["alpha"], kw["b1"], kw["b2"], kw["eps"], kw["f_star"], kw["wd"]),
        _momo_adam_ref,
        dict(alpha=0.3, b1=0.9, b2=0.999, eps=1e-8, f_star=2.0, wd=0.0),
    ),
    "momo_adam_decay": (
        lambda kw: momo_adam(kw["alpha"], kw["b1"], kw["b2"], kw["eps"], kw["f_star"], kw["wd"]),
        _momo_adam_ref,
        dict(alpha=0.3, b1=0.8, b2=0.99, eps=0.1, f_star=2.0, wd=0.1),
    ),
}


@pytest.mark.parametrize("name", sorted(MOMO_PAPER))
def test_momo_matches_algorithms_1_and_2(x64, name):
    build, ref, kw = MOMO_PAPER[name]
    params, grad = random_problem(0)
    ours = run_library(build(kw), params, grad, STEPS, jnp.float64, value_fn=loss_value)
    seen = set()
    init, step = ref(**kw, seen=seen)
    want = run_numpy(init, step, params, grad, STEPS, value_fn=loss_value)
    assert_trees_close(ours, want, rtol=1e-8, atol=1e-12)
    assert _moved(want, params) > 0.1
    assert seen == {"cap", "polyak", "zero"}, seen  # every branch of τ was taken


MOMO_OPTAX = {
    "momo": (lambda wd: momo(0.3, 0.9, 2.0, wd), lambda wd: optax.contrib.momo(0.3, 0.9, 2.0, wd)),
    "momo_adam": (
        lambda wd: momo_adam(0.3, lower_bound=2.0, weight_decay=wd),
        lambda wd: optax.contrib.momo_adam(0.3, lower_bound=2.0, weight_decay=wd),
    ),
}


@pytest.mark.parametrize("name", sorted(MOMO_OPTAX))
def test_momo_matches_optax_without_weight_decay(name):
    ours, theirs = MOMO_OPTAX[name]
    params, grad = random_problem(1)
    kw = dict(value_fn=loss_value)
    a = run_library(ours(0.0), params, grad, STEPS, jnp.float32, **kw)
    b = run_library(theirs(0.0), params, grad, STEPS, jnp.float32, lib="optax", **kw)
    assert_trees_close(a, b, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    assert _moved(a, params) > 0.1
    # with weight decay the paper's step divides τ d by 1 + αλ too; optax's does not. One step
    # from the same point has the same τ d in both: optax's u_o = −αλ x/(1+αλ) − τ d, and the
    # paper's u = −(αλ x + τ d)/(1+αλ).
    x = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([0.3])}
    g = {"w": jnp.array([0.4, -1.0, 2.0]), "b": jnp.array([-0.7])}
    o_ours, o_theirs, al, wd = ours(0.1), theirs(0.1), 0.3, 0.1
    u, _ = o_ours.update(g, o_ours.init(x), x, value=jnp.array(9.0))
    u_o, _ = o_theirs.update(g, o_theirs.init(x), x, value=jnp.array(9.0))
    for k in x:
        tau_d = -np.asarray(u_o[k]) - al * wd / (1 + al * wd) * np.asarray(x[k])
        want = -(al * wd * np.asarray(x[k]) + tau_d) / (1 + al * wd)
        np.testing.assert_allclose(u[k], want, rtol=1e-5, atol=1e-6)
        assert np.max(np.abs(np.asarray(u[k]) - np.asarray(u_o[k]))) > 1e-3


def test_momo_scheduled_learning_rate():
    # α_k from a schedule (called with the steps taken before this one) equals a constant α_k
    # step by step: schedule 1.0 for k = 0 and 1e-6 afterwards caps every later step at 1e-6
    x = jnp.array([1.0, 2.0])
    f = lambda x: jnp.sum(x**2)  # noqa: E731
    opt = momo(lambda k: jnp.where(k == 0, 1.0, 1e-6), beta=0.0)
    state = opt.init(x)
    for k in range(3):
        value, g = jax.value_and_grad(f)(x)
        u, state = opt.update(g, state, x, value=value)
        # β = 0: Polyak's step f/‖g‖² = 1/4 at k = 0, then capped at 1e-6
        want = -(0.25 if k == 0 else 1e-6) * np.asarray(g)
        np.testing.assert_allclose(u, want, rtol=1e-5)
        x = x + u


@pytest.mark.parametrize("make", [momo, momo_adam], ids=["momo", "momo_adam"])
def test_momo_learning_rate_is_a_leaf_vmap_and_grad(make):
    # first step from x = (1, 2) on f = ‖x‖²: the Polyak-type step is 1/4 for MoMo and 25/3
    # (on D⁻¹d = 0.1 sign(g)) for MoMo-Adam, so caps below it bind: u = −α d (MoMo) and
    # u = −(α/ρ1) D⁻¹ d = −α sign(g) (MoMo-Adam, ρ1 = 0.1)
    x = jnp.array([1.0, 2.0])
    value, g = jax.value_and_grad(lambda x: jnp.sum(x**2))(x)

    def first_update(lr):
        opt = make(lr)
        return opt.update(g, opt.init(x), x, value=value)[0]

    lrs = jnp.array([0.1, 0.2])
    direction = np.asarray(g) if make is momo else np.ones(2)
    np.testing.assert_allclose(jax.vmap(first_update)(lrs), -np.outer(lrs, direction), rtol=1e-5)
    np.testing.assert_allclose(
        jax.grad(lambda lr: first_update(lr)[1])(0.1), -direction[1], rtol=1e-5
    )


def test_momo_states_match_optax_layout_and_dtypes():
    params = {"w": jnp.arange(3.0), "b": jnp.ones(2, jnp.bfloat16)}
    s = momo().init(params)
    assert isinstance(s, MomoState) and MomoState._fields == optax.contrib.MomoState._fields
    s2 = momo_adam().init(params)
    assert isinstance(s2, MomoAdamState)
    assert MomoAdamState._fields == optax.contrib.MomoAdamState._fields
    for st in (s, s2):
        assert st.barf.dtype == st.gamma.dtype == st.lb.dtype == jnp.float32
        assert st.count.dtype == jnp.int32 and st.exp_avg["b"].dtype == jnp.bfloat16


@pytest.mark.parametrize("make", [momo, momo_adam], ids=["momo", "momo_adam"])
def test_momo_needs_value_and_params(make):
    opt = make()
    x = jnp.ones(2)
    with pytest.raises(ValueError, match=f"{make.__name__}: update needs the loss"):
        opt.update(x, opt.init(x), x)
    with pytest.raises(ValueError, match=f"{make.__name__}: update needs params"):
        opt.update(x, opt.init(x), value=1.0)


def test_momo_zero_direction_takes_no_step():
    # ‖d‖² = 0 (a zero gradient at the first step): no step, no NaN
    for opt in (momo(), momo_adam()):
        x = jnp.ones(3)
        u, _ = opt.update(jnp.zeros(3), opt.init(x), x, value=jnp.array(2.0))
        np.testing.assert_array_equal(u, np.zeros(3))


# ----------------------------------------------------------------------------------------------
# MoMo* (``adapt_lower_bound=True``): the online estimate of f* of Schaipp et al. (arXiv
# 2305.07583, the MoMo* section) as in the authors' code (github.com/fabian-sp/MoMo, use_fstar):
# before the step the estimate is reset to half the model's value at x_k when it lies above it
# (never below the floor f*_0 = lower_bound); after the step it becomes the model's value at
# x_{k+1} along the step, h_k − τ_k ‖d_k‖²_{D⁻¹}/2 (floored at f*_0). For MoMo-Adam the model
# uses the bias-corrected averages, hence the ρ1 factors.


def _momo_star_ref(alpha, beta, f_star, wd, seen, adam=None):
    """MoMo* (``adam=None``) or MoMo-Adam* (``adam=(b2, eps)``, ``beta`` is b1)."""

    def init(xs):
        z = [np.zeros_like(x) for x in xs]
        return {"d": z, "v": list(z), "fbar": 0.0, "gamma": 0.0, "lb": f_star}

    def step(xs, gs, st, k, f):
        if adam is None:  # Algorithm 1, lines 3-5 (the averages start at the first values)
            b, rho = (0.0 if k == 0 else beta), 1.0
            st["d"] = [(1 - b) * g + b * d for g, d in zip(gs, st["d"], strict=True)]
            D = [np.ones_like(x) for x in xs]
        else:  # Algorithm 2, lines 3-5
            b2, eps = adam
            b, rho = beta, 1 - beta ** (k + 1)
            st["d"] = [b * d + (1 - b) * g for g, d in zip(gs, st["d"], strict=True)]
            st["v"] = [b2 * v + (1 - b2) * g * g for g, v in zip(gs, st["v"], strict=True)]
            D = [eps + np.sqrt(v / (1 - b2 ** (k + 1))) for v in st["v"]]
        st["fbar"] = (1 - b) * f + b * st["fbar"]
        st["gamma"] = (1 - b) * _dot(gs, xs) + b * st["gamma"]
        ip = _dot(st["d"], xs)
        dn = sum(float(np.sum(d * d / q)) for d, q in zip(st["d"], D, strict=True))
        dec = 1 + alpha * wd
        # reset: the (weight-decayed) model value c at x_k below (1+αλ) ρ f*_k
        c = dec * (st["fbar"] - st["gamma"]) + ip
        if c < dec * rho * st["lb"]:
            seen.add("reset_half" if c / (2 * rho * dec) > f_star else "reset_floor")
            st["lb"] = max(c / (2 * rho * dec), f_star)
        else:
            seen.add("keep")
        # the step size with the (possibly reset) estimate, as in Algorithms 1 and 2
        num = dec * (st["fbar"] - rho * st["lb"] - st["gamma"]) + ip
        tau = _branch(num, dn, alpha / rho, seen)
        # the next estimate: the model's value after the step, h_k − τ ‖d‖²_{D⁻¹} / 2
        h = (st["fbar"] + ip - st["gamma"] - tau * dn / 2) / rho
        seen.add("floor" if h < f_star else "model")
        st["lb"] = max(h, f_star)
        out = [(x - tau * d / q) / dec for x, d, q in zip(xs, st["d"], D, strict=True)]
        return out, st

    return init, step


MOMO_STAR = {
    "momo": dict(alpha=0.3, beta=0.9, f_star=1.0, wd=0.0),
    "momo_decay": dict(alpha=0.3, beta=0.8, f_star=1.0, wd=0.1),
    "momo_adam": dict(alpha=0.3, beta=0.9, f_star=1.0, wd=0.0, adam=(0.999, 1e-8)),
    "momo_adam_decay": dict(alpha=0.3, beta=0.8, f_star=1.0, wd=0.1, adam=(0.99, 0.1)),
}


def _momo_star(kw):
    if "adam" not in kw:
        return momo(kw["alpha"], kw["beta"], kw["f_star"], kw["wd"], adapt_lower_bound=True)
    b2, eps = kw["adam"]
    return momo_adam(kw["alpha"], kw["beta"], b2, eps, kw["f_star"], kw["wd"], True)


@pytest.mark.parametrize("name", sorted(MOMO_STAR))
def test_momo_star_matches_the_online_lower_bound(x64, name):
    kw = MOMO_STAR[name]
    params, grad = random_problem(0)
    ours = run_library(_momo_star(kw), params, grad, STEPS, jnp.float64, value_fn=loss_value)
    seen = set()
    init, step = _momo_star_ref(**kw, seen=seen)
    want = run_numpy(init, step, params, grad, STEPS, value_fn=loss_value)
    assert_trees_close(ours, want, rtol=1e-8, atol=1e-12)
    assert _moved(want, params) > 0.1
    # every branch: the reset (to half the model's value and to the floor) and none, the three
    # step sizes, the new estimate at the model's value and at the floor
    every = {"reset_half", "reset_floor", "keep", "cap", "polyak", "zero", "floor", "model"}
    assert seen == every, seen
    # without the online estimate the run is another one
    fixed = momo if "adam" not in kw else momo_adam
    plain = run_library(fixed(0.3, lower_bound=1.0), params, grad, STEPS, jnp.float64,
                        value_fn=loss_value)  # fmt: skip
    assert _moved(plain, want) > 1e-3


def test_momo_star_state_follows_the_estimate(x64):
    # one step from x = (1, 2) on f = ‖x‖² + 3: d = g, f̄ = 8, γ = ⟨g, x⟩ = ⟨d, x⟩ = 10, so the
    # model's value at x is c = 8. With f*_0 = 5: no reset (8 >= 5), τ = min(1, 3/20) = 0.15,
    # new estimate 8 − 0.15·20/2 = 6.5. With f*_k = 20 (a stale estimate): reset to
    # max(8/2, 5) = 5 first, the same step, 6.5.
    x = jnp.array([1.0, 2.0])
    value, g = jax.value_and_grad(lambda x: jnp.sum(x**2) + 3.0)(x)
    opt = momo(lower_bound=5.0, adapt_lower_bound=True)
    state = opt.init(x)
    u, s1 = opt.update(g, state, x, value=value)
    np.testing.assert_allclose(u, -0.15 * np.asarray(g), rtol=1e-12)
    np.testing.assert_allclose(s1.lb, 6.5, rtol=1e-12)
    u2, s2 = opt.update(g, state._replace(lb=jnp.asarray(20.0, state.lb.dtype)), x, value=value)
    np.testing.assert_allclose(u2, u, rtol=1e-12)
    np.testing.assert_allclose(s2.lb, 6.5, rtol=1e-12)
    # and the floor: with f*_0 = 9 above the model (8), the reset stays at the floor 9, τ = 0
    # (no step), and the new estimate, the model's 8, is floored at 9
    opt = momo(lower_bound=9.0, adapt_lower_bound=True)
    u3, s3 = opt.update(g, opt.init(x), x, value=value)
    np.testing.assert_array_equal(u3, np.zeros(2))
    np.testing.assert_allclose(s3.lb, 9.0, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(MOMO_OPTAX))
def test_momo_star_matches_optax(name):
    ours, theirs = {
        "momo": (
            lambda: momo(0.3, 0.9, 1.0, adapt_lower_bound=True),
            lambda: optax.contrib.momo(0.3, 0.9, 1.0, adapt_lower_bound=True),
        ),
        "momo_adam": (
            lambda: momo_adam(0.3, lower_bound=1.0, adapt_lower_bound=True),
            lambda: optax.contrib.momo_adam(0.3, lower_bound=1.0, adapt_lower_bound=True),
        ),
    }[name]
    params, grad = random_problem(1)
    kw = dict(value_fn=loss_value)
    a = run_library(ours(), params, grad, STEPS, jnp.float32, **kw)
    b = run_library(theirs(), params, grad, STEPS, jnp.float32, lib="optax", **kw)
    assert_trees_close(a, b, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    assert _moved(a, params) > 0.1


def test_momo_signatures_match_optax():
    import inspect

    for ours, theirs in ((momo, optax.contrib.momo), (momo_adam, optax.contrib.momo_adam)):
        po = list(inspect.signature(ours).parameters.values())
        pt = list(inspect.signature(theirs).parameters.values())
        assert [p.name for p in po] == [p.name for p in pt]
        assert [p.default for p in po] == [p.default for p in pt]
    with pytest.raises(TypeError, match="momo: adapt_lower_bound must be True or False, got 1"):
        momo(adapt_lower_bound=1)
    with pytest.raises(TypeError, match="momo_adam: adapt_lower_bound must be True or False"):
        momo_adam(adapt_lower_bound="yes")


# ----------------------------------------------------------------------------------------------
# The digits MLP (examples/digits_mlp.py's data and model) reaches 95% test accuracy with each
# method's documented defaults at the learning rate chosen here: 40 epochs of 64-example
# batches, the whole run in one jitted lax.scan.

DIGITS = {
    "madgrad": lambda: madgrad(1e-2),
    "momo": lambda: momo(),
    "momo_adam": lambda: momo_adam(),
    "momo_adapt_lower_bound": lambda: momo(adapt_lower_bound=True),
    "momo_adam_adapt_lower_bound": lambda: momo_adam(adapt_lower_bound=True),
}


@pytest.mark.parametrize("name", sorted(DIGITS))
def test_digits_mlp_reaches_95_percent(name):
    acc = demo_accuracy(DIGITS[name](), pass_value=True)
    assert acc >= 0.95, (name, acc)
