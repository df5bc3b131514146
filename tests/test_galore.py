"""GaLore against its paper and optax.contrib.

- a float64 NumPy reference of Algorithm 2 of the paper ("Adam with GaLore"; its statements
  quoted where they are computed, never calling gradtx) matches gradtx for 100 steps at rtol
  1e-8 under x64, across several recomputations of the projectors, on matrices projected on
  the left and on the right, truncated to a rank below their size, with batch axes and
  multi-axis outputs, leaves that are not projected, weight decay and a scheduled ``scale``;
  complex parameters too;
- float32 runs match optax.contrib: exactly its numbers with ``projector_side="larger",
  canonical_signs=False``; and with gradtx's sign convention whenever the result cannot depend
  on the signs (Adam with ``b1 = 0``, OPTAX["canonical_signs_b1_0"]); the defaults (the
  paper's side) differ from optax, asserted;
- jit, vmap over the learning rate, grad through a step, state dtypes, abstract init, huge and
  tiny gradients, bad arguments named in the user's words;
- the digits MLP reaches 95% test accuracy.
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
from gradtx.transforms.galore import (
    GaLoreDimensionNumbers,
    GaLoreState,
    galore,
    scale_by_galore,
)

STEPS = 100
GDN = GaLoreDimensionNumbers


def _problem(seed: int = 0, dtype=np.float64):
    """``random_problem``'s leaves (a wide 3×4 matrix, a vector, a scalar) flattened into one
    dict, plus a tall 6×3 matrix ``v``, a stack of two 5×3 matrices and a (4, 2, 3) tensor, with
    the same kind of gradient: ``(x − c) + 0.5 sin(3x) + 0.3 n_{t mod 7}``."""
    base, base_grad = random_problem(seed, dtype)
    rng = np.random.default_rng(100 + seed)
    shapes = {"v": (6, 3), "stack": (2, 5, 3), "attn": (4, 2, 3)}
    extra = {k: rng.normal(size=s).astype(dtype) for k, s in shapes.items()}
    targets = {k: rng.normal(size=s).astype(dtype) for k, s in shapes.items()}
    noise = [{k: rng.normal(size=s).astype(dtype) for k, s in shapes.items()} for _ in range(7)]
    params = {"w": base["dense"]["w"], "b": base["dense"]["b"], "scale": base["scale"], **extra}

    def grad(p, t):
        g0 = base_grad({"dense": {"w": p["w"], "b": p["b"]}, "scale": p["scale"]}, t)
        out = {"w": g0["dense"]["w"], "b": g0["dense"]["b"], "scale": g0["scale"]}
        for k in shapes:
            x = np.asarray(p[k])
            out[k] = (x - targets[k]) + 0.5 * np.sin(3 * x) + 0.3 * noise[t % 7][k]
        return out

    return params, grad


# ----------------------------------------------------------------------------------------------
# The float64 reference: Zhao et al., arXiv 2403.03507, Algorithm 2 ("Adam with GaLore"). The
# box is written for W ∈ R^{m×n} with m ≤ n and a left projector P = U[:, :r]; for m > n the
# projector acts on the right (P = V[:, :r]), so that P spans the smaller side, as the paper's
# memory count mn + mr + 2nr and the authors' code have it. The SVD fixes each singular vector
# only up to sign; gradtx's convention (largest-magnitude entry positive) is applied here too.


def _svd_projector(g2, k, left, canonical):
    """Algorithm 2: "U, S, V ← SVD(G_t); P_t ← U[:, :r]" (or V[:, :r] on the right)."""
    u, _, vh = np.linalg.svd(g2, full_matrices=False)
    p = u[:, :k].copy() if left else vh[:k, :].conj().T.copy()
    flips = 0
    if canonical:
        for j in range(k):
            i = int(np.argmax(np.abs(p[:, j])))
            phase = np.conj(p[i, j]) / abs(p[i, j])
            flips += bool(abs(phase - 1) > 1e-12)
            p[:, j] *= phase
    return p, flips


def _matrices(x, layout):
    """The leaf as a stack of matrices (b, m, n): batch axes, then reduction, then output."""
    batch, red, out = layout
    perm = batch + red + out
    y = np.transpose(x, perm)
    b = int(np.prod([x.shape[a] for a in batch]))
    m = int(np.prod([x.shape[a] for a in red]))
    return y.reshape(b, m, -1), perm


def _unmatrices(y, perm, shape):
    return np.transpose(y.reshape([shape[a] for a in perm]), np.argsort(perm))


def _galore_ref(lr, rank, gap, alpha, b1, b2, eps, wd, layouts, side="smaller", canonical=True):
    """Algorithm 2 on the list of leaves; ``layouts[i]`` is (batch, reduction, output) axes, or
    None for a leaf updated by plain Adam (no projection, no α). ``alpha`` may be a function of
    t (the number of steps before this one)."""
    seen = {"flips": 0, "refreshes": 0, "sides": set(), "truncated": False}

    def init(xs):
        # the box's initialisation: M_0 ← 0, V_0 ← 0 (shaped like R_t), t ← 0; P is set at t = 0
        return {"P": [None] * len(xs), "M": [None] * len(xs), "V": [None] * len(xs)}

    def adam(st, i, r, t):
        # "UPDATE(R_t) by Adam": M, V, their bias corrections, N_t = M̂/(√V̂ + ε) (step t + 1)
        if st["M"][i] is None:
            st["M"][i], st["V"][i] = np.zeros_like(r), np.zeros(r.shape)
        st["M"][i] = b1 * st["M"][i] + (1 - b1) * r
        st["V"][i] = b2 * st["V"][i] + (1 - b2) * np.abs(r) ** 2
        m_hat = st["M"][i] / (1 - b1 ** (t + 1))
        v_hat = st["V"][i] / (1 - b2 ** (t + 1))
        return m_hat / (np.sqrt(v_hat) + eps)

    def step(xs, gs, st, t, _):
        a = alpha(t) if callable(alpha) else alpha
        out = []
        for i, (x, g) in enumerate(zip(xs, gs, strict=True)):
            if layouts[i] is None:
                full = adam(st, i, g, t)
            else:
                mats, perm = _matrices(g, layouts[i])
                _, m, n = mats.shape
                left = m <= n if side == "smaller" else m >= n
                k = min(rank, m, n)
                seen["sides"].add(left)
                seen["truncated"] |= k < min(m, n)
                if t % gap == 0:  # "if t mod T = 0": a new P; "else P_t ← P_{t−1}"
                    st["P"][i] = []
                    for gm in mats:
                        p, f = _svd_projector(gm, k, left, canonical)
                        st["P"][i].append(p)
                        seen["flips"] += f
                    seen["refreshes"] += 1
                ps = st["P"][i]
                # "R_t ← P_tᵀ G_t" (Pᴴ for complex; G_t P_t on the right)
                r = np.stack(
                    [p.conj().T @ gm if left else gm @ p for p, gm in zip(ps, mats, strict=True)]
                )
                nt = adam(st, i, r, t)
                # "G̃_t ← α P N_t" (α N_t P_tᴴ on the right)
                back = np.stack(
                    [p @ nm if left else nm @ p.conj().T for p, nm in zip(ps, nt, strict=True)]
                )
                full = a * _unmatrices(back, perm, g.shape)
            # "W_t ← W_{t−1} + η G̃_t" (G_t is −∇ there), with AdamW's decoupled decay
            out.append(x - lr * (full + wd * x))
        return out, st

    return init, step, seen


# leaf order of _problem's dict: attn, b, scale, stack, v, w
_ORDER = ["attn", "b", "scale", "stack", "v", "w"]
_MAT = ((), (0,), (1,))  # a 2-D leaf as (in, out)
_DEFAULT_LAYOUTS = {"v": _MAT, "w": _MAT}  # weight_dimension_numbers=None: 2-D leaves only
_ALL_LAYOUTS = {
    "attn": ((), (0,), (1, 2)),  # 4 × 6
    "stack": ((0,), (1,), (2,)),  # two 5 × 3 matrices (batch axis 0)
    "v": _MAT,
    "w": _MAT,
}
_ALL_DIMS = {
    "attn": GDN(0, (1, 2)),
    "b": None,
    "scale": None,
    "stack": GDN(1, 2),
    "v": GDN(),
    "w": GDN(),
}

PAPER = {
    # the paper's default Adam, rank 2 (below both matrices' sizes), P recomputed 10 times
    "defaults_rank2": dict(
        lr=1e-2, rank=2, gap=10, alpha=0.25, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, dims=None
    ),
    # every layout: batch axes, multi-axis outputs; decay; an eps that matters; a scheduled α
    "all_layouts_decay_schedule": dict(
        lr=2e-2,
        rank=2,
        gap=7,
        alpha=lambda t: 0.5 + 0.01 * t,
        b1=0.8,
        b2=0.99,
        eps=0.05,
        wd=0.1,
        dims=_ALL_DIMS,
    ),
    # optax's side, rank 1, with gradtx's sign convention
    "larger_side_rank1": dict(
        lr=1e-2,
        rank=1,
        gap=13,
        alpha=1.0,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        wd=0.0,
        dims=_ALL_DIMS,
        side="larger",
    ),
}


def _scale_arg(alpha):
    if callable(alpha):
        return lambda c: 0.5 + 0.01 * c  # the same schedule, of the count before the step
    return alpha


@pytest.mark.parametrize("name", sorted(PAPER))
def test_galore_matches_algorithm_2(x64, name):
    kw = dict(PAPER[name])
    params, grad = _problem(0)
    side = kw.pop("side", "smaller")
    opt = galore(
        kw["lr"],
        rank=kw["rank"],
        update_proj_gap=kw["gap"],
        scale=_scale_arg(kw["alpha"]),
        base_optimizer=gradtx.scale_by_adam(kw["b1"], kw["b2"], kw["eps"]),
        weight_decay=kw["wd"],
        weight_dimension_numbers=kw["dims"],
        projector_side=side,
    )
    ours = run_library(opt, params, grad, STEPS, jnp.float64)
    layouts = _ALL_LAYOUTS if kw["dims"] is not None else _DEFAULT_LAYOUTS
    init, step, seen = _galore_ref(
        kw["lr"],
        kw["rank"],
        kw["gap"],
        kw["alpha"],
        kw["b1"],
        kw["b2"],
        kw["eps"],
        kw["wd"],
        [layouts.get(k) for k in _ORDER],
        side=side,
    )
    ref = run_numpy(init, step, params, grad, STEPS)
    assert_trees_close(ours, ref, rtol=1e-8)
    assert _moved(ref, params) > 0.1
    # the data reached every branch: several refreshes, both sides, a truncated rank, and
    # singular vectors whose sign the convention had to flip
    assert seen["refreshes"] >= 2 * (STEPS // kw["gap"])
    assert seen["sides"] == {True, False} and seen["truncated"]
    assert seen["flips"] > 0


def test_projection_is_not_a_no_op(x64):
    # rank 2 of a 3 × 4 matrix loses a direction: the trajectory differs from full-rank GaLore
    # (which is Adam in rotated coordinates) and from Adam
    params, grad = _problem(0)
    kw = dict(PAPER["defaults_rank2"])
    ref = {}
    for rank in (1, 2, 3):
        args = (kw["lr"], rank, kw["gap"], 1.0, 0.9, 0.999, 1e-8, 0.0)
        init, step, _ = _galore_ref(*args, [_DEFAULT_LAYOUTS.get(k) for k in _ORDER])
        ref[rank] = run_numpy(init, step, params, grad, 30)
    adam = run_library(gradtx.adam(kw["lr"]), params, grad, 30, jnp.float64)
    assert _moved(ref[1], ref[2]) > 1e-2 and _moved(ref[2], ref[3]) > 1e-2
    assert _moved(ref[3], adam) > 1e-3


def _complex_problem(seed=3):
    rng = np.random.default_rng(seed)
    shapes = {"w": (3, 4), "v": (5, 2), "b": (3,)}

    def c(shape):
        return rng.normal(size=shape) + 1j * rng.normal(size=shape)

    params = {k: c(s) for k, s in shapes.items()}
    targets = {k: c(s) for k, s in shapes.items()}
    noise = [{k: c(s) for k, s in shapes.items()} for _ in range(5)]

    def grad(p, t):
        return {k: (p[k] - targets[k]) + 0.3 * noise[t % 5][k] for k in shapes}

    return params, grad


def test_complex_params_match_the_reference(x64):
    # Pᴴ projects, singular vectors get a real positive largest entry; Adam's v holds |R|²
    params, grad = _complex_problem()
    opt = galore(2e-2, rank=1, update_proj_gap=6)
    p = {k: jnp.asarray(v) for k, v in params.items()}
    state = opt.init(p)
    step = jax.jit(
        lambda p, s, g: (lambda u, s: (gradtx.apply_updates(p, u), s))(*opt.update(g, s, p))
    )
    init, ref_step, seen = _galore_ref(
        2e-2,
        1,
        6,
        1.0,
        0.9,
        0.999,
        1e-8,
        0.0,
        [None, _MAT, _MAT],  # order b, v, w
    )
    xs = [np.asarray(params[k]) for k in ("b", "v", "w")]
    st = init(xs)
    for t in range(40):
        g = grad({k: np.asarray(v) for k, v in p.items()}, t)
        p, state = step(p, state, {k: jnp.asarray(v) for k, v in g.items()})
        g_ref = grad(dict(zip(("b", "v", "w"), xs, strict=True)), t)
        xs, st = ref_step(xs, [g_ref[k] for k in ("b", "v", "w")], st, t, None)
    for k, x in zip(("b", "v", "w"), xs, strict=True):
        assert p[k].dtype == jnp.complex128
        np.testing.assert_allclose(np.asarray(p[k]), x, rtol=1e-8)
    assert seen["flips"] > 0 and seen["sides"] == {True, False}


# ----------------------------------------------------------------------------------------------
# optax.contrib in float32.

_OPTAX_DIMS = {
    "attn": optax.contrib.GaLoreDimensionNumbers(0, (1, 2)),
    "b": None,
    "scale": None,
    "stack": None,  # optax refuses batch axes
    "v": optax.contrib.GaLoreDimensionNumbers(),
    "w": optax.contrib.GaLoreDimensionNumbers(),
}
_OURS_DIMS = {**_ALL_DIMS, "stack": None}

_AS_OPTAX = dict(projector_side="larger", canonical_signs=False)
_MASK = {k: k != "attn" for k in _ORDER}

# (gradtx's optimizer, optax's) with the same numbers
OPTAX = {
    "rank2_gap10": (
        lambda: galore(1e-2, rank=2, update_proj_gap=10, **_AS_OPTAX),
        lambda: optax.contrib.galore(1e-2, rank=2, update_proj_gap=10),
    ),
    "dims_decay_scale_mask": (
        lambda: galore(
            2e-2,
            rank=1,
            update_proj_gap=7,
            scale=0.5,
            base_optimizer=gradtx.scale_by_adam(b1=0.8, b2=0.99, eps=1e-3),
            weight_decay=0.1,
            mask=_MASK,
            weight_dimension_numbers=_OURS_DIMS,
            **_AS_OPTAX,
        ),
        lambda: optax.contrib.galore(
            2e-2,
            rank=1,
            update_proj_gap=7,
            scale=0.5,
            base_optimizer=optax.scale_by_adam(b1=0.8, b2=0.99, eps=1e-3),
            weight_decay=0.1,
            mask=_MASK,
            weight_dimension_numbers=_OPTAX_DIMS,
        ),
    ),
    # Adam with b1 = 0 cannot see the signs of P's columns (flipping one flips a row of R_t and
    # of N_t, and P N_t is unchanged; v holds squares): gradtx's sign convention gives optax's
    # numbers there, across refreshes
    "canonical_signs_b1_0": (
        lambda: galore(
            1e-2,
            rank=2,
            update_proj_gap=10,
            base_optimizer=gradtx.scale_by_adam(b1=0.0),
            projector_side="larger",
        ),
        lambda: optax.contrib.galore(
            1e-2, rank=2, update_proj_gap=10, base_optimizer=optax.scale_by_adam(b1=0.0)
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(OPTAX))
def test_galore_matches_optax(name):
    ours, theirs = OPTAX[name]
    params, grad = _problem(1, np.float32)
    a = run_library(ours(), params, grad, STEPS, jnp.float32)
    b = run_library(theirs(), params, grad, STEPS, jnp.float32, lib="optax")
    assert_trees_close(a, b, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    assert _moved(a, params) > 0.1


def test_defaults_differ_from_optax_on_purpose():
    # the paper's side (and the sign convention) move the non-square matrices differently; the
    # leaves that are not projected, and a square matrix (both put P on the left), agree with
    # optax until the first refresh (with b1 > 0 the signs matter from then on)
    params, grad = _problem(1, np.float32)
    params = {**params, "sq": np.eye(3, dtype=np.float32) + 0.1 * params["w"][:, :3]}

    def g(p, t):
        return {
            **grad(p, t),
            "sq": np.asarray(p["sq"]) - 1.0 + 0.2 * np.cos(t + 3 * np.asarray(p["sq"])),
        }

    a = run_library(galore(1e-2, rank=2), params, g, 60, jnp.float32)
    b = run_library(optax.contrib.galore(1e-2, rank=2), params, g, 60, jnp.float32, lib="optax")
    for k in ("w", "v"):
        assert _moved(a[k], b[k]) > 1e-2, k
    for k in ("b", "scale", "sq"):
        np.testing.assert_allclose(a[k], b[k], rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)


def test_projector_side_and_state_layout():
    params = {"wide": jnp.ones((3, 8)), "tall": jnp.ones((8, 3)), "b": jnp.ones(3)}
    state = scale_by_galore(rank=2).init(params)
    assert (
        isinstance(state, GaLoreState) and GaLoreState._fields == optax.contrib.GaLoreState._fields
    )
    # the paper's side: P spans the smaller dimension, the moments the larger one
    assert state.projector["wide"].shape == (3, 2) and state.projector["tall"].shape == (3, 2)
    assert state.base_optimizer_state.mu["wide"].shape == (2, 8)
    assert state.base_optimizer_state.mu["tall"].shape == (8, 2)
    # a leaf that is not projected has no projector (optax: an empty (0, 0) array)
    assert state.projector["b"] is None and state.base_optimizer_state.mu["b"].shape == (3,)
    theirs = optax.contrib.scale_by_galore(rank=2).init(params)
    larger = scale_by_galore(rank=2, projector_side="larger").init(params)
    assert theirs.projector["b"].shape == (0, 0)
    for k in ("wide", "tall"):
        assert larger.projector[k].shape == theirs.projector[k].shape
    for k in params:
        assert larger.base_optimizer_state.mu[k].shape == theirs.base_optimizer_state.mu[k].shape
    # batch axes: one projector per slice
    st = scale_by_galore(rank=2, weight_dimension_numbers=GDN(1, 2)).init(
        {"s": jnp.ones((4, 5, 3))}
    )
    assert st.projector["s"].shape == (4, 3, 2)
    assert st.base_optimizer_state.mu["s"].shape == (4, 5, 2)


def test_projectors_are_recomputed_every_gap_steps_and_have_canonical_signs():
    tx = scale_by_galore(rank=2, update_proj_gap=3)
    rng = np.random.default_rng(0)
    p = {"w": jnp.zeros((4, 6))}
    state = tx.init(p)
    step = jax.jit(tx.update)
    kept = []
    for t in range(7):
        g = {"w": jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)}
        _, state = step(g, state)
        proj = np.asarray(state.projector["w"])
        kept.append(proj)
        u, _, _ = np.linalg.svd(np.asarray(g["w"], np.float64))
        if t % 3 == 0:  # recomputed from this gradient: its top-2 left singular vectors
            np.testing.assert_allclose(np.abs(proj), np.abs(u[:, :2]), atol=1e-5)
        else:
            np.testing.assert_array_equal(proj, kept[t - 1])
        i = np.argmax(np.abs(proj), axis=0)
        assert np.all(proj[i, np.arange(2)] > 0)
    assert int(state.count) == 7


# ----------------------------------------------------------------------------------------------
# Transformations: jit, vmap over the learning rate, grad through a step, dtypes, eval_shape.


def _first_update(lr, g, params):
    opt = galore(lr, rank=1)
    return opt.update(g, opt.init(params), params)[0]


def test_learning_rate_is_a_leaf_vmap_grad_and_eager_equals_jit():
    params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
    g = {"w": jnp.array([[3.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), "b": jnp.array([1.0, -2.0, 0.5])}
    # rank 1 of G: u1 = e1-ish; Adam's first step is sign(R) = sign(P^T G); the update is
    # −lr P sign(Pᵀ G): compare with that formula from NumPy's SVD
    u, _, _ = np.linalg.svd(np.asarray(g["w"], np.float64))
    p1 = u[:, :1] * np.sign(u[np.argmax(np.abs(u[:, 0])), 0])
    want_w = p1 @ np.sign(p1.T @ np.asarray(g["w"], np.float64))
    lrs = jnp.array([0.1, 0.2])
    out = jax.vmap(lambda lr: _first_update(lr, g, params))(lrs)
    np.testing.assert_allclose(out["w"], -np.asarray(lrs)[:, None, None] * want_w, atol=1e-6)
    np.testing.assert_allclose(out["b"], -np.outer(lrs, np.sign(g["b"])), atol=1e-6)
    d = jax.grad(lambda lr: _first_update(lr, g, params)["w"][0, 0])(0.1)
    np.testing.assert_allclose(d, -want_w[0, 0], rtol=1e-5)
    eager = _first_update(0.1, g, params)
    jitted = jax.jit(_first_update)(0.1, g, params)
    assert_trees_close(eager, jitted, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_params_keep_their_dtypes(dtype):
    opt = galore(1e-2, rank=2, update_proj_gap=2)
    params = {"w": jnp.linspace(-1, 1, 12, dtype=dtype).reshape(3, 4), "b": jnp.zeros(3, dtype)}
    p0 = params
    state = opt.init(params)
    want = jax.tree_util.tree_map(lambda x: x.dtype, state)

    @jax.jit
    def step(p, s, t):
        g = jax.tree_util.tree_map(lambda x: (x - 0.3 * jnp.cos(x * (t + 1))).astype(x.dtype), p)
        u, s = opt.update(g, s, p)
        return gradtx.apply_updates(p, u), s, u

    for t in range(5):
        params, state, u = step(params, state, t)
        assert all(x.dtype == jnp.dtype(dtype) for x in jax.tree_util.tree_leaves(u))
        assert jax.tree_util.tree_map(lambda x: x.dtype, state) == want
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(params))
    assert state[0].projector["w"].dtype == jnp.dtype(dtype)
    assert _moved(params, p0) > 0


def test_init_through_eval_shape_matches_init():
    params = {"w": jnp.ones((5, 3)), "s": jnp.ones((2, 4, 6)), "b": jnp.ones(4)}
    opt = galore(1e-3, rank=2, weight_dimension_numbers={"w": GDN(), "s": GDN(1, 2), "b": None})
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    a = jax.eval_shape(opt.init, abstract)
    b = opt.init(params)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype


@pytest.mark.parametrize("magnitude", [1e-30, 1e30])
def test_huge_and_tiny_gradients_stay_finite(magnitude):
    # the SVD sees the gradient divided by its largest entry: the projectors are those of the
    # same gradient at scale 1, and nothing overflows (Adam's ν saturates, see scale_by_adam)
    opt = galore(1e-2, rank=2, update_proj_gap=2)
    params = {"w": jnp.ones((3, 5)), "b": jnp.ones(3)}
    state, state1 = opt.init(params), opt.init(params)
    rng = np.random.default_rng(1)
    step = jax.jit(opt.update)
    for _ in range(5):
        g = {k: rng.normal(size=v.shape) for k, v in params.items()}
        u, state = step(
            jax.tree_util.tree_map(lambda x: jnp.float32(magnitude) * x, g), state, params
        )
        _, state1 = step(jax.tree_util.tree_map(jnp.float32, g), state1, params)
        for x in jax.tree_util.tree_leaves((u, state)):
            assert bool(jnp.all(jnp.isfinite(x)))
        np.testing.assert_allclose(state[0].projector["w"], state1[0].projector["w"], atol=1e-5)
        assert float(jnp.max(jnp.abs(u["w"]))) > 0


def test_other_base_optimizers_and_int_params():
    params = {"w": jnp.ones((3, 4))}
    g = {"w": jnp.arange(12.0).reshape(3, 4)}
    # SGD in the low-rank space with full rank: P Pᵀ G = G
    tx = scale_by_galore(rank=3, base_optimizer=gradtx.sgd(1.0))
    u, _ = tx.update(g, tx.init(params))
    np.testing.assert_allclose(u["w"], -np.asarray(g["w"]), rtol=1e-5, atol=1e-5)
    # an optax transform as the base optimizer
    tx = scale_by_galore(rank=3, base_optimizer=optax.scale(2.0))
    u, _ = tx.update(g, tx.init(params))
    np.testing.assert_allclose(u["w"], 2 * np.asarray(g["w"]), rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="galore"):
        galore(1e-2).init({"w": jnp.ones((3, 4), jnp.int32)})


@pytest.mark.parametrize(
    "build,error,message",
    [
        (lambda: galore(1e-2, rank=0), ValueError, r"galore: rank must be in \[1, inf\], got 0"),
        (lambda: galore(1e-2, rank=2.5), TypeError, r"galore: rank must be an integer >= 1"),
        (
            lambda: galore(1e-2, update_proj_gap=0),
            ValueError,
            r"galore: update_proj_gap must be in \[1, inf\], got 0",
        ),
        (lambda: galore(1e-2, scale=-1.0), ValueError, r"galore: scale must be in \[0, inf\]"),
        (
            lambda: galore(1e-2, weight_decay=-1.0),
            ValueError,
            r"galore: weight_decay must be in \[0, inf\], got -1.0",
        ),
        (
            lambda: galore(1e-2, projector_side="left"),
            ValueError,
            r"galore: projector_side must be one of \['smaller', 'larger'\], got 'left'",
        ),
        (
            lambda: galore(1e-2, base_optimizer=3),
            TypeError,
            r"galore: base_optimizer must be a gradient transformation",
        ),
        (
            lambda: scale_by_galore(weight_dimension_numbers=GDN(0.5, 1)),
            TypeError,
            r"scale_by_galore: weight_dimension_numbers axes must be ints",
        ),
        (
            lambda: galore(1e-2, weight_dimension_numbers={"b": GDN()}).init({"b": jnp.ones(3)}),
            ValueError,
            r"scale_by_galore: weight_dimension_numbers gives a matrix layout for a leaf of shape",
        ),
        (
            lambda: galore(1e-2, weight_dimension_numbers=GDN(0, 0)).init({"w": jnp.ones((3, 3))}),
            ValueError,
            r"must name distinct, non-empty reduction and output axes",
        ),
        (
            lambda: galore(1e-2, weight_dimension_numbers=GDN(0, 3)).init({"w": jnp.ones((3, 3))}),
            ValueError,
            r"weight_dimension_numbers has axis 3, out of range for a leaf of shape \(3, 3\)",
        ),
    ],
)
def test_bad_arguments_are_named(build, error, message):
    with pytest.raises(error, match=message):
        build()


# ----------------------------------------------------------------------------------------------
# The digits MLP (examples/digits_mlp.py's data and model, (64, 128, 10)) reaches 95% test
# accuracy with GaLore's defaults (rank 128: full rank here, P recomputed every 200 steps) and
# with a rank that truly truncates (16 of 64 and 10 of 10), at the learning rate chosen here.

DIGITS = {
    "galore": lambda: galore(2e-3),
    "galore_rank16": lambda: galore(2e-3, rank=16),
}


@pytest.mark.parametrize("name", sorted(DIGITS))
def test_digits_mlp_reaches_95_percent(name):
    acc = demo_accuracy(DIGITS[name]())
    assert acc >= 0.95, (name, acc)
