"""Float64 NumPy references for formula branches the other tests do not reach.

Each reference is written from the formula in the transform's docstring or its paper, never by
calling gradtx, and is chosen so that a plausible wrong formula fails:

* clipping runs whose norms cross the threshold in both directions (a clip that also scales
  small gradients up would pass a test that only ever clips);
* Adafactor's relative step ``ρ_t = min(10⁻², 1/√t)`` at step counts around and beyond 10⁴,
  where it starts to decay;
* options compared elsewhere only with optax (``eps_root``, bias corrections, momentum,
  Nesterov numerators, initial accumulators, Adafactor's momentum and decay rate);
* which form of AdaMax's ε gradtx computes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_problem
from test_formulas import _flat
from test_formulas import run_gradtx as _run_gradtx
from test_formulas import run_numpy as _run_numpy

import gradtx

STEPS = 30


def _leaves(tree):
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]


def run_gradtx(opt, params, grad, steps=STEPS):
    """Parameter iterates of a gradtx optimizer (jitted update), flattened, one row per step."""
    return _run_gradtx(opt, params, grad, steps)


def run_numpy(step, params, grad, steps=STEPS):
    """Iterates of ``step(theta, g, t, mem) -> theta`` on the flattened vector (t from 1)."""
    return _run_numpy(step, params, grad, steps)


def run_numpy_leaves(step, params, grad, steps=STEPS):
    """Iterates of a per-leaf reference ``step(thetas, gs, t, mem) -> thetas`` (t from 1)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    thetas = [np.asarray(x, np.float64) for x in leaves]
    mem: dict = {}
    out = []
    for t in range(1, steps + 1):
        gs = _leaves(grad(jax.tree_util.tree_unflatten(treedef, thetas), t - 1))
        thetas = step(thetas, gs, t, mem)
        out.append(np.concatenate([np.ravel(x) for x in thetas]))
    return np.stack(out)


def assert_close(got, want):
    assert np.all(np.isfinite(want))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# 1. Clipping: norms above and below the threshold in the same run.


def _global_norm_grads():
    """Gradients (pytrees) whose global norms go above and below 1 and back."""
    rng = np.random.default_rng(3)
    norms = [3.0, 0.25, 1.7, 0.6, 0.05, 2.4, 0.9, 1.2]
    out = []
    for n in norms:
        g = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=(5,)), "c": rng.normal(size=())}
        scale = n / np.linalg.norm(_flat(g))
        out.append(jax.tree_util.tree_map(lambda x, s=scale: x * s, g))
    return out


def test_clip_by_global_norm_below_and_above_threshold(x64):
    """u · min(1, c / ‖u‖): gradients below c pass unchanged (never scaled up), above c are
    rescaled to norm c, step after step."""
    c = 1.0
    tx = gradtx.clip_by_global_norm(c)
    state = tx.init(None)
    update = jax.jit(tx.update)
    grads = _global_norm_grads()
    norms = [np.linalg.norm(_flat(g)) for g in grads]
    assert min(norms) < c < max(norms)
    for g in grads:
        u, state = update(g, state)
        v = _flat(g)
        want = v * min(1.0, c / np.linalg.norm(v))
        assert_close(_flat(u), want)


def test_clip_by_global_norm_then_sgd_trajectory(x64):
    """The same clip inside SGD over a run whose gradient norm crosses c in both directions
    (θ ← θ − α u min(1, c/‖u‖)); no adaptive scaling after it to hide a wrong factor."""
    params, grad = random_problem(seed=4)
    c, lr = 2.0, 0.3

    norms = []

    def ref(theta, g, t, mem):
        norms.append(np.linalg.norm(g))
        return theta - lr * g * min(1.0, c / np.linalg.norm(g))

    want = run_numpy(ref, params, grad)
    assert min(norms) < c < max(norms)
    got = run_gradtx(gradtx.chain(gradtx.clip_by_global_norm(c), gradtx.sgd(lr)), params, grad)
    assert_close(got, want)


