"""Properties every optimizer in the registry must have (tests/registry.py drives them all).

- update and state dtypes are stable across steps and under ``lax.scan`` for float16, bfloat16,
  float32, float64 and complex64 parameters (complex where the method is defined);
- zero gradients in float16 and bfloat16 never produce NaN or Inf;
- a second jitted step compiles nothing, nor does a new learning rate when the optimizer is
  passed to the jitted step as an argument (jit equals eager: test_fast_paths.py, in float64,
  next to the compiled eager path, sharing its op-by-op run);
- ``jax.vmap`` over a vector of 8 learning rates equals 8 separate runs;
- ``jax.grad`` of the loss after one step with respect to the learning rate equals a central
  finite difference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import count_compilations
from registry import CASES

import gradtx

IDS = [c.name for c in CASES]


def _params(dtype, seed=0):
    rng = np.random.default_rng(seed)

    def arr(shape):
        x = rng.normal(size=shape)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            x = x + 1j * rng.normal(size=shape)
        return jnp.asarray(x, dtype)

    return {"w": arr((3, 2)), "b": arr((2,))}


def _grads(params, t, scale=1.0):
    # A deterministic, step-dependent gradient of the params' own dtype.
    return jax.tree_util.tree_map(
        lambda p: (scale * (p - 0.5 * jnp.cos(p * (t + 1)).astype(p.dtype))).astype(p.dtype), params
    )


def _extra(case, params, grads):
    return case.extra_args(params, grads) if case.extra_args else {}


def _step(opt, case, params, state, t, scale=1.0):
    g = _grads(params, t, scale)
    u, state = opt.update(g, state, params, **_extra(case, params, g))
    return gradtx.apply_updates(params, u), state, u


def _dtypes(tree):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x).dtype, tree)


DTYPES = ["float16", "bfloat16", "float32", "float64", "complex64"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_dtype_stability(case, dtype):
    # Dtypes are decided when a step is traced, so the steps are traced (jax.eval_shape), not
    # compiled and run; the values of low-precision, float32 and float64 steps are checked by
    # the tests below (finite zero-gradient steps, jit against eager, grad in float64).
    if dtype == "complex64" and not case.complex_ok:
        # the method is undefined for complex params: a TypeError that says so, at once
        params = _params(jnp.dtype(dtype))
        opt = case.make(case.lr)
        with pytest.raises(TypeError, match="complex"):
            jax.eval_shape(lambda p: _step(opt, case, p, opt.init(p), 0), params)
        return
    with jax.enable_x64(dtype == "float64"):
        dt = jnp.dtype(dtype)
        params = _params(dt)
        opt = case.make(case.lr)

        def three_steps(params):
            state0 = opt.init(params)
            p, state, seen = params, state0, []
            for t in range(3):
                p, state, u = _step(opt, case, p, state, t)
                seen.append((p, state, u))

            def body(carry, t):
                p, s = carry
                p, s, u = _step(opt, case, p, s, t)
                return (p, s), u

            # lax.scan refuses a carry whose dtypes change
            scanned = jax.lax.scan(body, (params, state0), jnp.arange(3))
            return state0, seen, scanned

        state0, seen, ((_, s2), us) = jax.eval_shape(three_steps, params)
        want_state = jax.tree_util.tree_map(lambda x: x.dtype, state0)
        for p, state, u in seen:
            assert all(x.dtype == dt for x in jax.tree_util.tree_leaves(u)), u
            assert all(x.dtype == dt for x in jax.tree_util.tree_leaves(p))
            assert jax.tree_util.tree_map(lambda x: x.dtype, state) == want_state
            assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(state0)
        assert jax.tree_util.tree_map(lambda x: x.dtype, s2) == want_state
        assert all(x.dtype == dt for x in jax.tree_util.tree_leaves(us))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_zero_gradients_low_precision_finite(case, dtype):
    dt = jnp.dtype(dtype)
    params = _params(dt)
    opt = case.make(case.lr)
    state = opt.init(params)
    for _ in range(3):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        u, state = opt.update(zeros, state, params, **_extra(case, params, zeros))
        params = gradtx.apply_updates(params, u)
        for leaf in jax.tree_util.tree_leaves((u, state, params)):
            leaf = jnp.asarray(leaf)
            if jnp.issubdtype(leaf.dtype, jnp.inexact):
                assert bool(jnp.all(jnp.isfinite(leaf.astype(jnp.float32)))), case.name


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_no_recompilation(case):
    params = _params(jnp.float32)

    @jax.jit
    def step(opt, params, state, t):
        return _step(opt, case, params, state, t)

    opt = case.make(case.lr)
    state = opt.init(params)
    t0, t1, t2 = jnp.asarray(0), jnp.asarray(1), jnp.asarray(2)
    params, state, _ = step(opt, params, state, t0)  # compiles once
    other = case.make(case.lr * 0.5)
    jax.block_until_ready(other)
    with count_compilations() as c:
        params, state, _ = step(opt, params, state, t1)
        params, state, _ = step(other, params, state, t2)
        jax.block_until_ready(params)
    assert c["n"] == 0, f"{case.name}: {c['n']} compilations after the first step"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vmap_over_learning_rates(case):
    params = _params(jnp.float32)
    lrs = jnp.asarray(case.lr * np.linspace(0.25, 2.0, 8), jnp.float32)

    def run(lr):
        opt = case.make(lr)
        state = opt.init(params)

        def body(carry, t):
            p, s = carry
            p, s, _ = _step(opt, case, p, s, t)
            return (p, s), None

        (p, _), _ = jax.lax.scan(body, (params, state), jnp.arange(4))
        return p

    batched = jax.jit(jax.vmap(run))(lrs)
    for i, lr in enumerate(np.asarray(lrs)):
        single = jax.jit(run)(jnp.float32(lr))
        for a, b in zip(
            jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(single), strict=True
        ):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grad_wrt_learning_rate(case, x64):
    params = _params(jnp.float64, seed=1)
    target = _params(jnp.float64, seed=2)

    def loss_after_step(lr):
        opt = case.make(lr)
        state = opt.init(params)
        p, _, _ = _step(opt, case, params, state, 0)
        return sum(
            jnp.sum((a - b) ** 2)
            for a, b in zip(
                jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(target), strict=True
            )
        )

    # the gradient jitted (one compile; running its backward pass op by op cost twice as much)
    lr = jnp.float64(case.lr)
    g = jax.jit(jax.grad(loss_after_step))(lr)
    h = 1e-5 * case.lr
    fd = (loss_after_step(lr + h) - loss_after_step(lr - h)) / (2 * h)
    assert np.isfinite(float(g))
    np.testing.assert_allclose(float(g), float(fd), rtol=1e-5, atol=1e-9)


# rprop's "learning rate" is its initial per-coordinate step size, not a factor per step, so it
# takes no schedule (it raises a TypeError saying so).
_NO_SCHEDULE = {"rprop"}


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.name not in _NO_SCHEDULE], ids=lambda c: c.name
)
def test_scheduled_learning_rate_compiles_once(case):
    params = _params(jnp.float32)

    @jax.jit
    def step(opt, params, state, t):
        return _step(opt, case, params, state, t)

    sched = gradtx.linear_schedule(case.lr, case.lr * 0.5, 10)
    opt = case.make(sched)
    state = opt.init(params)
    params, state, _ = step(opt, params, state, jnp.asarray(0))
    other = case.make(gradtx.linear_schedule(case.lr * 0.3, case.lr * 0.1, 20))
    jax.block_until_ready(other)
    with count_compilations() as c:
        p2, _, _ = step(other, params, state, jnp.asarray(1))
        jax.block_until_ready(p2)
    assert c["n"] == 0, f"{case.name}: recompiled for a new schedule"
    lrs = {k: v for k, v in gradtx.hyperparams(other, state).items() if "learning_rate" in k}
    assert lrs, f"{case.name}: hyperparams does not report the learning rate"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_abstract_init_matches_init(case):
    # init from jax.ShapeDtypeStruct (jax.eval_shape): the state's structure, shapes and dtypes
    # without materialising anything, for mixed float32/bfloat16 parameters
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3, jnp.bfloat16)}
    opt = case.make(case.lr)
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    got = jax.eval_shape(opt.init, abstract)
    want = opt.init(params)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        assert (a.shape, a.dtype) == (b.shape, jnp.asarray(b).dtype), case.name
