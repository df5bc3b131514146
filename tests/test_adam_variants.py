"""RAdam, AdaBelief, Yogi, Adan, NovoGrad, Lion, Optimistic Adam: against their papers and optax.

Each NumPy reference below is written from the cited algorithm box (float64, leaf by leaf, never
calling gradtx) and must match gradtx for 200 steps to rtol 1e-10 under x64. Each optimizer
must also match optax's same-named optimizer for 200 steps in float32 to rtol 1e-5 (with the
documented argument where the two differ).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import F32_ORACLE_ATOL, random_problem

import gradtx

STEPS = 200


# ---------------------------------------------------------------------------------------------
# Drivers.


def _leaves(tree):
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]


def run_gradtx(opt, params, grad, steps=STEPS):
    """Iterates of a gradtx optimizer (jitted update, NumPy gradient oracle), as leaf lists."""
    p = jax.tree_util.tree_map(jnp.asarray, params)
    state = opt.init(p)
    step = jax.jit(lambda g, s, p: _apply(gradtx.apply_updates, p, *opt.update(g, s, p)))
    out = []
    for t in range(steps):
        g = grad(jax.tree_util.tree_map(np.asarray, p), t)
        p, state = step(g, state, p)
        out.append(_leaves(p))
    return out


def _apply(apply, params, updates, state):
    return apply(params, updates), state


def run_numpy(step, params, grad, steps=STEPS):
    """Iterates of a NumPy reference ``step(thetas, gs, t, mem) -> thetas`` (lists of leaves,
    ``t`` from 1)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    thetas = [np.array(x, np.float64) for x in leaves]
    mem: dict = {}
    out = []
    for t in range(1, steps + 1):
        gs = jax.tree_util.tree_leaves(grad(jax.tree_util.tree_unflatten(treedef, thetas), t - 1))
        thetas = step([x.copy() for x in thetas], [np.asarray(g, np.float64) for g in gs], t, mem)
        out.append([x.copy() for x in thetas])
    return out


def run_optax(opt, params, grad, steps=STEPS):
    p = jax.tree_util.tree_map(jnp.asarray, params)
    state = opt.init(p)
    step = jax.jit(lambda g, s, p: _apply(optax.apply_updates, p, *opt.update(g, s, p)))
    out = []
    for t in range(steps):
        g = grad(jax.tree_util.tree_map(np.asarray, p), t)
        p, state = step(g, state, p)
        out.append(_leaves(p))
    return out


def assert_close(got, ref, rtol, atol):
    for t, (a, b) in enumerate(zip(got, ref, strict=True)):
        for x, y in zip(a, b, strict=True):
            assert np.all(np.isfinite(y)), f"reference not finite at step {t + 1}"
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=f"step {t + 1}")


def check_paper(opt, ref_step, seed=0):
    params, grad = random_problem(seed)
    assert_close(run_gradtx(opt, params, grad), run_numpy(ref_step, params, grad), 1e-10, 1e-12)


def check_optax(opt, oracle, seed=1, atol=F32_ORACLE_ATOL):
    params, grad = random_problem(seed, np.float32)
    got, ref = run_gradtx(opt, params, grad), run_optax(oracle, params, grad)
    assert_close(got, ref, 1e-5, atol)


def per_leaf(fn):
    """A reference written for one array, applied to every leaf with its own memory."""

    def step(thetas, gs, t, mem):
        return [
            fn(th, g, t, mem.setdefault(i, {"i": i}))
            for i, (th, g) in enumerate(zip(thetas, gs, strict=True))
        ]

    return step


# ---------------------------------------------------------------------------------------------
# NumPy references, written from the papers.


def np_radam(lr, b1, b2, eps, threshold):
    """Liu et al. 2020, Algorithm 2 (the rectification term r_t, eq. after line 8)."""
    rho_inf = 2.0 / (1.0 - b2) - 1.0

    def fn(theta, g, t, mem):
        m = b1 * mem.get("m", 0.0) + (1 - b1) * g
        v = b2 * mem.get("v", 0.0) + (1 - b2) * g * g
        mem["m"], mem["v"] = m, v
        m_hat = m / (1 - b1**t)
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho > threshold:
            l_t = 1.0 / (np.sqrt(v / (1 - b2**t)) + eps)
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            return theta - lr * r * m_hat * l_t
        return theta - lr * m_hat

    return per_leaf(fn)


