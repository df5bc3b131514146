"""Line searches as transforms: the step length along the incoming direction, chosen by
evaluating the objective.

Both take the extra keyword arguments ``value`` (``f(θ)``), ``grad`` (``∇f(θ)``) and ``value_fn``
(``f``) in ``update``; any other extra keyword argument that ``value_fn`` accepts is passed to it.
They store the value and gradient at the accepted point in their state, so the next iteration
need not compute them again: see :func:`value_and_grad_from_state`. The outcome of each search
is reported in ``state.info.status`` (a :class:`LinesearchStatus`).
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics as tree_lib
from gradtx.core import (
    GradientTransformation,
    check_nonnegative,
    check_range,
    static_field,
    transform,
)

__all__ = [
    "LinesearchStatus",
    "scale_by_backtracking_linesearch",
    "scale_by_zoom_linesearch",
    "value_and_grad_from_state",
    "BacktrackingLinesearchInfo",
    "ScaleByBacktrackingLinesearchState",
    "ZoomLinesearchInfo",
    "ScaleByZoomLinesearchState",
]

_none = lambda x: x is None  # noqa: E731


class LinesearchStatus(enum.IntEnum):
    """Outcome of one line search (``state.info.status``).

    ``SUCCESS``: the search's conditions hold at the accepted step: for backtracking the Armijo
    condition; for the zoom search the curvature condition and sufficient decrease (Armijo, or
    Hager & Zhang's approximate form when ``approx_dec_rtol`` is set).
    ``NOT_DESCENT_DIRECTION``: the slope ``<d, ∇f(θ)>`` is not negative (or not finite), so no
    step is taken. ``MAX_STEPS_REACHED``: the step budget ran out before the conditions held; the
    step returned is the best one with sufficient decrease if any was found, else 0.
    ``NON_FINITE_VALUE``: the budget ran out and the only non-rejected trials had a NaN/inf value
    or slope; step 0. ``SUFFICIENT_DECREASE_ONLY`` (zoom only): the search stopped at a step
    with sufficient decrease (Armijo or approximate) where the curvature condition does not
    hold, because the step is at ``max_learning_rate`` or the bracket became narrower than
    ``stepsize_precision`` (e.g. at a kink); ``info.curvature_error`` says by how much.
    """

    SUCCESS = 0
    NOT_DESCENT_DIRECTION = 1
    MAX_STEPS_REACHED = 2
    NON_FINITE_VALUE = 3
    SUFFICIENT_DECREASE_ONLY = 4


def _real_dtype_of(tree: Any) -> Any:
    leaves = jax.tree_util.tree_leaves(tree)
    return tree_lib.real_dtype(jnp.result_type(leaves[0])) if leaves else jnp.float32


def _slope(direction: Any, grad: Any) -> jax.Array:
    return jnp.real(tree_lib.tree_vdot(grad, direction))


def _add_scaled(params: Any, t: Any, direction: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda p, d: None if p is None else (p + t * d).astype(jnp.result_type(p)),
        params,
        direction,
        is_leaf=_none,
    )


def _fn_kwargs(value_fn: Callable, extra_args: dict) -> dict:
    """The extra keyword arguments ``value_fn`` accepts (all of them if it takes ``**kwargs``)."""
    if not extra_args:
        return {}
    try:
        sig = inspect.signature(value_fn)
    except (TypeError, ValueError):
        return {}
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict(extra_args)
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in extra_args.items() if k in names}


def _require(owner: str, value: Any, grad: Any, value_fn: Any, need_grad: bool = True) -> None:
    missing = [n for n, v in (("value", value), ("value_fn", value_fn)) if v is None]
    if need_grad and grad is None:
        missing.append("grad")
    if missing:
        raise ValueError(
            f"{owner}: update needs the keyword arguments {missing} "
            "(value=f(params), grad=∇f(params), value_fn=f)"
        )


# ----------------------------------------------------------------------------------------------
# Backtracking (Armijo).


class BacktrackingLinesearchInfo(NamedTuple):
    """Diagnostics of the last backtracking search.

    Attributes:
        num_linesearch_steps: objective evaluations made.
        decrease_error: ``max(0, f(θ + ηd) − (1 + rtol) f(θ) − η c <d, ∇f(θ)>)`` at the step
            returned (0 when the Armijo condition holds, inf when the value was not finite).
        status: a :class:`LinesearchStatus` code.
    """

    num_linesearch_steps: jax.Array
    decrease_error: jax.Array
    status: jax.Array


class ScaleByBacktrackingLinesearchState(NamedTuple):
    """Step length ``learning_rate`` of the last search (the next starts from it times
    ``increase_factor``), ``value`` and ``grad`` (``None`` unless ``store_grad``) at the
    accepted point, and ``info``."""

    learning_rate: jax.Array
    value: jax.Array
    grad: Any
    info: BacktrackingLinesearchInfo


@transform
class scale_by_backtracking_linesearch(GradientTransformation):
    """Backtracking line search: the first ``η`` of ``η_0, βη_0, β²η_0, ...`` with sufficient
    decrease (the Armijo condition, Nocedal & Wright, Algorithm 3.1).

    .. math::
        f(θ + η d) \\le (1 + \\text{rtol}) f(θ) + η\\, c\\, \\langle d, ∇f(θ)\\rangle
        + \\text{atol},\\qquad η_0 = \\min(γ\\, η_{prev}, η_{max}),

    with ``c = slope_rtol``, ``β = decrease_factor``, ``γ = increase_factor``. The update is
    ``η d``. At most ``max_backtracking_steps + 1`` evaluations; when none passes the step is 0
    and ``info.status`` says why.

    Args:
        max_backtracking_steps: how many times the step may be reduced.
        slope_rtol: ``c`` in the condition, in (0, 1).
        decrease_factor: ``β`` in (0, 1).
        increase_factor: ``γ >= 1`` applied to the previous step to start the next search.
        max_learning_rate: ``η_max``.
        atol: absolute slack in the condition.
        rtol: relative slack on ``f(θ)`` in the condition.
        store_grad: also compute and store ``∇f`` at the accepted point (for
            :func:`value_and_grad_from_state`).
        verbose: print the outcome of searches that fail.

    Example:
        >>> import jax, jax.numpy as jnp, gradtx
        >>> f = lambda x: jnp.sum((x - 1.0) ** 2)
        >>> tx = gradtx.chain(gradtx.scale(-1.0), gradtx.scale_by_backtracking_linesearch(20))
        >>> x = jnp.zeros(2)
        >>> v, g = jax.value_and_grad(f)(x)
        >>> u, s = tx.update(g, tx.init(x), x, value=v, grad=g, value_fn=f)
        >>> [round(float(e), 3) for e in x + u]  # η = 0.8 is the first with enough decrease
        [1.6, 1.6]

    Reference: Nocedal & Wright, "Numerical Optimization", 2nd ed., 2006, Algorithm 3.1.
    """

    max_backtracking_steps: Any
    slope_rtol: Any = 1e-4
    decrease_factor: Any = 0.8
    increase_factor: Any = 1.5
    max_learning_rate: Any = 1.0
    atol: Any = 0.0
    rtol: Any = 0.0
    store_grad: bool = static_field(False)
    verbose: bool = static_field(False)

    def _check(self):
        o = "scale_by_backtracking_linesearch"
        check_range(o, "max_backtracking_steps", self.max_backtracking_steps, low=0)
        check_range(o, "slope_rtol", self.slope_rtol, low=0, high=1, low_open=True, high_open=True)
        check_range(
            o, "decrease_factor", self.decrease_factor, low=0, high=1, low_open=True, high_open=True
        )
        check_range(o, "increase_factor", self.increase_factor, low=1)
        check_range(o, "max_learning_rate", self.max_learning_rate, low=0, low_open=True)
        check_nonnegative(o, "atol", self.atol)
        check_nonnegative(o, "rtol", self.rtol)

    def init(self, params):
        dt = _real_dtype_of(params)
        return ScaleByBacktrackingLinesearchState(
            learning_rate=jnp.asarray(self.max_learning_rate, dt),
            value=jnp.asarray(jnp.inf, dt),
            grad=tree_lib.tree_zeros_like(params) if self.store_grad else None,
            info=BacktrackingLinesearchInfo(
                num_linesearch_steps=jnp.zeros([], jnp.int32),
                decrease_error=jnp.asarray(jnp.inf, dt),
                status=jnp.zeros([], jnp.int32),
            ),
        )

    def update(
        self, updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra_args
    ):
        owner = "scale_by_backtracking_linesearch"
        _require(owner, value, grad, value_fn)
        fn = _bind(value_fn, extra_args)
        dt = state.value.dtype
        value = jnp.asarray(value, dt)
        slope = _slope(updates, grad).astype(dt)
        descent = jnp.isfinite(slope) & (slope < 0)
        t0 = jnp.minimum(self.increase_factor * state.learning_rate, self.max_learning_rate)

        def trial(t):
            x = _add_scaled(params, t, updates)
            if self.store_grad:
                v, g = jax.value_and_grad(fn)(x)
            else:
                v, g = fn(x), None
            v = jnp.asarray(v, dt)
            err = v - (1.0 + self.rtol) * value - t * self.slope_rtol * slope
            err = jnp.where(jnp.isfinite(v), jnp.maximum(err, 0.0), jnp.inf)
            return v, g, err

        def cond(c):
            k, _, _, _, err = c
            return descent & (err > self.atol) & (k <= self.max_backtracking_steps)

        def body(c):
            k, t, _, _, _ = c
            t = jnp.where(k > 0, self.decrease_factor * t, t).astype(dt)
            v, g, err = trial(t)
            return k + 1, t, v, g, err

        g0 = grad if self.store_grad else None
        init = (jnp.zeros([], jnp.int32), t0.astype(dt), value, g0, jnp.asarray(jnp.inf, dt))
        k, t, v, g, err = jax.lax.while_loop(cond, body, init)
        ok = err <= self.atol
        status = jnp.where(
            ~descent,
            LinesearchStatus.NOT_DESCENT_DIRECTION,
            jnp.where(
                ok,
                LinesearchStatus.SUCCESS,
                jnp.where(
                    jnp.isfinite(err),
                    LinesearchStatus.MAX_STEPS_REACHED,
                    LinesearchStatus.NON_FINITE_VALUE,
                ),
            ),
        ).astype(jnp.int32)
        step = jnp.where(ok, t, 0.0)
        new_value = jnp.where(ok, v, value)
        new_grad = None
        if self.store_grad:
            new_grad = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), g, grad)
        if self.verbose:
            _report_failure(owner, status, k)
        info = BacktrackingLinesearchInfo(num_linesearch_steps=k, decrease_error=err, status=status)
        out = tree_lib.tree_scale(step, updates)
        return out, ScaleByBacktrackingLinesearchState(
            learning_rate=jnp.where(descent, t, state.learning_rate).astype(dt),
            value=new_value,
            grad=new_grad,
            info=info,
        )


def _bind(value_fn: Callable, extra_args: dict) -> Callable:
    kwargs = _fn_kwargs(value_fn, extra_args)
    if not kwargs:
        return value_fn
    return lambda x: value_fn(x, **kwargs)


def _report_failure(owner: str, status: jax.Array, steps: jax.Array) -> None:
    def show(s, k):
        if int(s) != 0:
            print(f"{owner}: {LinesearchStatus(int(s)).name} after {int(k)} evaluations")

    jax.debug.callback(show, status, steps)


# ----------------------------------------------------------------------------------------------
# Zoom (strong Wolfe).


class ZoomLinesearchInfo(NamedTuple):
    """Diagnostics of the last zoom search.

    Attributes:
        num_linesearch_steps: objective (value-and-gradient) evaluations made.
        decrease_error: how far the sufficient-decrease condition is from holding at the
            returned step (0 when it holds).
        curvature_error: ``max(0, |φ'(η)| − c₂|φ'(0)|)`` at the returned step (0 when the
            strong-Wolfe curvature condition holds).
        status: a :class:`LinesearchStatus` code.
    """

    num_linesearch_steps: jax.Array
    decrease_error: jax.Array
    curvature_error: jax.Array
    status: jax.Array


class ScaleByZoomLinesearchState(NamedTuple):
    """Step length ``learning_rate`` of the last search, ``value`` and ``grad`` of the objective
    at the accepted point (reused by :func:`value_and_grad_from_state`), and ``info``."""

    learning_rate: jax.Array
    value: jax.Array
    grad: Any
    info: ZoomLinesearchInfo


class _Zoom(NamedTuple):
    k: jax.Array  # evaluations so far
    t: jax.Array  # next trial step
    zooming: jax.Array  # False: still bracketing; True: shrinking [lo, hi]
    done: jax.Array
    prev: tuple  # (t, f, df) of the previous bracketing trial
    lo: tuple  # (t, f, df): sufficient decrease, lowest value so far in the bracket
    hi: tuple  # (t, f, df): the other end of the bracket
    best: tuple  # (t, f, grad, df): the accepted step, else the lowest with sufficient decrease
    nonfinite: jax.Array


def _cubic_min(a, fa, da, b, fb, db):
    """Minimiser of the cubic interpolating ``(a, fa, da)`` and ``(b, fb, db)`` (Nocedal &
    Wright, eq. 3.59); NaN when the cubic has no minimiser."""
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - da * db
    d2 = jnp.sign(b - a) * jnp.sqrt(jnp.where(disc >= 0, disc, jnp.nan))
    return b - (b - a) * (db + d2 - d1) / (db - da + 2.0 * d2)


def _zoom_search(
    evaluate: Callable[[jax.Array], tuple],
    value0: jax.Array,
    slope0: jax.Array,
    grad0: Any,
    t0: jax.Array,
    *,
    max_steps: Any,
    max_stepsize: Any,
    tol: Any,
    increase_factor: Any,
    c1: Any,
    c2: Any,
    approx_dec_rtol: Any,
    stepsize_precision: Any,
) -> tuple[jax.Array, jax.Array, Any, ZoomLinesearchInfo]:
    """Strong-Wolfe line search on ``φ(t)`` (Nocedal & Wright, Algorithms 3.5 and 3.6).

    ``evaluate(t) -> (φ(t), ∇f at the trial point, φ'(t))``. One evaluation per loop iteration
    (a single ``lax.while_loop``): the bracketing phase grows ``t`` by ``increase_factor`` until
    a bracket is found, then the zoom phase shrinks it with safeguarded cubic interpolation.
    Returns ``(step, value, grad, info)``.
    """
    dt = value0.dtype
    inf = jnp.asarray(jnp.inf, dt)
    zero = jnp.zeros([], dt)
    descent = jnp.isfinite(slope0) & (slope0 < 0) & jnp.isfinite(value0)
    max_t = inf if max_stepsize is None else jnp.asarray(max_stepsize, dt)

    def conditions(t, f, df):
        armijo = f <= value0 + c1 * t * slope0 + tol
        if approx_dec_rtol is not None:  # Hager & Zhang's approximate Wolfe, for flat tails
            near = f <= value0 + approx_dec_rtol * jnp.abs(value0)
            armijo = armijo | (near & (df <= (2.0 * c1 - 1.0) * slope0 + tol))
        curv = jnp.abs(df) <= c2 * jnp.abs(slope0) + tol
        return armijo, curv

    def body(s: _Zoom) -> _Zoom:
        t = s.t
        f, g, df = evaluate(t)
        f = jnp.asarray(f, dt)
        df = jnp.asarray(df, dt)
        finite = jnp.isfinite(f) & jnp.isfinite(df)
        armijo, curv = conditions(t, f, df)
        armijo = armijo & finite
        accept = armijo & curv
        take = accept | (armijo & (f < s.best[1]))
        best = jax.tree_util.tree_map(lambda a, b: jnp.where(take, a, b), (t, f, g, df), s.best)
        pt = (t, f, df)
        # Bracketing phase (Algorithm 3.5).
        up_hi = (~armijo) | ((s.k > 0) & (f >= s.prev[1]))
        up_lo = (~up_hi) & (~accept) & (df >= 0)
        at_max = t >= max_t
        b_done = accept | ((~up_hi) & (~up_lo) & at_max)  # cannot grow further: keep t
        b_zoom = (~b_done) & (up_hi | up_lo)
        b_lo = jax.tree_util.tree_map(lambda p, q: jnp.where(up_hi, p, q), s.prev, pt)
        b_hi = jax.tree_util.tree_map(lambda p, q: jnp.where(up_hi, p, q), pt, s.prev)
        # Zoom phase (Algorithm 3.6).
        z_hi_move = (~armijo) | (f >= s.lo[1])
        z_done = (~z_hi_move) & accept
        flip = (~z_hi_move) & (df * (s.hi[0] - s.lo[0]) >= 0)
        z_lo = jax.tree_util.tree_map(lambda p, q: jnp.where(z_hi_move, q, p), pt, s.lo)
        z_hi = jax.tree_util.tree_map(
            lambda p, lo, hi: jnp.where(z_hi_move, p, jnp.where(flip, lo, hi)), pt, s.lo, s.hi
        )
        zooming = s.zooming | b_zoom
        done = jnp.where(s.zooming, z_done, b_done)
        lo = jax.tree_util.tree_map(
            lambda z, b, o: jnp.where(s.zooming, z, jnp.where(b_zoom, b, o)), z_lo, b_lo, s.lo
        )
        hi = jax.tree_util.tree_map(
            lambda z, b, o: jnp.where(s.zooming, z, jnp.where(b_zoom, b, o)), z_hi, b_hi, s.hi
        )
        # Next trial.
        (a, fa, da), (b, fb, db) = lo, hi
        width = jnp.abs(b - a)
        c = _cubic_min(a, fa, da, b, fb, db)
        left, right = jnp.minimum(a, b), jnp.maximum(a, b)
        ok_c = jnp.isfinite(c) & (c > left + 0.1 * width) & (c < right - 0.1 * width)
        t_zoom = jnp.where(ok_c, c, 0.5 * (a + b))
        t_grow = jnp.minimum(t * increase_factor, max_t)
        t_next = jnp.where(zooming, t_zoom, t_grow)
        # A bracket narrower than the precision ends the search at the safe step.
        tiny = zooming & (width <= stepsize_precision * jnp.maximum(right, 1e-30))
        stop_safe = (~done) & tiny & (best[0] > 0)
        return _Zoom(
            k=s.k + 1,
            t=t_next.astype(dt),
            zooming=zooming,
            done=done | stop_safe,
            prev=pt,
            lo=lo,
            hi=hi,
            best=best,
            nonfinite=s.nonfinite | ~finite,
        )

    def cond(s: _Zoom):
        return descent & (~s.done) & (s.k < max_steps)

    start = (zero, value0, slope0)
    init = _Zoom(
        k=jnp.zeros([], jnp.int32),
        t=jnp.minimum(jnp.asarray(t0, dt), max_t),
        zooming=jnp.asarray(False),
        done=jnp.asarray(False),
        prev=start,
        lo=start,
        hi=start,
        best=(zero, value0, grad0, slope0),
        nonfinite=jnp.asarray(False),
    )
    s = jax.lax.while_loop(cond, body, init)
    # The accepted step (both conditions), else the best with sufficient decrease, else 0.
    step, value, grad, slope = s.best
    found = step > 0
    curv_err = jnp.where(found, jnp.abs(slope) - c2 * jnp.abs(slope0) - tol, inf)
    status = jnp.where(
        ~descent,
        LinesearchStatus.NOT_DESCENT_DIRECTION,
        jnp.where(
            s.done,
            jnp.where(
                curv_err <= 0, LinesearchStatus.SUCCESS, LinesearchStatus.SUFFICIENT_DECREASE_ONLY
            ),
            jnp.where(
                (~found) & s.nonfinite,
                LinesearchStatus.NON_FINITE_VALUE,
                LinesearchStatus.MAX_STEPS_REACHED,
            ),
        ),
    ).astype(jnp.int32)
    dec_err = jnp.where(found, zero, inf)
    info = ZoomLinesearchInfo(
        num_linesearch_steps=s.k,
        decrease_error=dec_err,
        curvature_error=jnp.maximum(curv_err, 0.0),
        status=status,
    )
    return step, value, grad, info


@transform
class scale_by_zoom_linesearch(GradientTransformation):
    """Zoom line search: a step satisfying the strong Wolfe conditions (Nocedal & Wright,
    Algorithms 3.5 and 3.6).

    With ``φ(η) = f(θ + η d)``:

    .. math::
        φ(η) \\le φ(0) + c_1 η φ'(0) + \\text{tol}\\quad\\text{(sufficient decrease)},\\qquad
        |φ'(η)| \\le c_2 |φ'(0)| + \\text{tol}\\quad\\text{(curvature)}.

    Bracketing multiplies the trial step by ``increase_factor`` until ``[lo, hi]`` contains
    an acceptable step; zooming shrinks the bracket with safeguarded cubic interpolation
    (bisection when the cubic minimiser falls within 10% of an end). Where values are flat to
    machine precision (``φ(η) <= φ(0) + approx_dec_rtol |φ(0)|``) the decrease condition may be
    met by Hager & Zhang's approximate form ``φ'(η) <= (2c_1 − 1) φ'(0)``. A trial with a
    non-finite value is treated as too long. When the budget runs out the best step with
    sufficient decrease is returned (or 0); ``info.status`` reports not-a-descent-direction,
    max-steps-reached and non-finite-value failures, and ``SUFFICIENT_DECREASE_ONLY`` when the
    search stops at ``max_learning_rate`` or within ``stepsize_precision`` at a step whose
    curvature condition fails (``SUCCESS`` always means both conditions hold). The update is
    ``η d``; the value and gradient at the accepted point are stored for
    :func:`value_and_grad_from_state`.

    Args:
        max_linesearch_steps: most value-and-gradient evaluations per search.
        max_learning_rate: largest step tried (``None``: unbounded).
        tol: absolute slack in both conditions.
        increase_factor: growth of the step while bracketing (> 1).
        slope_rtol: ``c_1``, in (0, 1).
        curv_rtol: ``c_2``, in (c_1, 1).
        approx_dec_rtol: relative band for the approximate decrease condition (``None``: off).
        stepsize_precision: stop zooming when the bracket is narrower than this (relative)
            and a step with sufficient decrease is known.
        initial_guess_strategy: ``"one"`` (start at 1, right for quasi-Newton directions) or
            ``"keep"`` (start from the previous step).
        verbose: print the outcome of searches that fail.

    Example:
        >>> import jax, jax.numpy as jnp, gradtx
        >>> f = lambda x: jnp.sum(x**4)
        >>> tx = gradtx.chain(gradtx.scale(-1.0), gradtx.scale_by_zoom_linesearch(20))
        >>> x = jnp.array([1.0])
        >>> v, g = jax.value_and_grad(f)(x)
        >>> u, s = tx.update(g, tx.init(x), x, value=v, grad=g, value_fn=f)
        >>> int(s[1].info.status), bool(f(x + u) < v)
        (0, True)

    Reference: Nocedal & Wright, "Numerical Optimization", 2nd ed., 2006, section 3.5;
    Hager & Zhang, "A new conjugate gradient method with guaranteed descent and an efficient
    line search", SIAM J. Optim., 2005.
    """

    max_linesearch_steps: Any
    max_learning_rate: Any = None
    tol: Any = 0.0
    increase_factor: Any = 2.0
    slope_rtol: Any = 1e-4
    curv_rtol: Any = 0.9
    approx_dec_rtol: Any = 1e-6
    stepsize_precision: Any = 1e-5
    initial_guess_strategy: str = static_field("keep")
    verbose: bool = static_field(False)

    def _check(self):
        o = "scale_by_zoom_linesearch"
        check_range(o, "max_linesearch_steps", self.max_linesearch_steps, low=1)
        if self.max_learning_rate is not None:
            check_range(o, "max_learning_rate", self.max_learning_rate, low=0, low_open=True)
        check_nonnegative(o, "tol", self.tol)
        check_range(o, "increase_factor", self.increase_factor, low=1, low_open=True)
        check_range(o, "slope_rtol", self.slope_rtol, low=0, high=1, low_open=True, high_open=True)
        check_range(o, "curv_rtol", self.curv_rtol, low=0, high=1, low_open=True, high_open=True)
        if self.approx_dec_rtol is not None:
            check_nonnegative(o, "approx_dec_rtol", self.approx_dec_rtol)
        check_nonnegative(o, "stepsize_precision", self.stepsize_precision)
        if self.initial_guess_strategy not in ("one", "keep"):
            raise ValueError(
                f"{o}: initial_guess_strategy must be 'one' or 'keep', "
                f"got {self.initial_guess_strategy!r}"
            )

    def init(self, params):
        dt = _real_dtype_of(params)
        return ScaleByZoomLinesearchState(
            learning_rate=jnp.ones([], dt),
            value=jnp.asarray(jnp.inf, dt),
            grad=tree_lib.tree_zeros_like(params),
            info=ZoomLinesearchInfo(
                num_linesearch_steps=jnp.zeros([], jnp.int32),
                decrease_error=jnp.asarray(jnp.inf, dt),
                curvature_error=jnp.asarray(jnp.inf, dt),
                status=jnp.zeros([], jnp.int32),
            ),
        )

    def update(
        self, updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra_args
    ):
        owner = "scale_by_zoom_linesearch"
        _require(owner, value, grad, value_fn)
        fn = _bind(value_fn, extra_args)
        dt = state.value.dtype
        vg = jax.value_and_grad(fn)

        def evaluate(t):
            v, g = vg(_add_scaled(params, t, updates))
            g = tree_lib.tree_cast_like(g, state.grad)
            return v, g, _slope(updates, g)

        t0 = 1.0 if self.initial_guess_strategy == "one" else state.learning_rate
        step, new_value, new_grad, info = _zoom_search(
            evaluate,
            jnp.asarray(value, dt),
            _slope(updates, grad).astype(dt),
            tree_lib.tree_cast_like(grad, state.grad),
            t0,
            max_steps=self.max_linesearch_steps,
            max_stepsize=self.max_learning_rate,
            tol=self.tol,
            increase_factor=self.increase_factor,
            c1=self.slope_rtol,
            c2=self.curv_rtol,
            approx_dec_rtol=self.approx_dec_rtol,
            stepsize_precision=self.stepsize_precision,
        )
        if self.verbose:
            _report_failure(owner, info.status, info.num_linesearch_steps)
        lr = jnp.where(step > 0, step, state.learning_rate).astype(dt)
        return tree_lib.tree_scale(step, updates), ScaleByZoomLinesearchState(
            learning_rate=lr, value=new_value, grad=new_grad, info=info
        )


def value_and_grad_from_state(
    value_fn: Callable[..., Any],
) -> Callable[..., tuple[jax.Array, Any]]:
    """Like ``jax.value_and_grad(value_fn)``, but reuses the value and gradient a line search
    stored in the optimizer state (computing them only when the stored value is not finite,
    as at the first step).

    Args:
        value_fn: the objective ``f(params, *args, **kwargs) -> scalar``.

    Returns:
        ``value_and_grad(params, *args, state=opt_state, **kwargs) -> (value, grad)``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> f = lambda x: jnp.sum(x**2)
        >>> opt = gradtx.lbfgs()
        >>> x = jnp.array([1.0, 2.0])
        >>> state = opt.init(x)
        >>> vg = gradtx.value_and_grad_from_state(f)
        >>> for _ in range(3):
        ...     v, g = vg(x, state=state)
        ...     u, state = opt.update(g, state, x, value=v, grad=g, value_fn=f)
        ...     x = gradtx.apply_updates(x, u)
        >>> round(float(f(x)), 6)
        0.0
    """

    def _value_and_grad(params: Any, *args: Any, state: Any, **kwargs: Any):
        found = _find_stored(state)
        if found is None:
            raise ValueError(
                "value_and_grad_from_state: no line-search state with a stored value and "
                "gradient was found in the optimizer state (use scale_by_zoom_linesearch, or "
                "scale_by_backtracking_linesearch with store_grad=True)"
            )
        value, grad = found
        return jax.lax.cond(
            jnp.isfinite(value),
            lambda p, a, kw: (value, tree_lib.tree_cast_like(grad, p)),
            lambda p, a, kw: _cast_vg(jax.value_and_grad(value_fn)(p, *a, **kw), value, p),
            params,
            args,
            kwargs,
        )

    return _value_and_grad


def _cast_vg(vg: tuple, like_value: jax.Array, like_params: Any) -> tuple:
    v, g = vg
    return jnp.asarray(v, like_value.dtype), tree_lib.tree_cast_like(g, like_params)


def _find_stored(state: Any) -> tuple | None:
    """The (value, grad) of the single line-search state inside an optimizer state."""
    found = []

    def visit(node):
        if isinstance(node, ScaleByZoomLinesearchState | ScaleByBacktrackingLinesearchState):
            if node.grad is not None:
                found.append((node.value, node.grad))
            return
        if isinstance(node, tuple | list):
            for c in node:
                visit(c)
        elif isinstance(node, dict):
            for c in node.values():
                visit(c)

    visit(state)
    if len(found) != 1:
        if len(found) > 1:
            raise ValueError(
                "value_and_grad_from_state: found several line-search states storing a value"
            )
        return None
    return found[0]
