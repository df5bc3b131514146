"""``minimize``: a whole L-BFGS solve in one compiled call, with optional box bounds.

The loop is a ``lax.while_loop`` inside one ``jax.jit``: after the first call for a given
objective (and shapes), solving again from another start, with other tolerances, data (``args``)
or bounds does not recompile. Stopping rules and defaults follow SciPy's L-BFGS-B so that
iteration and evaluation counts can be compared.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gradtx.lbfgs import (
    _curvature_ok,
    _identity_scale,
    _store_pair,
    _two_loop,
    scale_by_lbfgs,
)
from gradtx.linesearch import LinesearchStatus, _zoom_search, scale_by_zoom_linesearch
from gradtx.optimizers.full_batch import lbfgs

__all__ = ["minimize", "MinimizeResult", "MinimizeStatus"]

_RUNNING = -1
_INT_TYPES = (int, np.integer)
_METHODS = ("lbfgs", "l-bfgs", "l-bfgs-b", "lbfgsb")
_MAX_COUNT = 2**24  # counts are exact in float32 up to here
_REAL_TYPES = (int, float, np.integer, np.floating)


class MinimizeStatus(enum.IntEnum):
    """Why :func:`minimize` stopped (``result.status``); ``result.message`` says it in words."""

    GTOL = 0
    FTOL = 1
    MAXITER = 2
    MAXFEV = 3
    LINESEARCH_NOT_DESCENT = 4
    LINESEARCH_MAX_STEPS = 5
    NON_FINITE = 6


_LAST_SUCCESS = int(MinimizeStatus.FTOL)  # a plain int: comparing with the enum is slow

_MESSAGES = {
    MinimizeStatus.GTOL: "converged: max |projected gradient| <= gtol",
    MinimizeStatus.FTOL: "converged: relative reduction of f <= ftol",
    MinimizeStatus.MAXITER: "stopped: maximum number of iterations reached",
    MinimizeStatus.MAXFEV: "stopped: maximum number of function evaluations reached",
    MinimizeStatus.LINESEARCH_NOT_DESCENT: "failed: line search got a non-descent direction",
    MinimizeStatus.LINESEARCH_MAX_STEPS: "failed: line search found no decrease within maxls",
    MinimizeStatus.NON_FINITE: "failed: the objective or its gradient is not finite",
}


class MinimizeResult(NamedTuple):
    """The outcome of :func:`minimize`.

    ``x`` and ``grad`` are JAX arrays; ``fun`` and ``grad_norm`` are NumPy scalars (float32 when
    ``x0`` is float16 or bfloat16, holding the same value), the counts
    and ``status`` Python ints and ``success`` a bool (all JAX scalars when :func:`minimize` is
    called inside a traced function).

    Attributes:
        x: the solution, with the structure of ``x0``.
        fun: ``f(x)``.
        grad: ``∇f(x)``, with the structure of ``x0``.
        grad_norm: ``max_i |P(x − ∇f(x)) − x|_i``, the projected gradient's largest entry
            (the plain gradient's when there are no bounds): the quantity tested against gtol.
        nit: iterations.
        nfev: value-and-gradient evaluations.
        status: a :class:`MinimizeStatus` code.
        success: whether a convergence test (gtol or ftol) stopped the solve.
    """

    x: Any
    fun: jax.Array
    grad: Any
    grad_norm: jax.Array
    nit: jax.Array
    nfev: jax.Array
    status: jax.Array
    success: jax.Array

    @property
    def message(self) -> str:
        """``status`` in words."""
        return _MESSAGES[MinimizeStatus(int(self.status))]


class _Loop(NamedTuple):
    x: jax.Array
    f: jax.Array
    f_prev: jax.Array
    g: jax.Array
    k: jax.Array
    nfev: jax.Array
    ls_status: jax.Array
    opt: Any


def _print_progress(k, f, gnorm, nfev):
    print(
        f"minimize: iter {int(k):5d}  f = {float(f):.6e}  |pg|max = {float(gnorm):.3e}  "
        f"nfev = {int(nfev)}"
    )


def _stop_status(
    f_old, f_new, pgnorm, k, nfev, ls_status, check_rel, progressed, maxiter, maxfev, gtol, ftol
):
    """SciPy's order of tests: gradient, then relative reduction, then the budgets."""
    rel = (f_old - f_new) <= ftol * jnp.maximum(jnp.maximum(jnp.abs(f_old), jnp.abs(f_new)), 1.0)
    ls_fail = jnp.where(
        ls_status == LinesearchStatus.NOT_DESCENT_DIRECTION,
        MinimizeStatus.LINESEARCH_NOT_DESCENT,
        jnp.where(
            ls_status == LinesearchStatus.NON_FINITE_VALUE,
            MinimizeStatus.NON_FINITE,
            MinimizeStatus.LINESEARCH_MAX_STEPS,
        ),
    )
    status = jnp.full([], _RUNNING, jnp.int32)
    status = jnp.where(nfev >= maxfev, MinimizeStatus.MAXFEV, status)
    status = jnp.where(k >= maxiter, MinimizeStatus.MAXITER, status)
    status = jnp.where(check_rel & rel, MinimizeStatus.FTOL, status)
    status = jnp.where(progressed, status, ls_fail)
    status = jnp.where(pgnorm <= gtol, MinimizeStatus.GTOL, status)
    status = jnp.where(
        jnp.isfinite(f_new) & jnp.isfinite(pgnorm), status, MinimizeStatus.NON_FINITE
    )
    return status.astype(jnp.int32)


def _maybe_print(print_every, k, f, gnorm, nfev):
    if print_every:
        jax.lax.cond(
            (k % print_every) == 0,
            lambda: jax.debug.callback(_print_progress, k, f, gnorm, nfev),
            lambda: None,
        )


def _solve(fun, x0, args, bounds, options, *, memory_size, print_every):
    # ``options`` packs the numeric settings into one array (one host-to-device transfer).
    maxiter, maxfev, maxls = (options[i].astype(jnp.int32) for i in (0, 1, 4))
    gtol, ftol = options[2], options[3]
    bounded = bounds is not None
    x_flat, unravel = ravel_pytree(x0)
    dt = x_flat.dtype

    def f(v):
        out = jnp.asarray(fun(unravel(v), *args))
        if out.shape != () or not jnp.issubdtype(out.dtype, jnp.floating):
            raise TypeError(
                f"minimize: fun must return a real floating scalar, got shape {out.shape} and "
                f"dtype {out.dtype}"
            )
        return out.astype(dt)

    vg = jax.value_and_grad(f)
    lo, hi = (jnp.asarray(b, dt) for b in bounds) if bounded else (None, None)
    proj = (lambda v: jnp.clip(v, lo, hi)) if bounded else (lambda v: v)

    def pg_norm(x, g):
        if not x.size:
            return jnp.zeros([], dt)
        if not bounded:
            return jnp.max(jnp.abs(g))
        # |P(x − g) − x|_i = min(|g_i|, distance to the bound g_i points away from), formed
        # without computing x − g: in float32 far from 0, x − g rounds to x for a small g.
        return jnp.max(jnp.where(g < 0, jnp.minimum(-g, hi - x), jnp.minimum(g, x - lo)))

    x = proj(x_flat)
    f0, g0 = vg(x)
    ls_kw = dict(max_linesearch_steps=maxls, initial_guess_strategy="one")
    if bounded:
        opt = scale_by_lbfgs(memory_size=memory_size).init(x)
    else:
        tx = lbfgs(memory_size=memory_size, linesearch=scale_by_zoom_linesearch(**ls_kw))
        opt = tx.init(x)
    zoom = scale_by_zoom_linesearch(**ls_kw)
    c1 = zoom.slope_rtol

    def body_unbounded(s: _Loop) -> _Loop:
        u, opt = tx.update(s.g, s.opt, s.x, value=s.f, grad=s.g, value_fn=f)
        ls = opt[2]
        # A failed search returns a zero step, but 0 * (a non-finite direction) is NaN: keep x,
        # so the result's x is the point whose value and gradient it reports.
        x_new = s.x + u
        x_new = jax.lax.select(jnp.all(jnp.isfinite(x_new)), x_new, s.x)
        return _advance(s, x_new, ls.value, ls.grad, ls.info, opt)

    def body_bounded(s: _Loop) -> _Loop:
        x, g, mem = s.x, s.g, s.opt
        active = ((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))
        g_free = jnp.where(active, 0.0, g)
        gamma = _identity_scale(
            g_free, mem.diff_updates_memory, mem.weights_memory, mem.num_pairs, True
        )
        # The model restricted to the free variables: pairs with the held coordinates removed
        # (a pair whose restricted curvature is not positive is left out).
        free = ~active
        s_f = jnp.where(free, mem.diff_params_memory, 0.0)
        y_f = jnp.where(free, mem.diff_updates_memory, 0.0)
        sy_f = jnp.sum(s_f * y_f, axis=1)
        ok = (mem.weights_memory > 0) & (sy_f > jnp.finfo(dt).eps * jnp.sum(y_f * y_f, axis=1))
        w_f = jnp.where(ok, 1.0 / jnp.where(ok, sy_f, 1.0), 0.0).astype(dt)
        d = -_two_loop(g_free, s_f, y_f, w_f, mem.num_pairs, gamma)
        blocked = active | ((x <= lo) & (d < 0)) | ((x >= hi) & (d > 0))
        d = jnp.where(blocked, 0.0, d)
        slope = jnp.vdot(g, d)
        # Fall back to projected steepest descent if the masked direction is not downhill.
        sd = -g_free * jnp.minimum(1.0, 1.0 / jnp.linalg.norm(g_free))
        d = jnp.where(slope < 0, d, sd)
        slope = jnp.vdot(g, d)

        def evaluate(t):
            # The search runs on φ(t) = f(P(x + t d)) + c1 (t <g, d> − <g, P(x + t d) − x>):
            # its Armijo test ``φ(t) <= f + c1 t <g, d>`` is the projected Armijo test
            # ``f(P(x + t d)) <= f + c1 <g, P(x + t d) − x>`` (a coordinate clipped at its bound
            # no longer counts towards the promised decrease). The true value rides with the
            # gradient.
            z = x + t * d
            xz = proj(z)
            v, gt = vg(xz)
            moving = (z > lo) & (z < hi)
            d_move = jnp.where(moving, d, 0.0)
            phi = v + c1 * (t * slope - jnp.vdot(g, xz - x))
            dphi = jnp.vdot(gt, d_move) + c1 * (slope - jnp.vdot(g, d_move))
            return phi, (gt, v), dphi

        step, _, (g_new, f_new), info = _zoom_search(
            evaluate,
            s.f,
            slope,
            (g, s.f),
            jnp.ones([], dt),
            max_steps=maxls,
            max_stepsize=zoom.max_learning_rate,
            tol=zoom.tol,
            increase_factor=zoom.increase_factor,
            c1=c1,
            c2=zoom.curv_rtol,
            approx_dec_rtol=zoom.approx_dec_rtol,
            stepsize_precision=zoom.stepsize_precision,
            kinked=True,  # φ has kinks where variables reach their bounds
        )
        x_new = proj(x + step * d)
        sv, yv = x_new - x, g_new - g
        accept = (step > 0) & _curvature_ok(sv, yv)
        s_mem, y_mem, w_mem, num_pairs = _store_pair(mem, sv, yv, accept)
        # A failed search with curvature pairs stored: forget them and try again from x along
        # the projected steepest descent (as L-BFGS-B does) before declaring failure. The retry
        # is not an iteration; the stopping test sees the previous iteration's values.
        retry = (
            (step <= 0) & (info.status != LinesearchStatus.NON_FINITE_VALUE) & (mem.num_pairs > 0)
        )
        mem = mem._replace(
            diff_params_memory=s_mem,
            diff_updates_memory=y_mem,
            weights_memory=jnp.where(retry, 0.0, w_mem).astype(w_mem.dtype),
            num_pairs=jnp.where(retry, 0, num_pairs).astype(num_pairs.dtype),
        )
        new = _advance(s, x_new, f_new, g_new, info, mem)
        return new._replace(
            k=jnp.where(retry, s.k, new.k),
            f_prev=jnp.where(retry, s.f_prev, new.f_prev),
            ls_status=jnp.where(retry, s.ls_status, new.ls_status).astype(new.ls_status.dtype),
        )

    def _advance(s, x_new, f_new, g_new, info, opt):
        k = s.k + 1
        nfev = s.nfev + info.num_linesearch_steps
        if print_every:
            _maybe_print(print_every, k, f_new, pg_norm(x_new, g_new), nfev)
        return _Loop(x=x_new, f=f_new, f_prev=s.f, g=g_new, k=k, nfev=nfev,
                     ls_status=info.status, opt=opt)  # fmt: skip

    def status(s: _Loop) -> jax.Array:
        # The stopping tests live in the loop's condition (evaluated once per iteration, and
        # once more for the result): the body then carries no status of its own.
        first = s.k == 0
        # A step the line search accepted counts as progress even where f is flat to rounding.
        accepted = (s.ls_status == LinesearchStatus.SUCCESS) | (
            s.ls_status == LinesearchStatus.SUFFICIENT_DECREASE_ONLY
        )
        progressed = first | (s.f < s.f_prev) | accepted
        return _stop_status(
            s.f_prev, s.f, pg_norm(s.x, s.g), s.k, s.nfev, s.ls_status, progressed & ~first,
            progressed, maxiter, maxfev, gtol, ftol,
        )  # fmt: skip

    init = _Loop(
        x=x,
        f=f0,
        g=g0,
        k=jnp.zeros([], jnp.int32),
        nfev=jnp.ones([], jnp.int32),
        f_prev=f0,
        ls_status=jnp.zeros([], jnp.int32),
        opt=opt,
    )
    body = body_bounded if bounded else body_unbounded
    s = jax.lax.while_loop(lambda s: status(s) == _RUNNING, body, init)
    # Few outputs: each output buffer costs a few microseconds per call on CPU.
    # Counts travel as floats of at least float32 (exact below 2**24, which maxiter and maxfev
    # are held to): float16/bfloat16 would round a count above 2048/256.
    sdt = jnp.promote_types(dt, jnp.float32)
    stats = jnp.stack(
        [s.f.astype(sdt), pg_norm(s.x, s.g).astype(sdt), s.k.astype(sdt), s.nfev.astype(sdt),
         status(s).astype(sdt)]
    )  # fmt: skip
    return unravel(s.x), unravel(s.g), stats


def _result(x, g, stats) -> MinimizeResult:
    if isinstance(stats, jax.core.Tracer):
        f, gn = stats[0], stats[1]
        nit, nfev, status = (stats[i].astype(jnp.int32) for i in (2, 3, 4))
    else:  # one transfer, then host scalars (no further device dispatches)
        host = np.asarray(stats)
        f, gn = host[0], host[1]
        nit, nfev, status = int(host[2]), int(host[3]), int(host[4])
    return MinimizeResult(
        x=x,
        fun=f,
        grad=g,
        grad_norm=gn,
        nit=nit,
        nfev=nfev,
        status=status,
        success=status <= _LAST_SUCCESS,
    )


@functools.lru_cache(maxsize=64)
def _compiled(fun: Callable, memory_size: int, print_every: int) -> Callable:
    """The jitted solver for one objective (a plain positional call: jit's fast dispatch path)."""
    return jax.jit(functools.partial(_solve, fun, memory_size=memory_size, print_every=print_every))


def _flat_bound(b: Any, x0: Any, n: int, fill: float, which: str) -> Any:
    """A bound (scalar, ``None`` or pytree with ``None`` leaves) as a flat array of shape
    ``(n,)`` in the order of ``ravel_pytree(x0)``: every form of bound gives the solver the same
    input shape, so changing bounds never recompiles. Concrete bounds are checked and become a
    float64 NumPy array; traced ones (``minimize`` inside ``jit``/``vmap``) stay JAX arrays."""
    traced = any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves(b))
    xp = jnp if traced else np
    ft = jnp.result_type(float) if traced else np.float64

    def leaf(v: Any, shape: tuple) -> Any:
        v = fill if v is None else v
        if not traced and np.asarray(v).dtype.kind not in "biuf":
            raise TypeError(f"minimize: bounds {which} must be real numbers, got {v!r}")
        return xp.broadcast_to(xp.asarray(v, ft), shape)

    if b is None or (np.ndim(b) == 0 and not isinstance(b, dict | list | tuple)):
        return leaf(b, (n,))
    if jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(x0)):  # x0 is one array
        try:
            return xp.ravel(leaf(b, np.shape(x0)))
        except ValueError as e:
            raise ValueError(
                f"minimize: bounds {which} must be broadcastable to x0's shape {np.shape(x0)}; "
                f"got {b!r}"
            ) from e
    try:
        tree = jax.tree_util.tree_map(
            lambda bb, p: leaf(bb, np.shape(p)), b, x0, is_leaf=lambda z: z is None
        )
    except ValueError as e:
        raise ValueError(
            f"minimize: bounds {which} must be a scalar, None, or a pytree with the structure of "
            f"x0 (leaves broadcastable to its leaves); got {b!r}"
        ) from e
    return xp.concatenate([xp.ravel(v) for v in jax.tree_util.tree_leaves(tree)])