def test_clip_by_block_rms_blocks_above_and_below(x64):
    """u_i / max(1, rms(u_i) / c) per leaf: blocks with RMS below c are unchanged, blocks above
    are rescaled to RMS c."""
    c = 0.5
    rng = np.random.default_rng(5)
    tx = gradtx.clip_by_block_rms(c)
    state = tx.init(None)
    update = jax.jit(tx.update)
    seen = []
    for scales in [(0.1, 2.0, 0.3), (3.0, 0.2, 0.05), (0.45, 0.55, 4.0)]:
        g = {
            "w": scales[0] * rng.normal(size=(3, 4)),
            "b": scales[1] * rng.normal(size=(6,)),
            "s": np.float64(scales[2]) * rng.normal(),
        }
        u, state = update(g, state)
        for key in g:
            x = np.asarray(g[key], np.float64)
            rms = np.sqrt(np.mean(x * x))
            seen.append(rms / c)
            assert_close(np.asarray(u[key]), x / max(1.0, rms / c))
    assert min(seen) < 1.0 < max(seen)


# ---------------------------------------------------------------------------------------------
# 2. Adafactor's relative step at step counts where 1/√t < 10⁻².


def _with_count(state, n):
    """``state`` with every ``count`` field (in every sub-state) set to ``n``."""
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        if "count" in state._fields and state.count is not None:
            state = state._replace(count=jnp.asarray(n, jnp.asarray(state.count).dtype))
        return type(state)(*(_with_count(s, n) for s in state))
    if isinstance(state, tuple):
        return tuple(_with_count(s, n) for s in state)
    return state


def _adafactor_state_like(state, r0, c0, v0):
    """Replace the factored statistics (row, column, full) of Adafactor's first sub-state."""
    f = state[0]
    return (f._replace(v_row=r0, v_col=c0, v=v0), *state[1:])


def _np_adafactor_step(x_leaves, g_leaves, stats, t, *, c=0.8, eps1=1e-30, eps2=1e-3, d=1.0):
    """One step of Shazeer & Stern 2018, Algorithm 4 (factored matrices, row/column means) and
    Algorithm 5 line 6 (vectors), clipping (line 8), and α_t = max(ε2, RMS(X_{t−1})) ρ_t with
    ρ_t = min(10⁻², 1/√t) (Section 8); t is the 1-based step number of the algorithm."""
    beta = 1.0 - t ** (-c)
    rho = min(1e-2, 1.0 / np.sqrt(t))
    new = []
    for x, g, st in zip(x_leaves, g_leaves, stats, strict=True):
        sq = g * g + eps1
        if x.ndim == 2:
            r = beta * st["R"] + (1 - beta) * sq.mean(axis=1)
            col = beta * st["C"] + (1 - beta) * sq.mean(axis=0)
            v_hat = np.outer(r, col) / r.mean()
        else:
            v_hat = beta * st["V"] + (1 - beta) * sq
        u = g / np.sqrt(v_hat)
        u_hat = u / max(1.0, np.sqrt(np.mean(u * u)) / d)
        new.append(x - max(eps2, np.sqrt(np.mean(x * x))) * rho * u_hat)
    return new, rho


