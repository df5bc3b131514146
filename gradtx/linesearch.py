"""Line searches as transforms: the step length along the incoming direction, chosen by
evaluating the objective.

Both take the extra keyword arguments ``value`` (``f(θ)``), ``grad`` (``∇f(θ)``) and ``value_fn``
(``f``) in ``update``; any other extra keyword argument is passed to ``value_fn``, and one that
``value_fn`` does not accept is a ``TypeError`` (as in optax).
They store the value and gradient at the accepted point in their state, so the next iteration
need not compute them again: see :func:`value_and_grad_from_state`. The outcome of each search
is reported in ``state.info.status`` (a :class:`LinesearchStatus`).
"""

from __future__ import annotations

import enum
import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import numerics as tree_lib
from gradtx.core import (
    GradientTransformation,
    _concrete_array,
    check_count,
    check_nonnegative,
    check_range,
    concrete_float,
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
    step returned is one with sufficient decrease if any was found (zoom: the safe step, see
    :class:`scale_by_zoom_linesearch`), else 0.
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


def _slope(direction: Any, grad: Any, dtype: Any = None) -> jax.Array:
    """``Re <d, ∇f>``, accumulated in ``dtype`` (at least that of the leaves) when given."""
    if dtype is not None:
        up = lambda x: x if x is None else x.astype(jnp.promote_types(x.dtype, dtype))  # noqa: E731
        direction = jax.tree_util.tree_map(up, direction, is_leaf=_none)
        grad = jax.tree_util.tree_map(up, grad, is_leaf=_none)
    out = jnp.real(tree_lib.tree_vdot(grad, direction))
    return out if dtype is None else out.astype(dtype)


def _add_scaled(params: Any, t: Any, direction: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda p, d: None if p is None else (p + t * d).astype(jnp.result_type(p)),
        params,
        direction,
        is_leaf=_none,
    )


def _fn_kwargs(owner: str, value_fn: Callable, extra_args: dict) -> dict:
    """The extra keyword arguments for ``value_fn``: all of them if it takes ``**kwargs`` (or
    its signature cannot be read); a ``TypeError`` naming those it does not accept."""
    if not extra_args:
        return {}
    try:
        sig = inspect.signature(value_fn)
    except (TypeError, ValueError):
        return dict(extra_args)
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict(extra_args)
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(k for k in extra_args if k not in names)
    if unknown:
        raise TypeError(
            f"{owner}.update: got the keyword argument(s) {unknown}, which value_fn does not "
            "accept (extra keyword arguments of update are passed to value_fn)"
        )
    return dict(extra_args)


def _check_allowing_inf(owner: str, name: str, value: Any, **limits: Any) -> None:
    """``check_range``, where ``+inf`` (or an array element equal to it) is also accepted."""
    x = concrete_float(value)
    if x is not None and x == math.inf:
        return
    arr = _concrete_array(value) if x is None else None
    if arr is not None:
        value = arr[~np.isposinf(arr)]
    check_range(owner, name, value, **limits)


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

    with ``c = slope_rtol``, ``β = decrease_factor``, ``γ = increase_factor`` and
    ``η_prev = 1`` before the first search (as in optax). ``c = 0`` asks only for
    ``f(θ + η d) <= (1 + rtol) f(θ) + atol``; ``γ = math.inf`` starts every search at ``η_max``.
    The update is ``η d``. At most ``max_backtracking_steps + 1`` evaluations; when none
    passes the step is 0 and ``info.status`` says why (optax takes the last, failing trial
    instead: a step without sufficient decrease may increase ``f``). The scalars of the search
    are computed in float32 at least (float16/bfloat16 parameters are promoted), whatever the
    dtypes of the hyperparameters.

    Args:
        max_backtracking_steps: how many times the step may be reduced.
        slope_rtol: ``c`` in the condition, in [0, 1).
        decrease_factor: ``β`` in (0, 1).
        increase_factor: ``γ >= 1`` applied to the previous step to start the next search
            (``math.inf``: start at ``max_learning_rate`` every time).
        max_learning_rate: ``η_max``.
        atol: absolute slack in the condition.
        rtol: relative slack on ``f(θ)`` in the condition.
        store_grad: also compute and store ``∇f`` at the accepted point (for
            :func:`value_and_grad_from_state`).
        verbose: print the outcome of searches that fail.

    ``update`` takes the keyword arguments ``value``, ``grad`` and ``value_fn``; any other
    keyword argument is passed to ``value_fn``, and one it does not accept is a ``TypeError``.

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
        check_count(o, "max_backtracking_steps", self.max_backtracking_steps)
        check_range(o, "slope_rtol", self.slope_rtol, low=0, high=1, high_open=True)
        check_range(
            o, "decrease_factor", self.decrease_factor, low=0, high=1, low_open=True, high_open=True
        )
        _check_allowing_inf(o, "increase_factor", self.increase_factor, low=1)
        check_range(o, "max_learning_rate", self.max_learning_rate, low=0, low_open=True)
        check_nonnegative(o, "atol", self.atol)
        check_nonnegative(o, "rtol", self.rtol)

    def init(self, params):
        dt = _real_dtype_of(params)
        return ScaleByBacktrackingLinesearchState(
            learning_rate=jnp.ones([], dt),
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
        fn = _bind(owner, value_fn, extra_args)
        dt = state.value.dtype
        cd = tree_lib.compute_dtype(dt)
        c, beta, gamma, max_lr, atol, rtol = (
            jnp.asarray(h, cd)
            for h in (
                self.slope_rtol,
                self.decrease_factor,
                self.increase_factor,
                self.max_learning_rate,
                self.atol,
                self.rtol,
            )
        )
        value = jnp.asarray(value, cd)
        slope = _slope(updates, grad, cd)
        descent = jnp.isfinite(slope) & (slope < 0)
        prev = state.learning_rate.astype(cd)
        t0 = jnp.where(jnp.isinf(gamma), max_lr, jnp.minimum(gamma * prev, max_lr))

        def trial(t):
            x = _add_scaled(params, t, updates)
            if self.store_grad:
                v, g = jax.value_and_grad(fn)(x)
                g = tree_lib.tree_cast_like(g, state.grad)
            else:
                v, g = fn(x), None
            v = jnp.asarray(v, cd)
            err = v - (1.0 + rtol) * value - t * c * slope
            err = jnp.where(jnp.isfinite(v) & ~jnp.isnan(err), jnp.maximum(err, 0.0), jnp.inf)
            return v, g, err

        def cond(carry):
            k, _, _, _, err = carry
            return descent & (err > atol) & (k <= self.max_backtracking_steps)

        def body(carry):
            k, t, _, _, _ = carry
            t = jnp.where(k > 0, beta * t, t)
            v, g, err = trial(t)
            return k + 1, t, v, g, err

        g0 = tree_lib.tree_cast_like(grad, state.grad) if self.store_grad else None
        init = (jnp.zeros([], jnp.int32), t0, value, g0, jnp.asarray(jnp.inf, cd))
        k, t, v, g, err = jax.lax.while_loop(cond, body, init)
        ok = err <= atol
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
            new_grad = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), g, g0)
        if self.verbose:
            _report_failure(owner, status, k)
        info = BacktrackingLinesearchInfo(
            num_linesearch_steps=k, decrease_error=err.astype(dt), status=status
        )
        out = tree_lib.tree_scale(step, updates)
        return out, ScaleByBacktrackingLinesearchState(
            learning_rate=jnp.where(descent, t, prev).astype(dt),
            value=new_value.astype(dt),
            grad=new_grad,
            info=info,
        )


