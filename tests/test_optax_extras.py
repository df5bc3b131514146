"""optax 0.2.8's remaining top-level helpers: unit-wise and per-example clipping, gradient
scaling in the backward pass, safe norms and counters, target-network updates, linear algebra
(power iteration, inverse p-th roots, NNLS), microbatching, the diagonal normal, and
``optimistic_adam_v2``.

Each is checked against a float64 NumPy formula written from the math and against optax.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

import gradtx
from gradtx import linalg, microbatching, param_updates, safe_math
from gradtx.transforms import clipping

RNG = np.random.default_rng(0)


def _close(got, want, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want), rtol=rtol, atol=atol)


def _tree_close(got, want, rtol=1e-5, atol=1e-6):
    g, tg = jax.tree_util.tree_flatten(got)
    w, tw = jax.tree_util.tree_flatten(want)
    assert tg == tw
    for a, b in zip(g, w, strict=True):
        _close(a, b, rtol, atol)


# ----------------------------------------------------------------------------------------------
# Unit-wise norms and adaptive gradient clipping (Brock et al., 2021).


def np_unitwise_norm(x, axis=None):
    """NFNets' convention: vectors whole; dense (in, out) and (in, heads, out) over axis 0;
    conv kernels over every axis but the output one."""
    x = np.asarray(x)
    if axis is None:
        if np.squeeze(x).ndim <= 1:
            axis = tuple(range(x.ndim))
        elif x.ndim in (2, 3):
            axis = (0,)
        else:
            axis = tuple(range(x.ndim - 1))
    sq = np.sum(np.abs(x) ** 2, axis=axis, keepdims=True)
    return np.broadcast_to(np.sqrt(sq), x.shape)


UNIT_SHAPES = [(), (5,), (1, 5), (3, 1, 1), (3, 4), (2, 3, 4), (2, 2, 3, 4), (2, 2, 2, 3, 4)]


@pytest.mark.parametrize("shape", UNIT_SHAPES)
def test_unitwise_norm_default_axes(shape):
    x = RNG.normal(size=shape)
    want = np_unitwise_norm(x)
    _close(clipping.unitwise_norm(jnp.asarray(x, jnp.float32)), want)
    _close(optax.transforms.unitwise_norm(jnp.asarray(x, jnp.float32)), want)


def test_unitwise_norm_axis_complex_and_errors():
    x = RNG.normal(size=(3, 4, 2, 2, 2, 2))
    got = clipping.unitwise_norm(jnp.asarray(x, jnp.float32), axis=(0, 2))
    _close(got, np_unitwise_norm(x, axis=(0, 2)))
    _close(got, optax.transforms.unitwise_norm(jnp.asarray(x, jnp.float32), axis=(0, 2)))
    z = RNG.normal(size=(3, 4)) + 1j * RNG.normal(size=(3, 4))
    got = clipping.unitwise_norm(jnp.asarray(z, jnp.complex64))
    assert got.dtype == jnp.float32
    _close(got, np_unitwise_norm(z))
    with pytest.raises(ValueError, match=r"unitwise_norm: .*shape \(3, 4, 2, 2, 2, 2\)"):
        clipping.unitwise_norm(jnp.asarray(x))


def test_unitwise_clip_both_branches_and_shape_error():
    g_norm = np.array([5.0, 0.5, 2.0, 0.0])
    max_norm = np.array([1.0, 1.0, 2.0, 1.0])  # clip, keep, clip (equal), keep (zero)
    grad = np.array([3.0, 0.4, -2.0, 0.0])
    want = np.where(g_norm < max_norm, grad, grad * max_norm / np.maximum(g_norm, 1e-6))
    np.testing.assert_allclose(want, [0.6, 0.4, -2.0, 0.0])
    args = [jnp.asarray(a, jnp.float32) for a in (g_norm, max_norm, grad)]
    _close(clipping.unitwise_clip(*args), want)
    _close(optax.transforms.unitwise_clip(*args), want)
    with pytest.raises(
        ValueError, match="unitwise_clip: .*same shape.*\\(4,\\), \\(4,\\) and \\(3,\\)"
    ):
        clipping.unitwise_clip(args[0], args[1], args[2][:3])


def np_agc(g, p, clip, eps):
    g_norm = np_unitwise_norm(g)
    max_norm = clip * np.maximum(np_unitwise_norm(p), eps)
    return np.where(g_norm < max_norm, g, g * max_norm / np.maximum(g_norm, 1e-6))


def test_adaptive_grad_clip_matches_paper_and_optax():
    params = {
        "dense": RNG.normal(size=(4, 3)),
        "conv": RNG.normal(size=(2, 2, 3, 5)),
        "bias": np.zeros(3),  # zero-initialised: the eps floor decides
        "scale": np.array(2.0),
    }
    grads = {
        "dense": RNG.normal(size=(4, 3)) * np.array([0.01, 1.0, 10.0]),  # keep, clip, clip
        "conv": RNG.normal(size=(2, 2, 3, 5)),
        "bias": np.array([1e-4, 0.0, 0.0]),  # below eps·clip: kept
        "scale": np.array(5.0),
    }
    want = {k: np_agc(grads[k], params[k], 0.1, 1e-3) for k in params}
    assert not np.allclose(want["dense"], grads["dense"])  # some units were clipped
    np.testing.assert_allclose(want["dense"][:, 0], grads["dense"][:, 0])  # and one was not
    np.testing.assert_allclose(want["bias"], grads["bias"])
    f32 = lambda t: jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), t)
    tx = gradtx.adaptive_grad_clip(0.1)
    state = tx.init(f32(params))
    assert state == gradtx.AdaptiveGradClipState() == ()
    got, _ = tx.update(f32(grads), state, f32(params))
    _tree_close(got, want)
    jitted, _ = jax.jit(tx.update)(f32(grads), state, f32(params))
    _tree_close(jitted, want)
    otx = optax.adaptive_grad_clip(0.1)
    _tree_close(otx.update(f32(grads), otx.init(f32(params)), f32(params))[0], want)
    # bfloat16 updates keep their dtype
    bf = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.bfloat16), grads)
    out, _ = tx.update(bf, state, f32(params))
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(out))


def test_adaptive_grad_clip_axis_and_errors():
    p, g = RNG.normal(size=(3, 4)), 10 * RNG.normal(size=(3, 4))
    want = np.empty_like(g)
    gn, pn = np_unitwise_norm(g, axis=1), np.maximum(np_unitwise_norm(p, axis=1), 1e-3)
    want = np.where(gn < 0.5 * pn, g, g * 0.5 * pn / gn)
    tx = gradtx.adaptive_grad_clip(0.5, axis=1)
    got, _ = tx.update(jnp.asarray(g, jnp.float32), tx.init(None), jnp.asarray(p, jnp.float32))
    _close(got, want)
    otx = optax.adaptive_grad_clip(0.5, axis=1)
    _close(otx.update(jnp.asarray(g), None, jnp.asarray(p))[0], want)
    with pytest.raises(
        ValueError, match=r"adaptive_grad_clip: clipping must be in \[0, inf\], got -1"
    ):
        gradtx.adaptive_grad_clip(-1.0)
    with pytest.raises(TypeError, match="adaptive_grad_clip: axis must be"):
        gradtx.adaptive_grad_clip(0.1, axis="rows")
    with pytest.raises(ValueError, match="adaptive_grad_clip: update needs params"):
        tx.update(jnp.ones(2), tx.init(None))


# ----------------------------------------------------------------------------------------------
# Per-example clipping (DP-SGD).


def np_per_example_clip(leaves, c):
    norms = np.sqrt(sum(np.sum(g.reshape(g.shape[0], -1) ** 2, axis=1) for g in leaves))
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.minimum(1.0, c / norms)
    factor = np.where(np.isnan(factor), 1.0, factor)
    return [np.tensordot(factor, g, axes=1) for g in leaves], int(np.sum(factor < 1))


def test_per_example_global_norm_clip():
    grads = [
        np.array([[0.0, 0.0], [3.0, 0.0], [0.3, 0.1], [6.0, 2.0]]),
        np.array([[[0.0]], [[4.0]], [[0.2]], [[-1.0]]]),
    ]
    f32 = [jnp.asarray(g, jnp.float32) for g in grads]
    for c in (1.0, 0.0, np.inf, 100.0):
        want, n = np_per_example_clip(grads, c)
        got, got_n = gradtx.per_example_global_norm_clip(f32, c)
        _tree_close(got, want)
        assert int(got_n) == n
        o, on = optax.per_example_global_norm_clip(f32, c)
        _tree_close(o, want)
        assert int(on) == n
    assert np_per_example_clip(grads, 1.0)[1] == 2  # one zero example, one below, two above
    got, n = jax.jit(gradtx.per_example_global_norm_clip)(f32, 1.0)
    _tree_close(got, np_per_example_clip(grads, 1.0)[0])
    with pytest.raises(ValueError, match="per_example_global_norm_clip: .*batch size on axis 0"):
        gradtx.per_example_global_norm_clip([jnp.ones((3, 2)), jnp.ones((2, 2))], 1.0)
    with pytest.raises(ValueError, match="per_example_global_norm_clip: l2_norm_clip must be >= 0"):
        gradtx.per_example_global_norm_clip(f32, -1.0)


@pytest.mark.parametrize("uniform", [True, False])
def test_per_example_layer_norm_clip(uniform):
    grads = {
        "a": RNG.normal(size=(5, 3)) * 2,
        "b": RNG.normal(size=(5, 2, 2)),
        "c": RNG.normal(size=(5,)),
    }
    c = 1.5
    sizes = {"a": 3, "b": 4, "c": 1}
    want, want_n = {}, {}
    for k, g in grads.items():
        ck = c / math.sqrt(3) if uniform else c * math.sqrt(sizes[k] / 8)
        (want[k],), want_n[k] = np_per_example_clip([g], ck)
    f32 = {k: jnp.asarray(v, jnp.float32) for k, v in grads.items()}
    got, got_n = gradtx.per_example_layer_norm_clip(f32, c, uniform=uniform)
    _tree_close(got, want)
    assert {k: int(v) for k, v in got_n.items()} == want_n
    assert 0 < sum(want_n.values()) < 15  # some clipped, some not
    o, on = optax.per_example_layer_norm_clip(f32, c, uniform=uniform)
    _tree_close(o, want)
    assert {k: int(v) for k, v in on.items()} == want_n
    # one layer: the global clip
    one, n1 = gradtx.per_example_layer_norm_clip([f32["a"]], c)
    g1, m1 = gradtx.per_example_global_norm_clip([f32["a"]], c)
    _tree_close(one, g1)
    assert [int(x) for x in n1] == [int(m1)]


def test_state_aliases_are_optax_names():
    for name in (
        "ClipState",
        "ClipByGlobalNormState",
        "AdaptiveGradClipState",
        "ScaleState",
        "AddDecayedWeightsState",
        "ScaleByTrustRatioState",
    ):
        ours, theirs = getattr(gradtx, name), getattr(optax, name)
        assert ours is gradtx.EmptyState
        assert ours._fields == theirs._fields == ()
        assert ours() == theirs()


# ----------------------------------------------------------------------------------------------
# scale_gradient


@pytest.mark.parametrize("s", [1.0, 0.0, 0.5, -2.0])
def test_scale_gradient_forward_identity_backward_scaled(s):
    x = {"a": jnp.array([1.0, -2.0]), "b": jnp.array(3.0)}

    def loss(x, f, s):
        y = f(x, s)
        return jnp.sum(y["a"] ** 3) + jnp.sin(y["b"])

    want = {"a": s * 3 * np.array([1.0, 4.0]), "b": s * np.cos(3.0)}
    got = jax.grad(loss)(x, gradtx.scale_gradient, s)
    _tree_close(got, want)
    _tree_close(jax.grad(loss)(x, optax.scale_gradient, s), want)
    # a traced scale (under jit) goes through the custom VJP
    traced = jax.jit(jax.grad(loss), static_argnums=1)(x, gradtx.scale_gradient, jnp.asarray(s))
    _tree_close(traced, want)
    _tree_close(gradtx.scale_gradient(x, s), x)


def test_scale_gradient_rejects_text():
    with pytest.raises(TypeError, match="scale_gradient: scale must be a number"):
        gradtx.scale_gradient(jnp.ones(2), "half")


# ----------------------------------------------------------------------------------------------
# safe_math


@pytest.mark.parametrize(
    "ord_, axis, keepdims",
    [(None, None, False), (1, 1, True), (np.inf, 0, False), ("fro", None, True)],
)
def test_safe_norm_values_and_grads(ord_, axis, keepdims):
    x = RNG.normal(size=(3, 4))
    x[:, 0] = 0.0  # a zero column (floored for axis=0) and a zero row
    x[1] = 0.0
    min_norm = 0.5
    norm = np.linalg.norm(x, ord=ord_, axis=axis, keepdims=keepdims)
    want = np.maximum(norm, min_norm)
    got = safe_math.safe_norm(jnp.asarray(x), min_norm, ord=ord_, axis=axis, keepdims=keepdims)
    _close(got, want)
    _close(optax.safe_norm(jnp.asarray(x), min_norm, ord_, axis, keepdims), want)
    grad = jax.grad(lambda x: jnp.sum(safe_math.safe_norm(x, min_norm, ord_, axis, keepdims)))
    g = np.asarray(grad(jnp.asarray(x)))
    assert np.all(np.isfinite(g))
    if ord_ in (None, "fro") and axis is None:
        np.testing.assert_allclose(g, x / np.linalg.norm(x), rtol=1e-5)


def test_safe_norm_zero_gradient_below_floor():
    g = jax.grad(lambda x: safe_math.safe_norm(x, 1e-3))(jnp.zeros(3))
    assert g.tolist() == [0.0, 0.0, 0.0]
    g = jax.grad(lambda x: safe_math.safe_norm(x, 0.0))(jnp.array([3.0, 4.0]))
    _close(g, [0.6, 0.8])


def test_safe_root_mean_squares():
    x = np.array([1.0, -2.0, 3.0, 0.5])
    rms = np.sqrt(np.mean(x**2))
    for floor in (0.1, 5.0):
        want = max(rms, floor)
        _close(safe_math.safe_root_mean_squares(jnp.asarray(x), floor), want)
        _close(optax.safe_root_mean_squares(jnp.asarray(x), floor), want)
    g = jax.grad(lambda x: safe_math.safe_root_mean_squares(x, 0.1))(jnp.asarray(x))
    _close(g, x / (len(x) * rms))
    g0 = jax.grad(lambda x: safe_math.safe_root_mean_squares(x, 0.1))(jnp.zeros(3))
    assert g0.tolist() == [0.0, 0.0, 0.0]
    z = jnp.array([3 + 4j, 0j])
    _close(safe_math.safe_root_mean_squares(z, 0.0), np.sqrt(25 / 2))


@pytest.mark.parametrize(
    "value, dtype",
    [
        (1, jnp.int32),
        (2**31 - 1, jnp.int32),
        (127, jnp.int8),
        (5, jnp.int8),
        (255, jnp.uint8),
        (2.5, jnp.float32),
        (float(np.finfo(np.float32).max), jnp.float32),
    ],
)
def test_safe_increment(value, dtype):
    top = np.iinfo(dtype).max if jnp.issubdtype(dtype, jnp.integer) else np.finfo(dtype).max
    want = value if value == top else value + 1
    count = jnp.asarray(value, dtype)
    got = safe_math.safe_increment(count)
    assert got.dtype == count.dtype and got.tolist() == want
    assert optax.safe_increment(count).tolist() == want
    assert jax.jit(safe_math.safe_int32_increment)(count).tolist() == want


def test_safe_increment_rejects_bool():
    with pytest.raises(ValueError, match="safe_increment: count must have an integer or floating"):
        safe_math.safe_increment(jnp.asarray(True))


# ----------------------------------------------------------------------------------------------
# param_updates


def test_incremental_update():
    new = {"w": RNG.normal(size=(2, 3)), "b": None, "s": np.array(1.5)}
    old = {"w": RNG.normal(size=(2, 3)), "b": None, "s": np.array(-0.5)}
    tau = 0.3
    want = {"w": tau * new["w"] + (1 - tau) * old["w"], "b": None, "s": tau * 1.5 + 0.7 * -0.5}
    f32 = lambda t: jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), t)
    got = param_updates.incremental_update(f32(new), f32(old), tau)
    assert got["b"] is None
    _tree_close(got, want)
    _tree_close(optax.incremental_update(f32(new), f32(old), tau), want)
    bf = param_updates.incremental_update(
        jnp.ones(2, jnp.bfloat16), jnp.zeros(2, jnp.bfloat16), jnp.asarray(0.25, jnp.float32)
    )
    assert bf.dtype == jnp.bfloat16 and bf.tolist() == [0.25, 0.25]
    with pytest.raises(
        ValueError, match=r"incremental_update: step_size must be in \[0, 1\], got 1.5"
    ):
        param_updates.incremental_update(f32(new), f32(old), 1.5)
    with pytest.raises(ValueError, match="incremental_update: the structure of new_tensors"):
        param_updates.incremental_update({"w": jnp.ones(2)}, {"v": jnp.ones(2)}, 0.1)


def test_periodic_update():
    new, old = {"w": jnp.array([5.0, 6.0])}, {"w": jnp.array([1.0, 2.0])}
    step = jax.jit(param_updates.periodic_update)
    for t in range(7):
        want = new if t % 3 == 0 else old
        _tree_close(step(new, old, jnp.asarray(t), 3), want)
        _tree_close(optax.periodic_update(new, old, jnp.asarray(t), 3), want)
    with pytest.raises(
        ValueError, match="periodic_update: update_period must be an integer >= 1, got 0"
    ):
        param_updates.periodic_update(new, old, 1, 0)


# ----------------------------------------------------------------------------------------------
# linalg


def _spd(n, seed=1):
    r = np.random.default_rng(seed)
    q, _ = np.linalg.qr(r.normal(size=(n, n)))
    w = np.linspace(0.5, 8.0, n)
    return (q * w) @ q.T, q[:, -1]


def test_power_iteration_array_and_function():
    a, top = _spd(6)
    eig, vec = linalg.power_iteration(jnp.asarray(a, jnp.float32), num_iters=500)
    _close(eig, 8.0, rtol=1e-4)
    _close(np.abs(vec), np.abs(top), atol=2e-3)
    o_eig, o_vec = optax.power_iteration(jnp.asarray(a, jnp.float32), num_iters=500)
    _close(eig, o_eig, rtol=1e-6)
    _close(vec, o_vec, atol=1e-5)
    # another random start (key), and few steps: both follow v_k ∝ A^k v_0
    v0 = np.asarray(jax.random.uniform(jax.random.key(3), (6,), jnp.float32, -1.0, 1.0), np.float64)
    z = a @ (v0 / np.linalg.norm(v0))
    for _ in range(3):
        v = z / np.linalg.norm(z)
        z = a @ v
    eig3, vec3 = linalg.power_iteration(
        jnp.asarray(a, jnp.float32), num_iters=3, key=jax.random.key(3)
    )
    _close(eig3, v @ z, rtol=1e-5)
    _close(vec3, z / np.linalg.norm(z), rtol=1e-5, atol=1e-6)
    # matrix-free, over a pytree
    blocks = {
        "x": jnp.asarray(a[:3, :3], jnp.float32),
        "y": jnp.asarray(2 * a[3:, 3:], jnp.float32),
    }
    mvp = lambda v: {"x": blocks["x"] @ v["x"], "y": blocks["y"] @ v["y"]}
    v0 = {"x": jnp.ones(3), "y": jnp.ones(3)}
    want = max(np.linalg.eigvalsh(a[:3, :3]).max(), 2 * np.linalg.eigvalsh(a[3:, 3:]).max())
    eig, vec = linalg.power_iteration(mvp, v0=v0, num_iters=1000, error_tolerance=1e-7)
    _close(eig, want, rtol=1e-4)
    _close(
        optax.power_iteration(mvp, v0=v0, num_iters=1000, error_tolerance=1e-7)[0], want, rtol=1e-4
    )
    with pytest.raises(ValueError, match="power_iteration: v0 is required"):
        linalg.power_iteration(mvp)
    with pytest.raises(
        ValueError, match=r"power_iteration: matrix must be a square 2-D array, got shape \(2, 3\)"
    ):
        linalg.power_iteration(jnp.ones((2, 3)))


def np_inverse_pth_root(a, p, ridge):
    w, v = np.linalg.eigh(a)
    w = w + ridge * w.max()
    return (v * w ** (-1.0 / p)) @ v.T


@pytest.mark.parametrize("p", [1, 2, 3, 4, 8])
def test_matrix_inverse_pth_root(x64, p):
    a, _ = _spd(5, seed=p)
    want = np_inverse_pth_root(a, p, 1e-6)
    h, err = linalg.matrix_inverse_pth_root(jnp.asarray(a), p, num_iters=200, error_tolerance=1e-12)
    assert h.dtype == jnp.float64 and float(err) < 1e-10
    _close(h, want, rtol=1e-7, atol=1e-9)
    if p != 3:  # optax's matrix power handles p in {1, 2, 4, 8} only
        ho, _ = optax.matrix_inverse_pth_root(
            jnp.asarray(a), p, num_iters=200, error_tolerance=1e-12
        )
        _close(h, ho, rtol=1e-7, atol=1e-9)
    if p in (2, 3):  # float32, and a traced p
        h32, _ = jax.jit(linalg.matrix_inverse_pth_root)(jnp.asarray(a, jnp.float32), p)
        assert h32.dtype == jnp.float32
        _close(h32, want, rtol=2e-3, atol=1e-4)


def test_matrix_inverse_pth_root_stops_when_diverging(x64):
    # an indefinite matrix: the first Newton step raises the error more than 1.2×, so the
    # starting H₀ = z^{1/p} I is returned, and the error of the last M computed
    a = np.array([[1.0, 2.0, 0.0], [2.0, -3.0, 1.0], [0.0, 1.0, 0.5]])
    p = 2
    z = (1 + p) / (2 * np.linalg.norm(a))
    m0, eye = z * a, np.eye(3)
    t0 = ((p + 1) * eye - m0) / p
    m1 = np.linalg.matrix_power(t0, p) @ m0
    assert np.abs(m1 - eye).max() > 1.2 * np.abs(m0 - eye).max()
    h, err = linalg.matrix_inverse_pth_root(jnp.asarray(a), p, ridge_epsilon=0.0)
    _close(h, z ** (1 / p) * eye, rtol=1e-12)
    _close(err, np.abs(m1 - eye).max(), rtol=1e-12)
    ho, erro = optax.matrix_inverse_pth_root(jnp.asarray(a), p, ridge_epsilon=0.0)
    _close(h, ho, rtol=1e-12)
    _close(err, erro, rtol=1e-12)


def test_matrix_inverse_pth_root_scalar_and_errors():
    h, err = linalg.matrix_inverse_pth_root(jnp.array([[4.0]]), 2, ridge_epsilon=0.0)
    _close(h, [[0.5]])
    assert float(err) == 0.0
    with pytest.raises(
        ValueError, match="matrix_inverse_pth_root: p must be an integer >= 1, got 0"
    ):
        linalg.matrix_inverse_pth_root(jnp.eye(2), 0)
    with pytest.raises(ValueError, match="matrix_inverse_pth_root: matrix must be a square"):
        linalg.matrix_inverse_pth_root(jnp.ones((2, 3)), 2)


def np_fpg(A, b, iters):
    """Polyak's fast projected gradient (FISTA with the projection onto x >= 0)."""
    Q, q = A.T @ A, A.T @ b
    L = min(np.linalg.norm(Q, "fro"), np.abs(Q).sum(axis=0).max())
    x_prev = np.zeros(A.shape[1:] + b.shape[1:])
    y, t = x_prev.copy(), 1.0
    for _ in range(iters):
        x = np.maximum(y - (Q @ y - q) / L, 0.0)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y = x + (t - 1) / t_next * (x - x_prev)
        x_prev, t = x, t_next
    return x_prev


