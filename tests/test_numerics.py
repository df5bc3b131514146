"""The shared tree math against NumPy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx import numerics


def _tree(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(size=(3, 2)).astype(dtype), "b": [rng.normal(size=4).astype(dtype)]}


def _cat(t):
    return np.concatenate([np.ravel(t["a"]), np.ravel(t["b"][0])])


def test_global_norm(x64):
    t = _tree()
    np.testing.assert_allclose(float(numerics.global_norm(t)), np.linalg.norm(_cat(t)), rtol=1e-12)
    z = {"z": np.asarray([3 + 4j, 0j])}
    np.testing.assert_allclose(float(numerics.global_norm(z)), 5.0, rtol=1e-12)


def test_moments_and_bias_correction(x64):
    g, m = _tree(1), _tree(2)
    out = numerics.update_moment(g, m, 0.9, 1)
    np.testing.assert_allclose(_cat(out), 0.9 * _cat(m) + 0.1 * _cat(g), rtol=1e-12)
    out2 = numerics.update_moment_per_elem_norm(g, m, 0.99, 2)
    np.testing.assert_allclose(_cat(out2), 0.99 * _cat(m) + 0.01 * _cat(g) ** 2, rtol=1e-12)
    hat = numerics.bias_correction(m, 0.9, jnp.asarray(3, jnp.int32))
    np.testing.assert_allclose(_cat(hat), _cat(m) / (1 - 0.9**3), rtol=1e-12)


def test_safe_increment_saturates():
    big = jnp.asarray(np.iinfo(np.int32).max - 1, jnp.int32)
    once = numerics.safe_increment(big)
    assert int(once) == np.iinfo(np.int32).max
    assert int(numerics.safe_increment(once)) == np.iinfo(np.int32).max
    assert once.dtype == jnp.int32


def test_compute_and_real_dtypes():
    assert numerics.compute_dtype(jnp.float16) == jnp.float32
    assert numerics.compute_dtype(jnp.bfloat16) == jnp.float32
    assert numerics.compute_dtype(jnp.float32) == jnp.float32
    assert numerics.real_dtype(jnp.complex64) == jnp.float32


def test_first_difference_names_the_path():
    a = {"x": {"w": np.ones(2)}, "y": np.ones(3)}
    assert numerics.first_difference(a, a) is None
    assert numerics.first_difference(a, {"x": {"w": np.ones(2)}, "z": np.ones(3)})[0] in (
        "['y']",
        "['z']",
    )
    path, why = numerics.first_difference(a, {"x": {"w": np.ones(5)}, "y": np.ones(3)})
    assert path == "['x']['w']" and "shape" in why
    with pytest.raises(ValueError, match=r"\['x'\]\['w'\]"):
        numerics.check_structure(
            {"x": {"w": np.ones(5)}, "y": np.ones(3)}, a, "t", "updates", "params"
        )


def test_vdot_sum_scale(x64):
    a, b = _tree(3), _tree(4)
    np.testing.assert_allclose(float(numerics.tree_vdot(a, b)), _cat(a) @ _cat(b), rtol=1e-12)
    np.testing.assert_allclose(float(numerics.tree_sum(a)), _cat(a).sum(), rtol=1e-12)
    np.testing.assert_allclose(_cat(numerics.tree_scale(2.0, a)), 2 * _cat(a), rtol=1e-12)
    np.testing.assert_allclose(
        _cat(numerics.tree_sub(numerics.tree_add(a, b), b)), _cat(a), rtol=1e-12
    )


def test_zeros_like_output_does_not_run_the_function():
    calls = []

    def fn(x):
        calls.append(1)
        return {"a": x.astype(jnp.float16) * 2, "b": (jnp.ones((2, 3)), jnp.arange(4))}

    out = numerics.tree_zeros_like_output(fn, jnp.ones(5))
    assert out["a"].shape == (5,) and out["a"].dtype == jnp.float16
    assert out["b"][0].shape == (2, 3) and out["b"][1].dtype == jnp.arange(4).dtype
    assert all(float(jnp.abs(x).sum()) == 0 for x in jax.tree_util.tree_leaves(out))
    assert len(calls) == 1  # traced once by eval_shape, never executed on data