def _bind(owner: str, value_fn: Callable, extra_args: dict) -> Callable:
    kwargs = _fn_kwargs(owner, value_fn, extra_args)
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
    zooming: jax.Array  # False: still bracketing (Algorithm 3.5); True: zooming (3.6)
    done: jax.Array  # the last trial meets both conditions
    stop: jax.Array  # ended on the safe step (at the largest step, or the bracket is too small)
    last: tuple  # (t, f, df) of the last trial; (0, φ(0), φ'(0)) before the first
    last_aux: Any  # aux (the gradient) at the last trial
    lo: tuple  # (t, f, df): the end of the bracket with sufficient decrease and the lower value
    hi: tuple  # (t, f, df): the other end
    ref: tuple  # (t, f): the end that left the bracket last (the cubic's third point)
    safe: tuple  # (t, f, df, aux): a step with sufficient decrease (t = 0: none yet)
    nonfinite: jax.Array


def _cubic_min(a, fa, da, b, fb, c, fc):
    """Minimiser of the cubic ``p`` with ``p(a) = fa``, ``p'(a) = da``, ``p(b) = fb`` and
    ``p(c) = fc`` (NaN or inf when it has none).

    With ``p(a + u) = A u³ + B u² + da u + fa`` the two conditions at ``b`` and ``c`` are linear
    in ``(A, B)``; the minimiser is the root ``u = (−B + √(B² − 3 A da)) / (3A)`` of ``p'``.
    """
    db, dc = b - a, c - a
    rb = fb - fa - da * db
    rc = fc - fa - da * dc
    det = (db * dc) ** 2 * (db - dc)
    cube = (dc**2 * rb - db**2 * rc) / det
    square = (db**3 * rc - dc**3 * rb) / det
    return a + (-square + jnp.sqrt(square * square - 3.0 * cube * da)) / (3.0 * cube)