def minimize(
    fun: Callable[..., Any],
    x0: Any,
    args: Any = (),
    *,
    method: str = "lbfgs",
    bounds: tuple[Any, Any] | None = None,
    tol: float | None = None,
    gtol: float | None = None,
    ftol: float | None = None,
    maxiter: int = 15000,
    maxfev: int = 15000,
    memory_size: int = 10,
    maxls: int = 20,
    print_every: int = 0,
) -> MinimizeResult:
    """Minimise ``fun(x, *args)`` over a pytree ``x`` by L-BFGS, the whole solve in one ``jit``.

    Each iteration moves along ``d = −H_k ∇f`` (:class:`scale_by_lbfgs`, memory
    ``memory_size``) by a step meeting the strong Wolfe conditions
    (:class:`scale_by_zoom_linesearch`, at most ``maxls`` evaluations, first trial 1). Without
    bounds it runs exactly :func:`gradtx.lbfgs` in a ``lax.while_loop``, so its iterates are
    those of the optimizer in your own loop.

    With ``bounds=(lower, upper)`` it runs projected L-BFGS in the manner of L-BFGS-B: the
    variables at a bound whose gradient points outward are held fixed, the quasi-Newton direction
    is computed on the others (from the curvature pairs restricted to them), the line search
    follows the projected path ``P(x + t d) = clip(x + t d, lower, upper)``, and curvature pairs
    with ``<s, y> <= ε_mach <y, y>`` are skipped. The stopping test uses the projected gradient.

    Stops (SciPy's rules) when ``max_i |P(x − ∇f) − x|_i <= gtol``, or when
    ``(f_k − f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol``, or at ``maxiter`` iterations or
    ``maxfev`` evaluations (one evaluation = one value-and-gradient call), or when the line search
    can make no progress.

    The compiled solver is cached by the identity of ``fun`` (with ``memory_size`` and
    ``print_every``): keep the same function object across calls to reuse the compilation, and
    pass data through ``args``; a new ``lambda`` or closure on every call compiles every time.
    The cache holds up to 64 such solvers (the least recently used is dropped).

    Args:
        fun: the objective, ``fun(x, *args) -> scalar``, differentiable by JAX.
        x0: the starting point: any pytree of real arrays (integer leaves become floats;
            complex leaves are refused). A Python list is a pytree of scalars, e.g.
            ``[1.0, 2.0]`` is two 0-d leaves and ``res.x`` is again a list; pass
            ``jnp.array([1.0, 2.0])`` for one vector.
        args: extra arguments for ``fun`` (pytrees of arrays; traced, not baked in). A tuple
            is unpacked, ``fun(x, *args)``; anything else is one argument, ``fun(x, args)`` (as
            in SciPy).
        method: ``"lbfgs"`` (``"l-bfgs-b"`` is accepted as the same).
        bounds: ``(lower, upper)``, each a scalar, ``None`` (unbounded), an array like ``x0``
            (when ``x0`` is one array) or a pytree like ``x0`` (``None`` leaves: unbounded).
            All forms are broadcast to one flat array before the compiled solver, so changing
            them never recompiles (going from no bounds to bounds compiles once more). Bounds
            may be traced (``minimize`` inside ``jit``/``vmap`` over the box); only concrete
            bounds are checked (no NaN, ``lower <= upper``). ``x0`` outside the box is clipped
            into it (as SciPy does).
        tol: sets both ``gtol`` and ``ftol`` (as in ``scipy.optimize.minimize``). This and the
            settings below must be concrete (Python numbers or concrete 0-d arrays), not traced.
        gtol: projected-gradient tolerance (default ``1e-5``).
        ftol: relative-reduction tolerance (default ``2.220446049250313e-09``, SciPy's).
        maxiter: most iterations.
        maxfev: most evaluations.
        memory_size: number of curvature pairs (SciPy's ``maxcor``).
        maxls: most evaluations per line search.
        print_every: print progress every this many iterations from inside the compiled loop
            (``jax.debug.callback``); 0 prints nothing.

    Returns:
        A :class:`MinimizeResult`.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> def rosen(p):
        ...     return (1 - p["a"]) ** 2 + 100 * (p["b"] - p["a"] ** 2) ** 2
        >>> res = gradtx.minimize(rosen, {"a": jnp.array(-1.2), "b": jnp.array(1.0)})
        >>> bool(res.success), round(float(res.x["a"]), 3), round(float(res.x["b"]), 3)
        (True, 1.0, 1.0)
        >>> res = gradtx.minimize(rosen, {"a": 0.0, "b": 0.0}, bounds=(-2.0, 0.5))
        >>> round(float(res.x["a"]), 3), round(float(res.x["b"]), 3)  # a sits on its bound
        (0.5, 0.25)

    Reference: Byrd, Lu, Nocedal & Zhu, "A limited memory algorithm for bound constrained
    optimization", SIAM J. Sci. Comput., 1995; Nocedal & Wright, "Numerical Optimization",
    2nd ed., 2006, chapter 7.
    """
    if not callable(fun):
        raise TypeError(f"minimize: fun must be callable, got {fun!r}")
    tol, gtol, ftol, maxiter, maxfev, memory_size, maxls, print_every = (
        _concrete(name, v)
        for name, v in (
            ("tol", tol), ("gtol", gtol), ("ftol", ftol), ("maxiter", maxiter),
            ("maxfev", maxfev), ("memory_size", memory_size), ("maxls", maxls),
            ("print_every", print_every),
        )
    )  # fmt: skip
    try:  # the checked settings, cached: repeated solves skip the checks
        options = _options(method, tol, gtol, ftol, maxiter, maxfev, memory_size, maxls,
                           print_every)  # fmt: skip
    except TypeError:  # an unhashable setting: check it uncached (and report it)
        options = _options.__wrapped__(
            method, tol, gtol, ftol, maxiter, maxfev, memory_size, maxls, print_every
        )
    if isinstance(x0, jax.Array) and jnp.issubdtype(x0.dtype, jnp.floating):
        x0 = _strong(x0)
    else:
        x0 = jax.tree_util.tree_map(_as_float, x0)
        if not jax.tree_util.tree_leaves(x0):
            raise ValueError("minimize: x0 has no array leaves")
    bounded = bounds is not None
    if bounded:
        if not (isinstance(bounds, tuple | list) and len(bounds) == 2):
            raise ValueError(f"minimize: bounds must be a pair (lower, upper), got {bounds!r}")
        n = sum(math.prod(np.shape(v)) for v in jax.tree_util.tree_leaves(x0))
        lo = _flat_bound(bounds[0], x0, n, -np.inf, "lower")
        hi = _flat_bound(bounds[1], x0, n, np.inf, "upper")
        for which, v in (("lower", lo), ("upper", hi)):
            if isinstance(v, np.ndarray) and np.isnan(v).any():
                i = int(np.argmax(np.isnan(v)))
                raise ValueError(
                    f"minimize: bounds {which} must not be NaN, got nan at flat index {i}"
                )
        if isinstance(lo, np.ndarray) and isinstance(hi, np.ndarray) and np.any(lo > hi):
            i = int(np.argmax(lo > hi))
            raise ValueError(
                f"minimize: bounds must have lower <= upper, got lower {lo[i]} > upper {hi[i]} "
                f"at flat index {i}"
            )
        bounds = (lo, hi)
    solver = _compiled(fun, int(memory_size), int(print_every))
    if not isinstance(args, tuple):
        args = (args,)
    return _result(*solver(x0, args, bounds, options))