def test_nnls_steps_and_solution(x64):
    r = np.random.default_rng(3)
    A, b = r.normal(size=(10, 5)), r.normal(size=10)
    assert linalg.nnls(jnp.asarray(A), jnp.asarray(b), 0).tolist() == [0.0] * 5
    for k in (1, 7):
        got = linalg.nnls(jnp.asarray(A), jnp.asarray(b), k)
        _close(got, np_fpg(A, b, k), rtol=1e-10, atol=1e-12)
        # optax starts its momentum at 0, repeating its first step
        _close(got, optax.nnls(jnp.asarray(A), jnp.asarray(b), k + 1), rtol=1e-10, atol=1e-12)
    x_star, _ = scipy.optimize.nnls(A, b)
    assert (x_star == 0).any() and (x_star > 0).any()  # active and inactive constraints
    _close(linalg.nnls(jnp.asarray(A), jnp.asarray(b), 3000), x_star, rtol=1e-6, atol=1e-8)
    B = r.normal(size=(10, 2))
    got = linalg.nnls(jnp.asarray(A), jnp.asarray(B), 3000, unroll=4)
    for j in range(2):
        _close(got[:, j], scipy.optimize.nnls(A, B[:, j])[0], rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match=r"nnls: b must have shape \(10,\) or \(10, K\)"):
        linalg.nnls(jnp.asarray(A), jnp.ones(3), 10)
    with pytest.raises(ValueError, match="nnls: iters must be a Python int >= 0, got -1"):
        linalg.nnls(jnp.asarray(A), jnp.asarray(b), -1)


