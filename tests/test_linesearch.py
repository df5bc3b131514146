"""Line searches: their conditions hold on every accepted step (checked in float64 NumPy), the
backtracking search matches optax's, and every failure mode is reported in the state."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx import LinesearchStatus


def _np_rosen(x):
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


def _np_rosen_grad(x):
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return g


def _rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _run(opt, f, x0, steps):
    """A jitted optax-style loop; returns per step (x, direction-free info, state, x_next)."""

    @jax.jit
    def step(x, state):
        v, g = jax.value_and_grad(f)(x)
        u, state = opt.update(g, state, x, value=v, grad=g, value_fn=f)
        return x + u, u, state

    x, state, out = x0, opt.init(x0), []
    for _ in range(steps):
        x_new, u, state = step(x, state)
        out.append((np.asarray(x), np.asarray(u), state[-1], np.asarray(x_new)))
        x = x_new
    return out


@pytest.mark.parametrize("direction", ["steepest", "lbfgs"])
def test_zoom_accepts_only_strong_wolfe_steps(x64, direction):
    c1, c2 = 1e-4, 0.9
    ls = gradtx.scale_by_zoom_linesearch(
        30, slope_rtol=c1, curv_rtol=c2, approx_dec_rtol=None, initial_guess_strategy="one"
    )
    first = gradtx.scale_by_lbfgs() if direction == "lbfgs" else gradtx.identity()
    opt = gradtx.chain(first, gradtx.scale(-1.0), ls)
    accepted = 0
    for x, u, st, _ in _run(opt, _rosen, jnp.zeros(6), 25):
        assert int(st.info.status) == LinesearchStatus.SUCCESS
        eta = float(st.learning_rate)
        d = u / eta  # the direction the search was given
        g0 = _np_rosen_grad(x)
        x1 = x + eta * d
        slope0 = g0 @ d
        assert slope0 < 0
        assert _np_rosen(x1) <= _np_rosen(x) + c1 * eta * slope0 + 1e-12 * abs(_np_rosen(x))
        assert abs(_np_rosen_grad(x1) @ d) <= c2 * abs(slope0) * (1 + 1e-9)
        # The stored value and gradient are those at the accepted point.
        np.testing.assert_allclose(float(st.value), _np_rosen(x1), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(st.grad), _np_rosen_grad(x1), rtol=1e-9, atol=1e-9)
        accepted += 1
    assert accepted == 25


def test_zoom_brackets_beyond_the_first_trial(x64):
    """A step of 1 is far too short: the search must grow the step and still meet both
    conditions (checked on the exact 1-d quadratic)."""
    f = lambda x: jnp.sum((x - 50.0) ** 2)  # noqa: E731
    x = jnp.zeros(1)
    v, g = jax.value_and_grad(f)(x)
    d = -g / jnp.abs(g)  # unit direction: the minimiser is at step 50
    ls = gradtx.scale_by_zoom_linesearch(30, initial_guess_strategy="one", approx_dec_rtol=None)
    u, st = ls.update(d, ls.init(x), x, value=v, grad=g, value_fn=f)
    eta = float(st.learning_rate)
    assert int(st.info.status) == 0 and int(st.info.num_linesearch_steps) > 1
    assert (eta - 50.0) ** 2 <= 2500.0 - 1e-4 * eta * 100.0
    assert abs(2.0 * (eta - 50.0)) <= 0.9 * 100.0
    np.testing.assert_allclose(np.asarray(u), [eta])


def test_backtracking_accepts_only_armijo_steps_and_matches_optax(x64):
    c = 1e-4
    ours = gradtx.chain(gradtx.scale(-1.0), gradtx.scale_by_backtracking_linesearch(30))
    theirs = optax.chain(optax.scale(-1.0), optax.scale_by_backtracking_linesearch(30))
    runs_ours = _run(ours, _rosen, jnp.zeros(4), 30)
    runs_theirs = _run(theirs, _rosen, jnp.zeros(4), 30)
    for (x, u, st, _), (_, u_theirs, st_theirs, _) in zip(runs_ours, runs_theirs, strict=True):
        assert int(st.info.status) == LinesearchStatus.SUCCESS
        g0 = _np_rosen_grad(x)
        assert _np_rosen(x + u) <= _np_rosen(x) + c * (g0 @ u) + 1e-14
        np.testing.assert_allclose(u, u_theirs, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(float(st.learning_rate), float(st_theirs.learning_rate))
        # The first trial is the previous step times increase_factor, capped at 1.


def _one_search(ls, f, x, direction=None):
    x = jnp.asarray(x)
    v, g = jax.value_and_grad(f)(x)
    d = -g if direction is None else direction
    return ls.update(d, ls.init(x), x, value=v, grad=g, value_fn=f)


_SEARCHES = {
    "zoom": lambda n: gradtx.scale_by_zoom_linesearch(n, initial_guess_strategy="one"),
    "backtracking": lambda n: gradtx.scale_by_backtracking_linesearch(n - 1, store_grad=True),
}


@pytest.mark.parametrize("kind", sorted(_SEARCHES))
def test_reports_not_a_descent_direction(x64, kind):
    f = lambda x: jnp.sum(x**2)  # noqa: E731
    x = jnp.array([1.0, -2.0])
    u, st = _one_search(_SEARCHES[kind](10), f, x, direction=jnp.array([1.0, 0.0]))  # uphill
    assert int(st.info.status) == LinesearchStatus.NOT_DESCENT_DIRECTION
    assert int(st.info.num_linesearch_steps) == 0
    np.testing.assert_array_equal(np.asarray(u), [0.0, 0.0])
    assert float(st.value) == 5.0  # the value at the (unchanged) point is kept for reuse


@pytest.mark.parametrize("kind", sorted(_SEARCHES))
def test_reports_max_steps_reached(x64, kind):
    # Along -g from x = 1, f(x) = x^4 needs a step below ~0.3; two trials (1 and 0.8 or a
    # zoom point) are not enough to find one.
    f = lambda x: jnp.sum(x**4) * 1e3  # noqa: E731
    u, st = _one_search(_SEARCHES[kind](2), f, [1.0])
    assert int(st.info.status) == LinesearchStatus.MAX_STEPS_REACHED
    assert int(st.info.num_linesearch_steps) == 2
    np.testing.assert_array_equal(np.asarray(u), [0.0])
    assert float(st.info.decrease_error) > 0


@pytest.mark.parametrize("kind", sorted(_SEARCHES))
def test_reports_non_finite_value(x64, kind):
    # Finite at the start, NaN at every point the search can try (x < 1).
    f = lambda x: jnp.sum(x**2) + jnp.sum(jnp.where(x < 1.0, jnp.nan, 0.0))  # noqa: E731
    u, st = _one_search(_SEARCHES[kind](5), f, [1.0])
    assert int(st.info.status) == LinesearchStatus.NON_FINITE_VALUE
    np.testing.assert_array_equal(np.asarray(u), [0.0])
    assert float(st.value) == 1.0


def test_zoom_recovers_from_non_finite_trials(x64):
    """NaN beyond x < 0.5 only: the search shrinks the step and succeeds."""
    f = lambda x: jnp.sum((x - 0.6) ** 2) + jnp.sum(jnp.where(x < 0.5, jnp.nan, 0.0))  # noqa: E731
    u, st = _one_search(_SEARCHES["zoom"](30), f, [1.0])
    x1 = 1.0 + float(u[0])
    assert int(st.info.status) == LinesearchStatus.SUCCESS
    assert 0.5 <= x1 < 1.0 and (x1 - 0.6) ** 2 < 0.16


def test_value_and_grad_from_state_reuses_the_search(x64):
    calls = []

    def f(x):
        calls.append(1)  # counts traces, not executions: run eagerly below
        return jnp.sum((x - 1.0) ** 2 * jnp.arange(1.0, 4.0))

    opt = gradtx.lbfgs()
    vg = gradtx.value_and_grad_from_state(f)
    x = jnp.zeros(3)
    state = opt.init(x)
    v, g = vg(x, state=state)  # nothing stored yet: computed
    np.testing.assert_allclose(np.asarray(g), -2.0 * np.arange(1.0, 4.0))
    u, state = opt.update(g, state, x, value=v, grad=g, value_fn=f)
    x = x + u
    v2, g2 = vg(x, state=state)  # stored by the line search: equal to a fresh evaluation
    v_ref, g_ref = jax.value_and_grad(f)(x)
    np.testing.assert_allclose(float(v2), float(v_ref), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(g2), np.asarray(g_ref), rtol=1e-12)
    with pytest.raises(ValueError, match="no line-search state"):
        gradtx.value_and_grad_from_state(f)(x, state=gradtx.scale_by_lbfgs().init(x))


def test_extra_arguments_reach_value_fn(x64):
    def f(w, X, y):
        return jnp.mean((X @ w - y) ** 2)

    X = jnp.asarray(np.random.default_rng(0).normal(size=(8, 3)))
    y = X @ jnp.array([1.0, -1.0, 2.0])
    opt = gradtx.lbfgs()

    @jax.jit
    def step(w, state):
        v, g = jax.value_and_grad(f)(w, X, y)
        u, state = opt.update(g, state, w, value=v, grad=g, value_fn=f, X=X, y=y)
        return w + u, state

    w, state = jnp.zeros(3), opt.init(jnp.zeros(3))
    for _ in range(20):
        w, state = step(w, state)
    np.testing.assert_allclose(np.asarray(w), [1.0, -1.0, 2.0], atol=1e-7)


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_linesearch_steps must be in"):
        gradtx.scale_by_zoom_linesearch(0)
    with pytest.raises(ValueError, match="curv_rtol must be in .* got 1.5"):
        gradtx.scale_by_zoom_linesearch(10, curv_rtol=1.5)
    with pytest.raises(ValueError, match="initial_guess_strategy must be 'one' or 'keep'"):
        gradtx.scale_by_zoom_linesearch(10, initial_guess_strategy="max")
    with pytest.raises(ValueError, match="decrease_factor must be in .* got 1.2"):
        gradtx.scale_by_backtracking_linesearch(10, decrease_factor=1.2)
    ls = gradtx.scale_by_zoom_linesearch(10)
    with pytest.raises(ValueError, match="needs the keyword arguments"):
        ls.update(jnp.ones(2), ls.init(jnp.ones(2)), jnp.ones(2))


def test_zoom_status_says_when_only_decrease_holds(x64):
    """Stopping at a kink (bracket below stepsize_precision) or at max_learning_rate leaves
    the curvature condition unmet: the status says so, with the NumPy curvature error."""
    # |x - 0.3| from x = 1 along -1: every step past 0.7 reverses the slope; no step meets
    # |φ'(η)| <= 0.9 |φ'(0)| = 0.9, since |φ'| = 1 everywhere.
    f = lambda x: jnp.sum(jnp.abs(x - 0.3))  # noqa: E731
    u, st = _one_search(_SEARCHES["zoom"](30), f, [1.0])
    x1 = 1.0 + float(u[0])
    assert int(st.info.status) == LinesearchStatus.SUFFICIENT_DECREASE_ONLY
    assert abs(x1 - 1.0) > 0 and abs(x1 - 0.3) <= 1.0 - 1e-4 * abs(x1 - 1.0)  # Armijo
    np.testing.assert_allclose(float(st.info.curvature_error), 1.0 - 0.9, rtol=1e-12)
    # (x - 50)^2 from 0 along the unit direction, capped at step 2: φ'(2) = -96, 0.9|φ'(0)| = 90.
    g = lambda x: jnp.sum((x - 50.0) ** 2)  # noqa: E731
    ls = gradtx.scale_by_zoom_linesearch(30, max_learning_rate=2.0, initial_guess_strategy="one")
    u, st = _one_search(ls, g, [0.0], direction=jnp.array([1.0]))
    assert int(st.info.status) == LinesearchStatus.SUFFICIENT_DECREASE_ONLY
    np.testing.assert_allclose(np.asarray(u), [2.0])
    np.testing.assert_allclose(float(st.info.curvature_error), 96.0 - 90.0, rtol=1e-12)
    # Where both hold, the status is SUCCESS (step 50 is reachable without the cap).
    u, st = _one_search(_SEARCHES["zoom"](30), g, [0.0], direction=jnp.array([1.0]))
    assert int(st.info.status) == LinesearchStatus.SUCCESS
    assert float(st.info.curvature_error) == 0.0


def _np_abs(x):
    return float(np.sum(np.abs(x - 0.3)) + 0.5 * np.sum(x**2) * 1e-3)


def _np_abs_grad(x):
    return np.sign(x - 0.3) + 1e-3 * x


@pytest.mark.parametrize(
    "problem",
    [
        (_rosen, _np_rosen, _np_rosen_grad, np.zeros(6), 60),
        (
            lambda x: jnp.sum(jnp.abs(x - 0.3)) + 0.5 * jnp.sum(x**2) * 1e-3,
            _np_abs,
            _np_abs_grad,
            np.array([1.0, -2.0, 0.5]),
            15,
        ),
    ],
    ids=["rosenbrock", "kinked"],
)
def test_default_lbfgs_steps_satisfy_what_their_status_claims(x64, problem):
    """The DEFAULT ``lbfgs`` (zoom search, approximate Wolfe on): SUCCESS means sufficient
    decrease (Armijo, or the approximate form within approx_dec_rtol |f|) and curvature;
    SUFFICIENT_DECREASE_ONLY means decrease without curvature; MAX_STEPS_REACHED takes the
    best step with sufficient decrease, or none; the other failures take no step. Checked in
    float64 NumPy."""
    f, np_f, np_grad, x0, steps = problem
    c1, c2, approx = 1e-4, 0.9, 1e-6
    seen = set()
    for x, u, st, x1 in _run(gradtx.lbfgs(), f, jnp.asarray(x0), steps):
        status = int(st.info.status)
        seen.add(status)
        if status in (LinesearchStatus.NOT_DESCENT_DIRECTION, LinesearchStatus.NON_FINITE_VALUE):
            np.testing.assert_array_equal(u, 0.0)
            continue
        if status == LinesearchStatus.MAX_STEPS_REACHED and not np.any(u):
            continue  # no step with sufficient decrease was found
        eta = float(st.learning_rate)
        d = u / eta
        f0, f1 = np_f(x), np_f(x1)
        s0, s1 = np_grad(x) @ d, np_grad(x1) @ d
        slack = 1e-9 * (abs(s0) + abs(s1))
        armijo = f1 <= f0 + c1 * eta * s0 + 1e-12 * abs(f0)
        approx_wolfe = f1 <= f0 + approx * abs(f0) + 1e-12 * abs(f0) and (
            s1 <= (2 * c1 - 1) * s0 + slack
        )
        assert s0 < 0 and (armijo or approx_wolfe)
        curvature_error = abs(s1) - c2 * abs(s0)
        if status == LinesearchStatus.SUCCESS:
            assert curvature_error <= slack
        elif status == LinesearchStatus.SUFFICIENT_DECREASE_ONLY:
            assert curvature_error > -slack
            np.testing.assert_allclose(
                float(st.info.curvature_error), curvature_error, rtol=1e-6, atol=slack
            )
    assert LinesearchStatus.SUCCESS in seen


# ----------------------------------------------------------------------------------------------
# optax's settings, dtypes and keyword arguments.


def _np_backtracking(np_f, x, d, g, prev, *, c, beta, gamma, max_lr, steps):
    """Algorithm 3.1 written plainly: the first η of η_0, βη_0, ... with Armijo decrease."""
    eta = max_lr if math.isinf(gamma) else min(gamma * prev, max_lr)
    f0, slope = np_f(x), g @ d
    for k in range(steps + 1):
        if k:
            eta *= beta
        if np_f(x + eta * d) <= f0 + c * eta * slope:
            return eta
    return 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(slope_rtol=0.0),
        dict(increase_factor=math.inf),
        dict(increase_factor=math.inf, max_learning_rate=0.01),
        dict(max_learning_rate=10.0),  # the first search starts from 1 * increase_factor
        dict(slope_rtol=0.0, increase_factor=math.inf, max_learning_rate=3.0, decrease_factor=0.5),
    ],
    ids=["c=0", "inf", "inf-capped", "max10", "all"],
)
def test_backtracking_takes_optax_settings(x64, kwargs):
    """slope_rtol=0 (simple decrease) and increase_factor=math.inf (start every search at
    max_learning_rate), as optax documents them: optax's steps, and the NumPy Algorithm 3.1."""
    ours = gradtx.chain(gradtx.scale(-1.0), gradtx.scale_by_backtracking_linesearch(30, **kwargs))
    theirs = optax.chain(optax.scale(-1.0), optax.scale_by_backtracking_linesearch(30, **kwargs))
    runs_ours = _run(ours, _rosen, jnp.zeros(4), 20)
    runs_theirs = _run(theirs, _rosen, jnp.zeros(4), 20)
    settings = dict(
        c=kwargs.get("slope_rtol", 1e-4),
        beta=kwargs.get("decrease_factor", 0.8),
        gamma=kwargs.get("increase_factor", 1.5),
        max_lr=kwargs.get("max_learning_rate", 1.0),
        steps=30,
    )
    prev = 1.0
    for (x, u, st, _), (_, u_theirs, st_theirs, _) in zip(runs_ours, runs_theirs, strict=True):
        assert int(st.info.status) == LinesearchStatus.SUCCESS
        np.testing.assert_allclose(u, u_theirs, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(float(st.learning_rate), float(st_theirs.learning_rate))
        g = _np_rosen_grad(x)
        eta = _np_backtracking(_np_rosen, x, -g, g, prev, **settings)
        np.testing.assert_allclose(float(st.learning_rate), eta, rtol=1e-12)
        prev = eta


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(slope_rtol=0.0),
        dict(curv_rtol=math.inf),
        dict(increase_factor=math.inf, max_learning_rate=40.0),
        dict(slope_rtol=0.0, curv_rtol=math.inf, increase_factor=math.inf, max_learning_rate=9.0),
    ],
    ids=["c1=0", "no-curvature", "inf", "all"],
)
def test_zoom_takes_optax_settings(x64, kwargs):
    """slope_rtol=0, curv_rtol=math.inf (no curvature condition) and increase_factor=math.inf
    with a max_learning_rate: optax's steps, and the conditions that remain hold (NumPy).
    The objective needs steps far beyond the first trial of 1, so the bracketing phase grows
    the step (straight to max_learning_rate with an infinite factor)."""
    scales = np.array([0.01, 0.02, 0.05, 1.0])

    def np_f(x):
        return float(np.sum(scales * (x - 1.0) ** 2 + 0.1 * np.cos(3.0 * x)))

    def np_grad(x):
        return 2.0 * scales * (x - 1.0) - 0.3 * np.sin(3.0 * x)

    def f(x):
        return jnp.sum(scales * (x - 1.0) ** 2 + 0.1 * jnp.cos(3.0 * x))

    kw = dict(initial_guess_strategy="one", **kwargs)
    ours = gradtx.chain(gradtx.scale(-1.0), gradtx.scale_by_zoom_linesearch(30, **kw))
    theirs = optax.chain(optax.scale(-1.0), optax.scale_by_zoom_linesearch(30, **kw))
    c1, c2 = kwargs.get("slope_rtol", 1e-4), kwargs.get("curv_rtol", 0.9)
    grew = False
    x0 = jnp.array([-3.0, 4.0, 2.0, 0.3])
    for (x, u, st, x1), (_, u_theirs, st_theirs, _) in zip(
        _run(ours, f, x0, 12), _run(theirs, f, x0, 12), strict=True
    ):
        np.testing.assert_allclose(u, u_theirs, rtol=1e-10, atol=1e-14)
        eta = float(st.learning_rate)
        np.testing.assert_allclose(eta, float(st_theirs.learning_rate), rtol=1e-10)
        assert int(st.info.status) == LinesearchStatus.SUCCESS
        grew |= eta > 1.0
        d = -np_grad(x)
        s0, s1 = np_grad(x) @ d, np_grad(x1) @ d
        f0, f1 = np_f(x), np_f(x1)
        armijo = f1 <= f0 + c1 * eta * s0 + 1e-12 * abs(f0)
        approx = f1 <= f0 + 1e-6 * abs(f0) and s1 <= (2 * c1 - 1) * s0 + 1e-9 * abs(s0)
        assert armijo or approx
        assert abs(s1) <= c2 * abs(s0) * (1 + 1e-9) + 1e-12
        if "max_learning_rate" in kwargs:
            assert eta <= kwargs["max_learning_rate"]
    assert grew or math.isinf(c2)  # without the curvature condition a step of 1 is accepted