@pytest.mark.parametrize("count", [0, 9_998, 9_999, 10_000, 10_001, 39_999, 40_000])
def test_adafactor_relative_step_decays_after_ten_thousand_steps(x64, count):
    """With ``count`` updates done, the next is the algorithm's step t = count + 1 (Algorithm 4
    runs ``for t = 1 to T`` and ρ_t, β̂_2t use that t): ρ = 10⁻² up to t = 10⁴, then 1/√t."""
    rng = np.random.default_rng(7)
    x = {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=(5,))}
    # "b" is large enough to be clipped (RMS(U) ≈ 2), "w" is not (RMS(U) ≈ 0.8).
    g = {"w": rng.normal(size=(3, 4)), "b": 3.0 * rng.normal(size=(5,))}
    # Non-zero statistics, so the decay β̂_t (also taken at t = count + 1) enters the update.
    r0 = 2.0 + rng.random(3)
    c0 = 2.0 + rng.random(4)
    v0 = 1.0 + rng.random(5)
    opt = gradtx.adafactor(min_dim_size_to_factor=3)
    state = opt.init(x)
    state = _with_count(state, count)
    state = _adafactor_state_like(
        state,
        {"w": jnp.asarray(r0), "b": state[0].v_row["b"]},
        {"w": jnp.asarray(c0), "b": state[0].v_col["b"]},
        {"w": state[0].v["w"], "b": jnp.asarray(v0)},
    )
    u, _ = jax.jit(opt.update)(g, state, x)
    got = gradtx.apply_updates(x, u)

    t = count + 1
    keys = ["b", "w"]  # jax's (sorted) leaf order
    stats = [{"V": v0}, {"R": r0, "C": c0}]
    want, _ = _np_adafactor_step([x[k] for k in keys], [g[k] for k in keys], stats, t)
    for k, w in zip(keys, want, strict=True):
        assert_close(np.asarray(got[k]), w)


# ---------------------------------------------------------------------------------------------
# 3. Options so far compared only with optax, against their formulas.


def np_adam_eps_root(lr, b1, b2, eps, eps_root):
    """Kingma & Ba Algorithm 1 with ε_root inside the root of the *corrected* moment:
    θ ← θ − α m̂ / (sqrt(v̂ + ε_root) + ε)."""

    def step(theta, g, t, mem):
        m = b1 * mem.get("m", 0.0) + (1 - b1) * g
        v = b2 * mem.get("v", 0.0) + (1 - b2) * g * g
        mem["m"], mem["v"] = m, v
        mh, vh = m / (1 - b1**t), v / (1 - b2**t)
        return theta - lr * mh / (np.sqrt(vh + eps_root) + eps)

    return step


def np_rms(lr, decay, eps, g0=0.0, eps_in_sqrt=True, bias=False, momentum=None, nesterov=False):
    """RMSProp: G ← β G + (1−β) g², G₀ = g0; Ĝ = G / (1 − β^t) if ``bias``; s = g / sqrt(Ĝ + ε)
    or g / (sqrt(Ĝ) + ε); then v ← ρ v − α s and θ ← θ + v (Nesterov: θ ← θ − α s + ρ v) or,
    without momentum, θ ← θ − α s."""

    def step(theta, g, t, mem):
        G = decay * mem.get("G", np.full_like(theta, g0)) + (1 - decay) * g * g
        mem["G"] = G
        Gh = G / (1 - decay**t) if bias else G
        s = g / np.sqrt(Gh + eps) if eps_in_sqrt else g / (np.sqrt(Gh) + eps)
        if momentum is None:
            return theta - lr * s
        v = momentum * mem.get("v", 0.0) - lr * s
        mem["v"] = v
        return theta + (momentum * v - lr * s if nesterov else v)

    return step


def _nadam_numerator(m, g, b1, t):
    """Nadam's look-ahead numerator β1 m_t / (1 − β1^(t+1)) + (1 − β1) g_t / (1 − β1^t)."""
    return b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)


def np_radam(lr, b1, b2, eps, threshold, nesterov):
    """Liu et al. 2020 Algorithm 2: ρ∞ = 2/(1−β2) − 1, ρ_t = ρ∞ − 2tβ2^t/(1−β2^t); if ρ_t > τ,
    θ ← θ − α r_t m̂ / (sqrt(v̂) + ε) with r_t = sqrt((ρ_t−4)(ρ_t−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρ_t)),
    else θ ← θ − α m̂. ``nesterov``: m̂ is Nadam's numerator."""
    rho_inf = 2 / (1 - b2) - 1

    def step(theta, g, t, mem):
        m = b1 * mem.get("m", 0.0) + (1 - b1) * g
        v = b2 * mem.get("v", 0.0) + (1 - b2) * g * g
        mem["m"], mem["v"] = m, v
        mh = _nadam_numerator(m, g, b1, t) if nesterov else m / (1 - b1**t)
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        mem.setdefault("rhos", []).append(rho)
        if rho > threshold:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            return theta - lr * r * mh / (np.sqrt(v / (1 - b2**t)) + eps)
        return theta - lr * mh

    return step


