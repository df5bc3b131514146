"""Classification losses against optax 0.2.8 and float64 NumPy formulas.

Each NumPy reference below is written from the loss's formula (the papers' form), never by
calling gradtx. Every loss is checked on random data in float32 (against optax and NumPy) and
float64 (against NumPy, rtol 1e-10, gradients against central differences of the reference),
at logits of ±1e4 (finite values and gradients, still matching the references), in bfloat16
(close to the float32 result on the same rounded inputs), and jitted against eager. The
``where``/``axis`` variants, the masked and fully masked rows, and the cases where gradtx
deliberately differs from optax have their own tests.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.special import logsumexp

from gradtx.losses import classification as cl

OL = optax.losses
F32 = {"rtol": 2e-5, "atol": 2e-5}
F64 = {"rtol": 1e-10, "atol": 1e-12}


# ----------------------------------------------------------------------------------------------
# Float64 NumPy references, written from the formulas.


def np_logsumexp(x, axis=-1, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def np_log_sigmoid(x):  # log σ(x) = −log(1 + e^{−x})
    return -np.logaddexp(0.0, -x)


def np_softmax_ce(x, y, axis=-1, where=None):
    """−Σ y log softmax(x), the softmax taken over the classes ``where`` keeps."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if where is None:
        where = np.ones(x.shape, bool)
    where = np.broadcast_to(where, x.shape)
    xm = np.where(where, x, -np.inf)
    m = np.max(xm, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        lse = m + np.log(np.sum(np.exp(xm - m), axis=axis, keepdims=True))
    terms = np.where(where, np.broadcast_to(y, x.shape) * (x - np.where(where, lse, 0)), 0.0)
    return -np.sum(terms, axis=axis)


def np_int_ce(x, labels, axis=-1):
    x = np.asarray(x, np.float64)
    picked = np.take_along_axis(x, np.expand_dims(labels, axis), axis=axis).squeeze(axis)
    return np_logsumexp(x, axis) - picked


def np_bce(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return -y * np_log_sigmoid(x) - (1 - y) * np_log_sigmoid(-x)


def np_focal(x, y, alpha=None, gamma=2.0):
    """α_t (1 − p_t)^γ BCE with p = σ(x), p_t = y p + (1 − y)(1 − p)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    p, q = np.exp(np_log_sigmoid(x)), np.exp(np_log_sigmoid(-x))  # σ(x), 1 − σ(x)
    one_minus_pt = y * q + (1 - y) * p
    loss = one_minus_pt**gamma * np_bce(x, y)
    if alpha is not None:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss


def np_hinge(f, t):
    return np.maximum(0.0, 1 - np.asarray(f, np.float64) * t)


def np_perceptron(f, t):
    return np.maximum(0.0, -np.asarray(f, np.float64) * t)


def np_multiclass_hinge(s, labels):
    s = np.asarray(s, np.float64)
    onehot = np.eye(s.shape[-1])[labels]
    return np.max(s + 1 - onehot, -1) - np.sum(s * onehot, -1)


def np_multiclass_perceptron(s, labels):
    s = np.asarray(s, np.float64)
    return np.max(s, -1) - np.take_along_axis(s, labels[..., None], -1)[..., 0]


def np_poly(x, y, epsilon=2.0, axis=-1, where=None):
    """CE + ε Σ y (1 − p)."""
    x = np.asarray(x, np.float64)
    where_b = np.ones(x.shape, bool) if where is None else np.broadcast_to(where, x.shape)
    xm = np.where(where_b, x, -np.inf)
    with np.errstate(invalid="ignore"):  # a fully masked row: nan, left out below
        p = np.exp(xm - np_logsumexp(xm, axis, keepdims=True))
    miss = np.sum(np.where(where_b, y * (1 - p), 0.0), axis=axis)
    return np_softmax_ce(x, y, axis, where) + epsilon * miss


def np_sparsemax_binary(x, labels):
    """sparseplus(−x) for label 1, sparseplus(x) for label 0."""
    z = np.where(np.asarray(labels) != 0, -np.asarray(x, np.float64), x)
    return np.where(z <= -1, 0.0, np.where(z >= 1, z, (z + 1) ** 2 / 4))


def np_sparsemax(z):
    """Martins & Astudillo (2016), algorithm 1, on the last axis."""
    z = np.asarray(z, np.float64)
    zs = -np.sort(-z, axis=-1)
    k = np.arange(1, z.shape[-1] + 1)
    css = np.cumsum(zs, axis=-1)
    kz = np.sum(1 + k * zs > css, axis=-1, keepdims=True)
    tau = (np.take_along_axis(css, kz - 1, -1) - 1) / kz
    return np.maximum(z - tau, 0), tau


def np_multiclass_sparsemax(s, labels):
    """Martins & Astudillo (2016), eq. 21: −z_k + ½ Σ_{j∈S(z)} (z_j² − τ²) + ½."""
    s = np.asarray(s, np.float64)
    p, tau = np_sparsemax(s)
    z_k = np.take_along_axis(s, labels[..., None], -1)[..., 0]
    return -z_k + 0.5 * np.sum(np.where(p > 0, s**2 - tau**2, 0.0), -1) + 0.5


def np_fy_logsumexp(s, y):
    return np_logsumexp(np.asarray(s, np.float64)) - np.sum(y * s, -1)


def np_smooth(y, alpha, axis=-1, where=None):
    y = np.asarray(y, np.float64)
    if where is None:
        axes = range(y.ndim) if axis is None else np.atleast_1d(axis)
        k = np.prod([y.shape[a] for a in axes])
    else:
        k = np.maximum(np.sum(np.broadcast_to(where, y.shape), axis=axis, keepdims=True), 1)
    return (1 - alpha) * y + alpha / k


def np_dice(
    pred,
    t,
    class_weights=None,
    smooth=1.0,
    alpha=0.5,
    beta=0.5,
    apply_softmax=True,
    reduction="mean",
    ignore_background=False,
    axis=None,
):
    """1 − (I + s) / (I + α FP + β FN + s) per class, weighted, reduced over the classes."""
    p, t = np.asarray(pred, np.float64), np.asarray(t, np.float64)
    if p.ndim == t.ndim - 1:
        p = p[..., None]
    if apply_softmax:
        if p.shape[-1] == 1:
            p = np.exp(np_log_sigmoid(p))
        else:
            p = np.exp(p - np_logsumexp(p, -1, keepdims=True))
    axis = tuple(range(1, p.ndim - 1)) if axis is None else axis
    inter, psum, tsum = np.sum(p * t, axis), np.sum(p, axis), np.sum(t, axis)
    loss = 1 - (inter + smooth) / (inter + alpha * (psum - inter) + beta * (tsum - inter) + smooth)
    if class_weights is not None:
        loss = loss * class_weights
    if ignore_background and loss.shape[-1] > 1:
        loss = loss[..., 1:]
    return {"mean": np.mean, "sum": np.sum}[reduction](loss, -1) if reduction != "none" else loss


def np_binary_dice(pred, t, smooth=1.0, apply_sigmoid=True):
    p = np.asarray(pred, np.float64)
    p = np.exp(np_log_sigmoid(p)) if apply_sigmoid else p
    axes = tuple(range(1, p.ndim))
    inter = np.sum(p * t, axes)
    return 1 - (2 * inter + 2 * smooth) / (np.sum(p, axes) + np.sum(t, axes) + 2 * smooth)


def np_generalized_dice(pred, t, smooth=1.0, apply_softmax=True, ignore_background=False):
    t = np.asarray(t, np.float64)
    freq = np.sum(t, axis=tuple(range(t.ndim - 1)))
    w = 1 / (freq**2 + 1e-7)
    w = w / w.sum() * len(w)
    per_class = np_dice(
        pred,
        t,
        class_weights=w,
        smooth=smooth,
        apply_softmax=apply_softmax,
        reduction="none",
        ignore_background=ignore_background,
    )
    return np.mean(per_class)


# ----------------------------------------------------------------------------------------------
# The cases: random data built by ``make(rng, big)``; ``big`` scales the logits to ±1e4.


class Case(NamedTuple):
    ours: Any
    theirs: Any
    ref: Any
    make: Any
    logits: bool = True  # the first argument is a logit/score array (scaled to ±1e4 in big)


def _x(rng, shape, big):
    x = rng.normal(size=shape) * 2.0
    if big:
        x = x / np.abs(x).max() * 1e4
    return x.astype(np.float32)


def _dist(rng, shape):
    return rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]).astype(np.float32)


def _onehot(rng, shape):
    return np.eye(shape[-1], dtype=np.float32)[rng.integers(0, shape[-1], shape[:-1])]


def _soft01(rng, shape):
    y = rng.uniform(size=shape)
    y[..., ::3] = 0.0
    y[..., 1::3] = 1.0
    return y.astype(np.float32)


def _pm1(rng, shape):
    return np.where(rng.uniform(size=shape) < 0.5, -1.0, 1.0).astype(np.float32)


def _labels(rng, shape, k):
    return rng.integers(0, k, shape).astype(np.int32)


def _margin_x(rng, big):  # hinge/perceptron scores on both sides of 0 and of the margin
    x = np.array([-2.5, -1.2, -0.7, -0.1, 0.2, 0.6, 0.9, 1.3, 2.4, -0.4, 3.1, -3.3])
    return (x * (1e4 / 3.3) if big else x + 0.01 * rng.normal(size=12)).astype(np.float32)


def _sparse_x(rng, big):  # every branch of sparseplus: z <= −1, |z| < 1, z >= 1
    x = np.array([-2.5, -1.5, -0.7, -0.2, 0.3, 0.8, 1.6, 2.2, -0.9, 0.5, 1.1, -1.1])
    return (x * (1e4 / 2.5) if big else x + 0.01 * rng.normal(size=12)).astype(np.float32)


FY = functools.lru_cache(None)(lambda: cl.make_fenchel_young_loss(logsumexp))
FY_OPTAX = functools.lru_cache(None)(lambda: OL.make_fenchel_young_loss(logsumexp))

CASES = {
    "softmax_cross_entropy": Case(
        lambda: cl.softmax_cross_entropy,
        lambda: OL.softmax_cross_entropy,
        np_softmax_ce,
        lambda r, big: ((_x(r, (4, 5), big), _dist(r, (4, 5))), {}),
    ),
    "softmax_cross_entropy_with_integer_labels": Case(
        lambda: cl.softmax_cross_entropy_with_integer_labels,
        lambda: OL.softmax_cross_entropy_with_integer_labels,
        np_int_ce,
        lambda r, big: ((_x(r, (4, 5), big), _labels(r, (4,), 5)), {}),
    ),
    "safe_softmax_cross_entropy": Case(
        lambda: cl.safe_softmax_cross_entropy,
        lambda: OL.safe_softmax_cross_entropy,
        np_softmax_ce,
        lambda r, big: ((_x(r, (4, 5), big), _onehot(r, (4, 5))), {}),
    ),
    "sigmoid_binary_cross_entropy": Case(
        lambda: cl.sigmoid_binary_cross_entropy,
        lambda: OL.sigmoid_binary_cross_entropy,
        np_bce,
        lambda r, big: ((_x(r, (3, 6), big), _soft01(r, (3, 6))), {}),
    ),
    "sigmoid_focal_loss": Case(
        lambda: cl.sigmoid_focal_loss,
        lambda: OL.sigmoid_focal_loss,
        np_focal,
        lambda r, big: ((_x(r, (3, 6), big), _soft01(r, (3, 6))), {}),
    ),
    "sigmoid_focal_loss/alpha_gamma": Case(
        lambda: cl.sigmoid_focal_loss,
        lambda: OL.sigmoid_focal_loss,
        np_focal,
        lambda r, big: ((_x(r, (3, 6), big), _soft01(r, (3, 6))), {"alpha": 0.25, "gamma": 0.5}),
    ),
    "sigmoid_focal_loss/gamma0": Case(
        lambda: cl.sigmoid_focal_loss,
        lambda: OL.sigmoid_focal_loss,
        np_focal,
        lambda r, big: ((_x(r, (3, 6), big), _soft01(r, (3, 6))), {"gamma": 0.0}),
    ),
    "hinge_loss": Case(
        lambda: cl.hinge_loss,
        lambda: OL.hinge_loss,
        np_hinge,
        lambda r, big: ((_margin_x(r, big), _pm1(r, (12,))), {}),
    ),
    "perceptron_loss": Case(
        lambda: cl.perceptron_loss,
        lambda: OL.perceptron_loss,
        np_perceptron,
        lambda r, big: ((_margin_x(r, big), _pm1(r, (12,))), {}),
    ),
    "multiclass_hinge_loss": Case(
        lambda: cl.multiclass_hinge_loss,
        lambda: OL.multiclass_hinge_loss,
        np_multiclass_hinge,
        lambda r, big: ((_x(r, (6, 5), big) * (1 if big else 0.3), _labels(r, (6,), 5)), {}),
    ),
    "multiclass_perceptron_loss": Case(
        lambda: cl.multiclass_perceptron_loss,
        lambda: OL.multiclass_perceptron_loss,
        np_multiclass_perceptron,
        lambda r, big: ((_x(r, (6, 5), big), _labels(r, (6,), 5)), {}),
    ),
    "poly_loss_cross_entropy": Case(
        lambda: cl.poly_loss_cross_entropy,
        lambda: OL.poly_loss_cross_entropy,
        np_poly,
        lambda r, big: ((_x(r, (4, 5), big), _dist(r, (4, 5))), {}),
    ),
    "poly_loss_cross_entropy/eps-1": Case(
        lambda: cl.poly_loss_cross_entropy,
        lambda: OL.poly_loss_cross_entropy,
        np_poly,
        lambda r, big: ((_x(r, (4, 5), big), _dist(r, (4, 5))), {"epsilon": -1.0}),
    ),
    "sparsemax_loss": Case(
        lambda: cl.sparsemax_loss,
        lambda: OL.sparsemax_loss,
        np_sparsemax_binary,
        lambda r, big: ((_sparse_x(r, big), _labels(r, (12,), 2)), {}),
    ),
    "multiclass_sparsemax_loss": Case(
        lambda: cl.multiclass_sparsemax_loss,
        lambda: OL.multiclass_sparsemax_loss,
        np_multiclass_sparsemax,
        lambda r, big: ((_x(r, (6, 5), big) * (1 if big else 0.3), _labels(r, (6,), 5)), {}),
    ),
    "make_fenchel_young_loss/logsumexp": Case(
        FY,
        FY_OPTAX,
        np_fy_logsumexp,
        lambda r, big: ((_x(r, (4, 5), big), _dist(r, (4, 5))), {}),
    ),
    "smooth_labels": Case(
        lambda: cl.smooth_labels,
        lambda: OL.smooth_labels,
        np_smooth,
        lambda r, big: ((_onehot(r, (4, 5)), 0.1), {}),
        logits=False,
    ),
    "binary_dice_loss": Case(
        lambda: cl.binary_dice_loss,
        lambda: OL.binary_dice_loss,
        np_binary_dice,
        lambda r, big: ((_x(r, (2, 4, 4), big), _labels(r, (2, 4, 4), 2).astype(np.float32)), {}),
    ),
    "dice_loss": Case(
        lambda: cl.dice_loss,
        lambda: OL.dice_loss,
        np_dice,
        lambda r, big: ((_x(r, (2, 4, 4, 3), big), _onehot(r, (2, 4, 4, 3))), {}),
    ),
    "dice_loss/tversky_weights_none": Case(
        lambda: cl.dice_loss,
        lambda: OL.dice_loss,
        np_dice,
        lambda r, big: (
            (_x(r, (2, 4, 4, 3), big), _onehot(r, (2, 4, 4, 3))),
            {
                "alpha": 0.3,
                "beta": 0.7,
                "smooth": 0.5,
                "class_weights": np.array([0.2, 1.0, 2.0], np.float32),
                "reduction": "none",
            },
        ),
    ),
    "dice_loss/sum_ignore_background_axis": Case(
        lambda: cl.dice_loss,
        lambda: OL.dice_loss,
        np_dice,
        lambda r, big: (
            (_x(r, (2, 4, 4, 3), big), _onehot(r, (2, 4, 4, 3))),
            {"reduction": "sum", "ignore_background": True, "axis": (1,)},
        ),
    ),
    "dice_loss/binary_no_class_axis": Case(
        lambda: cl.dice_loss,
        lambda: OL.dice_loss,
        np_dice,
        lambda r, big: ((_x(r, (2, 6), big), _labels(r, (2, 6, 1), 2).astype(np.float32)), {}),
    ),
    "dice_loss/probabilities": Case(
        lambda: cl.dice_loss,
        lambda: OL.dice_loss,
        np_dice,
        lambda r, big: (
            (_dist(r, (2, 4, 4, 3)), _onehot(r, (2, 4, 4, 3))),
            {"apply_softmax": False},
        ),
        logits=False,
    ),
    "multiclass_generalized_dice_loss": Case(
        lambda: cl.multiclass_generalized_dice_loss,
        lambda: OL.multiclass_generalized_dice_loss,
        np_generalized_dice,
        lambda r, big: ((_x(r, (2, 4, 4, 3), big), _onehot(r, (2, 4, 4, 3))), {}),
    ),
    "multiclass_generalized_dice_loss/ignore_background": Case(
        lambda: cl.multiclass_generalized_dice_loss,
        lambda: OL.multiclass_generalized_dice_loss,
        np_generalized_dice,
        lambda r, big: (
            (_x(r, (2, 4, 4, 3), big), _onehot(r, (2, 4, 4, 3))),
            {"ignore_background": True, "smooth": 0.1},
        ),
    ),
}
NAMES = sorted(CASES)


# one case per loss for the property tests
MAIN = [n for n in NAMES if "/" not in n] + ["make_fenchel_young_loss/logsumexp"]
# cases whose gradients are checked too (γ < 1 makes (1 − p_t)^γ steep near 0)
WITH_GRAD = [*MAIN, "sigmoid_focal_loss/alpha_gamma"]


def _data(name, big=False, seed=0):
    return CASES[name].make(np.random.default_rng(seed), big)


@functools.lru_cache(None)
def _fused(name, lib, grad=True):
    """``(loss, d Σloss / d first argument)``, jitted once per case and library (the case's
    keyword arguments are fixed; arrays of any value, scale and dtype are arguments); the
    gradient is ``None`` when ``grad`` is false."""
    fn = CASES[name].ours() if lib == "ours" else CASES[name].theirs()
    _, kwargs = _data(name)
    if lib == "optax" and kwargs.get("apply_softmax") is False:
        # optax checks the probabilities with Python control flow: it runs eagerly only
        return lambda x, *rest: (fn(x, *rest, **kwargs), None)

    def value_and_grad(x, *rest):
        if not grad:
            return fn(x, *rest, **kwargs), None
        return fn(x, *rest, **kwargs), jax.grad(lambda x: jnp.sum(fn(x, *rest, **kwargs)))(x)

    return jax.jit(value_and_grad)


def _cast(args, dtype):
    """The floating arrays among ``args`` in ``dtype`` (labels, ints and Python numbers kept)."""
    return tuple(
        jnp.asarray(a, dtype)
        if isinstance(a, np.ndarray | jax.Array) and jnp.issubdtype(a.dtype, jnp.floating)
        else a
        for a in args
    )


def test_every_loss_has_a_case():
    assert {n.split("/")[0] for n in MAIN} == set(cl.__all__)


def test_signatures_match_optax():
    for name in cl.__all__:
        ours = inspect.signature(getattr(cl, name))
        theirs = inspect.signature(getattr(OL, name))
        assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == [
            (p.name, p.kind, p.default) for p in theirs.parameters.values()
        ], name


# ----------------------------------------------------------------------------------------------
# Values, dtypes, precision, compilation and gradients on every case.


@pytest.mark.parametrize("name", NAMES)
def test_float32_matches_optax_and_numpy(name):
    args, _ = _data(name)
    grad = name in WITH_GRAD
    ours, g = _fused(name, "ours", grad)(*args)
    theirs, g_theirs = _fused(name, "optax", grad)(*args)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours, CASES[name].ref(*args, **_data(name)[1]), **F32)
    if grad:
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, g_theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MAIN)
def test_float64_matches_numpy_and_finite_differences(name, x64):
    args, kwargs = _data(name, seed=1)
    args = _cast(args, jnp.float64)
    out, g = _fused(name, "ours")(*args)
    assert out.dtype == jnp.float64
    ref = CASES[name].ref
    np.testing.assert_allclose(out, ref(*args, **kwargs), **F64)
    x, rest = np.asarray(args[0]), args[1:]
    fd = np.zeros(x.size)
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = 1e-6
        e = e.reshape(x.shape)
        fd[i] = np.sum(ref(x + e, *rest, **kwargs) - ref(x - e, *rest, **kwargs)) / 2e-6
    np.testing.assert_allclose(np.ravel(g), fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", [n for n in WITH_GRAD if CASES[n].logits])
def test_stable_at_logits_of_1e4(name):
    args, kwargs = _data(name, big=True)
    assert np.abs(args[0]).max() == pytest.approx(1e4)
    out, g = _fused(name, "ours")(*args)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(g))
    np.testing.assert_allclose(out, CASES[name].ref(*args, **kwargs), rtol=1e-5, atol=1e-3)
    _, g_theirs = _fused(name, "optax")(*args)
    np.testing.assert_allclose(g, g_theirs, rtol=1e-4, atol=1e-4)
    # and in bfloat16
    out16, g16 = _fused(name, "ours")(*_cast(args, jnp.bfloat16))
    assert out16.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(out16, np.float32)))
    assert g16.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g16, np.float32)))


@pytest.mark.parametrize("name", MAIN)
def test_bfloat16_is_the_float32_result_rounded(name):
    args, _ = _data(name, seed=2)
    lo = _cast(args, jnp.bfloat16)
    out, _ = _fused(name, "ours")(*lo)
    assert out.dtype == jnp.bfloat16
    # float32 on the same (bf16-rounded) inputs: only the final rounding may differ
    ref, _ = _fused(name, "ours")(*_cast(lo, jnp.float32))
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=8e-3, atol=1e-3)


@pytest.mark.parametrize("name", MAIN)
def test_jit_equals_eager(name):
    args, kwargs = _data(name, seed=3)
    eager = CASES[name].ours()(*args, **kwargs)
    compiled, _ = _fused(name, "ours")(*args)
    assert eager.dtype == compiled.dtype
    np.testing.assert_allclose(compiled, eager, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# where= and axis= variants.


def jitted(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` compiled, the keyword arguments fixed (one compile is much
    cheaper than running a new loss eagerly, operation by operation)."""
    return jax.jit(lambda *a: fn(*a, **kwargs))(*args)


def grad_of_sum(fn, x, *rest, **kwargs):
    return jax.jit(jax.grad(lambda x, *r: jnp.sum(fn(x, *r, **kwargs))))(jnp.asarray(x), *rest)


def _mask(shape, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.uniform(size=shape) < 0.7
    w[0] = False  # a fully masked row
    w[1] = True
    return w


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "poly_loss_cross_entropy"])
def test_where_full_shape_matches_optax(name):
    rng = np.random.default_rng(4)
    x, y = _x(rng, (5, 6), False), _dist(rng, (5, 6))
    w = _mask((5, 6))
    x[2, ~w[2]] = 1e4  # huge logits at masked positions must not matter
    ours = jitted(getattr(cl, name), x, y, where=w)
    theirs = jitted(getattr(OL, name), x, y, where=w)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    with np.errstate(invalid="ignore"):
        ref = np_softmax_ce(x, y, where=w) if "softmax" in name else np_poly(x, y, where=w)
    np.testing.assert_allclose(ours, ref, **F32)
    assert ours[0] == 0.0  # nothing left in the row
    g = grad_of_sum(getattr(cl, name), x, y, where=w)
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(np.asarray(g)[~w], 0.0)  # masked entries get no gradient


def test_where_batch_shape_is_expanded():
    rng = np.random.default_rng(5)
    x, y = _x(rng, (4, 3), False), _dist(rng, (4, 3))
    w = np.array([True, False, True, True])
    out = jitted(cl.softmax_cross_entropy, x, y, where=w)
    theirs = jitted(OL.softmax_cross_entropy, x, y, where=jnp.asarray(w))
    np.testing.assert_allclose(out, theirs, **F32)
    np.testing.assert_allclose(out, np_softmax_ce(x, y, where=w[:, None]), **F32)
    assert out[1] == 0.0
    labels = np.array([0, 2, 1, 1], np.int32)
    out = jitted(cl.softmax_cross_entropy_with_integer_labels, x, labels, where=w)
    theirs = jitted(OL.softmax_cross_entropy_with_integer_labels, x, labels, where=jnp.asarray(w))
    np.testing.assert_allclose(out, theirs, **F32)
    np.testing.assert_allclose(out, np.where(w, np_int_ce(x, labels), 0.0), **F32)
    # optax's poly loss does not expand a batch-shaped mask; gradtx does, as for the CE
    out = jitted(cl.poly_loss_cross_entropy, x, y, where=w)
    np.testing.assert_allclose(out, np_poly(x, y, where=w[:, None]), **F32)


def test_integer_labels_where_full_shape():
    rng = np.random.default_rng(6)
    x, labels = _x(rng, (5, 6), False), _labels(rng, (5,), 6)
    w = _mask((5, 6))
    fn = cl.softmax_cross_entropy_with_integer_labels
    out = jitted(fn, x, labels, where=w)
    theirs = jitted(OL.softmax_cross_entropy_with_integer_labels, x, labels, where=jnp.asarray(w))
    np.testing.assert_allclose(out, theirs, **F32)
    xm = np.where(w, x.astype(np.float64), -np.inf)
    with np.errstate(invalid="ignore"):
        ref = np_logsumexp(xm) - x[np.arange(5), labels]
    np.testing.assert_allclose(out, np.where(w.any(-1), ref, 0.0), **F32)
    g = grad_of_sum(fn, x, labels, where=w)
    assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[0] == 0)