@functools.lru_cache(maxsize=256)
def _options(method, tol, gtol, ftol, maxiter, maxfev, memory_size, maxls, print_every):
    """Check the settings of :func:`minimize`; pack the numeric ones into one float64 array."""
    if not isinstance(method, str) or method.lower() not in _METHODS:
        raise ValueError(f"minimize: method must be 'lbfgs', got {method!r}")
    for name, v, low in (
        ("maxiter", maxiter, 0),
        ("maxfev", maxfev, 1),
        ("maxls", maxls, 1),
        ("memory_size", memory_size, 1),
        ("print_every", print_every, 0),
    ):
        if isinstance(v, bool) or not isinstance(v, _INT_TYPES) or not low <= v <= _MAX_COUNT:
            raise ValueError(f"minimize: {name} must be an int in [{low}, 2**24], got {v!r}")
    gtol = (1e-5 if tol is None else tol) if gtol is None else gtol
    ftol = (2.220446049250313e-09 if tol is None else tol) if ftol is None else ftol
    for name, v in (("gtol", gtol), ("ftol", ftol)):
        if not (isinstance(v, _REAL_TYPES) and math.isfinite(v) and v >= 0):
            raise ValueError(f"minimize: {name} must be a finite number >= 0, got {v!r}")
    options = np.array([maxiter, maxfev, gtol, ftol, maxls], np.float64)
    options.setflags(write=False)
    return options