def np_adabelief(lr, b1, b2, eps, eps_root, nesterov):
    """Zhuang et al. 2020 Algorithm 2: s ← β2 s + (1−β2)(g − m_t)² + ε_root;
    θ ← θ − α m̂ / (sqrt(s / (1 − β2^t)) + ε); ``nesterov``: m̂ is Nadam's numerator."""

    def step(theta, g, t, mem):
        m = b1 * mem.get("m", 0.0) + (1 - b1) * g
        s = b2 * mem.get("s", 0.0) + (1 - b2) * (g - m) ** 2 + eps_root
        mem["m"], mem["s"] = m, s
        mh = _nadam_numerator(m, g, b1, t) if nesterov else m / (1 - b1**t)
        return theta - lr * mh / (np.sqrt(s / (1 - b2**t)) + eps)

    return step


def np_yogi_bias_corrected(lr, b1, b2, eps, eps_root, v0):
    """Yogi (Zaheer et al. 2018) in the bias-corrected form: m₀ = v₀ = v0,
    m ← β1 m + (1−β1) g, v ← v − (1−β2) sign(v − g²) g², θ ← θ − α m̂ / (sqrt(v̂ + ε_root) + ε)
    with m̂ = m / (1 − β1^t), v̂ = v / (1 − β2^t)."""

    def step(theta, g, t, mem):
        m = b1 * mem.get("m", np.full_like(theta, v0)) + (1 - b1) * g
        v_prev = mem.get("v", np.full_like(theta, v0))
        v = v_prev - (1 - b2) * np.sign(v_prev - g * g) * g * g
        mem["m"], mem["v"] = m, v
        mh, vh = m / (1 - b1**t), v / (1 - b2**t)
        return theta - lr * mh / (np.sqrt(vh + eps_root) + eps)

    return step