@pytest.mark.parametrize("axis", [0, (1, 2), None])
def test_softmax_cross_entropy_axes(axis):
    rng = np.random.default_rng(7)
    x, y = _x(rng, (3, 4, 5), False), _dist(rng, (3, 4, 5))

    def both(lib, x, y):
        ce = lib.softmax_cross_entropy(x, y, axis=axis)
        return ce, lib.poly_loss_cross_entropy(x, y, axis=axis, epsilon=0.5)

    ce, poly = jitted(functools.partial(both, cl), x, y)
    ce_optax, poly_optax = jitted(functools.partial(both, OL), x, y)
    np.testing.assert_allclose(ce, ce_optax, rtol=1e-5)
    np.testing.assert_allclose(ce, np_softmax_ce(x, y, axis=axis), **F32)
    np.testing.assert_allclose(poly, poly_optax, rtol=1e-5)
    np.testing.assert_allclose(poly, np_poly(x, y, 0.5, axis=axis), **F32)


@pytest.mark.parametrize("axis", [-3, (2, 3), (3, 1)])
def test_integer_labels_axes(axis):
    rng = np.random.default_rng(8)
    x = _x(rng, (2, 3, 4, 5), False)
    axes = tuple(a % 4 for a in np.atleast_1d(axis))
    batch = [d for i, d in enumerate(x.shape) if i not in axes]
    k = int(np.prod([x.shape[a] for a in axes]))
    labels = _labels(rng, batch, k)
    w = rng.uniform(size=x.shape) < 0.8

    def both(lib, x, labels, w):
        fn = lib.softmax_cross_entropy_with_integer_labels
        return fn(x, labels, axis=axis), fn(x, labels, axis=axis, where=w)

    plain, masked = jitted(functools.partial(both, cl), x, labels, w)
    _, masked_optax = jitted(functools.partial(both, OL), x, labels, w)
    np.testing.assert_allclose(masked, masked_optax, **F32)
    # NumPy: move the class axes last (in the order given), flatten, pick the label
    rest = [i for i in range(x.ndim) if i not in axes]
    flat = np.transpose(x, rest + list(axes)).reshape(*batch, k)
    np.testing.assert_allclose(plain, np_int_ce(flat, labels), **F32)


