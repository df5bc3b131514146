"""Layer-wise (LAMB, LARS, Fromage, block scalings), sign (signSGD, Signum, Rprop), noisy and
optimistic methods against float64 NumPy written from each paper's algorithm box (200 steps,
rtol 1e-10 under x64), and against optax's same-named optimizer (200 steps, float32, rtol 1e-5).

The references act on the list of parameter blocks (the leaves of ``random_problem``'s pytree)
and never call gradtx.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _stepping import assert_trees_close, run_library, run_numpy
from conftest import random_problem

import gradtx

STEPS = 200


def _norm(x):
    return float(np.sqrt(np.sum(np.square(x))))


def _check_paper(opt, init_fn, step_fn, seed=0):
    params, grad = random_problem(seed)
    ours = run_library(opt, params, grad, STEPS, jnp.float64)
    ref = run_numpy(init_fn, step_fn, params, grad, STEPS)
    assert_trees_close(ours, ref, rtol=1e-10)
    # The run must have moved: a method that did nothing would pass trivially otherwise.
    moved = max(np.max(np.abs(a - b)) for a, b in zip(_leaves(ref), _leaves(params), strict=True))
    assert moved > 1e-3


def _leaves(tree):
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]


def _check_optax(ours, theirs, seed=1, rtol=1e-5, atol=1e-6):
    params, grad = random_problem(seed)
    a = run_library(ours, params, grad, STEPS, jnp.float32)
    b = run_library(theirs, params, grad, STEPS, jnp.float32, lib="optax")
    assert_trees_close(a, b, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------------------------
# Float64 references from the papers.


def _lamb_ref(lr, b1, b2, eps, wd):
    """You et al. 2020, Algorithm 2 (LAMB), φ = identity: m, v as Adam with bias correction,
    r = m̂/(√v̂ + ε), x ← x − η ‖x‖/‖r + λx‖ (r + λx), per layer."""

    def init(xs):
        return {"m": [np.zeros_like(x) for x in xs], "v": [np.zeros_like(x) for x in xs]}

    def step(xs, gs, st, t, value):
        k = t + 1
        out = []
        for i, (x, g) in enumerate(zip(xs, gs, strict=True)):
            st["m"][i] = b1 * st["m"][i] + (1 - b1) * g
            st["v"][i] = b2 * st["v"][i] + (1 - b2) * g * g
            mh = st["m"][i] / (1 - b1**k)
            vh = st["v"][i] / (1 - b2**k)
            r = mh / (np.sqrt(vh) + eps)
            d = r + wd * x
            out.append(x - lr * _norm(x) / _norm(d) * d)
        return out, st

    return init, step


def test_lamb_matches_paper(x64):
    init, step = _lamb_ref(0.05, 0.9, 0.999, 1e-6, 0.01)
    _check_paper(gradtx.lamb(0.05, weight_decay=0.01), init, step)


def _lars_ref(lr, wd, tc, mu):
    """You, Gitman & Ginsburg 2017, Algorithm 1 (LARS): λ = η ‖w‖ / (‖∇L‖ + β‖w‖);
    v ← m v + γ λ (∇L + β w); w ← w − v."""

    def init(xs):
        return [np.zeros_like(x) for x in xs]

    def step(xs, gs, vs, t, value):
        out = []
        for i, (w, g) in enumerate(zip(xs, gs, strict=True)):
            local = tc * _norm(w) / (_norm(g) + wd * _norm(w))
            vs[i] = mu * vs[i] + lr * local * (g + wd * w)
            out.append(w - vs[i])
        return out, vs

    return init, step


def test_lars_matches_paper(x64):
    init, step = _lars_ref(lr=2.0, wd=0.05, tc=0.02, mu=0.9)
    opt = gradtx.lars(2.0, weight_decay=0.05, trust_coefficient=0.02, momentum=0.9)
    _check_paper(opt, init, step)


def _fromage_ref(lr):
    """Bernstein et al. 2020, Algorithm 1 (Fromage): W ← (W − η ‖W‖/‖g‖ g) / √(1 + η²)."""

    def step(xs, gs, st, t, value):
        shrink = 1 / np.sqrt(1 + lr**2)
        out = [(w - lr * _norm(w) / _norm(g) * g) * shrink for w, g in zip(xs, gs, strict=True)]
        return out, st

    return (lambda xs: None), step


def test_fromage_matches_paper(x64):
    init, step = _fromage_ref(0.05)
    _check_paper(gradtx.fromage(0.05), init, step)


def test_sign_sgd_matches_paper(x64):
    """Bernstein et al. 2018, Algorithm 1 (signSGD): x ← x − δ sign(g)."""

    def step(xs, gs, st, t, value):
        return [x - 0.01 * np.sign(g) for x, g in zip(xs, gs, strict=True)], st

    _check_paper(gradtx.sign_sgd(0.01), lambda xs: None, step)


def test_signum_matches_paper(x64):
    """Bernstein et al. 2018, Algorithm 3 (Signum): m ← β m + (1 − β) g; x ← x − δ sign(m)."""
    beta, lr = 0.8, 0.01

    def init(xs):
        return [np.zeros_like(x) for x in xs]

    def step(xs, gs, ms, t, value):
        ms = [beta * m + (1 - beta) * g for m, g in zip(ms, gs, strict=True)]
        return [x - lr * np.sign(m) for x, m in zip(xs, ms, strict=True)], ms

    _check_paper(gradtx.signum(lr, beta), init, step)


def _irprop_minus_ref(lr, eta_minus, eta_plus, dmin, dmax):
    """Igel & Hüsken 2003, the iRprop− algorithm box: per weight, if g_prev·g > 0:
    Δ ← min(Δη+, Δmax); elif g_prev·g < 0: Δ ← max(Δη−, Δmin), g ← 0;
    w ← w − sign(g) Δ; g_prev ← g."""

    def init(xs):
        return {"d": [np.full_like(x, lr) for x in xs], "gp": [np.zeros_like(x) for x in xs]}

    def step(xs, gs, st, t, value):
        out = []
        for i, (w, g) in enumerate(zip(xs, gs, strict=True)):
            w, g, d, gp = w.copy(), g.copy(), st["d"][i].copy(), st["gp"][i]
            for j in np.ndindex(w.shape):
                if gp[j] * g[j] > 0:
                    d[j] = min(d[j] * eta_plus, dmax)
                elif gp[j] * g[j] < 0:
                    d[j] = max(d[j] * eta_minus, dmin)
                    g[j] = 0.0
                w[j] = w[j] - np.sign(g[j]) * d[j]
            st["d"][i], st["gp"][i] = d, g
            out.append(w)
        return out, st

    return init, step


def test_rprop_matches_paper(x64):
    args = (0.05, 0.5, 1.2, 1e-6, 50.0)
    init, step = _irprop_minus_ref(*args)
    _check_paper(gradtx.rprop(*args), init, step)


def test_rprop_step_size_bounds(x64):
    # Tight bounds so that both clips are exercised within 200 steps.
    args = (0.05, 0.3, 1.5, 1e-2, 0.08)
    init, step = _irprop_minus_ref(*args)
    _check_paper(gradtx.rprop(*args), init, step)


def test_optimistic_gradient_descent_matches_paper(x64):
    """Mokhtari, Ozdaglar & Pattathil 2020, generalised OGDA:
    x_{k+1} = x_k − η ((α + β) g_k − β g_{k−1}), with g_{−1} = g_0 (x_{−1} = x_0)."""
    lr, a, b = 0.05, 0.7, 0.4

    def step(xs, gs, prev, t, value):
        prev = gs if prev is None else prev
        out = [x - lr * ((a + b) * g - b * p) for x, g, p in zip(xs, gs, prev, strict=True)]
        return out, gs

    _check_paper(gradtx.optimistic_gradient_descent(lr, a, b), lambda xs: None, step)


def test_block_scalings_match_formula(x64):
    """No paper: the formulas in the docstrings. u ← max(‖θ‖, s) g, u ← max(rms(θ), s) g,
    u ← c g / (‖g‖_global + ε), each followed by −α."""
    lr = 0.01

    def block_norm(xs, gs, st, t, value):
        return [x - lr * max(_norm(x), 1e-3) * g for x, g in zip(xs, gs, strict=True)], st

    def block_rms(xs, gs, st, t, value):
        return [
            x - lr * max(np.sqrt(np.mean(x * x)), 1e-3) * g for x, g in zip(xs, gs, strict=True)
        ], st

    def normalized(xs, gs, st, t, value):
        n = np.sqrt(sum(np.sum(g * g) for g in gs))
        return [x - lr * 2.0 * g / (n + 1e-6) for x, g in zip(xs, gs, strict=True)], st

    lr_tx = gradtx.scale_by_learning_rate(lr)
    cases = [
        (gradtx.scale_by_param_block_norm(), block_norm),
        (gradtx.scale_by_param_block_rms(), block_rms),
        (gradtx.normalize_by_update_norm(2.0), normalized),
    ]
    for tx, step in cases:
        _check_paper(gradtx.chain(tx, lr_tx), lambda xs: None, step)


def test_trust_ratio_options_match_formula(x64):
    """u ← c max(‖θ‖, n) / (max(‖g‖, n) + ε) g with every option away from its default."""
    lr, n, c, e = 0.02, 0.3, 0.5, 0.1

    def step(xs, gs, st, t, value):
        out = []
        for x, g in zip(xs, gs, strict=True):
            out.append(x - lr * c * max(_norm(x), n) / (max(_norm(g), n) + e) * g)
        return out, st

    opt = gradtx.chain(gradtx.scale_by_trust_ratio(n, c, e), gradtx.scale_by_learning_rate(lr))
    _check_paper(opt, lambda xs: None, step)


# ----------------------------------------------------------------------------------------------
# Against optax, float32.


def _mask(p):
    return {"dense": {"w": True, "b": False}, "scale": True}


OPTAX_CASES = [
    ("lamb", gradtx.lamb(0.05), optax.lamb(0.05)),
    (
        "lamb_wd_mask",
        gradtx.lamb(0.05, weight_decay=0.1, mask=_mask),
        optax.lamb(0.05, weight_decay=0.1, mask=_mask),
    ),
    ("lars_default", gradtx.lars(0.5), optax.lars(0.5)),
    (
        "lars_optax_norm",
        gradtx.lars(
            0.5,
            weight_decay=0.05,
            weight_decay_mask=_mask,
            trust_coefficient=0.02,
            eps=1e-3,
            trust_ratio_mask={"dense": True, "scale": False},
            nesterov=True,
            combined_norm=True,
        ),
        optax.lars(
            0.5,
            weight_decay=0.05,
            weight_decay_mask=_mask,
            trust_coefficient=0.02,
            eps=1e-3,
            trust_ratio_mask={"dense": True, "scale": False},
            nesterov=True,
        ),
    ),
    ("fromage", gradtx.fromage(0.05), optax.fromage(0.05)),
    ("sign_sgd", gradtx.sign_sgd(0.01), optax.sign_sgd(0.01)),
    ("signum", gradtx.signum(0.01, 0.8), optax.signum(0.01, 0.8)),
    ("rprop", gradtx.rprop(0.05, lagged=True), optax.rprop(0.05)),
    (
        "rprop_bounds",
        gradtx.rprop(0.05, 0.3, 1.5, 1e-2, 0.08, lagged=True),
        optax.rprop(0.05, 0.3, 1.5, 1e-2, 0.08),
    ),
    ("noisy_sgd", gradtx.noisy_sgd(0.01, key=3), optax.noisy_sgd(0.01, key=3)),
    (
        "optimistic_gradient_descent",
        gradtx.optimistic_gradient_descent(0.05, 0.7, 0.4),
        optax.optimistic_gradient_descent(0.05, 0.7, 0.4),
    ),
]


@pytest.mark.parametrize("name,ours,theirs", OPTAX_CASES, ids=[c[0] for c in OPTAX_CASES])
def test_matches_optax(name, ours, theirs):
    _check_optax(ours, theirs)


BLOCK_CASES = [
    ("scale_by_trust_ratio", (), {}),
    ("scale_by_trust_ratio", (0.3, 0.5, 0.1), {}),
    ("scale_by_param_block_norm", (), {}),
    ("scale_by_param_block_rms", (0.5,), {}),
    ("normalize_by_update_norm", (2.0, 1e-3), {}),
    ("scale_by_sign", (), {}),
    ("scale_by_optimistic_gradient", (0.7, 0.4), {}),
]


@pytest.mark.parametrize("name,args,kwargs", BLOCK_CASES, ids=[c[0] for c in BLOCK_CASES])
def test_building_block_matches_optax(name, args, kwargs):
    ours = gradtx.chain(getattr(gradtx, name)(*args, **kwargs), gradtx.scale_by_learning_rate(0.01))
    theirs = optax.chain(getattr(optax, name)(*args, **kwargs), optax.scale_by_learning_rate(0.01))
    _check_optax(ours, theirs)


# ----------------------------------------------------------------------------------------------
# Noise: statistics (streams are our own), the deterministic part, reproducibility.


def _add_noise_draws(seed, shapes, steps):
    """Standard normal draws of ``add_noise``'s stream, reproduced with plain ``jax.random``:
    the key starts as ``jax.random.key(seed)``; at each step ``key, sample = split(key)``, then
    ``split(sample, n_leaves)`` gives one key per leaf (in leaf order) and each leaf draws
    ``normal(k, shape, float64)``. Returns ``draws[t][i]`` as float64 NumPy arrays."""

    def one(key, _):
        key, sample = jax.random.split(key)
        ks = jax.random.split(sample, len(shapes))
        return key, [jax.random.normal(k, s, jnp.float64) for k, s in zip(ks, shapes, strict=True)]

    _, stacked = jax.lax.scan(one, jax.random.key(seed), None, length=steps)
    stacked = [np.asarray(x, np.float64) for x in stacked]
    return [[x[t] for x in stacked] for t in range(steps)]


def test_noisy_sgd_matches_paper(x64):
    """Neelakantan et al. 2015, Section 2, eq. (1): g_t ← g_t + N(0, σ_t²),
    σ_t² = η / (1 + t)^γ, at every training step t = 0, 1, ... (so σ_0² = η); then plain SGD
    θ ← θ − α g_t. The normal draws are gradtx's own stream, reproduced with ``jax.random``."""
    lr, eta, gamma, seed = 0.05, 0.3, 0.55, 3
    params, _ = random_problem(0)
    shapes = [np.shape(x) for x in jax.tree_util.tree_leaves(params)]
    draws = _add_noise_draws(seed, shapes, STEPS)

    def step(xs, gs, st, t, value):
        sigma = np.sqrt(eta / (1 + t) ** gamma)
        out = [x - lr * (g + sigma * z) for x, g, z in zip(xs, gs, draws[t], strict=True)]
        return out, st

    _check_paper(gradtx.noisy_sgd(lr, eta, gamma, key=seed), lambda xs: None, step)


