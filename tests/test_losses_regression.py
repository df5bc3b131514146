"""Regression, divergence, ranking, self-supervised and CTC losses.

Every loss is checked against a float64 NumPy formula written from the math (for CTC: a brute
force sum over every alignment) and against optax 0.2.8 as an oracle, then for large inputs
(magnitude 1e4), bfloat16, ``axis``/``where`` variants, jit against eager, and finite gradients.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gradtx.core import eager_jit
from gradtx.losses.ctc import ctc_loss, ctc_loss_with_forward_probs
from gradtx.losses.divergence import (
    convex_kl_divergence,
    generalized_kl_divergence,
    kl_divergence,
    kl_divergence_with_log_targets,
)
from gradtx.losses.ranking import ranking_softmax_loss
from gradtx.losses.regression import (
    cosine_distance,
    cosine_similarity,
    huber_loss,
    l2_loss,
    log_cosh,
    squared_error,
)
from gradtx.losses.self_supervised import ntxent, triplet_margin_loss

OL = optax.losses
F32 = {"rtol": 2e-5, "atol": 2e-6}  # float32 result against a float64 reference
F32_EPS = float(np.finfo(np.float32).eps)


# ----------------------------------------------------------------------------------------------
# Helpers. Oracles and gradients are compiled as whole functions, cached by function, static
# options and shapes: run op by op, every primitive of every call would compile on its own.


@functools.cache
def _jitted(fn, static):
    fn = functools.partial(getattr(OL, fn) if isinstance(fn, str) else fn, **dict(static))
    value = jax.jit(fn)
    total = lambda x, *rest, **kw: jnp.sum(fn(x, *rest, **kw).astype(jnp.float32))
    return value, jax.jit(jax.grad(total))


def _split(kwargs):
    """Keyword arguments that are numbers or arrays (traced) and the rest (static)."""
    traced = {k: v for k, v in kwargs.items() if isinstance(v, np.ndarray | jax.Array | float)}
    static = tuple(sorted((k, v) for k, v in kwargs.items() if k not in traced))
    return traced, static


def optax_value(name, *args, **kwargs):
    """``optax.losses.<name>(*args, **kwargs)``."""
    traced, static = _split(kwargs)
    return _jitted(name, static)[0](*args, **traced)


def optax_grad(name, *args, **kwargs):
    """Gradient of the sum of ``optax.losses.<name>`` with respect to its first argument."""
    traced, static = _split(kwargs)
    return _jitted(name, static)[1](*args, **traced)


def grad_of_sum(fn, *args, **kwargs):
    """Gradient of ``sum(fn(*args, **kwargs))`` with respect to ``args[0]``."""
    traced, static = _split(kwargs)
    return _jitted(fn, static)[1](*args, **traced)


def f64(x):
    """``x`` as float64 NumPy, converted on the host (bfloat16 through ml_dtypes)."""
    return np.asarray(x).astype(np.float64)


def on_device(x, dtype):
    """``x`` cast on the host and placed as a JAX array (no compiled conversion op)."""
    return jnp.asarray(np.asarray(x).astype(dtype))


def bf16_round(x):
    """The float32 array rounded to bfloat16 (what a bfloat16 input holds), as float64."""
    return f64(np.asarray(x).astype(jnp.bfloat16))


def assert_finite(*trees):
    for leaf in jax.tree_util.tree_leaves(trees):
        assert np.all(np.isfinite(np.asarray(leaf, dtype=np.float64))), leaf


# ----------------------------------------------------------------------------------------------
# Float64 NumPy references, written from the formulas.


def np_log_softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def np_huber(e, delta):
    a = np.abs(e)
    return np.where(a <= delta, 0.5 * e**2, delta * (a - 0.5 * delta))


def np_log_cosh(e):
    # log((exp(e) + exp(-e)) / 2); near 0 its Taylor series e²/2 − e⁴/12 + e⁶/45 (the float64
    # subtraction would lose the relative accuracy there)
    series = e**2 / 2 - e**4 / 12 + e**6 / 45
    return np.where(np.abs(e) < 1e-2, series, np.logaddexp(e, -e) - np.log(2.0))


def np_cosine(p, t, epsilon=0.0, axis=-1, where=None):
    w = np.ones(np.broadcast(p, t).shape) if where is None else np.asarray(where, np.float64)
    dot = np.sum(p * t * w, axis=axis)
    pn = np.sqrt(np.maximum(np.sum(p * p * w, axis=axis), epsilon))
    tn = np.sqrt(np.maximum(np.sum(t * t * w, axis=axis), epsilon))
    return dot / (pn * tn)


def _masked_sum(terms, axis, where):
    w = np.ones(terms.shape) if where is None else np.asarray(where, np.float64)
    return np.sum(np.where(w > 0, terms, 0.0), axis=axis)


def np_kl(lp, t, axis=-1, where=None):
    with np.errstate(invalid="ignore"):  # 0 · inf where t = 0 and log p = -inf: dropped
        terms = np.where(t > 0, t * (np.log(np.where(t > 0, t, 1.0)) - lp), 0.0)
    return _masked_sum(terms, axis, where)


def np_kl_log(lp, lt, axis=-1, where=None):
    terms = np.where(np.isneginf(lt), 0.0, np.exp(lt) * (lt - lp))
    return _masked_sum(terms, axis, where)


def np_gkl(lp, t, axis=-1, where=None):
    kl = np.where(t > 0, t * (np.log(np.where(t > 0, t, 1.0)) - lp), 0.0)
    return _masked_sum(kl - t + np.exp(lp), axis, where)


# ----------------------------------------------------------------------------------------------
# Element-wise and per-vector losses: one registry, every property parametrised over it.


def _pair(rng, scale, shape=(4, 6)):
    p = (scale * rng.normal(size=shape)).astype(np.float32)
    t = (scale * rng.normal(size=shape)).astype(np.float32)
    return p, t


def _kl_data(rng, scale, shape=(4, 6)):
    """Log-predictions (normalised) and targets with an exact zero in each row."""
    lp = np_log_softmax(scale * rng.normal(size=shape)).astype(np.float32)
    t = np.exp(np_log_softmax(rng.normal(size=shape)))
    t[..., 0] = 0.0
    t /= t.sum(-1, keepdims=True)
    return lp, t.astype(np.float32)


def _kl_log_data(rng, scale, shape=(4, 6)):
    lp = np_log_softmax(scale * rng.normal(size=shape)).astype(np.float32)
    lt = np_log_softmax(scale * rng.normal(size=shape)).astype(np.float32)
    return lp, lt


def _gkl_data(rng, scale, shape=(4, 6)):
    """Unnormalised masses; at large scale the log-predictions are very negative (exp(+1e4) is
    inf for every implementation)."""
    lp = (-scale * np.abs(rng.normal(size=shape)) + 0.3).astype(np.float32)
    t = np.exp(0.5 * rng.normal(size=shape))
    t[..., 1] = 0.0
    return lp, t.astype(np.float32)


class Case(NamedTuple):
    fn: Any
    oracle: Any
    ref: Any
    data: Any
    kwargs: dict = {}


CASES = {
    "squared_error": Case(squared_error, "squared_error", lambda p, t: (p - t) ** 2, _pair),
    "l2_loss": Case(l2_loss, "l2_loss", lambda p, t: 0.5 * (p - t) ** 2, _pair),
    "huber_loss": Case(
        huber_loss, "huber_loss", lambda p, t, delta: np_huber(p - t, delta), _pair, {"delta": 0.7}
    ),
    "log_cosh": Case(log_cosh, "log_cosh", lambda p, t: np_log_cosh(p - t), _pair),
    "cosine_similarity": Case(cosine_similarity, "cosine_similarity", np_cosine, _pair),
    "cosine_distance": Case(
        cosine_distance, "cosine_distance", lambda p, t: 1.0 - np_cosine(p, t), _pair
    ),
    "kl_divergence": Case(kl_divergence, "kl_divergence", np_kl, _kl_data),
    "kl_divergence_with_log_targets": Case(
        kl_divergence_with_log_targets, "kl_divergence_with_log_targets", np_kl_log, _kl_log_data
    ),
    "generalized_kl_divergence": Case(
        generalized_kl_divergence, "generalized_kl_divergence", np_gkl, _gkl_data
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_numpy_and_optax(name):
    case = CASES[name]
    args = case.data(np.random.default_rng(0), 1.0)
    out = case.fn(*args, **case.kwargs)
    assert out.dtype == jnp.float32
    want = case.ref(*map(f64, args), **case.kwargs)
    np.testing.assert_allclose(f64(out), want, **F32)
    np.testing.assert_allclose(
        out, optax_value(case.oracle, *args, **case.kwargs), rtol=1e-5, atol=1e-6
    )


def test_inputs_reach_every_branch():
    p, t = _pair(np.random.default_rng(0), 1.0)
    e = np.abs(p - t)
    assert (e <= 0.7).any() and (e > 0.7).any()  # both Huber pieces
    assert (e < 1.0).any() and (e >= 1.0).any()  # both log-cosh forms
    assert (_kl_data(np.random.default_rng(0), 1.0)[1] == 0).any()  # 0 log 0


@pytest.mark.parametrize("name", CASES)
def test_gradients_match_optax_and_are_finite(name):
    case = CASES[name]
    args = case.data(np.random.default_rng(1), 1.0)

    g = grad_of_sum(case.fn, *args, **case.kwargs)
    assert_finite(g)
    np.testing.assert_allclose(
        g, optax_grad(case.oracle, *args, **case.kwargs), rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize("name", CASES)
def test_large_inputs_are_finite_and_accurate(name):
    case = CASES[name]
    args = case.data(np.random.default_rng(2), 1e4)
    out = case.fn(*args, **case.kwargs)
    grad = grad_of_sum(case.fn, *args, **case.kwargs)
    assert_finite(out, grad)
    want = case.ref(*map(f64, args), **case.kwargs)
    np.testing.assert_allclose(f64(out), want, rtol=2e-5, atol=1e-4)
    np.testing.assert_allclose(
        out, optax_value(case.oracle, *args, **case.kwargs), rtol=2e-5, atol=1e-4
    )


@pytest.mark.parametrize("scale", [1.0, 1e4])
@pytest.mark.parametrize("name", CASES)
def test_bfloat16_is_finite_and_close(name, scale):
    case = CASES[name]
    args = case.data(np.random.default_rng(3), scale)
    low = [on_device(a, jnp.bfloat16) for a in args]
    out = case.fn(*low, **case.kwargs)
    assert out.dtype == jnp.bfloat16
    grad = grad_of_sum(case.fn, *low, **case.kwargs)
    assert grad.dtype == jnp.bfloat16
    assert_finite(out, grad)
    want = case.ref(*map(bf16_round, args), **case.kwargs)
    np.testing.assert_allclose(f64(out), want, rtol=1.6e-2, atol=1e-2 * scale)


@pytest.mark.parametrize("name", CASES)
def test_jit_equals_eager_and_op_by_op(name):
    case = CASES[name]
    args = case.data(np.random.default_rng(4), 1.0)
    eager = case.fn(*args, **case.kwargs)  # compiled once per shape (gradtx.eager_jit)
    jitted = jax.jit(lambda *a: case.fn(*a, **case.kwargs))(*args)
    with eager_jit(False):
        op_by_op = case.fn(*args, **case.kwargs)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(op_by_op, eager, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Regression specifics.


def test_huber_delta_per_element_and_targets_default_to_zero():
    e = np.array([0.5, -0.5, 3.0, -3.0], np.float32)
    delta = np.array([1.0, 0.25, 2.0, 4.0], np.float32)
    np.testing.assert_allclose(huber_loss(e, delta=delta), np_huber(f64(e), f64(delta)), **F32)
    np.testing.assert_allclose(
        huber_loss(e, delta=delta), optax_value("huber_loss", e, delta=delta), **F32
    )
    # gradient is the error clipped to [-delta, delta]
    g = grad_of_sum(huber_loss, e, delta=delta)
    np.testing.assert_allclose(g, np.clip(e, -delta, delta), **F32)


def test_log_cosh_keeps_relative_accuracy_near_zero_and_tanh_gradient():
    e = np.array([1e-6, -3e-4, 1e-2, 0.5, 0.999, 1.0, 1.001, 5.0, -40.0, 1e4], np.float32)
    out = log_cosh(e)
    np.testing.assert_allclose(f64(out), np_log_cosh(f64(e)), rtol=2e-6, atol=0)
    g = grad_of_sum(log_cosh, e)
    np.testing.assert_allclose(g, np.tanh(f64(e)), rtol=2e-6, atol=1e-12)


def test_squared_error_and_l2_loss_without_targets_and_with_broadcasting_huber():
    p = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
    np.testing.assert_allclose(squared_error(p), f64(p) ** 2, **F32)
    np.testing.assert_allclose(l2_loss(p), 0.5 * f64(p) ** 2, **F32)
    t = np.array([0.25, -1.0], np.float32)  # broadcasts against [2, 2], as in optax
    np.testing.assert_allclose(huber_loss(p, t), np_huber(f64(p) - f64(t), 1.0), **F32)
    np.testing.assert_allclose(log_cosh(p, t), optax_value("log_cosh", p, t), **F32)


AXIS_WHERE = [((0, 2), False), (None, True), (1, True)]


@pytest.mark.parametrize("axis,masked", AXIS_WHERE)
@pytest.mark.parametrize(
    "name",
    [
        "cosine_similarity",
        "cosine_distance",
        "kl_divergence",
        "kl_divergence_with_log_targets",
        "generalized_kl_divergence",
    ],
)
def test_axis_and_where(name, axis, masked):
    case = CASES[name]
    rng = np.random.default_rng(5)
    args = case.data(rng, 1.0, shape=(3, 4, 5))
    where = rng.random((3, 4, 5)) < 0.7 if masked else None
    out = case.fn(*args, axis=axis, where=where)
    ref = {"cosine_distance": lambda *a, **k: 1.0 - np_cosine(*a, **k)}.get(name, case.ref)
    np.testing.assert_allclose(f64(out), ref(*map(f64, args), axis=axis, where=where), **F32)
    np.testing.assert_allclose(
        out, optax_value(case.oracle, *args, axis=axis, where=where), rtol=1e-5, atol=1e-6
    )


def test_cosine_epsilon_floors_the_squared_norm():
    p = np.array([[1e-3, 0.0], [3.0, 4.0]], np.float32)
    t = np.array([[1.0, 1.0], [4.0, 3.0]], np.float32)
    out = cosine_similarity(p, t, epsilon=0.01)
    np.testing.assert_allclose(f64(out), np_cosine(f64(p), f64(t), epsilon=0.01), **F32)
    np.testing.assert_allclose(out, optax_value("cosine_similarity", p, t, epsilon=0.01), **F32)


def test_cosine_of_a_zero_vector_is_zero_with_finite_gradient():
    # optax returns NaN here (0/0); gradtx treats a zero vector as orthogonal to everything.
    p = jnp.array([[0.0, 0.0], [1.0, 2.0]])
    t = jnp.array([[1.0, 2.0], [0.0, 0.0]])
    np.testing.assert_array_equal(cosine_similarity(p, t), [0.0, 0.0])
    np.testing.assert_array_equal(cosine_distance(p, t), [1.0, 1.0])
    assert_finite(grad_of_sum(cosine_similarity, p, t))


# ----------------------------------------------------------------------------------------------
# Divergence specifics.


def test_kl_zero_targets_count_as_zero_in_value_and_gradient():
    t = jnp.array([0.0, 0.25, 0.75])
    lp = jnp.log(jnp.array([1e-3, 0.25, 0.749]))
    want = 0.25 * np.log(0.25 / 0.25) + 0.75 * np.log(0.75 / 0.749)
    np.testing.assert_allclose(f64(kl_divergence(lp, t)), want, rtol=1e-4)
    assert float(kl_divergence(jnp.log(t), t)) == 0.0  # KL(t || t) = 0
    g_lp, g_t = jax.grad(kl_divergence, argnums=(0, 1))(lp, t)
    np.testing.assert_allclose(g_lp, -f64(t), **F32)  # d/d log p_i = -t_i
    # d/dt_i = log t_i + 1 - log p_i, taken as 0 where t_i = 0 (optax: NaN there)
    want_t = [0.0, *(np.log(f64(t[1:])) + 1 - f64(lp[1:]))]
    np.testing.assert_allclose(g_t, want_t, rtol=1e-5, atol=1e-6)
    # log p = -inf where t = 0 is still a zero term (optax: NaN)
    lp_inf = lp.at[0].set(-jnp.inf)
    np.testing.assert_allclose(f64(kl_divergence(lp_inf, t)), want, rtol=1e-4)
    assert_finite(jax.grad(kl_divergence, argnums=(0, 1))(lp_inf, t))


def test_kl_with_log_targets_treats_minus_inf_as_zero_probability():
    lp = jnp.log(jnp.array([0.2, 0.3, 0.5]))
    lt = jnp.log(jnp.array([0.0, 0.4, 0.6]))  # log 0 = -inf; optax returns NaN for this
    out = kl_divergence_with_log_targets(lp, lt)
    np.testing.assert_allclose(f64(out), 0.4 * np.log(0.4 / 0.3) + 0.6 * np.log(0.6 / 0.5), **F32)
    np.testing.assert_allclose(out, kl_divergence(lp, jnp.exp(lt)), **F32)
    assert_finite(jax.grad(kl_divergence_with_log_targets, argnums=(0, 1))(lp, lt))


def test_generalized_kl_equals_kl_for_distributions_and_convex_kl_is_its_deprecated_name():
    lp, t = _kl_data(np.random.default_rng(6), 1.0)
    np.testing.assert_allclose(generalized_kl_divergence(lp, t), kl_divergence(lp, t), **F32)
    lp, t = _gkl_data(np.random.default_rng(6), 1.0)
    with pytest.warns(DeprecationWarning, match="generalized_kl_divergence"):
        out = convex_kl_divergence(lp, t, axis=0)
    np.testing.assert_allclose(f64(out), np_gkl(f64(lp), f64(t), axis=0), **F32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        np.testing.assert_allclose(out, OL.convex_kl_divergence(lp, t, axis=0), **F32)


# ----------------------------------------------------------------------------------------------
# Ranking.


def np_ranking(s, y, where=None, weights=None, reduce="mean"):
    valid = np.ones(s.shape, bool) if where is None else np.asarray(where)
    w = np.ones(s.shape) if weights is None else weights
    losses = np.zeros(s.shape[:-1])
    for idx in np.ndindex(*s.shape[:-1]):
        v = valid[idx]
        if v.any():
            sv = s[idx][v]
            log_softmax = sv - (sv.max() + np.log(np.sum(np.exp(sv - sv.max()))))
            losses[idx] = -np.sum((y[idx] * w[idx])[v] * log_softmax)
    lists = valid.any(-1)
    if reduce is None:
        return losses
    if reduce == "sum":
        return losses[lists].sum()
    if reduce == "max":
        return max(losses[lists].max(), 0.0)
    return losses[lists].mean() if lists.any() else 0.0


def _ranking_data(rng, scale, shape=(4, 5)):
    s = (scale * rng.normal(size=shape)).astype(np.float32)
    y = rng.integers(0, 3, size=shape).astype(np.float32)  # graded relevance, with zeros
    where = rng.random(shape) < 0.7
    where[0] = False  # one list with no valid item
    where[1] = True
    weights = rng.uniform(0.5, 2.0, size=shape).astype(np.float32)
    return s, y, where, weights


def _worst_list(losses, where=None):  # a reducer of the user's own
    return jnp.max(losses, where=where, initial=0.0)


REDUCERS = {"mean": jnp.mean, "sum": jnp.sum, None: None, "max": _worst_list}


@pytest.mark.parametrize(
    "masked,weighted,reduce",
    [
        (False, False, "mean"),
        (True, False, "mean"),
        (True, True, "sum"),
        (True, True, None),
        (True, False, "max"),
    ],
)
def test_ranking_softmax_loss_matches_numpy_and_optax(masked, weighted, reduce):
    s, y, where, weights = _ranking_data(np.random.default_rng(7), 1.0)
    kw = {
        "where": where if masked else None,
        "weights": weights if weighted else None,
        "reduce_fn": REDUCERS[reduce],
    }
    out = ranking_softmax_loss(s, y, **kw)
    want = np_ranking(f64(s), f64(y), kw["where"], f64(weights) if weighted else None, reduce)
    np.testing.assert_allclose(f64(out), want, **F32)
    np.testing.assert_allclose(
        out, optax_value("ranking_softmax_loss", s, y, **kw), rtol=1e-5, atol=1e-6
    )
    g = grad_of_sum(ranking_softmax_loss, s, y, **kw)
    g_optax = optax_grad("ranking_softmax_loss", s, y, **kw)
    assert_finite(g)
    np.testing.assert_allclose(g, g_optax, rtol=1e-4, atol=1e-6)


def test_ranking_all_lists_masked_gives_zero_with_finite_gradient():
    s, y, _, _ = _ranking_data(np.random.default_rng(8), 1.0)
    where = np.zeros(s.shape, bool)
    assert float(ranking_softmax_loss(s, y, where=where)) == 0.0
    assert float(optax_value("ranking_softmax_loss", s, y, where=where)) == 0.0
    g = grad_of_sum(ranking_softmax_loss, s, y, where=where)
    np.testing.assert_array_equal(g, np.zeros(s.shape))


@pytest.mark.parametrize(
    "scale,dtype", [(1e4, jnp.float32), (1.0, jnp.bfloat16), (1e4, jnp.bfloat16)]
)
def test_ranking_large_and_bfloat16(scale, dtype):
    s, y, where, weights = _ranking_data(np.random.default_rng(9), scale)
    x = on_device(s, dtype)
    out = ranking_softmax_loss(x, y, where=where, weights=weights)
    g = grad_of_sum(ranking_softmax_loss, x, y, where=where, weights=weights)
    assert out.dtype == dtype and g.dtype == dtype
    assert_finite(out, g)
    want = np_ranking(f64(x), f64(y), where, f64(weights))
    tol = F32 if dtype == jnp.float32 else {"rtol": 1.6e-2, "atol": 1e-2 * scale}
    np.testing.assert_allclose(f64(out), want, **tol)
    jitted = jax.jit(lambda v: ranking_softmax_loss(v, y, where=where, weights=weights))(x)
    np.testing.assert_allclose(f64(jitted), f64(out), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Self-supervised: NT-Xent and the triplet margin loss.


def np_ntxent(e, labels, tau, floor=F32_EPS):
    unit = e / np.sqrt(np.maximum(np.sum(e * e, axis=1, keepdims=True), floor))
    sim = unit @ unit.T / tau
    total, count = 0.0, 0
    for i, j in itertools.product(range(len(e)), repeat=2):
        if i == j or labels[i] != labels[j]:
            continue
        # -log(exp(S_ij) / (exp(S_ij) + sum over negatives k of exp(S_ik))), via logsumexp
        terms = np.concatenate([[sim[i, j]], sim[i, labels != labels[i]]])
        top = terms.max()
        total += top + np.log(np.sum(np.exp(terms - top))) - sim[i, j]
        count += 1
    return total / count if count else 0.0


NTXENT_LABELS = {
    "pairs": [0, 0, 1, 1, 2, 2],
    "uneven": [0, 0, 0, 1, 1, 2],  # a triple, and an anchor with no positive
    "one_group": [3, 3, 3, 3, 3, 3],  # no negatives at all
}


@pytest.mark.parametrize("tau", [0.07, 0.5])
@pytest.mark.parametrize("labels", NTXENT_LABELS)
def test_ntxent_matches_numpy_and_optax(labels, tau):
    e = np.random.default_rng(10).normal(size=(6, 4)).astype(np.float32)
    lab = np.array(NTXENT_LABELS[labels])
    out = ntxent(e, lab, tau)
    np.testing.assert_allclose(f64(out), np_ntxent(f64(e), lab, tau), rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(
        out, optax_value("ntxent", e, jnp.asarray(lab), tau), rtol=1e-5, atol=1e-5
    )
    g = grad_of_sum(ntxent, e, lab, tau)
    assert_finite(g)
    np.testing.assert_allclose(
        g, optax_grad("ntxent", e, jnp.asarray(lab), tau), rtol=1e-4, atol=1e-5
    )


def test_ntxent_without_positive_pairs_is_zero():
    # optax divides by the number of positive pairs and returns NaN here
    e = np.random.default_rng(11).normal(size=(4, 3)).astype(np.float32)
    assert float(ntxent(e, np.arange(4))) == 0.0
    assert_finite(grad_of_sum(ntxent, e, np.arange(4)))


@pytest.mark.parametrize(
    "dtype,scale,tau",
    [(jnp.float32, 1e4, 1e-3), (jnp.bfloat16, 1.0, 0.07), (jnp.bfloat16, 1e4, 0.1)],
)
def test_ntxent_large_small_temperature_and_bfloat16(dtype, scale, tau):
    e = on_device(scale * np.random.default_rng(12).normal(size=(6, 4)), dtype)
    lab = np.array(NTXENT_LABELS["uneven"])
    out = ntxent(e, lab, tau)
    g = grad_of_sum(ntxent, e, lab, tau)
    assert out.dtype == dtype and g.dtype == dtype
    assert_finite(out, g)
    want = np_ntxent(f64(e), lab, tau, float(jnp.finfo(dtype).eps))
    tol = {"rtol": 2e-5, "atol": 1e-4} if dtype == jnp.float32 else {"rtol": 1.6e-2, "atol": 1e-2}
    np.testing.assert_allclose(f64(out), want, **tol)
    jitted = jax.jit(ntxent)(e, lab, tau)
    np.testing.assert_allclose(f64(jitted), f64(out), rtol=1e-6)


def np_triplet(a, p, n, axis=-1, q=2.0, margin=1.0, eps=1e-6):
    def dist(x, y):
        return (np.sum(np.abs(x - y) ** q, axis=axis) + eps) ** (1.0 / q)

    return np.maximum(dist(a, p) - dist(a, n) + margin, 0.0)


def _triplets(rng, scale, shape=(8, 5)):
    a = scale * rng.normal(size=shape)
    p = a + 0.6 * scale * rng.normal(size=shape)
    n = a + 0.9 * scale * rng.normal(size=shape)
    return [x.astype(np.float32) for x in (a, p, n)]


@pytest.mark.parametrize("q", [1, 2, 3, 4])
@pytest.mark.parametrize("axis", [-1, 0])
def test_triplet_margin_loss_matches_numpy_and_optax(q, axis):
    a, p, n = _triplets(np.random.default_rng(13), 1.0)
    if axis == 0:
        a, p, n = a.T, p.T, n.T
    out = triplet_margin_loss(a, p, n, axis=axis, norm_degree=q, margin=0.5)
    want = np_triplet(f64(a), f64(p), f64(n), axis=axis, q=q, margin=0.5)
    assert (want == 0).any() and (want > 0).any()  # both sides of the hinge
    np.testing.assert_allclose(f64(out), want, **F32)
    g = grad_of_sum(triplet_margin_loss, a, p, n, axis=axis, norm_degree=float(q), margin=0.5)
    assert_finite(g)
    if q % 2 == 0:  # optax raises signed differences to the power q, a norm only for even q
        np.testing.assert_allclose(
            out,
            optax_value("triplet_margin_loss", a, p, n, axis=axis, norm_degree=q, margin=0.5),
            **F32,
        )
        g_optax = optax_grad("triplet_margin_loss", a, p, n, axis=axis, norm_degree=q, margin=0.5)
        np.testing.assert_allclose(g, g_optax, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "q,dtype,scale",
    [(2, jnp.float32, 1e4), (10, jnp.float32, 1e4), (2, jnp.bfloat16, 1.0), (3, jnp.bfloat16, 1e4)],
)
def test_triplet_large_high_degree_and_bfloat16(q, dtype, scale):
    a, p, n = (on_device(x, dtype) for x in _triplets(np.random.default_rng(14), scale))
    out = triplet_margin_loss(a, p, n, norm_degree=q)
    g = grad_of_sum(triplet_margin_loss, a, p, n, norm_degree=q)
    assert out.dtype == dtype and g.dtype == dtype
    assert_finite(out, g)  # (2e4)^10 overflows float32 in the plain formula
    want = np_triplet(*(f64(x) for x in (a, p, n)), q=q)
    tol = F32 if dtype == jnp.float32 else {"rtol": 1.6e-2, "atol": 1e-2 * scale}
    np.testing.assert_allclose(f64(out), want, **tol)
    jitted = jax.jit(lambda *x: triplet_margin_loss(*x, norm_degree=q))(a, p, n)
    np.testing.assert_allclose(f64(jitted), f64(out), rtol=1e-6)


def test_triplet_at_zero_distance_uses_eps_and_has_finite_gradient():
    a = jnp.array([[1.0, 2.0, 3.0]])
    n = jnp.array([[1.0, 2.0, 4.0]])
    out = triplet_margin_loss(a, a, n, margin=2.0, eps=1e-4)
    np.testing.assert_allclose(f64(out), [1e-2 - np.sqrt(1 + 1e-4) + 2.0], **F32)
    np.testing.assert_allclose(
        out, optax_value("triplet_margin_loss", a, a, n, margin=2.0, eps=1e-4), **F32
    )
    for q in (1, 2):
        assert_finite(grad_of_sum(triplet_margin_loss, a, a, n, norm_degree=q))
    assert_finite(grad_of_sum(triplet_margin_loss, a, a, n, eps=0.0))


# ----------------------------------------------------------------------------------------------
# CTC: brute force over every alignment, in float64.


def collapse(path, blank):
    """Merge repeated symbols, then drop blanks (Graves et al. 2006, the map B)."""
    return [k for i, k in enumerate(path) if k != blank and (i == 0 or path[i - 1] != k)]


def np_log_sum_exp(values):
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return -np.inf
    top = values.max()
    return top + np.log(np.sum(np.exp(values - top)))


def brute_ctc(logits, labels, blank):
    """For one unpadded sequence: the loss, its gradient with respect to the logits (Graves
    2006, eq. 16: softmax minus the posterior occupancy of each class at each frame) and the
    forward probabilities (alpha_blank [T, N+1], alpha_label [T, N]) in probability space."""
    lp = np_log_softmax(f64(logits))
    frames, classes = lp.shape
    labels = list(labels)
    scores, paths = [], []
    for path in itertools.product(range(classes), repeat=frames):
        if collapse(path, blank) == labels:
            scores.append(sum(lp[t, k] for t, k in enumerate(path)))
            paths.append(path)
    log_p = np_log_sum_exp(scores)
    occupancy = np.zeros(lp.shape)
    for score, path in zip(scores, paths, strict=True):
        for t, k in enumerate(path):
            occupancy[t, k] += np.exp(score - log_p)
    grad = np.exp(lp) - occupancy
    alpha_blank = np.zeros((frames, len(labels) + 1))
    alpha_label = np.zeros((frames, len(labels)))
    for t in range(1, frames + 1):
        for prefix in itertools.product(range(classes), repeat=t):
            c = collapse(prefix, blank)
            if c != labels[: len(c)]:
                continue
            p = np.exp(sum(lp[s, k] for s, k in enumerate(prefix)))
            if prefix[-1] == blank:
                alpha_blank[t - 1, len(c)] += p
            else:
                alpha_label[t - 1, len(c) - 1] += p
    return -log_p, grad, alpha_blank, alpha_label


def _ctc_batch(rng, scale=1.0):
    """Three sequences: plain, repeated labels with padded frames, and all labels padded."""
    logits = (scale * rng.normal(size=(3, 5, 3))).astype(np.float32)
    logit_paddings = np.zeros((3, 5), np.float32)
    logit_paddings[1, 4:] = 1.0
    labels = np.array([[1, 2, 0], [2, 2, 1], [1, 1, 1]], np.int32)
    label_paddings = np.array([[0, 0, 1], [0, 0, 1], [1, 1, 1]], np.float32)
    return logits, logit_paddings, labels, label_paddings


def _unpadded(logits, logit_paddings, labels, label_paddings, b):
    t = int(np.sum(logit_paddings[b] == 0))
    n = int(np.sum(label_paddings[b] == 0))
    return logits[b, :t], labels[b, :n]


def test_ctc_matches_brute_force_and_optax():
    # a blank that is not class 0 (blank_id = 0 is checked against brute force further down)
    blank_id = 2
    batch = _ctc_batch(np.random.default_rng(15))
    batch = (batch[0], batch[1], np.where(batch[2] == 2, 0, batch[2]), batch[3])
    loss, a_blank, a_label = ctc_loss_with_forward_probs(*batch, blank_id=blank_id)
    grad = grad_of_sum(ctc_loss, *batch, blank_id=blank_id)
    loss, a_blank, a_label, grad = (f64(x) for x in (loss, a_blank, a_label, grad))
    assert loss.shape == (3,) and a_blank.shape == (5, 3, 4) and a_label.shape == (5, 3, 3)
    for b in range(3):
        logits, labels = _unpadded(*batch, b)
        want, want_grad, want_blank, want_label = brute_ctc(logits, labels, blank_id)
        np.testing.assert_allclose(f64(loss[b]), want, rtol=1e-5)
        np.testing.assert_allclose(f64(grad[b, : len(logits)]), want_grad, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(grad[b, len(logits) :], 0.0)  # padded frames
        if b == 0:  # an unpadded sequence: every forward probability, in probability space
            n = len(labels)
            np.testing.assert_allclose(
                np.exp(f64(a_blank[:-1, b, : n + 1])), want_blank[:-1], rtol=1e-5, atol=1e-12
            )
            np.testing.assert_allclose(
                np.exp(f64(a_label[:, b, :n])), want_label, rtol=1e-5, atol=1e-12
            )
            last = want_blank[-1] + np.concatenate([[0.0], want_label[-1]])
            np.testing.assert_allclose(
                np.exp(f64(a_blank[-1, b, : n + 1])), last, rtol=1e-5, atol=1e-12
            )
    oracle = optax_value("ctc_loss_with_forward_probs", *batch, blank_id=blank_id)
    for ours, theirs in zip((loss, a_blank, a_label), oracle, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-3)
    g_optax = optax_grad("ctc_loss", *batch, blank_id=blank_id)
    np.testing.assert_allclose(grad, g_optax, rtol=1e-4, atol=1e-6)


def test_ctc_impossible_labelling_is_finite_and_matches_optax():
    # three distinct labels cannot fit in two frames: the loss is about -log_epsilon
    logits = np.random.default_rng(16).normal(size=(1, 2, 4)).astype(np.float32)
    args = (logits, np.zeros((1, 2)), np.array([[1, 2, 3]]), np.zeros((1, 3)))
    loss = ctc_loss(*args)
    assert_finite(loss, grad_of_sum(ctc_loss, *args))
    assert float(loss[0]) > 5e4
    np.testing.assert_allclose(loss, optax_value("ctc_loss", *args), rtol=1e-6)


@pytest.mark.parametrize(
    "dtype,scale", [(jnp.float32, 1e4), (jnp.bfloat16, 1.0), (jnp.bfloat16, 1e4)]
)
def test_ctc_large_logits_and_bfloat16(dtype, scale):
    logits, *rest = _ctc_batch(np.random.default_rng(17), scale)
    x = on_device(logits, dtype)
    loss = ctc_loss(x, *rest)
    g = grad_of_sum(ctc_loss, x, *rest)
    assert loss.dtype == jnp.float32 and g.dtype == dtype  # float32 for half precision, as optax
    assert_finite(loss, g)
    rounded = f64(x)
    for b in range(3):
        want = brute_ctc(*_unpadded(rounded, rest[0], rest[1], rest[2], b), 0)[0]
        np.testing.assert_allclose(f64(loss[b]), want, rtol=1e-5, atol=1e-4)
    # optax works in the logits' dtype, so it agrees only to bfloat16 precision there
    tol = {"rtol": 1e-5, "atol": 1e-3} if dtype == jnp.float32 else {"rtol": 1e-2, "atol": 1e-2}
    np.testing.assert_allclose(loss, optax_value("ctc_loss", x, *rest), **tol)


def test_ctc_jit_equals_eager():
    batch = _ctc_batch(np.random.default_rng(18))
    eager = ctc_loss_with_forward_probs(*batch, blank_id=0)
    jitted = jax.jit(ctc_loss_with_forward_probs, static_argnames="blank_id")(*batch, blank_id=0)
    for x, y in zip(jitted, eager, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Signatures: optax's positional order, keyword names, kinds and defaults.

ALL = [
    squared_error,
    l2_loss,
    huber_loss,
    log_cosh,
    cosine_similarity,
    cosine_distance,
    kl_divergence,
    kl_divergence_with_log_targets,
    generalized_kl_divergence,
    convex_kl_divergence,
    ranking_softmax_loss,
    ntxent,
    triplet_margin_loss,
    ctc_loss,
    ctc_loss_with_forward_probs,
]


@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
def test_signature_matches_optax(fn):
    def params(f):
        return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]

    assert params(fn) == params(getattr(OL, fn.__name__))


# ----------------------------------------------------------------------------------------------
# Bad input: errors name the function, the argument, the value and what was expected.

X = np.ones((2, 3), np.float32)
CTC = _ctc_batch(np.random.default_rng(0))

ERRORS = [
    (
        lambda: huber_loss(X, delta=-1.0),
        ValueError,
        r"huber_loss: delta must be in \(0, inf\], got -1.0",
    ),
    (
        lambda: squared_error(np.ones((2, 3), np.int32)),
        TypeError,
        "squared_error: predictions must be a real floating-point array, got dtype int32",
    ),
    (
        lambda: l2_loss(X, np.ones((3, 2))),
        ValueError,
        r"l2_loss: targets must have the shape of predictions \(2, 3\), got \(3, 2\)",
    ),
    (
        lambda: log_cosh(X, np.ones((4,))),
        ValueError,
        r"log_cosh: shapes do not broadcast together: predictions \(2, 3\), targets \(4,\)",
    ),
    (
        lambda: cosine_distance(X, X, epsilon=-0.5),
        ValueError,
        r"cosine_distance: epsilon must be in \[0, inf\], got -0.5",
    ),
    (
        lambda: kl_divergence(X, np.ones((2, 3), np.int32)),
        TypeError,
        "kl_divergence: targets must be a real floating-point array",
    ),
    (
        lambda: ranking_softmax_loss(np.float32(1.0), 1.0),
        ValueError,
        "ranking_softmax_loss: logits must have a list axis",
    ),
    (lambda: ntxent(X, np.zeros(3)), ValueError, r"ntxent: labels must have shape \(2,\)"),
    (
        lambda: ntxent(X, np.zeros(2), temperature=0.0),
        ValueError,
        r"ntxent: temperature must be in \(0, inf\], got 0.0",
    ),
    (
        lambda: triplet_margin_loss(X, X, X, norm_degree=0.5),
        ValueError,
        r"triplet_margin_loss: norm_degree must be in \[1, inf\], got 0.5",
    ),
    (
        lambda: triplet_margin_loss(X, X, X, axis=2),
        ValueError,
        "triplet_margin_loss: axis 2 is out of range",
    ),
    (
        lambda: ctc_loss(CTC[0][0], *CTC[1:]),
        ValueError,
        r"ctc_loss: logits must be \[batch, frames, classes\], got \(5, 3\)",
    ),
    (
        lambda: ctc_loss(*CTC, blank_id=3),
        ValueError,
        r"ctc_loss: blank_id must be in \[0, 3\), got 3",
    ),
    (lambda: ctc_loss(*CTC, blank_id=0.5), TypeError, "ctc_loss: blank_id must be an int, got 0.5"),
    (
        lambda: ctc_loss(*CTC, log_epsilon=1.0),
        ValueError,
        r"ctc_loss: log_epsilon must be in \[-inf, 0\), got 1.0",
    ),
    (
        lambda: ctc_loss_with_forward_probs(*CTC[:3], CTC[3][:, :2]),
        ValueError,
        r"ctc_loss_with_forward_probs: label_paddings must have the shape of labels "
        r"\(3, 3\), got \(3, 2\)",
    ),
    (
        lambda: ctc_loss(CTC[0], CTC[1][:, :4], *CTC[2:]),
        ValueError,
        r"ctc_loss: logit_paddings must have shape \(3, 5\)",
    ),
]


@pytest.mark.parametrize("call,error,message", ERRORS)
def test_bad_input_is_reported(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_traced_hyperparameters_are_not_checked():
    # the same values that are refused eagerly pass through jit as traced leaves
    out = jax.jit(lambda d: huber_loss(jnp.array([3.0]), delta=d))(2.0)
    np.testing.assert_allclose(out, [4.0])
    out = jax.jit(lambda tau: ntxent(jnp.eye(2), jnp.array([0, 0]), tau))(0.5)
    assert math.isfinite(float(out))