def test_smooth_labels_where_and_axes():
    rng = np.random.default_rng(10)
    y = _onehot(rng, (4, 5))
    w = _mask((4, 5))
    ours = jitted(cl.smooth_labels, y, 0.2, where=w)
    np.testing.assert_allclose(ours, np_smooth(y, 0.2, where=w), **F32)
    theirs = jitted(OL.smooth_labels, y, 0.2, where=jnp.asarray(w))
    np.testing.assert_allclose(ours[1:], theirs[1:], rtol=1e-6)  # optax: inf in the empty row
    np.testing.assert_allclose(ours[0], 0.8 * y[0] + 0.2, rtol=1e-6)  # gradtx: K = 1 there
    for axis in (0, (0, 1), None):
        ours = jitted(cl.smooth_labels, y, 0.3, axis=axis)
        np.testing.assert_allclose(ours, jitted(OL.smooth_labels, y, 0.3, axis=axis), rtol=1e-6)
        np.testing.assert_allclose(ours, np_smooth(y, 0.3, axis=axis), **F32)
    # a batch-shaped mask is expanded over the class axis
    wb = np.array([True, False, True, True])
    ours = jitted(cl.smooth_labels, y, 0.2, where=wb)
    np.testing.assert_allclose(ours, np_smooth(y, 0.2, where=wb[:, None]), **F32)


