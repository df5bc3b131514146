"""SOAP against its paper's algorithm box and the authors' reference implementation.

- a float64 NumPy reference written from Algorithm 3 of the paper (the moment ``M`` kept in the
  parameter's axes and rotated each step, as the box writes it) with Algorithm 4 as the refresh
  and the authors' details (first update only builds the factors and their ``eigh`` bases; the
  sort by estimated eigenvalue with ``V`` permuted along; the bias correction on the step size)
  matches gradtx for 100 steps at rtol 1e-8 under x64, on matrices, a 3-D tensor, an axis
  above ``max_precond_dim``, 1-D and scalar parameters, across many refreshes, with the sort
  actually permuting;
- rank-deficient first factors (any orthonormal basis of their null space is an eigenbasis):
  gradtx's first bases are checked to be eigenbases, then the reference continues from them;
- the authors' decay order differs only by ``η² λ u``; the first update and its state; gradient
  scales 1e-30..1e30 stay finite and the step is scale-free where nothing overflows; 16-bit
  parameters; ``vmap`` over the learning rate; abstract ``init``; errors in the user's words;
- the digits MLP reaches 95% test accuracy with the documented defaults.

optax has no SOAP, so there is no optax comparison: the NumPy reference is the oracle.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _digits import demo_accuracy
from _stepping import assert_trees_close, run_library, run_numpy
from conftest import random_problem

import gradtx
from gradtx.transforms.soap import SoapState, scale_by_soap, soap

STEPS = 100


# ----------------------------------------------------------------------------------------------
# The float64 reference. Vyas et al., arXiv 2409.11321, Algorithm 3 (one step for an m × n
# layer, generalised per axis as the authors' code does) and Algorithm 4 (the refresh):
#   line 2:  G ← ∇φ(W)
#   line 3:  G' ← Q_Lᵀ G Q_R
#   line 4:  M ← β1 M + (1 − β1) G
#   line 5:  M' ← Q_Lᵀ M Q_R
#   line 7:  V ← β2 V + (1 − β2) G' ⊙ G'
#   line 8:  N' ← M' / (sqrt(V) + ε)
#   line 10: N ← Q_L N' Q_Rᵀ
#   line 11: W ← W − η N          (the authors: η sqrt(1 − β2^t) / (1 − β1^t), t Adam's step)
#   lines 13–14: L ← β_s L + (1 − β_s) G Gᵀ, R ← β_s R + (1 − β_s) Gᵀ G
#   lines 16–19: if t mod f = 0: Q ← Eigenvectors(L, Q) (Algorithm 4: S ← P Q; Q ← QR(S)),
#            the authors first sorting Q's columns by diag(Qᵀ P Q), decreasing, and permuting
#            V's entries along that axis with them.
# The authors' first call: L, R from G alone and Q by eigh (eigenvalues decreasing), no step.


def _unfold_gram(g, axis):
    """G_(i) G_(i)ᵀ: the mode-``axis`` unfolding times its transpose."""
    gi = np.moveaxis(g, axis, 0).reshape(g.shape[axis], -1)
    return gi @ gi.T


def _rotate(x, qs, back=False):
    """x ×_i Q_iᵀ on every axis with a basis (Q_Lᵀ X Q_R), or x ×_i Q_i back (Q_L X Q_Rᵀ)."""
    for i, q in enumerate(qs):
        if q is None:
            continue
        xi = np.moveaxis(x, i, 0)
        shape = xi.shape
        xi = (q if back else q.T) @ xi.reshape(shape[0], -1)
        x = np.moveaxis(xi.reshape(shape), 0, i)
    return x


def _axes(shape, max_dim, precondition_1d):
    if len(shape) == 1:
        return [precondition_1d and shape[0] <= max_dim]
    return [n <= max_dim for n in shape]


def _soap_ref(
    lr,
    b1,
    b2,
    sb,
    eps,
    wd,
    freq,
    max_dim=10000,
    p1d=False,
    authors_decay=False,
    first_bases=None,
    seen=None,
):
    sb = b2 if sb < 0 else sb

    def init(xs):
        return {
            "M": [np.zeros_like(x) for x in xs],
            "V": [np.zeros_like(x) for x in xs],
            "P": [[None] * x.ndim for x in xs],  # L, R, ... per axis
            "Q": [[None] * x.ndim for x in xs],
        }

    def step(xs, gs, st, call, value):
        out = []
        if call == 0:  # the authors' first call: the factors from G alone, Q by eigh
            for k, (x, g) in enumerate(zip(xs, gs, strict=True)):
                for i, on in enumerate(_axes(x.shape, max_dim, p1d)):
                    if on:
                        st["P"][k][i] = (1 - sb) * _unfold_gram(g, i)
                        w, v = np.linalg.eigh(st["P"][k][i])
                        st["Q"][k][i] = v[:, ::-1]
                        if first_bases is not None and (k, i) in first_bases:
                            st["Q"][k][i] = first_bases[(k, i)]
                # no SOAP step; gradtx's decoupled decay applies with the zero step
                out.append(x if authors_decay else x - lr * wd * x)
            return out, st
        t = call  # Adam's step
        for k, (x, g) in enumerate(zip(xs, gs, strict=True)):
            qs = st["Q"][k]
            gp = _rotate(g, qs)  # line 3
            st["M"][k] = b1 * st["M"][k] + (1 - b1) * g  # line 4
            mp = _rotate(st["M"][k], qs)  # line 5
            st["V"][k] = b2 * st["V"][k] + (1 - b2) * gp * gp  # line 7
            n = _rotate(mp / (np.sqrt(st["V"][k]) + eps), qs, back=True)  # lines 8, 10
            u = np.sqrt(1 - b2**t) / (1 - b1**t) * n  # the authors' bias correction
            if authors_decay:  # their code: p ← p − s N, then p ← p − η λ p
                y = x - lr * u
                out.append(y - lr * wd * y)
            else:  # line 11 with AdamW's decoupled decay
                out.append(x - lr * (u + wd * x))
            for i, p in enumerate(st["P"][k]):  # lines 13–14
                if p is not None:
                    st["P"][k][i] = sb * p + (1 - sb) * _unfold_gram(g, i)
            if t % freq == 0:  # lines 16–19
                for i, p in enumerate(st["P"][k]):
                    if p is None:
                        continue
                    q = qs[i]
                    est = np.diag(q.T @ p @ q)
                    order = np.argsort(-est, kind="stable")
                    if seen is not None:
                        seen.add(("refresh", True))
                        seen.add(("permuted", bool(np.any(order != np.arange(len(order))))))
                    st["V"][k] = np.take(st["V"][k], order, axis=i)
                    st["Q"][k][i] = np.linalg.qr(p @ q[:, order])[0]  # Algorithm 4
        return out, st

    return init, step


def _problem(shapes, seed=0):
    """Parameters of the given shapes and a quadratic-plus-sine gradient oracle with noise
    that changes each step (as tests/conftest.py's random_problem, with shapes of our own)."""
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(size=s) for k, s in shapes.items()}
    targets = {k: rng.normal(size=s) for k, s in shapes.items()}
    noise = [{k: rng.normal(size=s) for k, s in shapes.items()} for _ in range(7)]

    def emphasis(shape, t):
        # the gradient's first two axes weigh one index 3×, a different one every 20 steps:
        # the factors' leading eigenvectors change, so the refresh's sort has work to do
        w = np.ones(shape)
        for axis, n in enumerate(shape[:2]):
            idx = [slice(None)] * len(shape)
            idx[axis] = (t // 20 + axis) % n
            w[tuple(idx)] += 2.0
        return w

    def grad(p, t):
        return {
            k: emphasis(shapes[k], t)
            * (
                (np.asarray(p[k]) - targets[k])
                + 0.5 * np.sin(3 * np.asarray(p[k]))
                + 0.6 * noise[t % 7][k]
            )
            for k in shapes
        }

    return params, grad


# every factor of full rank after one gradient: the eigenbases are unique up to signs
SHAPES = {
    "square": (4, 4),
    "wide": (3, 12),  # 12 > max_precond_dim = 8: only L
    "cube": (2, 3, 4),  # unfoldings 2 × 12, 3 × 8, 4 × 6
    "bias": (5,),  # 1-D: Adam
    "scale": (),  # scalar: Adam
}

PAPER = {
    "authors_defaults": dict(
        lr=3e-2, b1=0.95, b2=0.95, sb=-1.0, eps=1e-8, wd=0.01, freq=10, max_dim=8
    ),
    "b1_neq_b2_eps_every_3": dict(
        lr=2e-2, b1=0.9, b2=0.99, sb=-1.0, eps=0.05, wd=0.0, freq=3, max_dim=8
    ),
}


def _leaf_moved(a, b):
    return min(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
        if np.size(x)
    )


@pytest.mark.parametrize("name", sorted(PAPER))
def test_soap_matches_algorithm_3(x64, name):
    kw = PAPER[name]
    params, grad = _problem(SHAPES)
    opt = soap(
        kw["lr"],
        kw["b1"],
        kw["b2"],
        kw["sb"],
        kw["eps"],
        kw["wd"],
        kw["freq"],
        max_precond_dim=kw["max_dim"],
    )
    ours = run_library(opt, params, grad, STEPS, jnp.float64)
    seen = set()
    ref = run_numpy(*_soap_ref(**kw, seen=seen), params, grad, STEPS)
    assert_trees_close(ours, ref, rtol=1e-8, atol=1e-12)
    assert _leaf_moved(ref, params) > 0.05  # every leaf moved
    # refreshes ran, and the sort reordered a basis at least once (V permuted with it)
    assert {("refresh", True), ("permuted", True)} <= seen


def test_rank_deficient_first_factors_continue_from_valid_eigenbases(x64):
    # random_problem's (3, 4) weight gives a 4 × 4 factor R of rank 3 after one gradient, and a
    # preconditioned 1-D bias a rank-1 factor: their null spaces have no preferred basis. Check
    # that gradtx's first bases are eigenbases (orthonormal, QᵀPQ diagonal and decreasing), then
    # run the reference from them; the full-rank factor L must equal NumPy's up to signs.
    params, grad = random_problem(0)
    kw = dict(lr=2e-2, b1=0.9, b2=0.95, sb=0.9, eps=1e-8, wd=0.0, freq=5, p1d=True)
    opt = scale_by_soap(kw["b1"], kw["b2"], kw["sb"], kw["eps"], kw["freq"], precondition_1d=True)
    p64 = jax.tree_util.tree_map(jnp.asarray, params)
    g0 = jax.tree_util.tree_map(jnp.asarray, grad(params, 0))
    _, state = opt.update(g0, opt.init(p64), p64)
    factors = jax.tree_util.tree_structure(params).flatten_up_to(state.factors)
    bases = jax.tree_util.tree_structure(params).flatten_up_to(state.bases)
    g0_leaves = jax.tree_util.tree_leaves(grad(params, 0))
    first = {}
    for k, (fs, qs) in enumerate(zip(factors, bases, strict=True)):
        for i, (f, q) in enumerate(zip(fs, qs, strict=True)):
            if f is None:
                continue
            p = (1 - kw["sb"]) * _unfold_gram(g0_leaves[k], i)
            q = np.asarray(q)
            np.testing.assert_allclose(np.asarray(f), p, rtol=1e-12)
            np.testing.assert_allclose(q.T @ q, np.eye(len(q)), atol=1e-12)
            d = q.T @ p @ q
            np.testing.assert_allclose(d, np.diag(np.diag(d)), atol=1e-12)
            assert np.all(np.diff(np.diag(d)) <= 1e-12)
            w, v = np.linalg.eigh(p)
            if w[0] > 1e-8 * w[-1]:  # full rank: the same basis up to column signs
                np.testing.assert_allclose(np.abs(q.T @ v[:, ::-1]), np.eye(len(q)), atol=1e-10)
            first[(k, i)] = q
    assert len(first) == 3  # L and R of the weight, the bias's factor; the scalar has none
    tx = gradtx.chain(opt, gradtx.scale_by_learning_rate(kw["lr"]))
    ours = run_library(tx, params, grad, STEPS, jnp.float64)
    seen = set()
    ref = run_numpy(*_soap_ref(**kw, first_bases=first, seen=seen), params, grad, STEPS)
    assert_trees_close(ours, ref, rtol=1e-8, atol=1e-12)
    assert _leaf_moved(ref, params) > 0.05
    assert ("refresh", True) in seen


def test_authors_decay_order_differs_by_eta_squared_lambda(x64):
    # the authors decay the already-updated weights and skip the first call entirely; with
    # weight_decay = 0 both orders are the same numbers, with λ > 0 they differ by O(η λ)
    params, grad = _problem(SHAPES)
    kw = dict(PAPER["authors_defaults"], wd=0.1)
    ours = run_library(soap(kw["lr"], weight_decay=0.1, max_precond_dim=8), params, grad, 30,
                       jnp.float64)  # fmt: skip
    theirs = run_numpy(*_soap_ref(**kw, authors_decay=True), params, grad, 30)
    gap = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(
            jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs), strict=True
        )  # fmt: skip
    )
    assert 1e-7 < gap < 30 * kw["lr"] * kw["wd"] * 3.0
    kw0 = dict(kw, wd=0.0)
    ours0 = run_library(soap(kw0["lr"], weight_decay=0.0, max_precond_dim=8), params, grad, 30,
                        jnp.float64)  # fmt: skip
    theirs0 = run_numpy(*_soap_ref(**kw0, authors_decay=True), params, grad, 30)
    assert_trees_close(ours0, theirs0, rtol=1e-8, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# The first update, the state, extreme scales, low precision, transformations.


def test_first_update_builds_the_preconditioner_only():
    tx = scale_by_soap(b2=0.9)
    g = {"w": jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), "b": jnp.array([1.0, -2.0])}
    state = tx.init(g)
    assert isinstance(state, SoapState)
    u, state = tx.update(g, state)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree_util.tree_leaves(u))
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree_util.tree_leaves(state.mu))
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree_util.tree_leaves(state.nu))
    assert int(state.count) == 1
    lf, rf = state.factors["w"]
    np.testing.assert_allclose(np.asarray(lf), 0.1 * np.diag([4.0, 1.0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(rf), 0.1 * np.diag([4.0, 1.0, 0.0]), rtol=1e-6)
    ql, _ = state.bases["w"]
    np.testing.assert_allclose(np.abs(np.asarray(ql)), [[1.0, 0.0], [0.0, 1.0]], atol=1e-6)
    assert state.factors["b"] == (None,) and state.bases["b"] == (None,)  # 1-D: Adam


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_huge_and_tiny_gradients_keep_the_state_finite(scale):
    # G Gᵀ would be ±inf (and inf − inf = NaN) at 1e30 and 0 at 1e-30 in float32; ν saturates
    # at the largest float32 as Adam's does (the step is then about |g| / 1.8e19, Adam's bound)
    opt = soap(1e-3)
    rng = np.random.default_rng(3)
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "b": jnp.zeros(3)}
    state = opt.init(params)
    step = jax.jit(opt.update)
    for t in range(12):  # across a refresh
        g = {
            k: jnp.asarray(scale * rng.normal(size=v.shape), jnp.float32) for k, v in params.items()
        }
        u, state = step(g, state, params)
        params = gradtx.apply_updates(params, u)
        for x in jax.tree_util.tree_leaves((params, state, u)):
            assert bool(jnp.all(jnp.isfinite(x))), (scale, t)


def test_step_is_scale_free_where_nothing_overflows():
    # eps = 0: Adam's part and the eigenbases ignore a common scale of the gradients (a square
    # matrix: its factors have full rank, so the first bases are determined up to signs)
    rng = np.random.default_rng(4)
    gs = [rng.normal(size=(4, 4)) for _ in range(13)]
    outs = []
    for scale in (1.0, 1e15):
        tx = scale_by_soap(eps=0.0, precondition_frequency=4)
        state = tx.init(jnp.zeros((4, 4)))
        us = []
        for g in gs:
            u, state = tx.update(jnp.asarray(scale * g, jnp.float32), state)
            us.append(np.asarray(u))
        outs.append(np.stack(us))
    np.testing.assert_allclose(outs[1], outs[0], rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_params_keep_their_dtypes(dtype):
    opt = soap(1e-3, precondition_frequency=2)
    params = {"w": jnp.linspace(-1, 1, 6, dtype=dtype).reshape(2, 3), "b": jnp.zeros(3, dtype)}
    state = opt.init(params)
    want = jax.tree_util.tree_map(lambda x: x.dtype, state)
    inner = state[0]
    assert inner.mu["w"].dtype == inner.nu["w"].dtype == jnp.dtype(dtype)
    assert all(f.dtype == jnp.float32 for f in inner.factors["w"] + inner.bases["w"])

    @jax.jit
    def step(params, state, t):
        g = jax.tree_util.tree_map(lambda p: (p - 0.3 * jnp.cos(p * (t + 1))).astype(p.dtype),
                                   params)  # fmt: skip
        u, state = opt.update(g, state, params)
        return gradtx.apply_updates(params, u), state, u

    for t in range(5):
        params, state, u = step(params, state, t)
        assert all(x.dtype == jnp.dtype(dtype) for x in jax.tree_util.tree_leaves(u))
        assert jax.tree_util.tree_map(lambda x: x.dtype, state) == want
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(state))


def test_vmap_over_learning_rate_and_abstract_init():
    params = {"w": jnp.asarray(np.random.default_rng(5).normal(size=(3, 2)), jnp.float32),
              "b": jnp.ones(2, jnp.bfloat16)}  # fmt: skip

    def run(lr):
        opt = soap(lr, precondition_frequency=2)

        def body(carry, t):
            p, s = carry
            g = jax.tree_util.tree_map(lambda x: (x - jnp.cos(x * (t + 1))).astype(x.dtype), p)
            u, s = opt.update(g, s, p)
            return (gradtx.apply_updates(p, u), s), None

        return jax.lax.scan(body, (params, opt.init(params)), jnp.arange(5))[0][0]

    lrs = jnp.asarray([1e-3, 3e-3, 1e-2], jnp.float32)
    batched = jax.jit(jax.vmap(run))(lrs)
    for i, lr in enumerate(lrs):
        single = jax.jit(run)(lr)
        for a, b in zip(jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(single),
                        strict=True):  # fmt: skip
            np.testing.assert_allclose(np.asarray(a[i], np.float32), np.asarray(b, np.float32),
                                       rtol=1e-5, atol=1e-6)  # fmt: skip
    opt = soap()
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    got, want = jax.eval_shape(opt.init, abstract), opt.init(params)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)