def test_increase_factor_inf_needs_a_max_learning_rate():
    """The bracketing phase of the zoom search would jump to an infinite step."""
    with pytest.raises(ValueError, match="increase_factor=inf needs max_learning_rate"):
        gradtx.scale_by_zoom_linesearch(10, increase_factor=math.inf)
    with pytest.raises(ValueError, match="increase_factor must be in .* got 0.5"):
        gradtx.scale_by_backtracking_linesearch(10, increase_factor=0.5)
    with pytest.raises(ValueError, match="slope_rtol must be in .* got -0.1"):
        gradtx.scale_by_zoom_linesearch(10, slope_rtol=-0.1)
    with pytest.raises(ValueError, match="curv_rtol must be in .* got 0.0"):
        gradtx.scale_by_zoom_linesearch(10, curv_rtol=0.0)
    # Accepted, as in optax.
    gradtx.scale_by_zoom_linesearch(10, increase_factor=math.inf, max_learning_rate=2.0)
    gradtx.scale_by_backtracking_linesearch(10, increase_factor=jnp.array([1.5, jnp.inf]))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("kind", ["backtracking", "zoom"])
def test_low_precision_params_with_float32_array_hyperparameters(dtype, kind):
    """float16/bfloat16 parameters with float32 array tolerances: the searches run (the loop
    carry has fixed dtypes), the state keeps its dtypes across a scanned loop, and the steps
    are those of the same search in float32 up to the parameters' rounding."""
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    if kind == "backtracking":
        ls = gradtx.scale_by_backtracking_linesearch(
            20, slope_rtol=f32(1e-4), decrease_factor=f32(0.8), increase_factor=f32(1.5),
            max_learning_rate=f32(1.0), atol=f32(0.0), rtol=f32(0.0), store_grad=True,
        )  # fmt: skip
    else:
        ls = gradtx.scale_by_zoom_linesearch(
            20, tol=f32(0.0), increase_factor=f32(2.0), slope_rtol=f32(1e-4),
            curv_rtol=f32(0.9), approx_dec_rtol=f32(1e-6), stepsize_precision=f32(1e-5),
            initial_guess_strategy="keep",
        )  # fmt: skip
    target = np.array([1.0, -2.0, 0.5])

    def f(x):
        return jnp.sum((x.astype(jnp.float32) - target) ** 2 * jnp.array([1.0, 2.0, 1.5]))

    def run(x0):
        opt = gradtx.chain(gradtx.scale(-1.0), ls)

        def step(carry, _):
            x, state = carry
            v, g = jax.value_and_grad(f)(x)
            u, new = opt.update(g, state, x, value=v, grad=g, value_fn=f)
            same = jax.tree_util.tree_map(lambda a, b: a.dtype == b.dtype, state, new)
            assert all(jax.tree_util.tree_leaves(same)), same
            return (x + u, new), (x + u, new[1].learning_rate, new[1].info.status)

        return jax.jit(lambda x: jax.lax.scan(step, (x, opt.init(x)), None, length=15)[1])(x0)

    xs, etas, status = run(jnp.zeros(3, dtype))
    xs32, etas32, _ = run(jnp.zeros(3, jnp.float32))
    assert xs.dtype == dtype and etas.dtype == dtype
    status = np.asarray(status)
    assert (status[:3] == LinesearchStatus.SUCCESS).all(), status
    np.testing.assert_allclose(np.asarray(etas[:2], np.float64), np.asarray(etas32[:2]), rtol=2e-2)
    # f (in NumPy) decreases to within the parameters' resolution of the minimum.
    values = [np.sum((np.asarray(x, np.float64) - target) ** 2 * [1.0, 2.0, 1.5]) for x in xs]
    assert values[0] < np.sum(target**2 * [1.0, 2.0, 1.5])
    assert all(b <= a for a, b in zip(values, values[1:], strict=False))
    assert values[-1] < 0.05  # from 9.375