# ----------------------------------------------------------------------------------------------
# Behaviour of particular losses.


def test_safe_softmax_cross_entropy_with_minus_inf_logits():
    x = np.array([[2.0, -np.inf, 0.5], [-np.inf, 1.0, -np.inf]], np.float32)
    y = np.array([[0.7, 0.0, 0.3], [0.0, 1.0, 0.0]], np.float32)
    out = jitted(cl.safe_softmax_cross_entropy, x, y)
    np.testing.assert_allclose(out, jitted(OL.safe_softmax_cross_entropy, x, y), rtol=1e-6)
    p0 = np.exp(np.array([2.0, 0.5]) - np.logaddexp(2.0, 0.5))
    np.testing.assert_allclose(out, [-(0.7 * np.log(p0[0]) + 0.3 * np.log(p0[1])), 0.0], **F32)
    gx, gy = jax.jit(jax.grad(lambda x, y: jnp.sum(cl.safe_softmax_cross_entropy(x, y)), (0, 1)))(
        jnp.asarray(x), jnp.asarray(y)
    )
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gy))
    np.testing.assert_allclose(gx[0], [p0[0] - 0.7, 0.0, p0[1] - 0.3], **F32)
    assert np.all(np.isnan(jitted(cl.softmax_cross_entropy, x, y)))  # the plain one: 0 · log 0


