"""Gradient checking: compare ``jax.grad`` with central differences, leaf by leaf."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_grads", "GradCheckReport", "GradCheckError"]


class GradCheckReport(NamedTuple):
    """The worst disagreement found by :func:`check_grads`.

    Attributes:
        max_rel_error: ``|a − n| / max(|a|, |n|, min_scale)`` at the worst element.
        where: the key path of the leaf and the index in it, e.g. ``"['w'][2, 0]"``.
        analytic: ``jax.grad``'s value there.
        numeric: the central difference there.
        num_checked: how many elements were compared.
        num_elements: how many elements the tree has.
        tol: the tolerance applied at ``where`` (it depends on the leaf's dtype).
    """

    max_rel_error: float
    where: str
    analytic: float
    numeric: float
    num_checked: int
    num_elements: int
    tol: float = float("nan")

    def __str__(self) -> str:
        return (
            f"worst relative error {self.max_rel_error:.3e} at {self.where}: analytic "
            f"{self.analytic:.8e} vs numeric {self.numeric:.8e} "
            f"({self.num_checked} of {self.num_elements} elements checked)"
        )


class GradCheckError(AssertionError):
    """Raised by :func:`check_grads` when the worst relative error exceeds the tolerance;
    ``.report`` holds the :class:`GradCheckReport`."""

    def __init__(self, report: GradCheckReport, tol: float):
        super().__init__(f"check_grads: {report} exceeds tol={tol:g}")
        self.report = report


def _default_tol(dtype: Any) -> float:
    """Default tolerance of :func:`check_grads` for a leaf dtype (see its docstring)."""
    bits = jnp.finfo(dtype).bits
    return 1e-6 if bits >= 64 else 1e-2 if bits >= 32 else 1e-1


def _sample_counts(sizes: list[int], max_checks: int) -> list[int]:
    """How many elements to check in each leaf: all of them when the tree has at most
    ``max_checks``; otherwise every leaf first gets ``min(size, max(1, max_checks // n))``
    and the rest of the budget is shared in proportion to the unchecked sizes."""
    total = sum(sizes)
    if total <= max_checks:
        return list(sizes)
    k = max(1, max_checks // len(sizes))
    base = [min(s, k) for s in sizes]
    left = [s - b for s, b in zip(sizes, base, strict=True)]
    budget = max_checks - sum(base)
    if budget <= 0 or sum(left) == 0:
        return base
    return [b + min(r, budget * r // sum(left)) for b, r in zip(base, left, strict=True)]


def check_grads(
    fun: Callable[..., Any],
    x: Any,
    *args: Any,
    eps: float | None = None,
    tol: float | None = None,
    min_scale: float = 1e-3,
    max_checks: int = 1000,
    seed: int = 0,
) -> GradCheckReport:
    """Check ``jax.grad(fun)`` at ``x`` against central differences; raise if they disagree.

    For each checked element ``i`` of a leaf (all of them, or a random subset of each leaf
    when the tree has more than ``max_checks`` elements), the central difference
    (Nocedal & Wright, *Numerical Optimization*, 2nd ed., §8.1, eq. 8.7) and the relative
    error are

    .. math::
        n_i = \\frac{f(x^+) − f(x^−)}{x^+_i − x^−_i},\\quad
        x^\\pm = x \\pm h_i e_i \\text{ rounded to the leaf's dtype},\\quad
        h_i = \\text{eps} \\cdot \\max(1, |x_i|),

    .. math::
        r_i = \\frac{|a_i − n_i|}{\\max(|a_i|, |n_i|, \\text{min\\_scale})},

    with ``a = jax.grad(fun)(x)``. The denominator is the step actually applied after rounding
    to the leaf's dtype (not ``2 h_i``), and ``eps``, ``h_i`` and the default tolerance are
    chosen per leaf from that leaf's dtype, so a tree mixing float32 and float64 leaves is
    checked correctly. The check fails when ``r_i`` exceeds its leaf's tolerance at any
    checked element. Float64 gives a far sharper check: enable ``jax_enable_x64``.

    Sampling: when the tree has more than ``max_checks`` elements, each leaf gets
    ``min(size, max(1, max_checks // num_leaves))`` random elements and the remaining budget is
    shared in proportion to leaf size, so no leaf is skipped (the total is at most
    ``max_checks``, or one per leaf when there are more leaves than that).

    Args:
        fun: scalar function ``fun(x, *args)`` of a pytree ``x``.
        x: the point (a pytree of floating arrays).
        *args: extra arguments for ``fun`` (not differentiated).
        eps: relative step (default ``ε_mach^(1/3)`` of each leaf's dtype, the optimum for
            central differences).
        tol: largest acceptable relative error for every leaf (default per leaf dtype:
            ``1e-6`` for float64, ``1e-2`` for float32, ``1e-1`` for float16/bfloat16).
        min_scale: floor of the denominator, so entries near zero are compared absolutely.
        max_checks: most elements compared (a random subset of each leaf beyond this).
        seed: seed of the random subset.

    Returns:
        The :class:`GradCheckReport` (when the check passes): the element whose error is
        largest relative to its leaf's tolerance.

    Raises:
        GradCheckError: with the report, when some ``r_i`` exceeds its tolerance.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> r = gradtx.check_grads(lambda p: jnp.sum(jnp.sin(p["w"])), {"w": jnp.ones(3)})
        >>> r.num_checked, r.max_rel_error < 1e-2
        (3, True)
    """
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(x)
    if not leaves_with_path:
        raise ValueError("check_grads: x has no array leaves")
    leaves = [jnp.asarray(v) for _, v in leaves_with_path]
    for (path, _), leaf in zip(leaves_with_path, leaves, strict=True):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(
                f"check_grads: leaf {jax.tree_util.keystr(path)} must be a real floating array, "
                f"got dtype {leaf.dtype}"
            )
    if max_checks < 1:
        raise ValueError(f"check_grads: max_checks must be >= 1, got {max_checks!r}")
    x = jax.tree_util.tree_unflatten(treedef, leaves)

    sizes = [int(np.prod(leaf.shape, dtype=np.int64)) for leaf in leaves]
    counts = _sample_counts(sizes, max_checks)
    rng = np.random.default_rng(seed)

    def fval(t):
        return jnp.asarray(fun(t, *args))

    analytic = jax.tree_util.tree_leaves(jax.grad(fval)(x))

    @functools.partial(jax.jit, static_argnums=1)
    def differences(leaves, j, idx, h):
        leaf = leaves[j]
        flat = leaf.ravel()

        def one(i_h):
            i, hi = i_h
            plus = flat.at[i].add(hi.astype(flat.dtype))
            minus = flat.at[i].add(-hi.astype(flat.dtype))

            def at(v):
                parts = list(leaves)
                parts[j] = v.reshape(leaf.shape)
                return fval(jax.tree_util.tree_unflatten(treedef, parts))

            # The step actually applied, after rounding to the leaf's dtype.
            return at(plus) - at(minus), plus[i] - minus[i]

        return jax.lax.map(one, (idx, h))

    best = None  # (rel / tol, rel, leaf, local index, analytic, numeric, tol)
    for j, (leaf, size, count) in enumerate(zip(leaves, sizes, counts, strict=True)):
        if count == 0:
            continue
        if count == size:
            chosen = np.arange(size)
        else:
            chosen = np.sort(rng.choice(size, count, replace=False))
        leaf_eps = float(jnp.finfo(leaf.dtype).eps) ** (1.0 / 3.0) if eps is None else eps
        leaf_tol = _default_tol(leaf.dtype) if tol is None else float(tol)
        x_sel = np.asarray(leaf, np.float64).ravel()[chosen]
        h = leaf_eps * np.maximum(1.0, np.abs(x_sel))
        df, dx = differences(leaves, j, jnp.asarray(chosen), jnp.asarray(h, jnp.result_type(float)))
        numeric = np.asarray(df, np.float64) / np.asarray(dx, np.float64)
        a_sel = np.asarray(analytic[j], np.float64).ravel()[chosen]
        scale = np.maximum(np.maximum(np.abs(a_sel), np.abs(numeric)), min_scale)
        rel = np.abs(a_sel - numeric) / scale
        rel = np.where(np.isfinite(rel), rel, np.inf)
        w = int(np.argmax(rel / leaf_tol))
        key = rel[w] / leaf_tol
        if best is None or key > best[0]:
            best = (key, rel[w], j, int(chosen[w]), a_sel[w], numeric[w], leaf_tol)

    _, rel_w, j, flat_i, a_w, n_w, tol_w = best
    local = np.unravel_index(flat_i, leaves[j].shape)
    path = jax.tree_util.keystr(leaves_with_path[j][0])
    where = f"{path}[{', '.join(str(int(i)) for i in local)}]" if local else path
    report = GradCheckReport(
        max_rel_error=float(rel_w),
        where=where,
        analytic=float(a_w),
        numeric=float(n_w),
        num_checked=int(sum(counts)),
        num_elements=int(sum(sizes)),
        tol=float(tol_w),
    )
    if not report.max_rel_error <= tol_w:
        raise GradCheckError(report, tol_w)
    return report