def test_add_noise_statistics():
    eta, gamma, n = 0.3, 0.55, 200_000
    tx = gradtx.add_noise(eta, gamma, key=7)
    state = tx.init(jnp.zeros(n))
    update = jax.jit(tx.update)
    g = jnp.full(n, 2.0)
    for t in range(4):
        u, state = update(g, state)
        noise = np.asarray(u, np.float64) - 2.0
        sigma = np.sqrt(eta / (1 + t) ** gamma)  # Neelakantan et al. 2015: σ_t² = η/(1+t)^γ
        assert abs(np.mean(noise)) < 5 * sigma / np.sqrt(n)
        assert abs(np.std(noise) / sigma - 1) < 0.01
        # Roughly Gaussian: about 68.3% within one σ.
        assert abs(np.mean(np.abs(noise) < sigma) - 0.6827) < 0.005


def test_noisy_sgd_deterministic_part_and_reproducibility():
    params, grad = random_problem(2)
    p = jax.tree_util.tree_map(jnp.asarray, params)
    g = jax.tree_util.tree_map(jnp.asarray, grad(params, 0))
    # eta = 0: exactly SGD, θ ← θ − α g.
    opt = gradtx.noisy_sgd(0.1, eta=0.0, key=1)
    u, _ = opt.update(g, opt.init(p), p)
    for a, b in zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(g), strict=True):
        np.testing.assert_allclose(np.asarray(a), -0.1 * np.asarray(b), rtol=1e-6)

    # Same key: same noise; another key: different noise. The key lives in the state.
    def first_update(o):
        return np.asarray(o.update(g, o.init(p), p)[0]["dense"]["w"])

    u1 = first_update(gradtx.noisy_sgd(0.1, key=4))
    u2 = first_update(gradtx.noisy_sgd(0.1, key=4))
    u3 = first_update(gradtx.noisy_sgd(0.1, key=5))
    u4 = first_update(gradtx.noisy_sgd(0.1, seed=4))  # seed= is an alias of key=
    np.testing.assert_array_equal(u1, u2)
    np.testing.assert_array_equal(u1, u4)
    assert not np.allclose(u1, u3)