# ----------------------------------------------------------------------------------------------
# microbatching

AT = microbatching.AccumulationType


def test_microbatch_accumulators_match_full_batch_and_optax():
    x = RNG.normal(size=(12, 3)).astype(np.float32)
    w = RNG.normal(size=(3,)).astype(np.float32)

    def fun(w, x):
        y = x @ w
        return {"sum": jnp.sum(y**2), "mean": jnp.mean(y), "rows": y, "run": jnp.max(y)}

    acc = {"sum": AT.SUM, "mean": AT.MEAN, "rows": AT.CONCAT, "run": AT.RUNNING_MEAN}
    got = microbatching.microbatch(fun, 1, 4, acc)(jnp.asarray(w), jnp.asarray(x))
    y = x.astype(np.float64) @ w
    groups = [y[i::3] for i in range(3)]  # microbatch i holds rows i, i + 3, i + 6, i + 9
    want = {
        "sum": np.sum(y**2),
        "mean": np.mean([g.mean() for g in groups]),
        "rows": y,
        "run": np.mean([g.max() for g in groups]),
    }
    _tree_close(got, want, rtol=1e-5)
    oacc = {k: getattr(optax.microbatching.AccumulationType, v.name) for k, v in acc.items()}
    theirs = optax.microbatch(fun, 1, 4, oacc)(jnp.asarray(w), jnp.asarray(x))
    _tree_close(got, theirs, rtol=1e-6)
    # only the first two microbatches: RUNNING_MEAN averages over them, MEAN divides by three
    part = jax.jit(
        lambda w, x, k: microbatching.microbatch(fun, 1, 4, acc, num_real_microbatches=k)(w, x)
    )(jnp.asarray(w), jnp.asarray(x), 2)
    _close(part["run"], np.mean([g.max() for g in groups[:2]]))
    _close(part["mean"], sum(g.mean() for g in groups[:2]) / 3)
    assert microbatching.microbatch(fun, 1, None) is fun