def _hermite_cubic_min(a, fa, da, b, fb, db):
    """Minimiser of the cubic interpolating values and slopes at ``a`` and ``b`` (Nocedal &
    Wright, eq. 3.59); NaN when the cubic has no minimiser."""
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - da * db
    d2 = jnp.sign(b - a) * jnp.sqrt(jnp.where(disc >= 0, disc, jnp.nan))
    return b - (b - a) * (db + d2 - d1) / (db - da + 2.0 * d2)


def _quadratic_min(a, fa, da, b, fb):
    """Minimiser of the parabola ``p`` with ``p(a) = fa``, ``p'(a) = da`` and ``p(b) = fb``:
    ``a − da / (2B)`` with ``B = (fb − fa − da (b − a)) / (b − a)²``."""
    db = b - a
    curv = (fb - fa - da * db) / (db * db)
    return a - da / (2.0 * curv)


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
    kinked: bool = False,
) -> tuple[jax.Array, jax.Array, Any, ZoomLinesearchInfo]:
    """Strong-Wolfe line search on ``φ(t)`` (Nocedal & Wright, Algorithms 3.5 and 3.6); see
    :class:`scale_by_zoom_linesearch` for the rules.

    ``kinked=False`` chooses the zoom trials as optax does (the cubic through three values and
    one slope, else the parabola, else the midpoint) and stops on a bracket narrower than
    ``stepsize_precision``. ``kinked=True`` is for a ``φ`` with kinks (the projected search of
    :func:`gradtx.minimize`, where variables reach their bounds): the cubic through both ends'
    values and slopes (eq. 3.59), kept in the middle 80% of the bracket, else the midpoint, and
    the search stops as soon as the bracket (after the trial) is narrower than
    ``stepsize_precision`` times its right end, so that a step next to a kink is located to
    relative precision.

    ``evaluate(t) -> (φ(t), aux, φ'(t))``, where ``aux`` (the gradient at the trial point)
    has the structure and dtypes of ``grad0``. One evaluation per iteration of a single
    ``lax.while_loop``. The scalars are carried in the compute dtype of ``value0`` (float32 for
    float16/bfloat16) and every hyperparameter is cast to it, so the carry's dtypes do not
    depend on the hyperparameters' dtypes. Returns ``(step, value, aux, info)``.
    """
    dt = tree_lib.compute_dtype(tree_lib.real_dtype(jnp.result_type(value0)))
    value0 = jnp.asarray(value0, dt)
    slope0 = jnp.asarray(slope0, dt)
    t0 = jnp.asarray(t0, dt)
    tol, c1, c2, grow, precision = (
        jnp.asarray(h, dt) for h in (tol, c1, c2, increase_factor, stepsize_precision)
    )
    inf = jnp.asarray(jnp.inf, dt)
    zero = jnp.zeros([], dt)
    descent = jnp.isfinite(slope0) & (slope0 < 0) & jnp.isfinite(value0)
    max_t = inf if max_stepsize is None else jnp.asarray(max_stepsize, dt)

    def errors(t, f, df):
        """``(decrease error, curvature error)``: how far each condition is from holding."""
        dec = f - value0 - c1 * t * slope0  # Armijo
        if approx_dec_rtol is not None:  # Hager & Zhang's approximate Wolfe, for flat tails
            approx = jnp.maximum(
                df - (2.0 * c1 - 1.0) * slope0,
                f - value0 - jnp.asarray(approx_dec_rtol, dt) * jnp.abs(value0),
            )
            dec = jnp.minimum(dec, approx)
        finite = jnp.isfinite(f) & jnp.isfinite(df)
        dec = jnp.where(finite & ~jnp.isnan(dec), jnp.maximum(dec, 0.0), inf)
        curv = jnp.maximum(jnp.abs(df) - c2 * jnp.abs(slope0), 0.0)
        curv = jnp.where(jnp.isnan(curv), inf, curv)
        return dec, curv

    def pick(cond, a, b):
        return jax.tree_util.tree_map(lambda x, y: jnp.where(cond, x, y), a, b)

    def body(s: _Zoom) -> _Zoom:
        # The next trial: the growing step while bracketing, an interpolant's minimiser while
        # zooming (the cubic through lo, hi and ref, else the parabola through lo and hi, each
        # only well inside the bracket, else the midpoint).
        (a, fa, da), (b, fb, db) = s.lo, s.hi
        width = jnp.abs(b - a)
        left, right = jnp.minimum(a, b), jnp.maximum(a, b)

        def inside(x, margin):
            return (x > left + margin * width) & (x < right - margin * width)

        if kinked:
            cubic = _hermite_cubic_min(a, fa, da, b, fb, db)
            t_zoom = jnp.where(inside(cubic, 0.1), cubic, 0.5 * (a + b))
        else:
            cubic = _cubic_min(a, fa, da, b, fb, *s.ref)
            quad = _quadratic_min(a, fa, da, b, fb)
            t_zoom = jnp.where(
                inside(cubic, 0.2), cubic, jnp.where(inside(quad, 0.1), quad, 0.5 * (a + b))
            )
        t_grow = jnp.where(s.k == 0, t0, grow * s.last[0])
        at_max = t_grow >= max_t
        t = jnp.where(s.zooming, t_zoom, jnp.minimum(t_grow, max_t))
        too_narrow = width <= precision

        f, aux, df = evaluate(t)
        f, df = jnp.asarray(f, dt), jnp.asarray(df, dt)
        dec, curv = errors(t, f, df)
        decrease = dec <= tol
        done = jnp.maximum(dec, curv) <= tol
        new = (t, f, df)

        # Bracketing (Algorithm 3.5): the trial is too long (no sufficient decrease, or not
        # below the previous trial) or the slope has turned: a bracket is found.
        b_hi = (dec > 0) | ((s.k > 0) & (f >= s.last[1]))
        b_lo = (~b_hi) & (df >= 0)
        found = b_hi | b_lo | done
        b_lo_pt = pick(b_lo, new, s.last)
        b_hi_pt = pick(b_lo, s.last, new)
        # Zooming (Algorithm 3.6): a trial that is too long replaces hi; else it becomes lo,
        # and the old lo becomes hi when the trial's slope points towards hi.
        z_hi = (dec > 0) | (f >= fa)
        z_flip = (~z_hi) & (df * (b - a) >= 0)
        z_lo_pt = pick(z_hi, s.lo, new)
        z_hi_pt = pick(z_hi, new, pick(z_flip, s.lo, s.hi))
        z_ref = pick(z_hi | z_flip, s.hi[:2], s.lo[:2])

        # The safe step: while bracketing the latest trial with sufficient decrease; while
        # zooming, one with sufficient decrease and a lower value.
        take = decrease & ((~s.zooming) | (f < s.safe[1]))
        safe = pick(take, (t, f, df, aux), s.safe)
        lo = pick(s.zooming, z_lo_pt, b_lo_pt)
        hi = pick(s.zooming, z_hi_pt, b_hi_pt)
        zooming = s.zooming | found
        if kinked:  # the bracket after this trial, relative to its right end
            after = jnp.abs(hi[0] - lo[0])
            too_narrow = after <= precision * jnp.maximum(jnp.maximum(lo[0], hi[0]), 1e-30)
            narrow_stop = zooming & too_narrow
        else:  # the bracket the trial was taken in (optax)
            narrow_stop = s.zooming & too_narrow
        stop = (~done) & ((narrow_stop & (safe[0] > 0)) | ((~s.zooming) & at_max & ~found))
        return _Zoom(
            k=s.k + 1,
            zooming=zooming,
            done=done,
            stop=stop,
            last=new,
            last_aux=aux,
            lo=lo,
            hi=hi,
            ref=pick(s.zooming, z_ref, b_lo_pt[:2]),
            safe=safe,
            nonfinite=s.nonfinite | ~(jnp.isfinite(f) & jnp.isfinite(df)),
        )

    def cond(s: _Zoom):
        return descent & (~s.done) & (~s.stop) & (s.k < max_steps)

    start = (zero, value0, slope0)
    init = _Zoom(
        k=jnp.zeros([], jnp.int32),
        zooming=jnp.asarray(False),
        done=jnp.asarray(False),
        stop=jnp.asarray(False),
        last=start,
        last_aux=grad0,
        lo=start,
        hi=start,
        ref=start[:2],
        safe=(zero, value0, slope0, grad0),
        nonfinite=jnp.asarray(False),
    )
    s = jax.lax.while_loop(cond, body, init)
    # The accepted step (both conditions), else the safe step (sufficient decrease), else 0.
    step, value, slope, aux = pick(s.done, (*s.last, s.last_aux), s.safe)
    found = step > 0
    dec_err, curv_err = errors(step, value, slope)
    dec_err = jnp.where(found, dec_err, inf)
    curv_err = jnp.where(found, curv_err, inf)
    status = jnp.where(
        ~descent,
        LinesearchStatus.NOT_DESCENT_DIRECTION,
        jnp.where(
            s.done,
            LinesearchStatus.SUCCESS,
            jnp.where(
                s.stop,
                LinesearchStatus.SUFFICIENT_DECREASE_ONLY,
                jnp.where(
                    (~found) & s.nonfinite,
                    LinesearchStatus.NON_FINITE_VALUE,
                    LinesearchStatus.MAX_STEPS_REACHED,
                ),
            ),
        ),
    ).astype(jnp.int32)
    info = ZoomLinesearchInfo(
        num_linesearch_steps=s.k,
        decrease_error=dec_err,
        curvature_error=curv_err,
        status=status,
    )
    return step, value, aux, info