def np_adabelief(lr, b1, b2, eps, eps_root):
    """Zhuang et al. 2020, Algorithm 2: s_t = β2 s + (1 − β2)(g − m_t)² + ε."""

    def fn(theta, g, t, mem):
        m = b1 * mem.get("m", 0.0) + (1 - b1) * g
        s = b2 * mem.get("s", 0.0) + (1 - b2) * (g - m) ** 2 + eps_root
        mem["m"], mem["s"] = m, s
        m_hat, s_hat = m / (1 - b1**t), s / (1 - b2**t)
        return theta - lr * m_hat / (np.sqrt(s_hat) + eps)

    return per_leaf(fn)


def np_yogi(lr, b1, b2, eps, v0):
    """Zaheer et al. 2018, Algorithm 2 (no debiasing; v_0 = 1e-6 as in their experiments)."""

    def fn(theta, g, t, mem):
        m = b1 * mem.get("m", 0.0) + (1 - b1) * g
        v_prev = mem.get("v", v0)
        v = v_prev - (1 - b2) * np.sign(v_prev - g * g) * g * g
        mem["m"], mem["v"] = m, v
        return theta - lr * m / (np.sqrt(v) + eps)

    return per_leaf(fn)


def np_adan(lr, b1, b2, b3, eps, eps_root, wd, decays=None):
    """Xie et al. 2022, Algorithm 1 with the paper's β = 1 − b, m_0 = g_0, n_0 = g_0²,
    v_0 = 0, v_1 = g_1 − g_0, and the proximal step of line 7."""
    p1, p2, p3 = 1 - b1, 1 - b2, 1 - b3  # the paper's betas
    rate = lr if callable(lr) else (lambda t: lr)

    def fn(theta, g, t, mem):
        if t == 1:
            m, v, n = g.copy(), np.zeros_like(g), g * g
        else:
            d = g - mem["g"]
            m = (1 - p1) * mem["m"] + p1 * g
            v = d if t == 2 else (1 - p2) * mem["v"] + p2 * d
            n = (1 - p3) * mem["n"] + p3 * (g + (1 - p2) * d) ** 2
        mem.update(m=m, v=v, n=n, g=g)
        eta = rate(t) / (np.sqrt(n + eps_root) + eps)
        lam = wd if decays is None or decays[mem["i"]] else 0.0
        return (theta - eta * (m + (1 - p2) * v)) / (1 + lam * rate(t))

    return per_leaf(fn)


def np_novograd(lr, b1, b2, eps, wd, decays=None):
    """Ginsburg et al. 2019, Algorithm 1 (per layer; v_1 = ‖g_1‖², m_1 = g_1/√v_1 + d w_1)."""

    def fn(theta, g, t, mem):
        sq = np.sum(g * g)
        v = sq if t == 1 else b2 * mem["v"] + (1 - b2) * sq
        lam = wd if decays is None or decays[mem["i"]] else 0.0
        a = g / (np.sqrt(v) + eps) + lam * theta
        m = a if t == 1 else b1 * mem["m"] + a
        mem.update(v=v, m=m)
        return theta - lr * m

    return per_leaf(fn)


def np_lion(lr, b1, b2, wd, decays=None):
    """Chen et al. 2023, Algorithm 2: c = β1 m + (1 − β1) g; θ ← θ − η (sign c + λ θ)."""

    def step(thetas, gs, t, mem):
        out = []
        for i, (theta, g) in enumerate(zip(thetas, gs, strict=True)):
            m = mem.get(i, 0.0)
            c = b1 * m + (1 - b1) * g
            lam = wd if decays is None or decays[i] else 0.0
            out.append(theta - lr * (np.sign(c) + lam * theta))
            mem[i] = b2 * m + (1 - b2) * g
        return out

    return step


def np_optimistic_adam(lr, optimism, b1, b2, eps):
    """Daskalakis et al. 2018, Algorithm 1 (Optimistic Adam):
    θ_t = θ_{t−1} − 2η m̂_t/(√v̂_t + ε) + η m̂_{t−1}/(√v̂_{t−1} + ε), the first step −η û_1."""

    def fn(theta, g, t, mem):
        m = b1 * mem.get("m", 0.0) + (1 - b1) * g
        v = b2 * mem.get("v", 0.0) + (1 - b2) * g * g
        u = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        prev = mem.get("u", u)
        mem.update(m=m, v=v, u=u)
        return theta - (lr + optimism) * u + optimism * prev

    return per_leaf(fn)


# ---------------------------------------------------------------------------------------------
# Paper tests (x64).


@pytest.mark.parametrize("threshold", [4.0, 5.0])
def test_radam_matches_paper(x64, threshold):
    check_paper(
        gradtx.radam(0.01, threshold=threshold), np_radam(0.01, 0.9, 0.999, 1e-8, threshold)
    )


def test_radam_matches_paper_other_betas(x64):
    opt = gradtx.radam(0.02, b1=0.8, b2=0.99, eps=1e-6, threshold=4.0)
    check_paper(opt, np_radam(0.02, 0.8, 0.99, 1e-6, 4.0))