def _strong(x: jax.Array) -> jax.Array:
    """``x`` without JAX's weak type (``jnp.full(3, 0.1)`` has one), which would make the cached
    solver compile again for a start point of the same shape and dtype."""
    return jnp.asarray(x, x.dtype) if getattr(x, "weak_type", False) else x


def _as_float(leaf: Any) -> Any:
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jnp.floating):
        return _strong(leaf)
    try:
        a = jnp.asarray(leaf)
    except TypeError as e:
        raise TypeError(f"minimize: x0 leaves must be real floating arrays, got {leaf!r}") from e
    if jnp.issubdtype(a.dtype, jnp.complexfloating) or not (
        jnp.issubdtype(a.dtype, jnp.number) or a.dtype == bool
    ):
        raise TypeError(
            f"minimize: x0 leaves must be real floating, got a {a.dtype} leaf (complex "
            "parameters: pass the real and imaginary parts as separate real leaves)"
        )
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    return _strong(a)


def _concrete(name: str, v: Any) -> Any:
    """A setting given as a concrete 0-d array becomes a Python number; a traced one (from an
    outer ``jit``/``vmap``/``grad``) is refused with an error naming it."""
    if isinstance(v, jax.core.Tracer):
        raise TypeError(
            f"minimize: {name} must be concrete (a Python number or a concrete 0-d array), got "
            f"a traced value {v!r}; pass it as a static value when calling minimize inside "
            "jit/vmap/grad (only x0, args and bounds may be traced)"
        )
    if isinstance(v, jax.Array | np.ndarray | np.generic) and np.ndim(v) == 0:
        return np.asarray(v).item()
    return v
