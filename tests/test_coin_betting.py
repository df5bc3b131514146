"""COCOB and Mechanic against their papers and optax.contrib.

- COCOB: a float64 NumPy reference written from Algorithm 2 (COCOB-Backprop) of Orabona &
  Tommasi (arXiv 1705.07795), cited line by line and never calling gradtx, matches gradtx for
  100 steps at rtol 1e-8 under x64 (defaults, a small ``α`` so that both sides of
  ``max(G + L, αL)`` and of the reward's clamp are taken, weight decay, a scheduled learning
  rate); float32 runs match optax.contrib for 100 steps;
- Mechanic: a float64 NumPy reference of Algorithm 1 of Cutkosky, Defazio & Mehta (arXiv
  2306.00144) around NumPy SGD-with-momentum and Adam bases matches ``mechanize`` for 100 steps
  at rtol 1e-8 under x64, on data that takes both sides of ``m``'s max and of ``r``'s clamp;
  ``variant="optax"`` matches optax.contrib in float64 (default ``s_init``) and in float32, and
  the default (the paper's box) differs from it;
- extra update arguments reach the base optimizer, complex parameters (Mechanic: ℂⁿ as ℝ²ⁿ;
  COCOB refuses them), state layouts and dtypes, low-precision params, ``jax.eval_shape``
  init, vmap and grad over hyperparameters, bad arguments named in the user's words;
- the digits MLP reaches 95% test accuracy with each method.
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
from conftest import F32_ORACLE_ATOL, F32_ORACLE_RTOL, random_problem

import gradtx
from gradtx.transforms.coin_betting import (
    COCOBState,
    MechanicState,
    cocob,
    mechanize,
    scale_by_cocob,
)

STEPS = 100


# ----------------------------------------------------------------------------------------------
# COCOB-Backprop: Orabona & Tommasi, arXiv 1705.07795, Algorithm 2. The algorithm is written for
# the negative subgradient; here ``neg = −(γ_t (∇ + λ w))`` with optax's learning rate γ_t and
# L2 term λ w added to the gradient first (both outside the algorithm box).


def _cocob_ref(alpha, eps, lr, wd, seen):
    def init(xs):
        # Initialize: L_0 = ε (the authors' code; the box's L_{0,i}), G_0 = Reward_0 = θ_0 = 0,
        # and w_1, the initial parameters
        z = [np.zeros_like(x) for x in xs]
        return {"w1": [x.copy() for x in xs], "L": [np.full_like(x, eps) for x in xs],
                "G": z, "R": list(z), "theta": list(z)}  # fmt: skip

    def step(xs, gs, st, t, _):
        out = []
        for i, (w, g) in enumerate(zip(xs, gs, strict=True)):
            neg = -lr(t) * (g + wd * w)  # the negative stochastic subgradient
            st["L"][i] = np.maximum(st["L"][i], np.abs(neg))  # max observed scale
            st["G"][i] = st["G"][i] + np.abs(neg)  # sum of absolute values
            reward = st["R"][i] + (w - st["w1"][i]) * neg
            seen.update(["reward>0"] if np.any(reward > 0) else [])
            seen.update(["reward=0"] if np.any(reward <= 0) else [])
            st["R"][i] = np.maximum(reward, 0)  # the reward, clamped at 0
            st["theta"][i] = st["theta"][i] + neg  # sum of the (negative) gradients
            L, G = st["L"][i], st["G"][i]
            seen.update(["G+L"] if np.any(G + L > alpha * L) else [])
            seen.update(["alpha L"] if np.any(G + L < alpha * L) else [])
            # w_{t+1} = w_1 + θ_t / (L_t max(G_t + L_t, α L_t)) (L_t + Reward_t)
            beta = st["theta"][i] / (L * np.maximum(G + L, alpha * L))
            out.append(st["w1"][i] + beta * (L + st["R"][i]))
        return out, st

    return init, step


COCOB_PAPER = {
    "defaults": dict(alpha=100.0, eps=1e-8, lr=None, wd=0.0),
    "small_alpha_decay": dict(alpha=3.0, eps=1e-8, lr=None, wd=0.05),
    "scheduled_big_eps": dict(alpha=10.0, eps=0.3, lr="schedule", wd=0.0),
}


def _inverse_time(t):
    return 2.0 / (1 + jnp.asarray(t, jnp.float64) / 10)


@pytest.mark.parametrize("name", sorted(COCOB_PAPER))
def test_cocob_matches_algorithm_2(x64, name):
    kw = COCOB_PAPER[name]
    sched = kw["lr"] == "schedule"
    lr = (lambda t: 2.0 / (1 + t / 10)) if sched else (lambda t: 1.0)
    params, grad = random_problem(0)
    opt = cocob(_inverse_time if sched else 1.0, kw["alpha"], kw["eps"], kw["wd"])
    ours = run_library(opt, params, grad, STEPS, jnp.float64)
    seen = set()
    ref = run_numpy(*_cocob_ref(kw["alpha"], kw["eps"], lr, kw["wd"], seen), params, grad, STEPS)
    assert_trees_close(ours, ref, rtol=1e-8, atol=1e-12)
    assert _moved(ref, params) > 0.3
    assert {"reward>0", "reward=0", "alpha L"} <= seen, seen
    if name == "small_alpha_decay":
        assert "G+L" in seen  # both sides of max(G + L, αL)


@pytest.mark.parametrize("kw", [{}, dict(alpha=3.0, weight_decay=0.05)], ids=["default", "decay"])
def test_cocob_matches_optax(kw):
    params, grad = random_problem(1)
    ours = run_library(cocob(**kw), params, grad, STEPS, jnp.float32)
    theirs = run_library(optax.contrib.cocob(**kw), params, grad, STEPS, jnp.float32, lib="optax")
    assert_trees_close(ours, theirs, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    assert _moved(ours, params) > 0.3


def test_cocob_is_scale_free_and_survives_zero_and_huge_gradients():
    # a constant factor on every gradient changes nothing (eps = 0); a coordinate whose
    # gradients are all 0 does not move (0/0 is guarded); |g| = 1e30 stays finite in float32
    p = jnp.array([0.5, -1.0, 2.0])
    tx = scale_by_cocob(alpha=5.0, eps=0.0)
    outs = []
    for c in (1.0, 1e-20, 1e30):
        x, s = p, tx.init(p)
        for t in range(6):
            g = c * jnp.array([x[0] - 0.2 * t, 0.0, jnp.cos(x[2] * (t + 1))])
            u, s = tx.update(g, s, x)
            x = x + u
        outs.append(np.asarray(x))
        assert np.all(np.isfinite(np.asarray(x)))
        assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree_util.tree_leaves(s))
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5)
    np.testing.assert_allclose(outs[2], outs[0], rtol=1e-5)
    assert outs[0][1] == -1.0 and abs(outs[0][0] - 0.5) > 0.1


def test_cocob_state_layout_dtypes_and_complex_refused():
    params = {"w": jnp.arange(3.0), "b": jnp.ones(2, jnp.bfloat16)}
    s = scale_by_cocob().init(params)
    assert isinstance(s, COCOBState) and COCOBState._fields == optax.contrib.COCOBState._fields
    assert s.scale["b"].dtype == s.reward["b"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(s.scale["w"], np.full(3, 1e-8, np.float32))
    np.testing.assert_array_equal(s.init_particles["w"], params["w"])
    with pytest.raises(TypeError, match="scale_by_cocob: complex parameters are not supported"):
        scale_by_cocob().init(jnp.ones(2, jnp.complex64))
    with pytest.raises(ValueError, match="scale_by_cocob: update needs params"):
        scale_by_cocob().update(jnp.ones(2), scale_by_cocob().init(jnp.ones(2)))


# ----------------------------------------------------------------------------------------------
# Mechanic: Cutkosky, Defazio & Mehta, arXiv 2306.00144, Algorithm 1, around NumPy bases (the
# base sees the raw gradient at x_t; its update u_t is what it would add to the parameters).


def _sgd_momentum_base(lr, mu):
    def init(xs):
        return [np.zeros_like(x) for x in xs]

    def step(gs, st):
        st = [mu * m + g for m, g in zip(st, gs, strict=True)]  # heavy ball: m ← μ m + g
        return [-lr * m for m in st], st

    return init, step


def _adam_base(lr, b1=0.9, b2=0.999, eps=1e-8):
    def init(xs):
        return {"m": [np.zeros_like(x) for x in xs], "v": [np.zeros_like(x) for x in xs], "k": 0}

    def step(gs, st):
        st["k"] += 1
        k = st["k"]
        st["m"] = [b1 * m + (1 - b1) * g for m, g in zip(st["m"], gs, strict=True)]
        st["v"] = [b2 * v + (1 - b2) * g * g for v, g in zip(st["v"], gs, strict=True)]
        return [
            -lr * (m / (1 - b1**k)) / (np.sqrt(v / (1 - b2**k)) + eps)
            for m, v in zip(st["m"], st["v"], strict=True)
        ], st

    return init, step


def _dot(a, b):
    return sum(float(np.sum(x * y)) for x, y in zip(a, b, strict=True))


def _mechanic_ref(base, lam, eps, s_init, n, seen):
    base_init, base_step = base
    beta = np.array([1 - 0.1**i for i in range(1, n + 1)])  # (0.9, 0.99, …)

    def init(xs):
        # line 2: x_ref = x_1, Δ_1 = 0, r_0 = m_0 = v_0 = 0, s_1 = 0 (one entry per β)
        return {"x_ref": [x.copy() for x in xs], "delta": [np.zeros_like(x) for x in xs],
                "r": np.zeros(n), "m": np.zeros(n), "v": np.zeros(n), "s": np.zeros(n),
                "base": base_init(xs)}  # fmt: skip

    def step(xs, gs, st, t, _):
        u, st["base"] = base_step(gs, st["base"])  # send g_t to the base, receive u_t
        delta = st["delta"]
        s_sum = float(np.sum(st["s"]))
        g_norm = np.sqrt(_dot(gs, gs))
        x_norm = np.sqrt(_dot(xs, xs))
        # h_t = ⟨Δ_t, g_t + λ (Σ s_t) ‖g_t‖ x_t / ‖x_t‖⟩
        h = _dot(
            delta, [g + lam * s_sum * g_norm * x / x_norm for g, x in zip(gs, xs, strict=True)]
        )
        seen.add("m=|h|" if np.any(np.abs(h) >= beta * st["m"]) else "m=βm")
        seen.add("m=βm" if np.any(np.abs(h) < beta * st["m"]) else "m=|h|")
        st["m"] = np.maximum(beta * st["m"], abs(h))  # m_t = max(β m_{t−1}, |h_t|)
        st["v"] = beta**2 * st["v"] + h**2  # v_t = β² v_{t−1} + h_t²
        r = beta * st["r"] - st["s"] * h  # r_t = β r_{t−1} − s_t h_t
        seen.update(["r>0"] if np.any(r > 0) else [])
        seen.update(["r clamped"] if np.any(r < 0) else [])
        st["r"] = np.maximum(0.0, r)  # r_t = max(0, r_t)
        wealth = s_init / n * st["m"] + st["r"]  # W_t = (s_init / n) m_t + r_t
        st["s"] = wealth / (np.sqrt(st["v"]) + eps)  # s_{t+1} = W_t / (√v_t + ε)
        st["delta"] = [d + ui for d, ui in zip(delta, u, strict=True)]  # Δ_{t+1} = Δ_t + u_t
        s_next = float(np.sum(st["s"]))
        # x_{t+1} = x_ref + (Σ s_{t+1}) Δ_{t+1}
        return [xr + s_next * d for xr, d in zip(st["x_ref"], st["delta"], strict=True)], st

    return init, step


MECHANIC_PAPER = {
    "momentum_defaults": (
        lambda: gradtx.sgd(0.05, momentum=0.9),
        lambda: _sgd_momentum_base(0.05, 0.9),
        dict(weight_decay=1e-2, eps=1e-8, s_init=1e-6, num_betas=6),
    ),
    "adam_big_decay": (
        lambda: gradtx.adam(0.1),
        lambda: _adam_base(0.1),
        dict(weight_decay=0.5, eps=1e-8, s_init=1e-3, num_betas=3),
    ),
}


@pytest.mark.parametrize("name", sorted(MECHANIC_PAPER))
def test_mechanic_matches_algorithm_1(x64, name):
    ours_base, ref_base, kw = MECHANIC_PAPER[name]
    params, grad = random_problem(0)
    ours = run_library(mechanize(ours_base(), **kw), params, grad, STEPS, jnp.float64)
    seen = set()
    ref = _mechanic_ref(
        ref_base(), kw["weight_decay"], kw["eps"], kw["s_init"], kw["num_betas"], seen
    )
    want = run_numpy(*ref, params, grad, STEPS)
    assert_trees_close(ours, want, rtol=1e-8, atol=1e-12)
    assert _moved(want, params) > 0.3
    assert {"m=|h|", "m=βm", "r>0"} <= seen, seen
    if name == "adam_big_decay":
        assert "r clamped" in seen  # a reward driven below 0 and clamped (line 11)


def test_mechanic_optax_variant_matches_optax_in_float64(x64):
    # optax's own recomputation (x − x_ref)/(S + ε) amplifies rounding by 1/S while S ~ s_init:
    # in float64 that is far below the tolerance, at optax's default s_init = 1e-6
    params, grad = random_problem(1)
    ours = run_library(
        mechanize(gradtx.sgd(0.05, momentum=0.9), variant="optax"),
        params, grad, STEPS, jnp.float64,
    )  # fmt: skip
    theirs = run_library(
        optax.contrib.mechanize(optax.sgd(0.05, momentum=0.9)),
        params, grad, STEPS, jnp.float64, lib="optax",
    )  # fmt: skip
    assert_trees_close(ours, theirs, rtol=1e-7, atol=1e-9)
    assert _moved(ours, params) > 0.3
    paper = run_library(mechanize(gradtx.sgd(0.05, momentum=0.9)), params, grad, STEPS, jnp.float64)
    assert _moved(paper, theirs) > 1e-2  # the algorithm box is not optax's


@pytest.mark.parametrize("base", ["adam", "sgd"])
def test_mechanic_optax_variant_matches_optax_in_float32(base):
    # s_init = 1e-3: at S ~ 1e-6 optax's recomputed Δ carries float32 rounding times 1e6, and
    # two float32 runs (any two implementations) drift apart by ~1e-4 over 100 steps
    params, grad = random_problem(1)
    ours_base = gradtx.adam(1e-2) if base == "adam" else gradtx.sgd(1e-2, momentum=0.9)
    their_base = optax.adam(1e-2) if base == "adam" else optax.sgd(1e-2, momentum=0.9)
    kw = dict(weight_decay=0.05, s_init=1e-3)
    ours = run_library(mechanize(ours_base, **kw, variant="optax"), params, grad, STEPS,
                       jnp.float32)  # fmt: skip
    theirs = run_library(optax.contrib.mechanize(their_base, **kw), params, grad, STEPS,
                         jnp.float32, lib="optax")  # fmt: skip
    assert_trees_close(ours, theirs, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    assert _moved(ours, params) > 0.3


def test_mechanic_first_steps_by_hand():
    # the box with s_1 = 0: the first update does not move x; s_3 = (s_init/n)|h_2|/(|h_2| + ε)
    x0 = jnp.array([1.0, -2.0])
    opt = mechanize(gradtx.sgd(1.0), weight_decay=0.0, s_init=0.6, num_betas=2, eps=0.0)
    state = opt.init(x0)
    u, state = opt.update(x0, state, x0)  # gradient of ‖x‖²/2 at x_1 = x_ref
    np.testing.assert_array_equal(u, np.zeros(2))
    u, state = opt.update(x0, state, x0)  # h_2 = ⟨−x_ref, x_ref⟩ = −5: m = 5, r = 0
    np.testing.assert_allclose(state.s, [0.3, 0.3], rtol=1e-6)  # s_3
    np.testing.assert_allclose(state.delta, -2 * np.asarray(x0), rtol=1e-6)  # Δ_3 = u_1 + u_2
    np.testing.assert_allclose(u, -1.2 * np.asarray(x0), rtol=1e-6)  # x_3 = x_ref + 0.6 Δ_3
    x3 = x0 + u
    u, state = opt.update(x3, state, x3)
    # h_3 = ⟨−2 x_ref, −0.2 x_ref⟩ = 2: m = β·5 (the decayed max), r = max(0, −0.3·2) = 0,
    # s_4 = 0.3 m / √(β² 25 + 4); Δ_4 = −2 x_ref − x_3 = −1.8 x_ref
    beta = np.array([0.9, 0.99])
    s4 = 0.3 * beta * 5 / np.sqrt(beta**2 * 25 + 4)
    np.testing.assert_allclose(state.r, [0.0, 0.0])
    np.testing.assert_allclose(state.s, s4, rtol=1e-6)
    np.testing.assert_allclose(u, (1.2 - 1.8 * s4.sum()) * np.asarray(x0), rtol=1e-6)


def test_mechanic_passes_extra_args_to_the_base():
    # a base that multiplies by value=: Δ after one step is −value · g
    def base_update(updates, state, params=None, *, value, **extra):
        return jax.tree_util.tree_map(lambda g: -value * g, updates), state

    base = gradtx.GradientTransformationExtraArgs(lambda p: gradtx.EmptyState(), base_update)
    opt = mechanize(base)
    x = {"w": jnp.array([1.0, 2.0])}
    g = {"w": jnp.array([0.5, -1.0])}
    for value in (2.0, 3.0):
        _, state = opt.update(g, opt.init(x), x, value=jnp.asarray(value))
        np.testing.assert_allclose(state.delta["w"], -value * np.asarray(g["w"]))
    # a momo base (which needs value=) runs under jit
    opt = mechanize(gradtx.momo())
    step = jax.jit(lambda s, x: opt.update(g, s, x, value=jnp.asarray(1.0)))
    _, state = step(opt.init(x), x)
    assert state.base_optimizer_state.count == 1


def test_mechanic_complex_params_are_real_pairs():
    # ℂⁿ as ℝ²ⁿ: the same run on (Re, Im) pairs gives the same numbers
    z = jnp.array([1.0 + 2.0j, -0.5 + 0.3j])
    pairs = jnp.stack([z.real, z.imag], -1)
    target = jnp.array([0.2 - 1.0j, 1.0 + 1.0j])
    t_pairs = jnp.stack([target.real, target.imag], -1)
    opt = mechanize(gradtx.sgd(0.1, momentum=0.5), weight_decay=0.1, s_init=1e-2)
    sz, sp = opt.init(z), opt.init(pairs)
    for _ in range(30):
        uz, sz = opt.update(z - target, sz, z)
        up, sp = opt.update(pairs - t_pairs, sp, pairs)
        z, pairs = z + uz, pairs + up
    np.testing.assert_allclose(np.stack([z.real, z.imag], -1), pairs, rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(z - jnp.array([1.0 + 2.0j, -0.5 + 0.3j])))) > 0.05


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_mechanic_extreme_gradients_stay_finite(scale):
    # float32 h² overflows above |h| ≈ 1.8e19: h is clipped, the scale stays finite
    x = {"w": jnp.array([0.5, -1.0, 2.0])}
    opt = mechanize(gradtx.adam(0.1), s_init=1e-2)
    s = opt.init(x)
    for t in range(8):
        g = {"w": scale * jnp.array([1.0, -0.5, 0.25]) * (1 + 0.1 * t)}
        u, s = opt.update(g, s, x)
        x = gradtx.apply_updates(x, u)
    for leaf in jax.tree_util.tree_leaves((x, s)):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    if scale > 1:  # at 1e-30, h² underflows and ε keeps the scale near 0: x stays put
        assert float(jnp.max(jnp.abs(x["w"] - jnp.array([0.5, -1.0, 2.0])))) > 0.1


def test_mechanic_state_layout_dtypes_and_abstract_init():
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3, jnp.bfloat16)}
    opt = mechanize(gradtx.adam(1e-3))
    s = opt.init(params)
    assert isinstance(s, MechanicState)
    assert MechanicState._fields[:-1] == optax.contrib.MechanicState._fields
    assert s.s.dtype == s.r.dtype == jnp.float32 and s.s.shape == (6,)
    assert s.delta["b"].dtype == s.x0["b"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(s.s, np.zeros(6))
    s_opt = mechanize(gradtx.adam(1e-3), s_init=1e-4, variant="optax").init(params)
    assert s_opt.delta is None
    np.testing.assert_allclose(s_opt.s, np.full(6, 1e-4))
    for o in (opt, mechanize(gradtx.adam(1e-3), variant="optax"), cocob()):
        abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
        got = jax.eval_shape(o.init, abstract)
        want = o.init(params)
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
        for a, b in zip(
            jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True
        ):
            assert (a.shape, a.dtype) == (b.shape, b.dtype)


OPTIMIZERS = {
    "cocob": lambda: cocob(),
    "mechanize_adam": lambda: mechanize(gradtx.adam(1e-2), s_init=1e-3),
    "mechanize_optax_variant": lambda: mechanize(gradtx.sgd(1e-2), variant="optax"),
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
        g["b"] = jnp.where(t < 2, jnp.zeros_like(g["b"]), g["b"])  # zero gradients first
        u, s = opt.update(g, s, p)
        return gradtx.apply_updates(p, u), s, u

    for t in range(6):
        params, state, u = step(params, state, t)
        assert all(x.dtype == jnp.dtype(dtype) for x in jax.tree_util.tree_leaves(u))
        assert jax.tree_util.tree_map(lambda x: x.dtype, state) == want
        for x in jax.tree_util.tree_leaves((params, state)):
            assert bool(jnp.all(jnp.isfinite(jnp.asarray(x, jnp.float32))))
    assert _moved(params, {"w": jnp.linspace(-1, 1, 6).reshape(2, 3), "b": jnp.zeros(3)}) > 0


def test_hyperparameters_are_leaves_vmap_and_grad():
    x = jnp.array([1.0, -2.0])
    g = jnp.array([0.5, 1.5])

    # COCOB's first step: θ/(L max(G + L, αL)) L = −g / max(2|g|, α|g|) = −sign(g)/α for α >= 2
    def cocob_step(alpha):
        tx = scale_by_cocob(alpha)
        return tx.update(g, tx.init(x), x)[0]

    alphas = jnp.array([4.0, 8.0])
    want = -np.sign(np.asarray(g))[None, :] / np.asarray(alphas)[:, None]
    np.testing.assert_allclose(jax.vmap(cocob_step)(alphas), want, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(lambda a: cocob_step(a)[0])(4.0), 1 / 16, rtol=1e-6)

    # Mechanic's third step over the base learning rate η (sgd, λ = 0, ε = 0): Δ_3 = −2ηg,
    # h_2 = −η‖g‖², s_3 = s_init (one β), h_3 = −2η‖g‖²; u_3 = −3η S_4 g, S_4 = 4 s_init/√(β²+4)
    def third(lr):
        opt = mechanize(gradtx.sgd(lr), weight_decay=0.0, eps=0.0, s_init=0.5, num_betas=1)
        s = opt.init(x)
        for _ in range(3):
            u, s = opt.update(g, s, x)
        return u

    lrs = jnp.array([0.1, 0.2])
    s4 = 4 * 0.5 / np.sqrt(0.81 + 4)
    want = -3 * np.asarray(lrs)[:, None] * s4 * np.asarray(g)[None, :]
    np.testing.assert_allclose(jax.vmap(third)(lrs), want, rtol=1e-5)
    np.testing.assert_allclose(jax.grad(lambda lr: third(lr)[1])(0.1), -3 * s4 * 1.5, rtol=1e-5)


@pytest.mark.parametrize(
    "build,error,message",
    [
        (lambda: cocob(alpha=0.0), ValueError, r"cocob: alpha must be in \(0, inf\], got 0.0"),
        (lambda: cocob(eps=-1.0), ValueError, r"cocob: eps must be in \[0, inf\], got -1.0"),
        (lambda: cocob(weight_decay=-1.0), ValueError, r"cocob: weight_decay must be in \[0"),
        (lambda: scale_by_cocob("x"), TypeError, r"scale_by_cocob: alpha must be a number"),
        (
            lambda: mechanize(gradtx.sgd(0.1), s_init=0.0),
            ValueError,
            r"mechanize: s_init must be in \(0, inf\], got 0.0",
        ),
        (
            lambda: mechanize(gradtx.sgd(0.1), weight_decay=-0.1),
            ValueError,
            r"mechanize: weight_decay must be in \[0, inf\], got -0.1",
        ),
        (
            lambda: mechanize(gradtx.sgd(0.1), num_betas=0),
            ValueError,
            r"mechanize: num_betas must be in \[1, inf\], got 0",
        ),
        (
            lambda: mechanize(gradtx.sgd(0.1), variant="pytorch"),
            ValueError,
            r"mechanize: variant must be one of \('paper', 'optax'\), got 'pytorch'",
        ),
        (
            lambda: mechanize(3.0),
            TypeError,
            r"^mechanize: base_optimizer must be a gradient transformation .*got 3\.0$",
        ),
    ],
)
def test_bad_arguments_are_named(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_mechanic_update_needs_params():
    opt = mechanize(gradtx.sgd(0.1))
    with pytest.raises(ValueError, match="mechanize: update needs params"):
        opt.update(jnp.ones(2), opt.init(jnp.ones(2)))


# ----------------------------------------------------------------------------------------------
# The digits MLP (examples/digits_mlp.py's data and model) reaches 95% test accuracy: COCOB with
# its defaults (it has no learning rate), Mechanic (defaults) around Adam at η = 1e-2.

DIGITS = {
    "cocob": lambda: cocob(),
    "mechanize_adam": lambda: mechanize(gradtx.adam(1e-2)),
}


@pytest.mark.parametrize("name", sorted(DIGITS))
def test_digits_mlp_reaches_95_percent(name):
    acc = demo_accuracy(DIGITS[name]())
    assert acc >= 0.95, (name, acc)
