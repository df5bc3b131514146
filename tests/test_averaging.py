"""param_ema, swa and lookahead against float64 NumPy formulas, and optax for lookahead."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import F32_ORACLE_ATOL, count_compilations, random_problem

import gradtx


def _np(tree):
    return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), tree)


def _jx(tree):
    return jax.tree_util.tree_map(jnp.asarray, tree)


def _close(a, b, rtol=1e-10, atol=1e-12):
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol),
        a,
        b,
    )


def _np_momentum_iterates(params, grad, steps, lr=0.05, rho=0.9):
    """θ_1 … θ_T of SGD with heavy-ball momentum (m ← g + ρ m; θ ← θ − α m) in NumPy."""
    p = _np(params)
    m = jax.tree_util.tree_map(np.zeros_like, p)
    out = []
    for t in range(steps):
        g = grad(p, t)
        m = jax.tree_util.tree_map(lambda mm, gg: gg + rho * mm, m, g)
        p = jax.tree_util.tree_map(lambda pp, mm: pp - lr * mm, p, m)
        out.append(p)
    return out


def _run(opt, params, grad, steps, *, jit=True):
    state = opt.init(params)
    update = jax.jit(opt.update) if jit else opt.update
    for t in range(steps):
        u, state = update(_jx(grad(_np(params), t)), state, params)
        params = gradtx.apply_updates(params, u)
    return params, state


def test_param_ema_equals_numpy_running_average(x64):
    params, grad = random_problem(0)
    params = _jx(params)
    beta, steps = 0.8, 12
    out, state = _run(
        gradtx.param_ema(gradtx.sgd(0.05, momentum=0.9), decay=beta), params, grad, 12
    )
    iterates = _np_momentum_iterates(params, grad, steps)
    avg = _np(params)
    for th in iterates:
        avg = jax.tree_util.tree_map(lambda a, t: beta * a + (1 - beta) * t, avg, th)
    _close(state.averaged_params, avg)
    _close(out, iterates[-1])  # the raw parameters follow the inner optimizer untouched
    assert int(state.count) == steps


def test_swa_equals_numpy_uniform_average(x64):
    params, grad = random_problem(1)
    params = _jx(params)
    steps, start, every = 11, 3, 2
    opt = gradtx.swa(gradtx.sgd(0.05, momentum=0.9), start=start, every=every)
    out, state = _run(opt, params, grad, steps)
    iterates = _np_momentum_iterates(params, grad, steps)
    taken = [
        iterates[s - 1] for s in range(1, steps + 1) if s >= start and (s - start) % every == 0
    ]
    assert int(state.n_averaged) == len(taken) == 5
    mean = jax.tree_util.tree_map(lambda *xs: np.mean(xs, axis=0), *taken)
    _close(state.averaged_params, mean)
    _close(out, iterates[-1])
    # before the first averaged step the average is the initial params
    _, early = _run(opt, params, grad, start - 1)
    _close(early.averaged_params, _np(params))


def _np_lookahead(params, grad, steps, k, alpha, lr=0.05, rho=0.9, reset=False):
    """Lookahead around SGD with momentum, written from Zhang et al. (2019), Algorithm 1."""
    slow, fast = _np(params), _np(params)
    m = jax.tree_util.tree_map(np.zeros_like, fast)
    for t in range(steps):
        g = grad(fast, t)
        m = jax.tree_util.tree_map(lambda mm, gg: gg + rho * mm, m, g)
        fast = jax.tree_util.tree_map(lambda pp, mm: pp - lr * mm, fast, m)
        if (t + 1) % k == 0:
            slow = jax.tree_util.tree_map(lambda s, f: s + alpha * (f - s), slow, fast)
            fast = slow
            if reset:
                m = jax.tree_util.tree_map(np.zeros_like, m)
    return fast, slow


@pytest.mark.parametrize("reset", [False, True])
def test_lookahead_equals_its_formula(x64, reset):
    params, grad = random_problem(2)
    lp = gradtx.LookaheadParams.init_synced(_jx(params))
    k, alpha, steps = 3, 0.4, 10
    opt = gradtx.lookahead(gradtx.sgd(0.05, momentum=0.9), k, alpha, reset_state=reset)
    state = opt.init(lp)
    update = jax.jit(opt.update)
    for t in range(steps):
        u, state = update(_jx(grad(_np(lp.fast), t)), state, lp)
        lp = gradtx.apply_updates(lp, u)
    fast, slow = _np_lookahead(params, grad, steps, k, alpha, reset=reset)
    _close(lp.fast, fast, rtol=1e-9)
    _close(lp.slow, slow, rtol=1e-9)
    assert int(state.steps_since_sync) == steps % k


@pytest.mark.parametrize("reset", [False, True])
def test_lookahead_matches_optax(reset):
    params, grad = random_problem(3, dtype=np.float32)
    ours = gradtx.lookahead(gradtx.adam(0.05), 4, 0.5, reset_state=reset)
    ref = optax.lookahead(optax.adam(0.05), 4, 0.5, reset_state=reset)
    results = []
    for opt, cls in ((ours, gradtx.LookaheadParams), (ref, optax.LookaheadParams)):
        lp = cls.init_synced(_jx(params))
        state = opt.init(lp)
        update = jax.jit(opt.update)
        for t in range(9):
            u, state = update(_jx(grad(_np(lp.fast), t)), state, lp)
            lp = optax.apply_updates(lp, u)
        results.append((lp.fast, lp.slow))
    _close(results[0], results[1], rtol=1e-5, atol=F32_ORACLE_ATOL)


def test_jit_equals_eager_structure_and_no_recompile():
    params, grad = random_problem(4, dtype=np.float32)
    params = _jx(params)
    for opt in (
        gradtx.param_ema(gradtx.adam(0.05), 0.9),
        gradtx.swa(gradtx.adam(0.05), start=2),
    ):
        p1, s1 = _run(opt, params, grad, 4, jit=True)
        p2, s2 = _run(opt, params, grad, 4, jit=False)
        _close((p1, s1), (p2, s2), rtol=1e-6, atol=1e-7)
        assert jax.tree_util.tree_structure(s1.averaged_params) == jax.tree_util.tree_structure(
            params
        )
    opt = gradtx.lookahead(gradtx.adam(0.05), 2, 0.5, reset_state=True)
    runs = []
    for jit in (True, False):
        lp = gradtx.LookaheadParams.init_synced(params)
        state = opt.init(lp)
        update = jax.jit(opt.update) if jit else opt.update
        for t in range(4):
            u, state = update(_jx(grad(_np(lp.fast), t)), state, lp)
            lp = gradtx.apply_updates(lp, u)
        runs.append((lp, state))
    _close(runs[0], runs[1], rtol=1e-6, atol=1e-7)
    assert jax.tree_util.tree_structure(runs[0][0].slow) == jax.tree_util.tree_structure(params)
    g = _jx(grad(_np(params), 0))

    @jax.jit
    def step(opt, state):
        return opt.update(g, state, params)

    state = gradtx.param_ema(gradtx.adam(0.1), 0.9).init(params)
    step(gradtx.param_ema(gradtx.adam(0.1), 0.9), state)
    with count_compilations() as c:
        step(gradtx.param_ema(gradtx.adam(0.3), 0.99), state)
    assert c["n"] == 0


def test_low_precision_average_is_kept_in_float32():
    p = {"w": jnp.ones(3, jnp.bfloat16)}
    s = gradtx.param_ema(gradtx.sgd(0.1), 0.9).init(p)
    assert s.averaged_params["w"].dtype == jnp.float32
    u, s = gradtx.param_ema(gradtx.sgd(0.1), 0.9).update(p, s, p)
    assert u["w"].dtype == jnp.bfloat16 and s.averaged_params["w"].dtype == jnp.float32


def test_argument_errors():
    with pytest.raises(ValueError, match="param_ema: decay must be in"):
        gradtx.param_ema(gradtx.sgd(0.1), decay=1.0)
    with pytest.raises(ValueError, match="swa: every must be in"):
        gradtx.swa(gradtx.sgd(0.1), every=0)
    with pytest.raises(ValueError, match="lookahead: slow_step_size must be in"):
        gradtx.lookahead(gradtx.sgd(0.1), 5, 1.5)
    opt = gradtx.param_ema(gradtx.sgd(0.1))
    with pytest.raises(ValueError, match="param_ema: update needs params"):
        opt.update(jnp.ones(2), opt.init(jnp.ones(2)))
    # init also takes the fast weights alone (as optax's does); update needs both
    opt = gradtx.lookahead(gradtx.sgd(0.1, momentum=0.9))
    state = opt.init(jnp.ones(2))
    np.testing.assert_array_equal(np.asarray(state.fast_state[0].trace), [0.0, 0.0])
    with pytest.raises(TypeError, match="LookaheadParams"):
        opt.update(jnp.ones(2), state, jnp.ones(2))