def test_add_noise_accepts_a_typed_key():
    a = gradtx.add_noise(0.1, 0.55, key=jax.random.key(11))
    b = gradtx.add_noise(0.1, 0.55, key=11)
    ua, _ = a.update(jnp.zeros(5), a.init(jnp.zeros(5)))
    ub, _ = b.update(jnp.zeros(5), b.init(jnp.zeros(5)))
    np.testing.assert_array_equal(np.asarray(ua), np.asarray(ub))


# ----------------------------------------------------------------------------------------------
# Edge cases and errors.


def test_trust_ratio_is_one_for_zero_blocks():
    tx = gradtx.scale_by_trust_ratio()
    p = {"zero": jnp.zeros(3), "w": jnp.array([3.0, 4.0])}
    g = {"zero": jnp.array([1.0, 2.0, 3.0]), "w": jnp.zeros(2)}
    u, _ = tx.update(g, tx.init(p), p)
    np.testing.assert_array_equal(np.asarray(u["zero"]), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(np.asarray(u["w"]), [0.0, 0.0])


def test_lars_paper_and_optax_denominators_differ_only_with_weight_decay():
    params, grad = random_problem(3, dtype=np.float32)
    g = grad(params, 0)
    for wd, same in ((0.0, True), (0.1, False)):
        a = gradtx.lars(1.0, weight_decay=wd, trust_coefficient=0.1)
        b = gradtx.lars(1.0, weight_decay=wd, trust_coefficient=0.1, combined_norm=True)
        ua, _ = a.update(g, a.init(params), params)
        ub, _ = b.update(g, b.init(params), params)
        close = np.allclose(np.asarray(ua["dense"]["w"]), np.asarray(ub["dense"]["w"]))
        assert close == same


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: gradtx.scale_by_rprop(0.1, eta_minus=1.5), "eta_minus"),
        (lambda: gradtx.scale_by_rprop(0.1, eta_plus=0.5), "eta_plus"),
        (lambda: gradtx.scale_by_rprop(-0.1), "learning_rate"),
        (lambda: gradtx.scale_by_trust_ratio(min_norm=-1.0), "min_norm"),
        (lambda: gradtx.scale_by_lars(eps=-1.0), "eps"),
        (lambda: gradtx.lars(0.1, weight_decay=-1.0), "weight_decay"),
        (lambda: gradtx.normalize_by_update_norm(eps=-1.0), "eps"),
        (lambda: gradtx.scale_by_param_block_rms(min_scale=-1.0), "min_scale"),
        (lambda: gradtx.add_noise(-0.1, 0.55), "eta"),
        (lambda: gradtx.add_noise(0.1, 0.55, key=1, seed=2), "key and seed"),
        (lambda: gradtx.signum(0.1, beta=1.5), "signum: beta"),
    ],
)
def test_bad_hyperparameters_are_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "tx",
    [
        gradtx.scale_by_trust_ratio(),
        gradtx.scale_by_lars(),
        gradtx.scale_by_param_block_norm(),
        gradtx.scale_by_param_block_rms(),
    ],
    ids=lambda t: type(t).__name__,
)
def test_params_are_required(tx):
    with pytest.raises(ValueError, match="needs params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_hyperparameters_are_leaves_no_recompile():
    from conftest import count_compilations

    params, grad = random_problem(0, dtype=np.float32)
    g = grad(params, 0)

    @jax.jit
    def step(opt, state, p):
        return opt.update(g, state, p)

    opt = gradtx.lars(0.1, weight_decay=0.01)
    step(opt, opt.init(params), params)
    with count_compilations() as c:
        for lr in (0.2, 0.3):
            o = gradtx.lars(lr, weight_decay=lr / 10)
            step(o, o.init(params), params)
    assert c["n"] == 0
