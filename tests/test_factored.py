"""Adafactor and SM3 against their papers (float64 NumPy) and optax (float32), and their memory.

The NumPy references are written from the algorithm boxes (Shazeer & Stern 2018, Algorithms 4
and 5; Anil et al. 2019, SM3-II), never by calling gradtx.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import random_problem
from test_adam_variants import (
    assert_close,
    check_optax,
    check_paper,
    run_gradtx,
    run_numpy,
    run_optax,
)

import gradtx


def problem_3d(seed=0, dtype=np.float64):
    """A pytree with a rank-3 leaf (and a vector), and a step-dependent gradient oracle."""
    rng = np.random.default_rng(seed)
    params = {
        "k": rng.normal(size=(5, 3, 4)).astype(dtype),
        "v": rng.normal(size=(6,)).astype(dtype),
    }
    target = jax.tree_util.tree_map(lambda p: rng.normal(size=p.shape).astype(dtype), params)
    noise = [
        jax.tree_util.tree_map(lambda p: rng.normal(size=p.shape).astype(dtype), params)
        for _ in range(5)
    ]

    def grad(p, t):
        return jax.tree_util.tree_map(
            lambda x, c, n: (np.asarray(x) - c) + 0.5 * np.sin(3 * np.asarray(x)) + 0.3 * n,
            p,
            target,
            noise[t % 5],
        )

    return params, grad


# ---------------------------------------------------------------------------------------------
# NumPy references.


def np_adafactor(min_dim, lr=None, c=0.8, eps1=1e-30, eps2=1e-3, d=1.0):
    """Shazeer & Stern 2018: Algorithm 4 (matrices: R_t, C_t, V̂_t = R_t C_t / 1ᵀR_t, lines
    4-6) and Algorithm 5 (other arrays, line 6), clipping Û = U / max(1, RMS(U)/d) (line 8),
    α_t = max(ε2, RMS(X_{t−1})) ρ_t (line 2) with ρ_t = min(10⁻², 1/√t) (Section 8)."""

    def rms(x):
        return np.sqrt(np.mean(np.square(x)))

    def step(thetas, gs, t, mem):
        beta = 1.0 - t ** (-c)
        rho = min(1e-2, 1.0 / np.sqrt(t)) if lr is None else lr
        out = []
        for i, (x, g) in enumerate(zip(thetas, gs, strict=True)):
            s = mem.setdefault(i, {})
            sq = g * g + eps1
            if x.ndim == 2 and min(x.shape) >= min_dim:
                s["R"] = beta * s.get("R", 0.0) + (1 - beta) * sq.sum(axis=1)  # (G²+ε1) 1_m
                s["C"] = beta * s.get("C", 0.0) + (1 - beta) * sq.sum(axis=0)  # 1_nᵀ (G²+ε1)
                v_hat = np.outer(s["R"], s["C"]) / s["R"].sum()
            else:
                s["V"] = beta * s.get("V", 0.0) + (1 - beta) * sq
                v_hat = s["V"]
            u = g / np.sqrt(v_hat)
            u_hat = u / max(1.0, rms(u) / d)
            alpha = max(eps2, rms(x)) * rho
            out.append(x - alpha * u_hat)
        return out

    return step


def np_sm3(lr, momentum=0.0, eps=0.0):
    """Anil et al. 2019, SM3-II with the cover of rows/columns/... (one set per slice along each
    axis; singletons for vectors): ν'_t(i) = min_{r∋i} μ'_{t−1}(r) + g_t(i)²,
    w ← w − η g/√ν' (0/0 = 0), μ'_t(r) = max_{j∈r} ν'_t(j); momentum (Section 5) on g/√ν'."""

    def step(thetas, gs, t, mem):
        out = []
        for i, (x, g) in enumerate(zip(thetas, gs, strict=True)):
            s = mem.setdefault(i, {})
            if x.ndim < 2:
                nu = s.get("acc", np.zeros_like(x)) + g * g
                s["acc"] = nu
            else:
                accs = s.get("accs", [np.zeros(n) for n in x.shape])
                nu = np.full(x.shape, np.inf)
                for a, acc in enumerate(accs):
                    shape = [1] * x.ndim
                    shape[a] = x.shape[a]
                    nu = np.minimum(nu, acc.reshape(shape))
                nu = nu + g * g
                s["accs"] = [
                    nu.max(axis=tuple(b for b in range(x.ndim) if b != a)) for a in range(x.ndim)
                ]
            with np.errstate(divide="ignore", invalid="ignore"):
                u = np.where(nu > 0, g / np.sqrt(nu + eps), 0.0)
            m = momentum * s.get("m", 0.0) + (1 - momentum) * u
            s["m"] = m
            out.append(x - lr * m)
        return out

    return step


# ---------------------------------------------------------------------------------------------
# Adafactor.


def test_adafactor_matches_paper(x64):
    # min_dim_size_to_factor=3 factors the (3, 4) matrix; the vector and scalar use Algorithm 5.
    check_paper(gradtx.adafactor(min_dim_size_to_factor=3), np_adafactor(3))


def test_adafactor_unfactored_and_given_lr_match_paper(x64):
    check_paper(gradtx.adafactor(0.05, factored=False), np_adafactor(10**9, lr=0.05))


def test_adafactor_rank3_matches_optax():
    params, grad = problem_3d(0, np.float32)
    for kw in ({}, {"momentum": 0.9}):
        got = run_gradtx(gradtx.adafactor(1e-2, min_dim_size_to_factor=3, **kw), params, grad)
        ref = run_optax(optax.adafactor(1e-2, min_dim_size_to_factor=3, **kw), params, grad)
        assert_close(got, ref, 1e-5, 1e-6)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"momentum": 0.9},
        {"weight_decay_rate": 1e-3},
        {"factored": False, "clipping_threshold": None},
        {"multiply_by_parameter_scale": False, "decay_rate": 0.5},
    ],
)
def test_adafactor_matches_optax(kw):
    check_optax(
        gradtx.adafactor(1e-2, min_dim_size_to_factor=3, **kw),
        optax.adafactor(1e-2, min_dim_size_to_factor=3, **kw),
    )


def test_adafactor_unit_learning_rate_is_optax_none():
    # ρ_t = 1 takes steps of the parameters' own size: chaotic over long runs in float32, so
    # compare the first 6 steps.
    params, grad = random_problem(1, np.float32)
    got = run_gradtx(gradtx.adafactor(1.0, min_dim_size_to_factor=3), params, grad, steps=6)
    ref = run_optax(optax.adafactor(None, min_dim_size_to_factor=3), params, grad, steps=6)
    assert_close(got, ref, 1e-5, 1e-6)


def test_adafactor_given_learning_rate_matches_optax():
    check_optax(
        gradtx.adafactor(0.1, min_dim_size_to_factor=3),
        optax.adafactor(0.1, min_dim_size_to_factor=3),
    )


def test_adafactor_default_uses_relative_step():
    params, grad = random_problem(1, np.float32)
    ours = run_gradtx(gradtx.adafactor(min_dim_size_to_factor=3), params, grad, steps=3)
    theirs = run_optax(optax.adafactor(min_dim_size_to_factor=3), params, grad, steps=3)
    x0 = np.asarray(params["dense"]["b"], np.float64)
    # The first step is 10⁻² of optax's (ρ_1 = min(10⁻², 1)).
    np.testing.assert_allclose(ours[0][0] - x0, 1e-2 * (theirs[0][0] - x0), rtol=1e-4)


def _state_bytes(opt, shape):
    state = jax.eval_shape(opt.init, jax.ShapeDtypeStruct(shape, jnp.float32))
    return sum(
        np.prod(x.shape, dtype=np.int64) * x.dtype.itemsize
        for x in jax.tree_util.tree_leaves(state)
    )


def test_adafactor_state_memory_is_rows_plus_cols():
    n = 4096
    nbytes = _state_bytes(gradtx.adafactor(), (n, n))
    scalars = 16 * 8  # a few counters and 0-d placeholders
    assert nbytes <= 2 * n * 4 + scalars, nbytes
    assert nbytes >= 2 * n * 4  # it does keep the two factors
    # Adam on the same parameter keeps 2 n² floats.
    assert _state_bytes(gradtx.adam(1e-3), (n, n)) >= 2 * n * n * 4


def test_factored_rms_state_shapes():
    tx = gradtx.scale_by_factored_rms()
    state = tx.init({"m": jnp.zeros((256, 130)), "small": jnp.zeros((4, 300)), "v": jnp.zeros(500)})
    # v_row averages over the longest axis, v_col over the second longest (optax's layout).
    assert state.v_row["m"].shape == (130,) and state.v_col["m"].shape == (256,)
    assert state.v["m"].shape == ()
    assert state.v["small"].shape == (4, 300)  # 4 < 128: not factored
    assert state.v["v"].shape == (500,)


def test_factored_rms_float16_state_and_zero_grads():
    tx = gradtx.adafactor(min_dim_size_to_factor=2)
    p = {"w": jnp.ones((3, 4), jnp.float16), "b": jnp.zeros((4,), jnp.bfloat16)}
    state = tx.init(p)
    dtypes = jax.tree_util.tree_map(lambda x: x.dtype, state)
    for _ in range(3):
        u, state = jax.jit(tx.update)(jax.tree_util.tree_map(jnp.zeros_like, p), state, p)
        assert u["w"].dtype == jnp.float16 and u["b"].dtype == jnp.bfloat16
        assert all(bool(jnp.all(x == 0)) for x in jax.tree_util.tree_leaves(u))
    assert jax.tree_util.tree_map(lambda x: x.dtype, state) == dtypes


def test_factored_rms_bad_arguments():
    with pytest.raises(ValueError, match="min_dim_size_to_factor"):
        gradtx.scale_by_factored_rms(min_dim_size_to_factor=0)
    with pytest.raises(ValueError, match="epsilon"):
        gradtx.scale_by_factored_rms(epsilon=-1.0)


# ---------------------------------------------------------------------------------------------
# SM3.


def test_sm3_matches_paper_box(x64):
    opt = gradtx.chain(gradtx.scale_by_sm3(b1=0.0, eps=0.0), gradtx.scale_by_learning_rate(0.1))
    check_paper(opt, np_sm3(0.1))


def test_sm3_with_momentum_matches_paper(x64):
    check_paper(gradtx.sm3(0.1), np_sm3(0.1, momentum=0.9, eps=1e-8))


def test_sm3_rank3_matches_paper(x64):
    params, grad = problem_3d(2)
    got = run_gradtx(gradtx.sm3(0.05), params, grad)
    ref = run_numpy(np_sm3(0.05, momentum=0.9, eps=1e-8), params, grad)
    assert_close(got, ref, 1e-10, 1e-12)


def _no_scalars(seed):
    # optax's sm3 cannot take 0-d parameters; compare on the matrix and the vector.
    params, grad = random_problem(seed, np.float32)
    params = {"dense": params["dense"]}
    return params, lambda p, t: {"dense": grad({**p, "scale": np.float32(0.0)}, t)["dense"]}


def test_sm3_matches_optax():
    params, grad = _no_scalars(1)
    assert_close(
        run_gradtx(gradtx.sm3(0.1), params, grad),
        run_optax(optax.sm3(0.1), params, grad),
        1e-5,
        1e-6,
    )
    mine = gradtx.chain(gradtx.scale_by_sm3(0.5, 0.9), gradtx.scale(-0.05))
    theirs = optax.chain(optax.scale_by_sm3(0.5, 0.9), optax.scale(-0.05))
    assert_close(run_gradtx(mine, params, grad), run_optax(theirs, params, grad), 1e-5, 1e-6)
    params, grad = problem_3d(3, np.float32)
    assert_close(
        run_gradtx(gradtx.sm3(0.1), params, grad),
        run_optax(optax.sm3(0.1), params, grad),
        1e-5,
        1e-6,
    )


def test_sm3_state_memory():
    n = 1024
    state = jax.eval_shape(
        gradtx.scale_by_sm3(b1=0.0).init, jax.ShapeDtypeStruct((n, n), jnp.float32)
    )
    shapes = sorted(x.shape for x in jax.tree_util.tree_leaves(state.accumulators))
    assert shapes == [(n,), (n,)]


def test_sm3_rejects_complex():
    with pytest.raises(TypeError, match="scale_by_sm3: complex"):
        gradtx.sm3(0.1).init({"w": jnp.zeros((2, 2), jnp.complex64)})


def test_sm3_zero_grads_low_precision():
    tx = gradtx.sm3(0.1)
    p = {"w": jnp.ones((3, 4), jnp.float16), "b": jnp.zeros((4,), jnp.bfloat16)}
    state = tx.init(p)
    for _ in range(2):
        u, state = jax.jit(tx.update)(jax.tree_util.tree_map(jnp.zeros_like, p), state, p)
        assert all(bool(jnp.all(x == 0)) for x in jax.tree_util.tree_leaves(u))
        assert u["w"].dtype == jnp.float16


def test_sm3_bad_arguments():
    with pytest.raises(ValueError, match="scale_by_sm3: b2"):
        gradtx.scale_by_sm3(b2=1.5)