def test_microbatch_keywords_in_axes_and_custom_accumulator():
    x = RNG.normal(size=(2, 6)).astype(np.float32)  # batch on axis 1
    largest = microbatching.Accumulator(
        init=lambda s: jnp.full(s.shape, -jnp.inf, s.dtype),
        update=lambda c, v, i: jnp.maximum(c, v),
        finalize=lambda c: c,
        aggregate=lambda v: jnp.max(v, axis=0),
    )
    f = lambda scale, *, data: jnp.max(scale * data, axis=1)
    got = microbatching.microbatch(f, (), 2, largest, argnames="data", in_axes=1)(2.0, data=x)
    _close(got, 2 * x.max(axis=1))
    # batch on the last axis: microbatch i is x[:, i::2]; CONCAT stacks outputs on axis 0
    ident = lambda d: d
    got = microbatching.microbatch(ident, 0, 3, AT.CONCAT, in_axes=-1)(jnp.asarray(x))
    want = np.stack([x[a, i::2] for a in range(2) for i in range(2)])
    _close(got, want)
    oconcat = optax.microbatching.AccumulationType.CONCAT
    _close(optax.microbatch(ident, 0, 3, oconcat, in_axes=1)(jnp.asarray(x)), want)


def test_microbatch_errors():
    f = lambda x: jnp.sum(x)
    with pytest.raises(
        ValueError, match="microbatch: the batch size 5 is not divisible by microbatch_size=2"
    ):
        microbatching.microbatch(f, 0, 2)(jnp.ones(5))
    with pytest.raises(ValueError, match="microbatch: the MEAN accumulator needs floating outputs"):
        microbatching.microbatch(f, 0, 2, AT.MEAN)(jnp.ones(4, jnp.int32))
    with pytest.raises(
        ValueError, match=r"microbatch: num_real_microbatches must be an integer in \[0, 2\]"
    ):
        microbatching.microbatch(f, 0, 2, num_real_microbatches=3)(jnp.ones(4))
    with pytest.raises(ValueError, match="microbatch: microbatch_size must be an int >= 1"):
        microbatching.microbatch(f, 0, 0)