def test_focal_loss_reduces_to_cross_entropy_and_weights_classes():
    rng = np.random.default_rng(11)
    x, y = _x(rng, (10,), False), _soft01(rng, (10,))
    x[:2] = [20.0, -20.0]  # confident right answers: (1 − p_t)^γ = e^{−20γ}, not 0^γ
    y[:2] = [1.0, 0.0]

    def focal_parts(x, y):
        return (
            cl.sigmoid_focal_loss(x, y, gamma=0.0),
            cl.sigmoid_binary_cross_entropy(x, y),
            cl.sigmoid_focal_loss(x, y, alpha=0.8, gamma=0.5),
            cl.sigmoid_focal_loss(x, y, gamma=0.5),
            jax.grad(lambda y: jnp.sum(cl.sigmoid_focal_loss(x, y)))(y),
        )

    g0, bce, weighted, plain, gy = jax.jit(focal_parts)(x, y)
    np.testing.assert_allclose(g0, bce, rtol=1e-6)
    np.testing.assert_allclose(plain, np_focal(x, y, None, 0.5), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(weighted, np_focal(x, y, 0.8, 0.5), rtol=1e-5, atol=1e-7)
    assert 0 < plain[0] < 1e-12  # e^{−10} · e^{−20}, no underflow to 0 in log(1 − p_t)
    assert np.all(np.isfinite(gy))  # with respect to labels, finite at 0 and 1 as well


def test_multiclass_sparsemax_any_batch_shape_and_gradient_is_p_minus_onehot():
    rng = np.random.default_rng(12)
    s = _x(rng, (2, 3, 6), False) * 0.4
    s[0, 0] = [3.0, 0.5, 0.0, -1.0, 0.2, 0.1]  # sparsemax(s) = e_0: loss 0 for label 0
    labels = _labels(rng, (2, 3), 6)
    labels[0, 0] = 0
    fn = cl.multiclass_sparsemax_loss
    out = jitted(fn, s, labels)  # optax vmaps over one batch axis only
    np.testing.assert_allclose(out, np_multiclass_sparsemax(s, labels), **F32)
    assert out[0, 0] == 0.0
    p, _ = np_sparsemax(s)
    support = np.sum(p > 0, -1)
    assert support.min() == 1 and 1 < support.max() < 6  # one-hot, sparse and mixed rows
    np.testing.assert_allclose(
        grad_of_sum(fn, s, labels), p - np.eye(6)[labels], rtol=1e-5, atol=1e-6
    )


def test_fenchel_young_passes_extra_arguments_and_matches_cross_entropy():
    rng = np.random.default_rng(13)
    s, y = _x(rng, (2, 3, 5), False), _dist(rng, (2, 3, 5))

    def smoothed_max(v, temperature=1.0, shift=0.0):
        return temperature * logsumexp(v / temperature) + shift

    fy = cl.make_fenchel_young_loss(smoothed_max)
    out = jitted(lambda s, y: fy(s, y, 0.5, shift=1.0), s, y)  # positional and keyword
    ref = 0.5 * np_logsumexp(s.astype(np.float64) / 0.5) + 1.0 - np.sum(y * s, -1)
    np.testing.assert_allclose(out, ref, **F32)
    # with logsumexp and one-hot targets it is the softmax cross-entropy, on any batch shape
    yh = _onehot(rng, (2, 3, 5))
    np.testing.assert_allclose(
        jitted(FY(), s, yh), jitted(cl.softmax_cross_entropy, s, yh), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        jitted(FY(), s[0, 0], yh[0, 0]), np_fy_logsumexp(s[0, 0], yh[0, 0]), **F32
    )


def test_binary_dice_loss_on_probabilities():
    # optax 0.2.8 raises here (it asks one-channel probabilities to sum to 1); gradtx checks them
    # to be in [0, 1], and only when they are concrete
    rng = np.random.default_rng(14)
    p = rng.uniform(size=(3, 8)).astype(np.float32)
    t = _labels(rng, (3, 8), 2).astype(np.float32)
    out = jitted(cl.binary_dice_loss, p, t, apply_sigmoid=False, smooth=0.5)
    np.testing.assert_allclose(out, np_binary_dice(p, t, 0.5, apply_sigmoid=False), **F32)
    with pytest.raises(ValueError, match=r"binary_dice_loss: predictions must be probabilities"):
        cl.binary_dice_loss(p * 3, t, apply_sigmoid=False)


def test_dice_loss_jaccard_and_perfect_prediction():
    t = np.eye(3, dtype=np.float32)[np.array([[0, 1, 2, 2], [1, 1, 0, 2]])]  # [2, 4, 3]
    p = _dist(np.random.default_rng(15), (2, 4, 3))

    def both(p, t):
        perfect = cl.dice_loss(t, t, apply_softmax=False, smooth=0.0)
        jac = cl.dice_loss(
            p, t, alpha=1.0, beta=1.0, smooth=0.0, apply_softmax=False, reduction="none"
        )
        return perfect, jac

    perfect, jac = jax.jit(both)(p, t)
    np.testing.assert_allclose(perfect, [0.0, 0.0], atol=1e-7)
    inter = np.sum(p * t, 1)
    union = np.sum(p, 1) + np.sum(t, 1) - inter
    np.testing.assert_allclose(jac, 1 - inter / union, **F32)


# ----------------------------------------------------------------------------------------------
# Errors name the function, the argument and the value.


def test_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match=r"softmax_cross_entropy: logits must be a floating-point"):
        cl.softmax_cross_entropy(np.zeros((2, 3), np.int32), x)
    with pytest.raises(TypeError, match=r"with_integer_labels: labels must be an integer array"):
        cl.softmax_cross_entropy_with_integer_labels(x, np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: axis 2 is out of bounds"):
        cl.softmax_cross_entropy(x, x, axis=2)
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: where must have the shape"):
        cl.softmax_cross_entropy(x, x, where=np.ones((2, 3, 1), bool))
    with pytest.raises(ValueError, match=r"with_integer_labels: axis must be an int or a tuple"):
        cl.softmax_cross_entropy_with_integer_labels(x, np.zeros(2, np.int32), axis=None)
    with pytest.raises(ValueError, match=r"perceptron_loss: predictor_outputs and targets must"):
        cl.perceptron_loss(x, x[0])
    with pytest.raises(ValueError, match=r"smooth_labels: alpha must be in \[0, 1\], got 1.5"):
        cl.smooth_labels(x, 1.5)
    with pytest.raises(TypeError, match=r"poly_loss_cross_entropy: labels must be a floating"):
        cl.poly_loss_cross_entropy(x, np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match=r"sigmoid_focal_loss: gamma must be in \[0, inf\]"):
        cl.sigmoid_focal_loss(x, x, gamma=-1.0)
    with pytest.raises(ValueError, match=r"dice_loss: reduction must be 'mean', 'sum' or 'none'"):
        cl.dice_loss(x, x, reduction="avg")
    with pytest.raises(ValueError, match=r"dice_loss: predictions must be probability distri"):
        cl.dice_loss(x + 0.5, x, apply_softmax=False)
    with pytest.raises(ValueError, match=r"dice_loss: class_weights must have shape \(3,\)"):
        cl.dice_loss(x[None], x[None], class_weights=np.ones(2))
    with pytest.raises(ValueError, match=r"dice_loss: predictions and targets must have the same"):
        cl.dice_loss(x, x[:, :2])
    with pytest.raises(ValueError, match=r"multiclass_generalized_dice_loss: predictions and"):
        cl.multiclass_generalized_dice_loss(x, x[:, :2])
    with pytest.raises(TypeError, match=r"make_fenchel_young_loss: max_fun must be callable"):
        cl.make_fenchel_young_loss(3.0)