@transform
class scale_by_zoom_linesearch(GradientTransformation):
    """Zoom line search: a step satisfying the strong Wolfe conditions (Nocedal & Wright,
    Algorithms 3.5 and 3.6), with optax's rules for choosing the trials.

    With ``φ(η) = f(θ + η d)``:

    .. math::
        φ(η) \\le φ(0) + c_1 η φ'(0) + \\text{tol}\\quad\\text{(sufficient decrease)},\\qquad
        |φ'(η)| \\le c_2 |φ'(0)| + \\text{tol}\\quad\\text{(curvature)}.

    Where values are flat to rounding (``φ(η) <= φ(0) + approx_dec_rtol |φ(0)| + tol``) the
    decrease condition may instead be met by Hager & Zhang's approximate form
    ``φ'(η) <= (2c_1 − 1) φ'(0) + tol``.

    *Bracketing* (Algorithm 3.5) tries ``η_0`` (1, or the previous search's step with
    ``initial_guess_strategy="keep"``), then multiplies the trial by ``increase_factor``
    (capped at ``max_learning_rate``) until a trial is too long (no sufficient decrease, or a
    value not below the previous trial's: the bracket is [previous, trial]) or has
    ``φ' >= 0`` (the bracket is [trial, previous]). *Zooming* (Algorithm 3.6) keeps a bracket
    ``[lo, hi]``, ``lo`` having sufficient decrease and the lower value, and tries the
    minimiser of the cubic through ``φ(lo), φ'(lo), φ(hi)`` and the value at the end that left
    the bracket last, if it lies in the middle 60% of the bracket; else the minimiser of the
    parabola through ``φ(lo), φ'(lo), φ(hi)`` if it lies in the middle 80%; else the midpoint.
    A trial that is too long (as above, against ``lo``) becomes ``hi``; otherwise it becomes
    ``lo``, and the old ``lo`` becomes ``hi`` when ``φ'(trial) (hi − lo) >= 0``. A trial with a
    non-finite value or slope is too long.

    Differences from the book's algorithm, as in optax: a trial meeting both conditions ends
    the search even when its value is not below the previous trial's (bracketing) or
    ``φ(lo)`` (zooming), so both conditions always hold at a ``SUCCESS`` step; the
    interpolation is the cubic/parabola rule above (SciPy's ``zoom`` uses the same). When the
    bracket is narrower than ``stepsize_precision`` (an absolute width) and a step with
    sufficient decrease is known, the search stops there; at ``max_learning_rate`` without a
    bracket it stops at ``max_learning_rate``. Both end with ``SUFFICIENT_DECREASE_ONLY``; the
    safe step is the latest trial with sufficient decrease found while bracketing, replaced
    while zooming by one with a lower value.

    Differences from optax, on purpose: a direction that is not a descent direction is not
    searched (step 0, ``NOT_DESCENT_DIRECTION``); when the budget runs out the step is the
    safe one, or 0 (optax takes the last trial even without sufficient decrease, which can
    increase ``f``); and with ``"keep"`` a failed search leaves the previous step as the next
    initial guess (optax's would be 0).

    ``slope_rtol=0`` asks for simple decrease; ``curv_rtol=math.inf`` drops the curvature
    condition (the search then only looks for sufficient decrease, by interpolation);
    ``increase_factor=math.inf`` jumps from ``η_0`` straight to ``max_learning_rate`` (which
    must then be given). The scalars are computed in float32 at least (float16/bfloat16
    parameters are promoted) whatever the dtypes of the hyperparameters. The update is
    ``η d``; the value and gradient at the accepted point are stored for
    :func:`value_and_grad_from_state`.

    Args:
        max_linesearch_steps: most value-and-gradient evaluations per search.
        max_learning_rate: largest step tried (``None``: unbounded).
        tol: absolute slack in both conditions.
        increase_factor: growth of the step while bracketing (> 1, or ``math.inf``).
        slope_rtol: ``c_1``, in [0, 1).
        curv_rtol: ``c_2`` in (0, 1), normally above ``c_1`` (``math.inf``: no curvature
            condition).
        approx_dec_rtol: relative band for the approximate decrease condition (``None``: off).
        stepsize_precision: stop zooming when the bracket is narrower than this and a step
            with sufficient decrease is known.
        initial_guess_strategy: ``"one"`` (start at 1, right for quasi-Newton directions) or
            ``"keep"`` (start from the previous step).
        verbose: print the outcome of searches that fail.

    ``update`` takes the keyword arguments ``value``, ``grad`` and ``value_fn``; any other
    keyword argument is passed to ``value_fn``, and one it does not accept is a ``TypeError``.

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
        check_count(o, "max_linesearch_steps", self.max_linesearch_steps, low=1)
        if self.max_learning_rate is not None:
            check_range(o, "max_learning_rate", self.max_learning_rate, low=0, low_open=True)
        check_nonnegative(o, "tol", self.tol)
        _check_allowing_inf(o, "increase_factor", self.increase_factor, low=1, low_open=True)
        if self.max_learning_rate is None and _has_inf(self.increase_factor):
            raise ValueError(
                f"{o}: increase_factor=inf needs max_learning_rate (the step it jumps to), "
                "got max_learning_rate=None"
            )
        check_range(o, "slope_rtol", self.slope_rtol, low=0, high=1, high_open=True)
        _check_allowing_inf(
            o, "curv_rtol", self.curv_rtol, low=0, high=1, low_open=True, high_open=True
        )
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
        fn = _bind(owner, value_fn, extra_args)
        dt = state.value.dtype
        cd = tree_lib.compute_dtype(dt)
        vg = jax.value_and_grad(fn)

        def evaluate(t):
            v, g = vg(_add_scaled(params, t, updates))
            g = tree_lib.tree_cast_like(g, state.grad)
            return v, g, _slope(updates, g, cd)

        t0 = 1.0 if self.initial_guess_strategy == "one" else state.learning_rate
        step, new_value, new_grad, info = _zoom_search(
            evaluate,
            jnp.asarray(value, cd),
            _slope(updates, grad, cd),
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
        info = info._replace(
            decrease_error=info.decrease_error.astype(dt),
            curvature_error=info.curvature_error.astype(dt),
        )
        return tree_lib.tree_scale(step, updates), ScaleByZoomLinesearchState(
            learning_rate=lr, value=new_value.astype(dt), grad=new_grad, info=info
        )


def _has_inf(value: Any) -> bool:
    """Whether a concrete value is, or contains, ``+inf``."""
    x = concrete_float(value)
    if x is not None:
        return x == math.inf
    arr = _concrete_array(value)
    return arr is not None and bool(np.isposinf(arr).any())


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