# ----------------------------------------------------------------------------------------------
# multi_normal


def test_multi_normal_log_prob_and_samples():
    loc = np.array([[0.5, -1.0, 2.0]])
    log_scale = np.array([0.1, -0.3, 0.7])
    x = RNG.normal(size=(4, 1, 3))
    sigma = np.exp(log_scale)
    want = np.sum(
        -0.5 * ((x - loc) / sigma) ** 2 - log_scale - 0.5 * np.log(2 * np.pi), axis=(-2, -1)
    )
    d = gradtx.multi_normal(jnp.asarray(loc, jnp.float32), jnp.asarray(log_scale, jnp.float32))
    o = optax.multi_normal(jnp.asarray(loc, jnp.float32), jnp.asarray(log_scale, jnp.float32))
    _close(d.log_prob(jnp.asarray(x, jnp.float32)), want)
    _close(o.log_prob(jnp.asarray(x, jnp.float32)), want)
    key = jax.random.PRNGKey(7)
    s = d.sample((5,), key)
    assert s.shape == (5, 1, 3)
    _close(s, o.sample((5,), key))
    big = np.asarray(d.sample((20000,), jax.random.key(1)), np.float64).reshape(-1, 3)
    _close(big.mean(0), loc[0], atol=0.05)
    _close(big.std(0), sigma, rtol=0.03)
    assert d.log_scale is d.params[1]
    _tree_close(d.params, o.params)