FORMULA_CASES = [
    (
        "adam_large_eps_root",
        lambda: gradtx.adam(0.05, eps=1e-3, eps_root=0.3),
        np_adam_eps_root(0.05, 0.9, 0.999, 1e-3, 0.3),
    ),
    (
        "scale_by_adam_eps_root",
        lambda: gradtx.chain(
            gradtx.scale_by_adam(b1=0.8, b2=0.95, eps=0.01, eps_root=0.05),
            gradtx.scale_by_learning_rate(0.05),
        ),
        np_adam_eps_root(0.05, 0.8, 0.95, 0.01, 0.05),
    ),
    (
        "rms_bias_correction",
        lambda: gradtx.chain(
            gradtx.scale_by_rms(decay=0.9, eps=0.05, bias_correction=True),
            gradtx.scale_by_learning_rate(0.02),
        ),
        np_rms(0.02, 0.9, 0.05, bias=True),
    ),
    (
        "rms_bias_correction_eps_outside_initial_scale",
        lambda: gradtx.chain(
            gradtx.scale_by_rms(
                decay=0.8, eps=0.05, initial_scale=0.5, eps_in_sqrt=False, bias_correction=True
            ),
            gradtx.scale_by_learning_rate(0.02),
        ),
        np_rms(0.02, 0.8, 0.05, g0=0.5, eps_in_sqrt=False, bias=True),
    ),
    (
        "rmsprop_initial_scale",
        lambda: gradtx.rmsprop(0.02, decay=0.9, eps=1e-3, initial_scale=2.0),
        np_rms(0.02, 0.9, 1e-3, g0=2.0),
    ),
    (
        "rmsprop_momentum",
        lambda: gradtx.rmsprop(0.02, decay=0.9, eps=1e-3, momentum=0.7),
        np_rms(0.02, 0.9, 1e-3, momentum=0.7),
    ),
    (
        "rmsprop_nesterov",
        lambda: gradtx.rmsprop(0.02, decay=0.9, eps=1e-3, momentum=0.7, nesterov=True),
        np_rms(0.02, 0.9, 1e-3, momentum=0.7, nesterov=True),
    ),
    (
        "radam_nesterov",
        lambda: gradtx.radam(0.02, b1=0.9, b2=0.99, eps=1e-3, nesterov=True),
        np_radam(0.02, 0.9, 0.99, 1e-3, 5.0, nesterov=True),
    ),
    (
        "radam_plain_b2_099",
        lambda: gradtx.radam(0.02, b1=0.9, b2=0.99, eps=1e-3),
        np_radam(0.02, 0.9, 0.99, 1e-3, 5.0, nesterov=False),
    ),
    (
        "adabelief_nesterov",
        lambda: gradtx.adabelief(0.02, b1=0.9, b2=0.99, eps=1e-3, eps_root=1e-2, nesterov=True),
        np_adabelief(0.02, 0.9, 0.99, 1e-3, 1e-2, nesterov=True),
    ),
    (
        "yogi_bias_correction",
        lambda: gradtx.yogi(0.02, b1=0.9, b2=0.99, eps=1e-3, bias_correction=True),
        np_yogi_bias_corrected(0.02, 0.9, 0.99, 1e-3, 0.0, 1e-6),
    ),
    (
        "scale_by_yogi_bias_correction_v0_eps_root",
        lambda: gradtx.chain(
            gradtx.scale_by_yogi(
                b1=0.8,
                b2=0.95,
                eps=1e-2,
                eps_root=0.05,
                initial_accumulator_value=0.7,
                bias_correction=True,
            ),
            gradtx.scale_by_learning_rate(0.02),
        ),
        np_yogi_bias_corrected(0.02, 0.8, 0.95, 1e-2, 0.05, 0.7),
    ),
]


@pytest.mark.parametrize("name,make,ref", FORMULA_CASES, ids=[c[0] for c in FORMULA_CASES])
def test_option_formula(x64, name, make, ref):
    params, grad = random_problem(seed=11)
    want = run_numpy(ref, params, grad)
    got = run_gradtx(make(), params, grad)
    assert_close(got, want)


def test_radam_cases_reach_both_branches():
    """ρ_t crosses the threshold τ = 5 within the run (β2 = 0.99: ρ_5 < 5 < ρ_6), so the RAdam
    cases above check both the plain-momentum and the rectified branch."""
    b2 = 0.99
    rho_inf = 2 / (1 - b2) - 1
    rhos = [rho_inf - 2 * t * b2**t / (1 - b2**t) for t in range(1, STEPS + 1)]
    assert rhos[0] < 5.0 < rhos[-1]


def np_adafactor_momentum(min_dim, c, b1, eps1=1e-30, eps2=1e-3, d=1.0):
    """Adafactor (Algorithms 4/5, relative step ρ_t = min(10⁻², 1/√t), decay β̂_t = 1 − t^(−c))
    with momentum on the scaled step: m ← β1 m + (1−β1) α_t Û_t (no bias correction),
    θ ← θ − m."""

    def step(thetas, gs, t, mem):
        beta = 1.0 - t ** (-c)
        rho = min(1e-2, 1.0 / np.sqrt(t))
        out = []
        for i, (x, g) in enumerate(zip(thetas, gs, strict=True)):
            s = mem.setdefault(i, {})
            sq = g * g + eps1
            if x.ndim == 2 and min(x.shape) >= min_dim:
                s["R"] = beta * s.get("R", 0.0) + (1 - beta) * sq.sum(axis=1)
                s["C"] = beta * s.get("C", 0.0) + (1 - beta) * sq.sum(axis=0)
                v_hat = np.outer(s["R"], s["C"]) / s["R"].sum()
            else:
                s["V"] = beta * s.get("V", 0.0) + (1 - beta) * sq
                v_hat = s["V"]
            u = g / np.sqrt(v_hat)
            u_hat = u / max(1.0, np.sqrt(np.mean(u * u)) / d)
            alpha = max(eps2, np.sqrt(np.mean(x * x))) * rho
            s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * alpha * u_hat
            out.append(x - s["m"])
        return out

    return step