@pytest.mark.parametrize("eps", [1e-16, 1e-6])
def test_adabelief_matches_paper(x64, eps):
    check_paper(
        gradtx.adabelief(0.01, eps=eps, eps_root=eps), np_adabelief(0.01, 0.9, 0.999, eps, eps)
    )


def test_yogi_matches_paper(x64):
    check_paper(gradtx.yogi(0.01), np_yogi(0.01, 0.9, 0.999, 1e-3, 1e-6))


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adan_matches_paper(x64, wd):
    opt = gradtx.adan(0.01, eps=1e-8, eps_root=1e-8, weight_decay=wd)
    check_paper(opt, np_adan(0.01, 0.98, 0.92, 0.99, 1e-8, 1e-8, wd))


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_novograd_matches_paper(x64, wd):
    check_paper(gradtx.novograd(0.01, weight_decay=wd), np_novograd(0.01, 0.9, 0.25, 1e-6, wd))


MASK = {"dense": {"w": True, "b": False}, "scale": False}


def test_adan_weight_decay_mask_and_schedule(x64):
    decays = jax.tree_util.tree_leaves(MASK)
    check_paper(
        gradtx.adan(0.01, weight_decay=0.3, mask=MASK),
        np_adan(0.01, 0.98, 0.92, 0.99, 1e-8, 1e-8, 0.3, decays),
    )
    # A learning-rate schedule reaches both the step and the proximal decay (t counts from 0).
    lr = lambda count: 0.02 / (1.0 + 0.01 * count)  # noqa: E731
    check_paper(
        gradtx.adan(lr, weight_decay=0.3),
        np_adan(lambda t: 0.02 / (1.0 + 0.01 * (t - 1)), 0.98, 0.92, 0.99, 1e-8, 1e-8, 0.3),
    )


def test_novograd_weight_decay_mask(x64):
    decays = jax.tree_util.tree_leaves(MASK)
    check_paper(
        gradtx.novograd(0.01, weight_decay=0.05, mask=MASK),
        np_novograd(0.01, 0.9, 0.25, 1e-6, 0.05, decays),
    )


def test_lion_matches_paper(x64):
    check_paper(gradtx.lion(1e-3, weight_decay=0.1), np_lion(1e-3, 0.9, 0.99, 0.1))


def test_lion_weight_decay_mask(x64):
    params, _ = random_problem(0)
    mask = {"dense": {"w": True, "b": False}, "scale": False}
    leaves_mask = jax.tree_util.tree_leaves(mask)
    check_paper(
        gradtx.lion(1e-3, weight_decay=0.5, mask=mask), np_lion(1e-3, 0.9, 0.99, 0.5, leaves_mask)
    )


# ---------------------------------------------------------------------------------------------
# optax tests (float32).


def test_radam_matches_optax():
    # RAdam's ρ∞ = 2/(1 − β2) − 1 and its bias correction amplify optax's mixed 1 − β2 (float64)
    # and β2^t (float32): its float32 run is 1.2e-4 from the float64 formula after 200 steps,
    # gradtx's 4e-6 (README, "One set of numbers"); the formula is pinned in float64 above.
    check_optax(gradtx.radam(0.01), optax.radam(0.01), atol=1e-4)
    check_optax(gradtx.radam(0.01, nesterov=True), optax.radam(0.01, nesterov=True), atol=1e-4)


def test_adabelief_matches_optax():
    check_optax(gradtx.adabelief(0.01), optax.adabelief(0.01))
    check_optax(gradtx.adabelief(0.01, nesterov=True), optax.adabelief(0.01, nesterov=True))


def test_yogi_matches_optax_with_bias_correction():
    check_optax(gradtx.yogi(0.01, bias_correction=True), optax.yogi(0.01))


def test_yogi_default_differs_from_optax():
    params, grad = random_problem(1, np.float32)
    got = run_gradtx(gradtx.yogi(0.01), params, grad, steps=5)
    ref = run_optax(optax.yogi(0.01), params, grad, steps=5)
    assert not np.allclose(got[-1][0], ref[-1][0], rtol=1e-3)


def test_adan_matches_optax_variant():
    check_optax(gradtx.adan(0.01, variant="optax"), optax.adan(0.01))
    check_optax(
        gradtx.adan(0.01, weight_decay=0.1, variant="optax"), optax.adan(0.01, weight_decay=0.1)
    )


def test_novograd_matches_optax():
    check_optax(gradtx.novograd(0.01), optax.novograd(0.01))
    check_optax(gradtx.novograd(0.01, weight_decay=0.01), optax.novograd(0.01, weight_decay=0.01))


