"""Prodigy, D-Adapted AdamW and DoWG against their papers and optax.contrib.

- float64 NumPy references written from the papers' algorithms (cited line by line, never
  calling gradtx) match gradtx for 100 steps at rtol 1e-8 under x64, on data that reaches every
  branch: ``d`` kept and raised, ``r̄`` kept and raised, a zero first gradient (``‖s‖₁ = 0``),
  ``ε = 0`` (zero denominators), learning-rate schedules, weight decay, the safeguard;
- runs match optax.contrib for 100 steps, float32 (tolerances of tests/conftest.py) where the
  trajectory is not chaotic and float64 for the defaults (D-Adaptation's float32 trajectory
  amplifies rounding: two float32 runs of the same formula part by 0.1 after 100 steps),
  with the arguments that give optax's numbers; the intended differences are asserted;
- state dtypes stay put (bf16 params too), ``init`` works through ``jax.eval_shape``, huge and
  tiny gradients keep the state finite and DoWG's step at most ``r̄`` long, bad arguments are
  named in the user's words;
- the digits MLP reaches 95% test accuracy with each method's defaults (one parametrised test).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _digits import demo_accuracy
from _stepping import assert_trees_close, run_library, run_numpy
from _stepping import moved as _moved
from _stepping import zeros_like_all as _zeros
from conftest import F32_ORACLE_ATOL, F32_ORACLE_RTOL, random_problem

import gradtx
from gradtx.transforms.learning_rate_free import (
    DAdaptAdamWState,
    ProdigyState,
    dadapt_adamw,
    dowg,
    prodigy,
    scale_by_dowg,
)

STEPS = 100


def _warmup(k):  # a learning-rate schedule of the step count, for gradtx and the references
    return jnp.minimum(1.0, (k + 1) / 20.0) if isinstance(k, jax.Array) else min(1.0, (k + 1) / 20)


def _zero_first(grad):
    """The oracle with a zero gradient at the first step."""

    def g(p, t):
        out = grad(p, t)
        return jax.tree_util.tree_map(np.zeros_like, out) if t == 0 else out

    return g


def _lr(lr, k):
    return lr(k) if callable(lr) else lr


# ----------------------------------------------------------------------------------------------
# Prodigy: Mishchenko & Defazio, arXiv 2306.06101, Algorithm 3 ("Prodigy (Adam version)"),
# with the authors' decoupled weight decay and safeguard_warmup.


def _prodigy_ref(lr, b1, b2, b3, eps, d0, coef, wd, safeguard=False, seen=None):
    b3 = np.sqrt(b2) if b3 is None else b3

    def init(xs):
        # line 2: r_0 = 0, s_0 = 0, m_0 = 0, v_0 = 0; d_0 given
        return {"d": d0, "r": 0.0, "s": _zeros(xs), "m": _zeros(xs), "v": _zeros(xs), "x0": xs}

    def step(xs, gs, st, k, _):
        d, gamma = st["d"], _lr(lr, k)
        dot = sum(float(np.sum(g * (x0 - x))) for g, x0, x in zip(gs, st["x0"], xs, strict=True))
        st["r"] = b3 * st["r"] + (1 - b3) * gamma * d**2 * dot  # line 7
        for i, g in enumerate(gs):
            st["m"][i] = b1 * st["m"][i] + (1 - b1) * d * g  # line 5
            st["v"][i] = b2 * st["v"][i] + (1 - b2) * d**2 * g**2  # line 6
            # line 8 (the safeguard leaves γ_k out)
            st["s"][i] = b3 * st["s"][i] + (1 - b3) * (1.0 if safeguard else gamma) * d**2 * g
        l1 = sum(float(np.sum(np.abs(s))) for s in st["s"])
        if l1 > 0:  # lines 9-10 (d̂ is undefined while ‖s‖₁ = 0: d stays)
            d_hat = coef * st["r"] / l1
            st["d"] = max(d, d_hat)
            if seen is not None:
                seen.add(d_hat > d)
        elif seen is not None:
            seen.add("no s")
        # line 11, with decoupled weight decay −γ_k d_k λ x (the authors' code)
        out = [
            x - gamma * d * (m / (np.sqrt(v) + d * eps) + wd * x)
            for x, m, v in zip(xs, st["m"], st["v"], strict=True)
        ]
        return out, st

    return init, step


PRODIGY_PAPER = {
    "defaults": dict(lr=1.0, b1=0.9, b2=0.999, b3=None, eps=1e-8, d0=1e-6, coef=1.0, wd=0.0),
    # ε large enough that d_k ε is not negligible next to √v
    "decay_eps_coef": dict(lr=0.5, b1=0.8, b2=0.99, b3=0.9, eps=1e-2, d0=1e-4, coef=2.0, wd=0.1),
    "warmup_safeguard": dict(
        lr=_warmup, b1=0.9, b2=0.999, b3=None, eps=1e-8, d0=1e-6, coef=1.0, wd=0.01, safeguard=True
    ),
    "warmup": dict(lr=_warmup, b1=0.9, b2=0.99, b3=None, eps=1e-8, d0=1e-6, coef=1.0, wd=0.0),
}


def _prodigy(kw, **extra):
    return prodigy(
        kw["lr"],
        (kw["b1"], kw["b2"]),
        kw["b3"],
        kw["eps"],
        kw["d0"],
        kw["coef"],
        kw["wd"],
        kw.get("safeguard", False),
        **extra,
    )


@pytest.mark.parametrize("name", sorted(PRODIGY_PAPER) + ["zero_first_gradient"])
def test_prodigy_matches_algorithm_3(x64, name):
    kw = PRODIGY_PAPER.get(name, PRODIGY_PAPER["defaults"])
    params, grad = random_problem(0)
    if name == "zero_first_gradient":
        grad = _zero_first(grad)
    ours = run_library(_prodigy(kw), params, grad, STEPS, jnp.float64)
    seen = set()
    ref = run_numpy(*_prodigy_ref(**kw, seen=seen), params, grad, STEPS)
    assert_trees_close(ours, ref, rtol=1e-8)
    assert _moved(ref, params) > 0.1
    assert {True, False} <= seen  # d was raised and kept
    assert ("no s" in seen) == (name == "zero_first_gradient")


# ----------------------------------------------------------------------------------------------
# D-Adapted Adam: Defazio & Mishchenko, arXiv 2301.07733 (the Adam variant), in the form of the
# authors' code (facebookresearch/dadaptation, dadapt_adam.py): ⟨g, s⟩ weighted by the v and s
# of before the step, r and s decaying at √β2, decoupled weight decay.


def _dadapt_ref(lr, b1, b2, eps, d0, wd, seen=None):
    sb2 = np.sqrt(b2)

    def init(xs):
        return {"d": d0, "r": 0.0, "s": _zeros(xs), "m": _zeros(xs), "v": _zeros(xs)}

    def step(xs, gs, st, k, _):
        d = st["d"]
        lam = _lr(lr, k) * d  # λ_k = γ_k d_k
        q = 0.0  # ⟨g_k, s_k⟩ weighted by 1 / (√v_k + ε); 0/0 counts as 0
        for g, s, v in zip(gs, st["s"], st["v"], strict=True):
            den = np.sqrt(v) + eps
            q += float(np.sum(g * np.where(den > 0, s / np.where(den > 0, den, 1.0), 0.0)))
        st["r"] = sb2 * st["r"] + (1 - sb2) * lam * q
        for i, g in enumerate(gs):
            st["m"][i] = b1 * st["m"][i] + (1 - b1) * lam * g
            st["v"][i] = b2 * st["v"][i] + (1 - b2) * g**2
            st["s"][i] = sb2 * st["s"][i] + (1 - sb2) * lam * g
        l1 = sum(float(np.sum(np.abs(s))) for s in st["s"])
        if l1 > 0:
            d_hat = st["r"] / ((1 - sb2) * l1)
            st["d"] = max(d, d_hat)
            if seen is not None:
                seen.add(d_hat > d)
        out = []
        for x, m, v in zip(xs, st["m"], st["v"], strict=True):
            den = np.sqrt(v) + eps
            step_ = np.where(den > 0, m / np.where(den > 0, den, 1.0), 0.0)
            out.append(x - step_ - lam * wd * x)
        return out, st

    return init, step


DADAPT_PAPER = {
    "defaults": dict(lr=1.0, b1=0.9, b2=0.999, eps=1e-8, d0=1e-6, wd=0.0),
    "decay_eps": dict(lr=0.7, b1=0.8, b2=0.99, eps=1e-3, d0=1e-4, wd=0.1),
    "warmup_no_eps": dict(lr=_warmup, b1=0.9, b2=0.999, eps=0.0, d0=1e-6, wd=0.01),
}


def _dadapt(kw, **extra):
    return dadapt_adamw(kw["lr"], (kw["b1"], kw["b2"]), kw["eps"], kw["d0"], kw["wd"], **extra)


@pytest.mark.parametrize("name", sorted(DADAPT_PAPER) + ["zero_first_gradient"])
def test_dadapt_adamw_matches_the_paper(x64, name):
    # (ε = 1e-3 after a zero first gradient: with ε = 1e-8 that trajectory amplifies float64
    # rounding past 1e-8 in 100 steps, as the defaults' does float32 rounding)
    kw = DADAPT_PAPER.get(name, DADAPT_PAPER["decay_eps"])
    params, grad = random_problem(0)
    if name == "zero_first_gradient":
        grad = _zero_first(grad)
    ours = run_library(_dadapt(kw), params, grad, STEPS, jnp.float64)
    seen = set()
    ref = run_numpy(*_dadapt_ref(**kw, seen=seen), params, grad, STEPS)
    assert_trees_close(ours, ref, rtol=1e-8)
    assert _moved(ref, params) > 0.1
    assert seen == {True, False}


# ----------------------------------------------------------------------------------------------
# DoWG: Khaled, Mishchenko & Jin, arXiv 2305.16284, Algorithm 1 ("DoWG"); ε added to √v_t
# (0 is the paper) and weight decay added to the gradient (optax's dowg).


def _dowg_ref(lr, r2_0, eps, wd, seen=None):
    def init(xs):
        # input r_ε: r̄²_{−1} = r_ε², v_{−1} = 0
        return {"r2": r2_0, "v": 0.0, "x0": xs}

    def step(xs, gs, st, k, _):
        gs = [g + wd * x for g, x in zip(gs, xs, strict=True)]
        dist2 = sum(float(np.sum((x - x0) ** 2)) for x, x0 in zip(xs, st["x0"], strict=True))
        if seen is not None:
            seen.add(dist2 > st["r2"])
        st["r2"] = max(st["r2"], dist2)  # line 3: r̄_t = max(‖x_t − x_0‖, r̄_{t−1})
        st["v"] += st["r2"] * sum(float(np.sum(g**2)) for g in gs)  # line 4
        eta = st["r2"] / (np.sqrt(st["v"]) + eps)  # line 5: η_t = r̄_t² / √v_t
        return [x - _lr(lr, k) * eta * g for x, g in zip(xs, gs, strict=True)], st  # line 6

    return init, step


DOWG_PAPER = {
    "paper": dict(lr=1.0, r2_0=1e-6, eps=0.0, wd=0.0),
    "optax_defaults": dict(lr=1.0, r2_0=None, eps=1e-4, wd=0.0),
    "decay_schedule": dict(lr=_warmup, r2_0=0.01, eps=1e-3, wd=0.05),
}


@pytest.mark.parametrize("name", sorted(DOWG_PAPER))
def test_dowg_matches_algorithm_1(x64, name):
    kw = DOWG_PAPER[name]
    params, grad = random_problem(0)
    opt = dowg(kw["lr"], kw["r2_0"], kw["eps"], weight_decay=kw["wd"] or None)
    ours = run_library(opt, params, grad, STEPS, jnp.float64)
    seen = set()
    r2_0 = kw["eps"] if kw["r2_0"] is None else kw["r2_0"]
    ref = run_numpy(*_dowg_ref(kw["lr"], r2_0, kw["eps"], kw["wd"], seen), params, grad, STEPS)
    assert_trees_close(ours, ref, rtol=1e-8)
    assert _moved(ref, params) > 0.1
    assert seen == {True, False}


def test_dowg_zero_gradient_without_eps_is_a_zero_step(x64):
    p = jnp.array([1.0, 2.0])
    tx = scale_by_dowg(1e-4, eps=0.0)
    u, state = tx.update(jnp.zeros(2), tx.init(p), p)
    assert np.asarray(u).tolist() == [0.0, 0.0]
    assert float(state.weighted_sq_norm_grads) == 0.0


# ----------------------------------------------------------------------------------------------
# optax.contrib.


OPTAX_F32 = {
    "prodigy_defaults": (
        lambda: prodigy(bias_correction=True, eps_uses_new_d=True),
        lambda: optax.contrib.prodigy(),
    ),
    "prodigy_all_arguments": (
        lambda: prodigy(
            0.5, (0.8, 0.99), 0.9, 1e-2, 1e-4, 2.0, 0.1, True,
            bias_correction=True, eps_uses_new_d=True,
        ),
        lambda: optax.contrib.prodigy(0.5, (0.8, 0.99), 0.9, 1e-2, 1e-4, 2.0, 0.1, True),
    ),
    "dadapt_adamw_decay_eps": (
        lambda: dadapt_adamw(0.7, (0.8, 0.99), 1e-3, 1e-4, 0.1, bias_correction=True),
        lambda: optax.contrib.dadapt_adamw(0.7, (0.8, 0.99), 1e-3, 1e-4, 0.1),
    ),
    "dowg_defaults": (lambda: dowg(), lambda: optax.contrib.dowg()),
    "dowg_all_arguments": (
        lambda: dowg(0.5, 0.3, 1e-3, 0.1, {"dense": True, "scale": False}),
        lambda: optax.contrib.dowg(0.5, 0.3, 1e-3, 0.1, {"dense": True, "scale": False}),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(OPTAX_F32))
def test_matches_optax_in_float32(name):
    ours, theirs = OPTAX_F32[name]
    params, grad = random_problem(1)
    a = run_library(ours(), params, grad, STEPS, jnp.float32)
    b = run_library(theirs(), params, grad, STEPS, jnp.float32, lib="optax")
    assert_trees_close(a, b, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    assert _moved(a, params) > 0.1


OPTAX_F64 = {
    "prodigy_warmup": (
        lambda: prodigy(_warmup, bias_correction=True, eps_uses_new_d=True),
        lambda: optax.contrib.prodigy(_warmup),
    ),
    "dadapt_adamw_defaults": (
        lambda: dadapt_adamw(bias_correction=True),
        lambda: optax.contrib.dadapt_adamw(),
    ),
    "dadapt_adamw_warmup": (
        lambda: dadapt_adamw(_warmup, weight_decay=0.01, bias_correction=True),
        lambda: optax.contrib.dadapt_adamw(_warmup, weight_decay=0.01),
    ),
}


@pytest.mark.parametrize("name", sorted(OPTAX_F64))
def test_matches_optax_in_float64(x64, name):
    ours, theirs = OPTAX_F64[name]
    params, grad = random_problem(1)
    a = run_library(ours(), params, grad, STEPS, jnp.float64)
    b = run_library(theirs(), params, grad, STEPS, jnp.float64, lib="optax")
    assert_trees_close(a, b, rtol=1e-9, atol=1e-12)
    assert _moved(a, params) > 0.1


def test_intended_differences_from_optax(x64):
    # the paper's defaults are not optax's numbers; each switch is needed for them
    params, grad = random_problem(1)

    def run(opt, lib="gradtx"):
        return run_library(opt, params, grad, 30, jnp.float64, lib=lib)

    kw = PRODIGY_PAPER["decay_eps_coef"]
    theirs = run(optax.contrib.prodigy(0.5, (0.8, 0.99), 0.9, 1e-2, 1e-4, 2.0, 0.1), "optax")
    both = run(_prodigy(kw, bias_correction=True, eps_uses_new_d=True))
    assert _moved(both, theirs) < 1e-10
    assert _moved(run(_prodigy(kw)), theirs) > 1e-3
    assert _moved(run(_prodigy(kw, bias_correction=True)), theirs) > 1e-6
    assert _moved(run(_prodigy(kw, eps_uses_new_d=True)), theirs) > 1e-3
    theirs = run(optax.contrib.dadapt_adamw(), "optax")
    assert _moved(run(dadapt_adamw(bias_correction=True)), theirs) < 1e-10
    assert _moved(run(dadapt_adamw()), theirs) > 1e-3


def test_optax_gives_nan_where_gradtx_keeps_d_after_a_zero_gradient(x64):
    # optax divides 0 by ‖s‖₁ = 0 at a zero first gradient; gradtx keeps d = d_0
    p = {"w": jnp.array([1.0, -2.0])}
    g = {"w": jnp.zeros(2)}
    for ours, theirs in [
        (prodigy(bias_correction=True, eps_uses_new_d=True), optax.contrib.prodigy()),
        (dadapt_adamw(bias_correction=True), optax.contrib.dadapt_adamw()),
    ]:
        _, s_ours = ours.update(g, ours.init(p), p)
        _, s_theirs = theirs.update(g, theirs.init(p), p)
        assert float(s_ours.estim_lr) == 1e-6
        assert np.isnan(float(s_theirs.estim_lr))


# ----------------------------------------------------------------------------------------------
# States, dtypes, extremes, arguments.


MAKERS = {
    "prodigy": (prodigy, ProdigyState),
    "dadapt_adamw": (dadapt_adamw, DAdaptAdamWState),
    "dowg": (dowg, None),
}


def _params(dtype):
    rng = np.random.default_rng(3)
    return {"w": jnp.asarray(rng.normal(size=(3, 2)), dtype), "b": jnp.asarray([0.5, -1.0], dtype)}


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_state_dtypes_are_stable_and_init_works_on_shapes(name, dtype):
    make, state_type = MAKERS[name]
    opt = make()
    params = _params(dtype)
    state = opt.init(params)
    if state_type is not None:
        assert isinstance(state, state_type)
        assert state.estim_lr.dtype == jnp.float32  # scalars in at least float32
    abstract = jax.eval_shape(
        opt.init, jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    )
    assert jax.tree_util.tree_structure(abstract) == jax.tree_util.tree_structure(state)
    step = jax.jit(opt.update)
    for _ in range(3):
        g = jax.tree_util.tree_map(lambda x: (x + 0.3).astype(dtype), params)
        u, new = step(g, state, params)
        for a, b in zip(
            jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(state), strict=True
        ):
            assert a.dtype == b.dtype and a.shape == b.shape
        for a, b in zip(
            jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(abstract), strict=True
        ):
            assert a.dtype == b.dtype and a.shape == b.shape
        assert all(x.dtype == dtype for x in jax.tree_util.tree_leaves(u))
        params, state = gradtx.apply_updates(params, u), new
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(params))
    if dtype == jnp.float32:  # (d_0 = 1e-6 steps round away in bfloat16)
        assert _moved(params, _params(dtype)) > 0


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_huge_and_tiny_gradients_keep_the_state_finite(name):
    opt = MAKERS[name][0]()
    p0 = _params(jnp.float32)

    @jax.jit
    def run(scale):
        def body(carry, t):
            params, state = carry
            g = jax.tree_util.tree_map(lambda x: (jnp.cos(3 * x + t) + 0.2) * scale, p0)
            u, state = opt.update(g, state, params)
            return (gradtx.apply_updates(params, u), state), None

        return jax.lax.scan(body, (p0, opt.init(p0)), jnp.arange(5.0))[0]

    for scale in [1e-30, 1e-10, 1.0, 1e20, 1e30]:
        params, state = run(jnp.float32(scale))
        for x in jax.tree_util.tree_leaves((params, state)):
            assert bool(jnp.all(jnp.isfinite(x))), (name, scale)


def test_dowg_step_is_at_most_rbar_long_at_any_scale():
    # ‖g‖² overflows float32 at 1e30 (and underflows at 1e-30); the step is still r̄ g / ‖g‖
    p = jnp.array([1.0, 2.0, -1.0])
    g = jnp.array([3.0, -4.0, 12.0])  # ‖g‖ = 13
    tx = scale_by_dowg(init_estim_sq_dist=0.25, eps=0.0)
    for scale in [1e-30, 1.0, 1e30]:
        u, state = jax.jit(tx.update)(g * scale, tx.init(p), p)
        np.testing.assert_allclose(np.asarray(u), 0.5 * np.asarray(g) / 13, rtol=1e-6)
        assert bool(jnp.isfinite(state.weighted_sq_norm_grads))
    # with v at its cap (float32 max), the floor r̄ ‖g‖ keeps the step r̄ long
    u, _ = jax.jit(tx.update)(g * 1e30, tx.init(p)._replace(weighted_sq_norm_grads=1e-3), p)
    np.testing.assert_allclose(np.asarray(u), 0.5 * np.asarray(g) / 13, rtol=1e-6)


BAD = [
    (lambda: prodigy(-1.0), ValueError, "prodigy: learning_rate must be in [0, inf], got -1.0"),
    (lambda: prodigy(betas=(0.9, 1.0)), ValueError, "prodigy: betas[1] must be in [0, 1), got 1.0"),
    (lambda: prodigy(betas=0.9), TypeError, "prodigy: betas must be a pair (b1, b2), got 0.9"),
    (lambda: prodigy(beta3=1.5), ValueError, "prodigy: beta3 must be in [0, 1), got 1.5"),
    (lambda: prodigy(estim_lr0=0.0), ValueError, "prodigy: estim_lr0 must be in (0, inf], got 0.0"),
    (lambda: prodigy(eps=-1e-8), ValueError, "prodigy: eps must be in [0, inf], got -1e-08"),
    (lambda: prodigy(weight_decay=-0.1), ValueError, "prodigy: weight_decay must be in [0, inf]"),
    (lambda: prodigy(estim_lr_coef=-1), ValueError, "prodigy: estim_lr_coef must be in [0, inf]"),
    (lambda: dadapt_adamw(betas=(1.2, 0.9)), ValueError, "dadapt_adamw: betas[0] must be in"),
    (lambda: dadapt_adamw(estim_lr0=-1.0), ValueError, "dadapt_adamw: estim_lr0 must be in"),
    (lambda: dadapt_adamw(eps=-1.0), ValueError, "dadapt_adamw: eps must be in [0, inf], got -1.0"),
    (lambda: dowg(eps=-1.0), ValueError, "dowg: eps must be in [0, inf], got -1.0"),
    (lambda: dowg(init_estim_sq_dist=-2.0), ValueError, "dowg: init_estim_sq_dist must be in"),
    (lambda: dowg(weight_decay=-1.0), ValueError, "dowg: weight_decay must be"),
]  # fmt: skip


@pytest.mark.parametrize("i", range(len(BAD)))
def test_bad_arguments_are_named(i):
    build, kind, message = BAD[i]
    with pytest.raises(kind) as e:
        build()
    assert str(e.value).startswith(message), str(e.value)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_update_without_params_is_refused(name):
    opt = MAKERS[name][0]()
    p = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="update needs params"):
        opt.update(p, opt.init(p))


# ----------------------------------------------------------------------------------------------
# Digits.

DIGITS = {"prodigy": prodigy, "dadapt_adamw": dadapt_adamw, "dowg": dowg}


@pytest.mark.parametrize("name", sorted(DIGITS))
def test_digits_mlp_reaches_95_percent(name):
    acc = demo_accuracy(DIGITS[name]())  # the defaults, learning rate 1 (no tuning)
    assert acc >= 0.95, (name, acc)


@pytest.mark.parametrize("name", ["prodigy", "dadapt_adamw"])
def test_float16_params_keep_float32_moments_and_follow_float32(name):
    # d·g with d = 1e-6 is below float16's normal range (and its square flushes to zero): the
    # moments live in float32, so two float16 steps follow the float32 run to float16 accuracy.
    make = {"prodigy": gradtx.prodigy, "dadapt_adamw": gradtx.dadapt_adamw}[name]
    runs = {}
    for dtype in (jnp.float16, jnp.float32):
        p = {"w": (jnp.arange(6.0).reshape(3, 2) / 3 - 1).astype(dtype)}
        opt = make(1.0)
        state = opt.init(p)
        for t in range(2):
            g = jax.tree_util.tree_map(lambda x, t=t: (0.5 * x + 0.1 * (t + 1)).astype(x.dtype), p)
            u, state = opt.update(g, state, p)
            p = gradtx.apply_updates(p, u)
        runs[dtype] = (p, state)
    p16, s16 = runs[jnp.float16]
    assert s16.exp_avg["w"].dtype == s16.exp_avg_sq["w"].dtype == jnp.float32
    np.testing.assert_allclose(
        np.asarray(p16["w"], np.float64), np.asarray(runs[jnp.float32][0]["w"]), atol=2e-3
    )


def test_float64_hyperparameters_keep_float32_state_under_x64(x64):
    # With x64 on, a float64 coefficient must not promote the float32 state (a scan carry or a
    # jitted step would change type after one step).
    params = {"w": jnp.ones((2, 2), jnp.float32)}
    g = {"w": jnp.full((2, 2), 0.5, jnp.float32)}
    f64 = np.float64
    for opt in (
        gradtx.prodigy(f64(1.0), eps=f64(1e-8), estim_lr_coef=f64(2.0), weight_decay=f64(0.1)),
        gradtx.dadapt_adamw(f64(1.0), eps=f64(1e-8), weight_decay=f64(0.1)),
        gradtx.dowg(f64(1.0), eps=f64(1e-4)),
    ):
        state = opt.init(params)
        want = jax.tree_util.tree_map(lambda a: a.dtype, state)
        for _ in range(2):
            u, state = opt.update(g, state, params)
            assert jax.tree_util.tree_map(lambda a: a.dtype, state) == want
            assert u["w"].dtype == jnp.float32