@pytest.mark.parametrize("kind", ["backtracking", "zoom"])
def test_keyword_arguments_value_fn_does_not_take_are_a_type_error(kind):
    """As in optax: extra keyword arguments of update go to value_fn, and one it does not
    accept is a TypeError naming the search and the argument (never silently dropped)."""
    name = f"scale_by_{kind}_linesearch"
    ours = getattr(gradtx, name)(10)
    theirs = getattr(optax, name)(10)

    def f(w, X):
        return jnp.sum((X @ w - 1.0) ** 2)

    w, X = jnp.zeros(2), jnp.eye(2)
    v, g = jax.value_and_grad(f)(w, X)
    for tx in (ours, theirs):
        with pytest.raises(TypeError):
            tx.update(-g, tx.init(w), w, value=v, grad=g, value_fn=f, X=X, batch=X)
    with pytest.raises(TypeError, match=rf"{name}\.update: .*\['batch'\]"):
        ours.update(-g, ours.init(w), w, value=v, grad=g, value_fn=f, X=X, batch=X)
    with pytest.raises(TypeError, match=rf"{name}\.update: .*\['batch'\]"):  # inside lbfgs too
        opt = gradtx.lbfgs(linesearch=ours)
        opt.update(g, opt.init(w), w, value=v, grad=g, value_fn=f, X=X, batch=X)
    # Accepted arguments reach value_fn: the step is optax's.
    u, _ = ours.update(-g, ours.init(w), w, value=v, grad=g, value_fn=f, X=X)
    u_theirs, _ = theirs.update(-g, theirs.init(w), w, value=v, grad=g, value_fn=f, X=X)
    np.testing.assert_allclose(np.asarray(u), np.asarray(u_theirs), rtol=1e-6)
    # A value_fn taking **kwargs accepts anything; the constructors take no unknown names.
    u, _ = ours.update(-g, ours.init(w), w, value=v, grad=g, value_fn=lambda w, **kw: f(w, X), X=X)
    np.testing.assert_allclose(np.asarray(u), np.asarray(u_theirs), rtol=1e-6)
    with pytest.raises(TypeError, match=rf"{name}.* unexpected keyword argument 'verbosity'"):
        getattr(gradtx, name)(10, verbosity=True)