def test_lion_matches_optax():
    check_optax(gradtx.lion(1e-3), optax.lion(1e-3))
    mask = {"dense": {"w": True, "b": False}, "scale": False}
    check_optax(
        gradtx.lion(1e-3, weight_decay=0.5, mask=mask),
        optax.lion(1e-3, weight_decay=0.5, mask=mask),
    )


@pytest.mark.parametrize("mode", ["smooth", "refined"])
def test_scale_by_lion_modes_match_optax(mode):
    mine = gradtx.chain(gradtx.scale_by_lion(mode=mode, smooth_beta=2.0), gradtx.scale(-0.01))
    theirs = optax.chain(optax.scale_by_lion(mode=mode, smooth_beta=2.0), optax.scale(-0.01))
    check_optax(mine, theirs)


# ---------------------------------------------------------------------------------------------
# Behaviour.


NAMES = ["radam", "adabelief", "yogi", "adan", "novograd", "lion", "optimistic_adam"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_zero_gradients_in_low_precision(name, dtype):
    opt = getattr(gradtx, name)(1e-2)
    params = {"w": jnp.ones((3, 2), dtype), "b": jnp.zeros((2,), dtype)}
    state = opt.init(params)
    dtypes = jax.tree_util.tree_map(lambda x: x.dtype, state)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    for _ in range(3):
        u, state = jax.jit(opt.update)(zeros, state, params)
        for leaf in jax.tree_util.tree_leaves(u):
            assert leaf.dtype == dtype
            assert bool(jnp.all(jnp.isfinite(leaf.astype(jnp.float32))))
    assert jax.tree_util.tree_map(lambda x: x.dtype, state) == dtypes


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: gradtx.scale_by_radam(b1=1.5), "scale_by_radam: b1"),
        (lambda: gradtx.scale_by_belief(eps=-1.0), "scale_by_belief: eps"),
        (lambda: gradtx.scale_by_yogi(initial_accumulator_value=-1.0), "initial_accumulator"),
        (lambda: gradtx.scale_by_adan(b3=1.0), "scale_by_adan: b3"),
        (lambda: gradtx.scale_by_adan(variant="pytorch"), "variant"),
        (lambda: gradtx.scale_by_novograd(weight_decay=-0.1), "weight_decay"),
        (lambda: gradtx.scale_by_lion(mode="soft"), "mode"),
    ],
)
def test_bad_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_adan_paper_first_step_is_unit():
    tx = gradtx.scale_by_adan(eps=0.0)
    u, _ = tx.update(jnp.array([-3.0, 0.5]), tx.init(jnp.zeros(2)))
    np.testing.assert_allclose(np.asarray(u), [-1.0, 1.0], rtol=1e-6)


def test_signatures_follow_optax():
    import inspect

    pairs = [
        ("radam", "scale_by_radam"),
        ("adabelief", "scale_by_belief"),
        ("yogi", "scale_by_yogi"),
        ("adan", "scale_by_adan"),
        ("novograd", "scale_by_novograd"),
        ("lion", "scale_by_lion"),
        ("optimistic_adam",),
        ("sm3", "scale_by_sm3"),
        ("adafactor", "scale_by_factored_rms"),
    ]
    for names in pairs:
        for name in names:
            ours = inspect.signature(getattr(gradtx, name)).parameters
            theirs = inspect.signature(getattr(optax, name)).parameters
            positional = [
                n for n, p in theirs.items() if p.kind is not inspect.Parameter.KEYWORD_ONLY
            ]
            assert [n for n in ours if n in theirs][: len(positional)] == positional, name
            for n, p in theirs.items():
                assert n in ours, (name, n)
                if p.default is not inspect.Parameter.empty and not inspect.isfunction(p.default):
                    assert ours[n].default == p.default or name in _DOCUMENTED, (name, n)


_DOCUMENTED = {"optimistic_adam"}  # nesterov: False here (the paper), True in optax


def _quiet_optax_optimistic_adam(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return optax.optimistic_adam(*args, **kwargs)


@pytest.mark.parametrize("optimism", [None, 0.02])
def test_optimistic_adam_matches_paper(x64, optimism):
    ref = np_optimistic_adam(0.01, 0.01 if optimism is None else optimism, 0.9, 0.999, 1e-8)
    check_paper(gradtx.optimistic_adam(0.01, optimism), ref)


def test_optimistic_adam_matches_optax_with_nesterov():
    check_optax(gradtx.optimistic_adam(0.01, nesterov=True), _quiet_optax_optimistic_adam(0.01))
    check_optax(
        gradtx.optimistic_adam(0.01, 0.005, nesterov=False),
        _quiet_optax_optimistic_adam(0.01, 0.005, nesterov=False),
    )