@pytest.mark.parametrize("decay_rate,momentum", [(0.5, 0.9), (0.8, 0.5), (0.65, None)])
def test_adafactor_momentum_and_decay_rate(x64, decay_rate, momentum):
    params, grad = random_problem(seed=12)
    # dtype_momentum defaults to float32; float64 keeps the EMA exact for the comparison.
    opt = gradtx.adafactor(
        min_dim_size_to_factor=3,
        decay_rate=decay_rate,
        momentum=momentum,
        dtype_momentum=jnp.float64,
    )
    want = run_numpy_leaves(
        np_adafactor_momentum(3, decay_rate, 0.0 if momentum is None else momentum), params, grad
    )
    got = run_gradtx(opt, params, grad)
    assert_close(got, want)


# ---------------------------------------------------------------------------------------------
# 4. Which AdaMax gradtx computes.


def test_adamax_puts_eps_inside_the_max(x64):
    """gradtx's AdaMax puts ε inside the max (optax's form):
    u_t = max(β2 u_{t−1}, |g_t| + ε), output m_t / ((1 − β1^t) u_t).

    Kingma & Ba's Algorithm 2 has no ε: u_t = max(β2 u_{t−1}, |g_t|), θ ← θ − (α / (1 − β1^t))
    m_t / u_t. The ε-inside form differs from it at every step (u_t carries ε, decayed by β2^k,
    from the step whose |g| set the max). The ε-outside form m̂_t / (max(β2 u_{t−1}, |g_t|) + ε)
    agrees with ε-inside while the current |g_t| sets the max and differs once a decayed past
    value does (β2 (u + ε) vs β2 u + ε). A large ε and gradients that shrink and grow again make
    all three differ by far more than rounding; only the ε-inside form must match.
    """
    b1, b2, eps = 0.9, 0.9, 0.3
    gs = [np.array([2.0, -0.5, 0.01]), np.array([0.1, 1.5, -0.02]), np.array([-0.05, 0.2, 3.0])]
    gs += [np.array([0.5, -0.01, 0.4]), np.array([4.0, 0.0, -0.1])]
    tx = gradtx.scale_by_adamax(b1=b1, b2=b2, eps=eps)
    state = tx.init(jnp.zeros(3))
    update = jax.jit(tx.update)
    m = np.zeros(3)
    u_inside, u_paper = np.zeros(3), np.zeros(3)
    diffs_paper, diffs_outside = [], []
    for t, g in enumerate(gs, start=1):
        out, state = update(g, state)
        m = b1 * m + (1 - b1) * g
        mh = m / (1 - b1**t)
        u_inside = np.maximum(b2 * u_inside, np.abs(g) + eps)  # gradtx / optax
        u_paper = np.maximum(b2 * u_paper, np.abs(g))  # Algorithm 2 (its u_t for ε outside)
        want = mh / u_inside
        assert_close(np.asarray(out), want)
        with np.errstate(divide="ignore", invalid="ignore"):
            paper = np.where(u_paper > 0, mh / u_paper, 0.0)
        outside = mh / (u_paper + eps)
        diffs_paper.append(np.max(np.abs(want - paper)))
        diffs_outside.append(np.max(np.abs(want - outside)))
    # The data separate the forms: neither alternative is within 1e-3 of what gradtx computes.
    assert max(diffs_paper) > 1e-2
    assert max(diffs_outside) > 1e-2


# ---------------------------------------------------------------------------------------------
# Holes the mutation check (scripts/mutation.py) found next.


