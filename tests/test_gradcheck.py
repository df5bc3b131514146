"""check_grads: catches a wrong custom gradient (and says where), passes a correct one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx


def _custom_sin(wrong_at=None, factor=1.0):
    """sin with a hand-written VJP; ``wrong_at`` (an index) gets a gradient scaled by factor."""

    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    def fwd(x):
        return jnp.sin(x), x

    def bwd(x, ct):
        g = jnp.cos(x)
        if wrong_at is not None:
            g = g.at[wrong_at].multiply(factor)
        return (ct * g,)

    f.defvjp(fwd, bwd)
    return f


def _loss(sin_w):
    def loss(p):
        return jnp.sum(sin_w(p["w"]) * p["a"]) + jnp.sum(p["b"] ** 3)

    return loss


def _params():
    rng = np.random.default_rng(0)
    return {
        "w": jnp.asarray(rng.normal(size=(3, 4))),
        "a": jnp.asarray(rng.normal(size=(3, 4))),
        "b": jnp.asarray(rng.normal(size=5)),
    }


def test_correct_custom_gradient_passes(x64):
    p = _params()
    report = gradtx.check_grads(_loss(_custom_sin()), p)
    assert report.num_checked == report.num_elements == 29
    assert report.max_rel_error < 1e-8
    assert report.where.startswith(("['a'][", "['b'][", "['w'][")), report.where


def test_wrong_custom_gradient_is_caught_and_located(x64):
    p = _params()
    loss = _loss(_custom_sin(wrong_at=(1, 2), factor=1.5))
    with pytest.raises(gradtx.GradCheckError) as e:
        gradtx.check_grads(loss, p)
    r = e.value.report
    assert r.where == "['w'][1, 2]"
    w, a = np.asarray(p["w"]), np.asarray(p["a"])
    true = np.cos(w[1, 2]) * a[1, 2]
    np.testing.assert_allclose(r.numeric, true, rtol=1e-8)
    np.testing.assert_allclose(r.analytic, 1.5 * true, rtol=1e-12)
    np.testing.assert_allclose(r.max_rel_error, 0.5 / 1.5, rtol=1e-6)
    assert "['w'][1, 2]" in str(e.value) and "exceeds tol" in str(e.value)


def test_float32_uses_a_looser_default_tolerance():
    p = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), _params())
    assert gradtx.check_grads(_loss(_custom_sin()), p).max_rel_error < 1e-2
    with pytest.raises(gradtx.GradCheckError):
        gradtx.check_grads(_loss(_custom_sin(wrong_at=(0, 0), factor=1.2)), p)


def test_random_subset_of_a_large_tree(x64):
    rng = np.random.default_rng(1)
    p = {"big": jnp.asarray(rng.normal(size=(100, 50))), "small": jnp.asarray(rng.normal(size=3))}

    def loss(q):
        return jnp.sum(jnp.tanh(q["big"])) + jnp.sum(q["small"] ** 2)

    r = gradtx.check_grads(loss, p, max_checks=200, seed=3)
    assert r.num_checked == 200 and r.num_elements == 5003 and r.max_rel_error < 1e-6
    # A gradient wrong everywhere in one leaf is caught by the subset.
    bad = jax.custom_vjp(lambda x: jnp.sum(jnp.tanh(x)))
    bad.defvjp(lambda x: (jnp.sum(jnp.tanh(x)), x), lambda x, ct: (ct * 2.0 / jnp.cosh(x) ** 2,))
    with pytest.raises(gradtx.GradCheckError) as e:
        gradtx.check_grads(lambda q: bad(q["big"]) + jnp.sum(q["small"] ** 2), p, max_checks=50)
    assert e.value.report.where.startswith("['big'][")


def test_extra_args_and_bad_input(x64):
    r = gradtx.check_grads(lambda x, c: jnp.sum(c * x**2), jnp.arange(1.0, 4.0), 2.0)
    assert r.num_checked == 3
    with pytest.raises(TypeError, match="must be a real floating array"):
        gradtx.check_grads(lambda x: jnp.sum(x), jnp.arange(3))
    with pytest.raises(ValueError, match="max_checks must be >= 1"):
        gradtx.check_grads(lambda x: jnp.sum(x), jnp.ones(3), max_checks=0)


def test_a_small_leaf_is_never_skipped_by_the_subset(x64):
    # 200 checks out of 5003 elements: sampling over the whole tree skips the 3-element leaf
    # most of the time; sampling within each leaf checks all of it.
    rng = np.random.default_rng(1)
    p = {"big": jnp.asarray(rng.normal(size=(100, 50))), "small": jnp.asarray(rng.normal(size=3))}

    bad = jax.custom_vjp(lambda x: jnp.sum(x**2))
    bad.defvjp(lambda x: (jnp.sum(x**2), x), lambda x, ct: (ct * 3.0 * x,))  # true: 2x
    loss = lambda q: jnp.sum(jnp.tanh(q["big"])) + bad(q["small"])  # noqa: E731
    for seed in range(5):
        with pytest.raises(gradtx.GradCheckError) as e:
            gradtx.check_grads(loss, p, max_checks=200, seed=seed)
        r = e.value.report
        assert r.where.startswith("['small'][") and r.num_checked <= 200
        i = int(r.where[len("['small'][") : -1])
        true = 2.0 * float(p["small"][i])
        np.testing.assert_allclose(r.numeric, true, rtol=1e-8)
        np.testing.assert_allclose(r.max_rel_error, 1.0 / 3.0, rtol=1e-6)
    # The correct gradient passes with the same budget.
    good = lambda q: jnp.sum(jnp.tanh(q["big"])) + jnp.sum(q["small"] ** 2)  # noqa: E731
    assert gradtx.check_grads(good, p, max_checks=200).num_checked <= 200


def test_mixed_float32_float64_tree(x64):
    # Each leaf is stepped and judged in its own dtype: the float32 leaf's step is rounded to
    # float32, and the difference quotient divides by that realised step.
    rng = np.random.default_rng(2)
    p = {
        "a": jnp.asarray(rng.normal(size=4), jnp.float32),
        "b": jnp.asarray(rng.normal(size=4), jnp.float64),
    }

    def loss(q):
        return jnp.sum(jnp.sin(q["a"])) + jnp.sum(jnp.sin(q["b"]))

    r = gradtx.check_grads(loss, p)
    assert r.num_checked == 8 and r.max_rel_error <= r.tol
    # A wrong float64 gradient is still judged with the float64 tolerance (1e-6).
    bad = jax.custom_vjp(jnp.sin)
    bad.defvjp(lambda x: (jnp.sin(x), x), lambda x, ct: (ct * jnp.cos(x) * (1 + 1e-4),))
    with pytest.raises(gradtx.GradCheckError) as e:
        gradtx.check_grads(lambda q: jnp.sum(jnp.sin(q["a"])) + jnp.sum(bad(q["b"])), p)
    assert e.value.report.where.startswith("['b'][") and e.value.report.tol == 1e-6
    np.testing.assert_allclose(e.value.report.max_rel_error, 1e-4 / (1 + 1e-4), rtol=1e-3)


def test_docstring_cites_the_formula_and_reference():
    doc = gradtx.check_grads.__doc__
    assert "Nocedal & Wright" in doc and "§8.1" in doc
    assert "\\max(|a_i|, |n_i|, \\text{min\\_scale})" in doc
    assert "1e-6`` for float64, ``1e-2`` for float32" in doc