# ----------------------------------------------------------------------------------------------
# optimistic_adam_v2


def np_optimistic_adam_v2(lr, alpha, beta, b1, b2, eps, nesterov, grads):
    theta = np.zeros_like(grads[0])
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    r_prev = None
    out = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        if nesterov:
            m_hat = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
        else:
            m_hat = m / (1 - b1**t)
        r = m_hat / (np.sqrt(v / (1 - b2**t)) + eps)
        if r_prev is None:
            r_prev = r
        theta = theta - lr * ((alpha + beta) * r - beta * r_prev)
        r_prev = r
        out.append(theta.copy())
    return out


@pytest.mark.parametrize("nesterov", [True, False])
def test_optimistic_adam_v2(x64, nesterov):
    grads = [RNG.normal(size=(4,)) for _ in range(20)]
    want = np_optimistic_adam_v2(0.05, 0.7, 0.4, 0.9, 0.99, 1e-8, nesterov, grads)
    kw = dict(alpha=0.7, beta=0.4, b1=0.9, b2=0.99, nesterov=nesterov)
    for lib in (gradtx, optax):
        opt = lib.optimistic_adam_v2(0.05, **kw)
        theta = jnp.zeros(4)
        state = opt.init(theta)
        for g, w in zip(grads, want, strict=True):
            u, state = opt.update(jnp.asarray(g), state, theta)
            theta = theta + u
            _close(theta, w, rtol=1e-10, atol=1e-12)