@pytest.mark.parametrize(
    "build,error,message",
    [
        (lambda: soap(b1=1.0), ValueError, r"soap: b1 must be in \[0, 1\), got 1.0"),
        (lambda: soap(shampoo_beta=1.5), ValueError, r"soap: shampoo_beta must be in \[-inf, 1\)"),
        (lambda: soap(eps=-1.0), ValueError, r"soap: eps must be in \[0, inf\], got -1.0"),
        (
            lambda: soap(precondition_frequency=0),
            ValueError,
            r"soap: precondition_frequency must be in \[1, inf\], got 0",
        ),
        (
            lambda: soap(precondition_frequency=2.5),
            ValueError,
            r"soap: precondition_frequency must be an integer >= 1, got 2.5",
        ),
        (
            lambda: soap(max_precond_dim=-3),
            ValueError,
            r"soap: max_precond_dim must be an integer >= 0, got -3",
        ),
        (
            lambda: soap(weight_decay=-0.1),
            ValueError,
            r"soap: weight_decay must be in \[0, inf\], got -0.1",
        ),
        (
            lambda: soap().init({"w": jnp.ones((2, 2), jnp.complex64)}),
            TypeError,
            r"scale_by_soap: complex parameters are not supported",
        ),
    ],
)
def test_bad_arguments_are_named(build, error, message):
    with pytest.raises(error, match=message):
        build()


# ----------------------------------------------------------------------------------------------
# The digits MLP (examples/digits_mlp.py's data and model), the documented defaults.


def test_digits_mlp_reaches_95_percent():
    acc = demo_accuracy(soap(3e-3))
    assert acc >= 0.95, acc
