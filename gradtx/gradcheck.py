"""Gradient checking: compare ``jax.grad`` with central differences, leaf by leaf."""

from __future__ import annotations

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
    """

    max_rel_error: float
    where: str
    analytic: float
    numeric: float
    num_checked: int
    num_elements: int

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

    For each checked element ``i`` (all of them, or ``max_checks`` chosen at random when the
    tree is larger),

    .. math::
        n_i = \\frac{f(x + h_i e_i) − f(x − h_i e_i)}{2 h_i},\\quad
        h_i = \\text{eps} \\cdot \\max(1, |x_i|),\\quad
        r_i = \\frac{|a_i − n_i|}{\\max(|a_i|, |n_i|, \\text{min\\_scale})},

    with ``a = jax.grad(fun)(x)``. The function is evaluated in ``x``'s dtype (float64 gives a
    far sharper check: enable ``jax_enable_x64``).

    Args:
        fun: scalar function ``fun(x, *args)`` of a pytree ``x``.
        x: the point (a pytree of floating arrays).
        *args: extra arguments for ``fun`` (not differentiated).
        eps: relative step (default ``ε_mach^(1/3)`` of the dtype, the optimum for central
            differences).
        tol: largest acceptable relative error (default ``1e-6`` in float64, ``1e-2`` in
            float32).
        min_scale: floor of the denominator, so entries near zero are compared absolutely.
        max_checks: most elements compared (a random subset beyond this).
        seed: seed of the random subset.

    Returns:
        The :class:`GradCheckReport` (when the check passes).

    Raises:
        GradCheckError: with the report, when ``max_rel_error > tol``.

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
    x = jax.tree_util.tree_unflatten(treedef, leaves)
    dtype = jnp.result_type(*leaves)
    finfo = jnp.finfo(dtype)
    eps = float(finfo.eps) ** (1.0 / 3.0) if eps is None else float(eps)
    if tol is None:
        tol = 1e-6 if finfo.bits >= 64 else 1e-2
    if max_checks < 1:
        raise ValueError(f"check_grads: max_checks must be >= 1, got {max_checks!r}")

    sizes = [int(np.prod(leaf.shape, dtype=np.int64)) for leaf in leaves]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    total = int(offsets[-1])
    if total <= max_checks:
        chosen = np.arange(total)
    else:
        chosen = np.sort(np.random.default_rng(seed).choice(total, max_checks, replace=False))

    flat = jnp.concatenate([leaf.ravel().astype(dtype) for leaf in leaves])

    def unflatten(v):
        parts = [
            v[offsets[i] : offsets[i + 1]].reshape(leaves[i].shape).astype(leaves[i].dtype)
            for i in range(len(leaves))
        ]
        return jax.tree_util.tree_unflatten(treedef, parts)

    def f_flat(v):
        return jnp.asarray(fun(unflatten(v), *args)).astype(dtype)

    analytic = jax.grad(lambda t: jnp.asarray(fun(t, *args)).astype(dtype))(x)
    a_flat = np.concatenate(
        [np.asarray(g, np.float64).ravel() for g in jax.tree_util.tree_leaves(analytic)]
    )

    idx = jnp.asarray(chosen)
    h = eps * jnp.maximum(1.0, jnp.abs(flat[idx]))

    @jax.jit
    def differences(flat, idx, h):
        def one(i_h):
            i, hi = i_h
            up = f_flat(flat.at[i].add(hi))
            down = f_flat(flat.at[i].add(-hi))
            # The realised step (x + h) − (x − h) in floating point, not 2h.
            dx = (flat[i] + hi) - (flat[i] - hi)
            return (up - down) / dx

        return jax.lax.map(one, (idx, h))

    numeric = np.asarray(differences(flat, idx, h), np.float64)
    a_sel = a_flat[chosen]
    scale = np.maximum(np.maximum(np.abs(a_sel), np.abs(numeric)), min_scale)
    rel = np.abs(a_sel - numeric) / scale
    rel = np.where(np.isfinite(rel), rel, np.inf)
    worst = int(np.argmax(rel))
    flat_i = int(chosen[worst])
    leaf_i = int(np.searchsorted(offsets, flat_i, side="right") - 1)
    local = np.unravel_index(flat_i - offsets[leaf_i], leaves[leaf_i].shape)
    path = jax.tree_util.keystr(leaves_with_path[leaf_i][0])
    where = f"{path}[{', '.join(str(int(j)) for j in local)}]" if local else path
    report = GradCheckReport(
        max_rel_error=float(rel[worst]),
        where=where,
        analytic=float(a_sel[worst]),
        numeric=float(numeric[worst]),
        num_checked=len(chosen),
        num_elements=total,
    )
    if not report.max_rel_error <= tol:
        raise GradCheckError(report, tol)
    return report