def test_sps_plus_takes_no_step_below_f_min_where_sps_steps_back(x64):
    g = jnp.array([1.0, -2.0])
    gap, sq = 0.5 - 1.0, 5.0  # value below f_min
    plus = gradtx.scale_by_polyak(f_min=1.0, variant="sps+")
    u, _ = plus.update(g, plus.init(g), value=jnp.asarray(0.5))
    np.testing.assert_array_equal(np.asarray(u), [0.0, 0.0])  # max(f - f*, 0) = 0
    sps = gradtx.scale_by_polyak(f_min=1.0)
    u, _ = sps.update(g, sps.init(g), value=jnp.asarray(0.5))
    np.testing.assert_allclose(np.asarray(u), gap / sq * np.array([1.0, -2.0]), rtol=1e-12)


def test_dog_puts_eps_under_the_square_root(x64):
    # eta = r / sqrt(sum |g|^2 + eps), r = reps_rel (1 + |x0|) on the first step
    p, g = jnp.array([3.0, 4.0]), jnp.array([1.0, 2.0])
    tx = gradtx.scale_by_distance_over_gradients(reps_rel=0.1, eps=4.0, param_dtype=jnp.float64)
    u, _ = tx.update(g, tx.init(p), p)
    eta = 0.1 * (1 + 5.0) / np.sqrt(5.0 + 4.0)
    np.testing.assert_allclose(np.asarray(u), eta * np.array([1.0, 2.0]), rtol=1e-12)


def test_weight_decay_follows_an_element_wise_mask_function(x64):
    p = {"w": jnp.array([-1.0, 2.0, -3.0, 4.0])}
    g = {"w": jnp.array([0.5, 0.5, 0.5, 0.5])}
    tx = gradtx.add_decayed_weights(0.1, mask=lambda params: jax.tree.map(lambda x: x > 0, params))
    u, _ = jax.jit(lambda g, s, p: tx.update(g, s, p))(g, tx.init(p), p)
    want = np.array([0.5, 0.5 + 0.1 * 2.0, 0.5, 0.5 + 0.1 * 4.0])
    np.testing.assert_allclose(np.asarray(u["w"]), want, rtol=1e-12)


def test_zoom_accepts_only_steps_with_sufficient_decrease(x64):
    # f(x) = x^2 from x = 1 along u = -1.9: the unit step lands at -0.9, where f fell (0.81 < 1)
    # and the curvature condition holds for c2 = 0.95, but Armijo with c1 = 0.5 does not
    # (0.81 > 1 - 0.5 * 1 * 3.8); the search must go on to a step that satisfies both.
    f = lambda x: jnp.sum(x**2)  # noqa: E731
    x, c1, c2 = jnp.array([1.0]), 0.5, 0.95
    ls = gradtx.scale_by_zoom_linesearch(
        max_linesearch_steps=30,
        slope_rtol=c1,
        curv_rtol=c2,
        approx_dec_rtol=None,
        initial_guess_strategy="one",
    )
    u = jnp.array([-1.9])
    out, _ = ls.update(u, ls.init(x), x, value=f(x), grad=2 * x, value_fn=f)
    t = float(out[0] / u[0])
    slope0 = 2.0 * 1.0 * -1.9
    new = 1.0 + t * -1.9
    assert new**2 <= 1.0 + c1 * t * slope0 + 1e-12, t  # Armijo
    assert abs(2 * new * -1.9) <= c2 * abs(slope0) + 1e-12, t  # strong Wolfe curvature
    assert t != 1.0


def test_lbfgs_keeps_a_pair_only_with_positive_curvature():
    from gradtx.lbfgs import _curvature_ok

    s, y = jnp.array([1.0, 0.0]), jnp.array([-1.0, 0.5])  # <s, y> = -1 < 0
    assert not bool(_curvature_ok(s, y))
    assert bool(_curvature_ok(s, -y))
    assert not bool(_curvature_ok(s, jnp.array([0.0, 3.0])))  # <s, y> = 0
