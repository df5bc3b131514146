"""Orthogonalised momentum: Muon, its shape scaling, and NorMuon.

Muon replaces the momentum ``M`` of a weight matrix by an approximation of its polar factor
``polar(M) = U Vᵀ`` (``M = U Σ Vᵀ``), the steepest-descent direction under the spectral norm.
The polar factor is approximated by a few Newton–Schulz iterations on ``X₀ = M / (‖M‖_F + ε)``:
``X ← a X + b (X Xᴴ) X + c (X Xᴴ)² X``, an odd quintic applied to every singular value at once.
The coefficients choose the trade-off: Jordan's quintic ``(3.4445, −4.7750, 2.0315)`` (the
default), Polar Express's per-iteration minimax polynomials (Amsel et al., 2025), You's
five-step set used by Dion, any table of triples, or a function of your own.

Which axes form the matrix is given per parameter by :class:`MuonDimensionNumbers` (optax's
convention: ``reduction_axis`` are the input axes, ``output_axis`` the output axes, every other
axis a batch of independent matrices). Without them :func:`muon_dimension_numbers` decides:
a 2-D leaf is ``(in, out)``; a leaf with more axes (a convolution kernel ``(h, w, in, out)``,
flax's layout) flattens all its leading axes into the input side, ``(h·w·in, out)``, as Jordan's
reference flattens convolution filters; leaves with fewer than 2 axes are not orthogonalised.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental.shard_alike import shard_alike

from gradtx import numerics as tree_lib
from gradtx.core import (
    EmptyState,
    FrozenTree,
    GradientTransformation,
    check_count,
    check_decay,
    check_dtype,
    check_nonnegative,
    check_range,
    freeze_mask,
    hyper,
    static_field,
    transform,
)
from gradtx.safe_math import _roots
from gradtx.sharding import _check_mesh_axis, _map_whole_matrices

__all__ = [
    "MuonDimensionNumbers",
    "MuonState",
    "NorMuonState",
    "muon_dimension_numbers",
    "polar_express_coeffs",
    "orthogonalize_via_newton_schulz",
    "scale_by_muon",
    "scale_by_shape",
    "scale_by_normuon",
]


class MuonDimensionNumbers(NamedTuple):
    """Which axes of a parameter form the matrix Muon orthogonalises (optax's convention).

    The parameter is read as ``x W = y``: ``reduction_axis`` (one axis or several, flattened in
    the order given) are the input side, ``output_axis`` the output side; every other axis is a
    batch axis, each slice along it a separate matrix. Negative axes count from the end.

    Example:
        >>> import gradtx
        >>> gradtx.MuonDimensionNumbers()  # a dense kernel (in, out)
        MuonDimensionNumbers(reduction_axis=0, output_axis=1)
        >>> stacked = gradtx.MuonDimensionNumbers(reduction_axis=1, output_axis=2)  # (L, in, out)
    """

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


class MuonState(NamedTuple):
    """Step count, the momentum ``mu`` and the Newton–Schulz coefficients (optax's layout)."""

    count: jax.Array
    mu: Any
    ns_coeffs: jax.Array


class NorMuonState(NamedTuple):
    """The momentum ``mu``, the per-neuron second moment ``v`` (shape ``(batch, outputs)`` per
    orthogonalised leaf, a 0-d zero for the others) and the Newton–Schulz coefficients."""

    mu: Any
    v: Any
    ns_coeffs: jax.Array


# ----------------------------------------------------------------------------------------------
# Coefficient sets.

_STANDARD = (3.4445, -4.7750, 2.0315)  # Jordan (2024), the quintic of the Muon reference code
# You (2025), five per-iteration triples found by search, used by Dion (Ahn et al., 2025)
_DION = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
# Amsel et al. (2025), arXiv:2505.16932, Algorithm 1: the degree-5 minimax polynomials for
# singular values in [1e-3, 1], before their safety factor.
_POLAR_EXPRESS = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)
_PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")


def polar_express_coeffs(steps: int = 5) -> tuple[tuple[float, float, float], ...]:
    """The Polar Express coefficients for ``steps`` iterations (Amsel et al., 2025, Algorithm 1).

    Each iteration applies its own odd quintic ``p_t(x) = a x + b x³ + c x⁵``, the minimax
    approximation of 1 on the interval the previous ones leave (starting from singular values in
    ``[10⁻³, 1]``). As in Algorithm 1, every polynomial but the last of the listed eight is
    stabilised by a safety factor, ``p_t(x / 1.01)``, i.e. ``(a / 1.01, b / 1.01³, c / 1.01⁵)``,
    and iterations beyond the eighth repeat the last (``(15 x − 10 x³ + 3 x⁵) / 8``, the degree-5
    Newton–Schulz polynomial). ``ns_coeffs="polar_express"`` is ``polar_express_coeffs(5)``.

    Without the safety factor, five iterations map every singular value in ``[10⁻³, 1]`` into
    ``[0.876, 1.124]`` (the paper's bound ``‖polar(M) − X_T‖₂ ≤ 1 − ℓ_{T+1}``); with it, those in
    ``[0.003, 1]`` land in ``[0.870, 1.124]``, and six iterations in ``[0.997, 1.002]``.

    Args:
        steps: the number of iterations, at least 1.

    Example:
        >>> import gradtx
        >>> c = gradtx.polar_express_coeffs(5)
        >>> len(c), [round(x, 4) for x in c[0]]
        (5, [8.2052, -22.9019, 16.4607])

    Reference: Amsel, Persson, Musco & Gower, "The Polar Express: Optimal Matrix Sign Methods and
    Their Application to the Muon Algorithm", arXiv:2505.16932, 2025.
    """
    check_count("polar_express_coeffs", "steps", steps, low=1)
    safe = [(a / 1.01, b / 1.01**3, c / 1.01**5) for a, b, c in _POLAR_EXPRESS[:-1]]
    table = safe + [_POLAR_EXPRESS[-1]]
    steps = int(steps)
    return tuple(table[:steps]) + (table[-1],) * max(0, steps - len(table))


_PRESETS = {"standard": _STANDARD, "dion": _DION, "polar_express": polar_express_coeffs(5)}


def _coeffs(owner: str, value: Any) -> tuple:
    """``ns_coeffs`` as a hashable tuple: a triple, or a tuple of triples (one per iteration)."""
    if isinstance(value, str):
        if value not in _PRESETS:
            raise ValueError(
                f"{owner}: ns_coeffs must be one of {sorted(_PRESETS)}, a triple (a, b, c) or a "
                f"sequence of triples, got {value!r}"
            )
        value = _PRESETS[value]
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, jax.errors.TracerArrayConversionError) as e:
        raise TypeError(
            f"{owner}: ns_coeffs must be concrete numbers, a triple (a, b, c) or a sequence of "
            f"triples, got {value!r}"
        ) from e
    if arr.ndim not in (1, 2) or arr.shape[-1] != 3 or arr.size == 0:
        raise ValueError(
            f"{owner}: ns_coeffs must have shape (3,) or (n, 3), got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{owner}: ns_coeffs must be finite, got {value!r}")
    if arr.ndim == 1:
        return tuple(float(v) for v in arr)
    return tuple(tuple(float(v) for v in row) for row in arr)


def _coeff_array(coeffs: tuple) -> jax.Array:
    """The coefficients as kept in the state: JAX's default float dtype, shape (3,) or (n, 3)."""
    return jnp.asarray(np.asarray(coeffs), dtype=jnp.result_type(float))


# ----------------------------------------------------------------------------------------------
# Which axes form the matrix.


class _Spec(NamedTuple):
    """A leaf's matrix layout: batch, reduction (input) and output axes, each a tuple."""

    batch: tuple
    reduction: tuple
    output: tuple


def _axes(owner: str, value: Any, ndim: int, shape: tuple) -> tuple:
    axes = (value,) if isinstance(value, int | np.integer) else tuple(value)
    for a in axes:
        if not isinstance(a, int | np.integer) or isinstance(a, bool) or not -ndim <= a < ndim:
            raise ValueError(
                f"{owner}: weight_dimension_numbers has axis {a!r}, out of range for a leaf of "
                f"shape {shape}"
            )
    return tuple(int(a) % ndim for a in axes)


def _spec(owner: str, dims: Any, shape: tuple) -> _Spec | None:
    """The layout of a leaf of ``shape``: from ``dims`` (a :class:`MuonDimensionNumbers`), or by
    the default rule when ``dims`` is ``None`` (``None`` back for leaves below 2 dimensions)."""
    ndim = len(shape)
    if dims is None:
        if ndim < 2:
            return None
        return _Spec((), tuple(range(ndim - 1)), (ndim - 1,))
    if ndim < 2:
        raise ValueError(
            f"{owner}: weight_dimension_numbers gives a matrix layout for a leaf of shape "
            f"{shape}; a matrix needs at least 2 dimensions"
        )
    red = _axes(owner, dims.reduction_axis, ndim, shape)
    out = _axes(owner, dims.output_axis, ndim, shape)
    if not red or not out or len(set(red + out)) != len(red) + len(out):
        raise ValueError(
            f"{owner}: weight_dimension_numbers for a leaf of shape {shape} must name distinct, "
            f"non-empty reduction and output axes, got {dims}"
        )
    batch = tuple(a for a in range(ndim) if a not in red + out)
    return _Spec(batch, red, out)


def _is_dims_leaf(x: Any) -> bool:
    return x is None or isinstance(x, MuonDimensionNumbers)


class _Holder:
    """Carries one leaf's dimension numbers through a tree map (not a pytree itself)."""

    __slots__ = ("dims",)

    def __init__(self, dims: Any):
        self.dims = dims


def _broadcast_dims(owner: str, value: Any, tree: Any, is_dims_leaf: Any) -> list:
    """``value``, a tree of dimension numbers with the structure of ``tree`` or a prefix of it,
    as one entry per leaf of ``tree`` (``None`` leaves included). Shared by Muon and GaLore."""
    try:
        holders = jax.tree_util.tree_map(
            lambda d, sub: jax.tree_util.tree_map(
                lambda _: _Holder(d), sub, is_leaf=tree_lib.is_none
            ),
            value,
            tree,
            is_leaf=is_dims_leaf,
        )
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{owner}: weight_dimension_numbers must have the structure of the params (or a "
            f"prefix of it); got {jax.tree_util.tree_structure(value, is_leaf=is_dims_leaf)} "
            f"vs params {jax.tree_util.tree_structure(tree)}"
        ) from e
    return [h.dims for h in jax.tree_util.tree_leaves(holders)]


def _leaf_specs(owner: str, dims: Any, tree: Any) -> list:
    """One layout (or ``None``) per leaf of ``tree`` (``None`` leaves included), from the frozen
    ``weight_dimension_numbers`` argument."""
    leaves = jax.tree_util.tree_leaves(tree, is_leaf=tree_lib.is_none)
    value = None if dims is None else (dims.tree if isinstance(dims, FrozenTree) else dims(tree))
    if _is_dims_leaf(value):
        per_leaf = [value] * len(leaves)
    else:
        per_leaf = _broadcast_dims(owner, value, tree, _is_dims_leaf)
    return [
        None if x is None else _spec(owner, d, tuple(jnp.shape(x)))
        for x, d in zip(leaves, per_leaf, strict=True)
    ]


def muon_dimension_numbers(params: Any) -> Any:
    """The dimension numbers :class:`scale_by_muon` uses when none are given, as a tree.

    A 2-D leaf is ``(in, out)``: ``MuonDimensionNumbers(0, 1)``; a leaf with ``k > 2`` axes
    flattens its leading axes into the input side, ``MuonDimensionNumbers((0, …, k−2), k−1)``
    (a flax convolution kernel ``(h, w, in, out)`` becomes the ``(h·w·in, out)`` matrix); a leaf
    with fewer than 2 axes gets ``None`` (not a matrix). Pass it as
    ``muon(..., muon_weight_dimension_numbers=gradtx.muon_dimension_numbers)`` to orthogonalise
    convolution kernels too (by default :func:`gradtx.muon` gives only 2-D leaves to Muon, as
    optax does).

    Args:
        params: a pytree of arrays (or shape/dtype structs).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> params = {"conv": jnp.ones((3, 3, 8, 16)), "b": jnp.ones(16)}
        >>> dims = gradtx.muon_dimension_numbers(params)
        >>> dims["conv"], dims["b"]
        (MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3), None)
    """

    def f(x):
        n = len(jnp.shape(x))
        if n < 2:
            return None
        return MuonDimensionNumbers(0 if n == 2 else tuple(range(n - 1)), n - 1)

    return jax.tree_util.tree_map(f, params)


def _check_dims(owner: str, value: Any, name: str = "weight_dimension_numbers") -> Any:
    """``weight_dimension_numbers`` made static: ``None``, a frozen tree, or a function."""
    if value is None:
        return None
    if isinstance(value, MuonDimensionNumbers):
        for axes in (value.reduction_axis, value.output_axis):
            axes = (axes,) if isinstance(axes, int | np.integer) else axes
            if not isinstance(axes, Sequence) or not all(
                isinstance(a, int | np.integer) and not isinstance(a, bool) for a in axes
            ):
                raise TypeError(
                    f"{owner}: {name} axes must be ints or sequences of ints, got {value}"
                )
    try:
        return freeze_mask(value)
    except TypeError as e:
        raise TypeError(
            f"{owner}: {name} must be None, a MuonDimensionNumbers, a tree of them, or a "
            f"function of the params returning one; got {value!r}"
        ) from e


def _to_matrices(x: jax.Array, spec: _Spec) -> jax.Array:
    """``x`` transposed and reshaped to ``(batch, reduction, output)``."""
    perm = spec.batch + spec.reduction + spec.output
    if perm != tuple(range(x.ndim)):
        x = lax.transpose(x, perm)
    sizes = [math.prod(x.shape[: len(spec.batch)])]
    sizes.append(math.prod(x.shape[len(spec.batch) : len(spec.batch) + len(spec.reduction)]))
    sizes.append(math.prod(x.shape[len(spec.batch) + len(spec.reduction) :]))
    return x.reshape(sizes)


def _from_matrices(y: jax.Array, spec: _Spec, shape: tuple) -> jax.Array:
    """The inverse of :func:`_to_matrices` for a leaf of ``shape``."""
    perm = spec.batch + spec.reduction + spec.output
    y = y.reshape(tuple(shape[a] for a in perm))
    if perm != tuple(range(len(shape))):
        y = lax.transpose(y, tuple(int(i) for i in np.argsort(perm)))
    return y


def _fan_in_out(spec: _Spec, shape: tuple) -> tuple[int, int]:
    return math.prod(shape[a] for a in spec.reduction), math.prod(shape[a] for a in spec.output)


# ----------------------------------------------------------------------------------------------
# The iteration.


def _h(x: jax.Array) -> jax.Array:
    """Conjugate transpose of the last two axes."""
    return jnp.conj(jnp.swapaxes(x, -1, -2))


def _frobenius(x: jax.Array) -> jax.Array:
    """``‖X‖_F`` of each matrix of a batch ``(B, m, n)``, shape ``(B, 1, 1)``, correct at any
    finite scale (no overflow of the sum of squares) and with a finite gradient at zero."""
    sq = jnp.sum(tree_lib.abs_sq(x), axis=(-2, -1), keepdims=True)
    return _roots([x], [sq], axes=[(-2, -1)], keepdims=True)[0]


def _newton_schulz(
    x: jax.Array, coeffs: jax.Array, ns_steps: int, preconditioning: str, eps: Any
) -> jax.Array:
    """The quintic iteration on a batch of matrices ``(B, m, n)`` (see scale_by_muon)."""
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:  # the same result (f(Xᵀ) = f(X)ᵀ) with the smaller Gram matrix
        x = jnp.swapaxes(x, -1, -2)
    eps = jnp.asarray(eps, tree_lib.real_dtype(x.dtype))
    if preconditioning == "frobenius":
        x = x / (_frobenius(x) + eps).astype(x.dtype)
    elif preconditioning == "spectral":
        x = x / (jnp.linalg.norm(x, ord=2, axis=(-2, -1), keepdims=True) + eps).astype(x.dtype)
    rows = [coeffs] * ns_steps if coeffs.ndim == 1 else [coeffs[i] for i in range(len(coeffs))]
    for i, c in enumerate(rows):
        a = x @ _h(x)
        if i == 0 and preconditioning == "aol":
            # Boissin et al. (2025): scale row i by 1/sqrt(Σ_j |A_ij|), which bounds ‖X‖₂ by 1.
            s = lax.rsqrt(jnp.maximum(jnp.sum(jnp.abs(a), axis=-1, keepdims=True), eps))
            x, a = x * s.astype(x.dtype), a * (s * jnp.swapaxes(s, -1, -2)).astype(a.dtype)
        elif i == 0 and preconditioning == "schatten":
            # Grishina et al. (2025): X / ‖X‖_{S4}, with ‖X‖_{S4}² = ‖X Xᴴ‖_F.
            s = lax.rsqrt(jnp.maximum(_frobenius(a), eps))
            x, a = x * s.astype(x.dtype), a * (s * s).astype(a.dtype)
        b = c[1] * a + c[2] * (a @ a)
        x = c[0] * x + b @ x
    return jnp.swapaxes(x, -1, -2) if transposed else x


def _orthogonalize(
    m: jax.Array,
    spec: _Spec,
    coeffs: jax.Array,
    ns_steps: int,
    preconditioning: str,
    eps: Any,
    fn: Callable[[jax.Array], jax.Array] | None,
    owner: str = "scale_by_muon",
) -> jax.Array:
    """``m`` (in its compute dtype) with every matrix of its layout orthogonalised."""
    y = _to_matrices(m, spec)
    if fn is None:
        z = _newton_schulz(
            y, coeffs.astype(tree_lib.real_dtype(y.dtype)), ns_steps, preconditioning, eps
        )
    else:
        z = jax.vmap(fn)(y)
        if z.shape != y.shape:
            raise ValueError(
                f"{owner}: orthogonalizer must return a matrix of the shape it is given, got "
                f"{z.shape[1:]} for {y.shape[1:]}"
            )
        z = z.astype(y.dtype)
    return _from_matrices(z, spec, m.shape)


def _orthogonalize_all(
    ms: list,
    specs: list,
    coeffs: jax.Array,
    ns_steps: int,
    preconditioning: str,
    eps: Any,
    fn: Callable[[jax.Array], jax.Array] | None,
    mesh: Any,
    mesh_axis: str | None,
    owner: str = "scale_by_muon",
) -> list:
    """:func:`_orthogonalize` of every leaf of ``ms`` with a layout (``None`` for the others).

    With a ``mesh_axis``, the matrices of all leaves are stacked by shape and each device along
    the axis orthogonalises whole matrices (:func:`gradtx.sharding._map_whole_matrices`),
    instead of every device taking part in every matrix product of a sharded matrix.
    """
    if mesh_axis is None:
        return [
            None
            if m is None or spec is None
            else _orthogonalize(m, spec, coeffs, ns_steps, preconditioning, eps, fn, owner)
            for m, spec in zip(ms, specs, strict=True)
        ]
    todo = [
        i
        for i, (m, spec) in enumerate(zip(ms, specs, strict=True))
        if m is not None and spec is not None
    ]
    mats = [_to_matrices(ms[i], specs[i]) for i in todo]

    def local(batch: jax.Array, c: jax.Array) -> jax.Array:
        if fn is None:
            return _newton_schulz(
                batch, c.astype(tree_lib.real_dtype(batch.dtype)), ns_steps, preconditioning, eps
            )
        z = jax.vmap(fn)(batch)
        if z.shape != batch.shape:
            raise ValueError(
                f"{owner}: orthogonalizer must return a matrix of the shape it is given, got "
                f"{z.shape[1:]} for {batch.shape[1:]}"
            )
        return z.astype(batch.dtype)

    done = _map_whole_matrices(local, mats, (coeffs,), mesh, mesh_axis)
    out: list = [None] * len(ms)
    for i, z in zip(todo, done, strict=True):  # back in the layout (and sharding) of the input
        out[i] = shard_alike(ms[i], _from_matrices(z, specs[i], ms[i].shape))[1]
    return out


def _orthogonalize_with(tx: Any, ms: list, specs: list, coeffs: jax.Array, owner: str) -> list:
    """:func:`_orthogonalize_all` with the orthogonaliser options of the transform ``tx``
    (Muon's or NorMuon's)."""
    return _orthogonalize_all(
        ms,
        specs,
        coeffs,
        tx.ns_steps,
        tx.preconditioning,
        tx.eps,
        tx.orthogonalizer,
        tx.mesh,
        tx.mesh_axis,
        owner,
    )


def _check_ns(owner: str, obj: Any) -> None:
    """Validate and normalise the orthogonaliser options shared by Muon and NorMuon."""
    object.__setattr__(obj, "ns_coeffs", _coeffs(owner, obj.ns_coeffs))
    steps = obj.ns_steps
    if isinstance(steps, jax.core.Tracer):
        raise TypeError(
            f"{owner}: ns_steps must be a concrete integer (the number of iterations is part of "
            f"the compiled program), got a traced value; with inject_hyperparams pass "
            f"static_args=('ns_steps',)"
        )
    if isinstance(steps, np.ndarray | jax.Array) and steps.ndim == 0:
        if jnp.issubdtype(steps.dtype, jnp.integer):
            steps = int(steps)
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer):
        raise TypeError(f"{owner}: ns_steps must be an integer >= 1, got {obj.ns_steps!r}")
    check_count(owner, "ns_steps", steps, low=1)
    object.__setattr__(obj, "ns_steps", int(steps))
    if obj.preconditioning not in _PRECONDITIONINGS:
        raise ValueError(
            f"{owner}: preconditioning must be one of {list(_PRECONDITIONINGS)}, "
            f"got {obj.preconditioning!r}"
        )
    if obj.orthogonalizer is not None and not callable(obj.orthogonalizer):
        raise TypeError(
            f"{owner}: orthogonalizer must be None or a function matrix -> matrix, "
            f"got {obj.orthogonalizer!r}"
        )
    _not_scheduled(owner, obj, "eps")
    check_nonnegative(owner, "eps", obj.eps)
    object.__setattr__(
        obj, "weight_dimension_numbers", _check_dims(owner, obj.weight_dimension_numbers)
    )


def _not_scheduled(owner: str, obj: Any, *names: str) -> None:
    for name in names:
        if callable(getattr(obj, name)):
            raise TypeError(f"{owner}: {name} must be a number, not a schedule")


def orthogonalize_via_newton_schulz(
    x: Any,
    ns_coeffs: Any = _STANDARD,
    ns_steps: int = 5,
    preconditioning: str = "frobenius",
    eps: Any = 1e-8,
    dimension_numbers: MuonDimensionNumbers | None = None,
) -> jax.Array:
    """Approximate the polar factor ``U Vᵀ`` of a matrix (``X = U Σ Vᵀ``) by Newton–Schulz.

    .. math::
        X_0 = X / (‖X‖_F + ε),\\qquad
        X_{k+1} = a_k X_k + b_k (X_k X_k^H) X_k + c_k (X_k X_k^H)^2 X_k,

    i.e. the odd quintic ``p_k(σ) = a_k σ + b_k σ³ + c_k σ⁵`` applied to every singular value
    (the singular vectors are kept). With Jordan's default triple the singular values do not
    converge to 1 but oscillate in a band: after 5 steps those in ``[0.01, 1]`` (after the
    normalisation) lie in ``[0.68, 1.14]`` (``[0.68, 1.21]`` from ``0.003``; ``0.001`` only
    reaches ``0.47``); see :func:`polar_express_coeffs` for tighter sets.
    A tall matrix is iterated as its transpose (the same result, a smaller Gram matrix).

    Args:
        x: the matrix; with ``dimension_numbers``, or more than 2 axes, a batch of them (the
            default layout for ``k > 2`` axes flattens the leading axes into the rows, see
            :func:`muon_dimension_numbers`).
        ns_coeffs: a triple ``(a, b, c)`` used ``ns_steps`` times, a sequence of triples (one
            iteration each; ``ns_steps`` is then ignored), or a preset name: ``"standard"``
            (Jordan's quintic), ``"dion"`` (You's five triples) or ``"polar_express"``.
        ns_steps: iterations of a single triple.
        preconditioning: how ``X₀`` is scaled: ``"frobenius"`` (by ``‖X‖_F + ε``),
            ``"spectral"`` (by ``‖X‖₂ + ε``, an SVD), ``"aol"`` (rows scaled by
            ``1/√Σ_j|(X Xᴴ)_ij|`` in the first iteration, Boissin et al. 2025) or ``"schatten"``
            (by the Schatten-4 norm in the first iteration, Grishina et al. 2025).
        eps: added to the normalising norm.
        dimension_numbers: a :class:`MuonDimensionNumbers` for a batch of matrices.

    Example:
        >>> import jax.numpy as jnp, numpy as np, gradtx
        >>> x = jnp.array([[3.0, 0.0], [0.0, 0.5]])
        >>> o = gradtx.orthogonalize_via_newton_schulz(x, "polar_express")
        >>> np.round(np.linalg.svd(np.asarray(o), compute_uv=False), 2)  # 3 and 0.5 became ~1
        array([1.  , 0.98], dtype=float32)

    Reference: Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
    (https://kellerjordan.github.io/posts/muon/).
    """
    owner = "orthogonalize_via_newton_schulz"
    coeffs = _coeffs(owner, ns_coeffs)
    check_count(owner, "ns_steps", ns_steps, low=1)
    if preconditioning not in _PRECONDITIONINGS:
        raise ValueError(
            f"{owner}: preconditioning must be one of {list(_PRECONDITIONINGS)}, "
            f"got {preconditioning!r}"
        )
    check_nonnegative(owner, "eps", eps)
    x = tree_lib.as_array(x)
    if x.ndim < 2:
        raise ValueError(f"{owner}: x must have at least 2 dimensions, got shape {x.shape}")
    spec = _spec(owner, dimension_numbers, x.shape)
    cd = tree_lib.compute_dtype(x.dtype)
    out = _orthogonalize(
        tree_lib.cast(x, cd),
        spec,
        _coeff_array(coeffs),
        int(ns_steps),
        preconditioning,
        eps,
        None,
    )
    return tree_lib.cast(out, x.dtype)


# ----------------------------------------------------------------------------------------------
# Muon.


def _momentum_scalars(beta: Any, count: jax.Array, nesterov: bool, bias_correction: bool):
    """The factors of ``m_t`` and ``g_t`` in ``m̂_t`` (computed once per step)."""
    if not bias_correction:
        return (beta, 1 - beta) if nesterov else (1.0, None)
    c = tree_lib.bias_correction_scalar(beta, count)
    if nesterov:
        c_next = tree_lib.bias_correction_scalar(beta, tree_lib.safe_increment(count))
        return beta / c_next, (1 - beta) / c
    return 1 / c, None


def _m_hat(g: jax.Array, m: jax.Array, k_m: Any, k_g: Any, cd: Any) -> jax.Array:
    """``k_m m + k_g g`` in the compute dtype ``cd``."""
    out = tree_lib.smul(tree_lib.cast(m, cd), tree_lib.Scalar(k_m))
    if k_g is not None:
        out = lax.add(out, tree_lib.smul(tree_lib.cast(g, cd), tree_lib.Scalar(k_g)))
    return out


def _momenta(g_leaves: list, m_leaves: list, b: Any, one_minus_b: Any, k_m: Any, k_g: Any):
    """Every leaf's new momentum ``m ← b m + (1 − b) g`` and the matrix that is orthogonalised,
    ``k_m m + k_g g`` (``None`` for masked-out leaves). Returns the two lists."""
    mus, m_hats = [], []
    for g, m in zip(g_leaves, m_leaves, strict=True):
        if g is None:
            mus.append(None)
            m_hats.append(None)
            continue
        g = tree_lib.as_array(g)
        m = tree_lib.ema_leaf(g, m, b, one_minus_b)
        mus.append(m)
        m_hats.append(_m_hat(g, m, k_m, k_g, _cd(g.dtype, m.dtype)))
    return mus, m_hats


def _cd(*dtypes: Any) -> Any:
    return jnp.promote_types(*[tree_lib.compute_dtype(d) for d in dtypes])


@transform
class scale_by_muon(GradientTransformation):
    """Muon's scaling: Nesterov momentum, orthogonalised on every matrix (Jordan et al., 2024).

    .. math::
        m_t = β m_{t-1} + (1-β) g_t,\\qquad
        \\hat m_t = \\frac{β\\, m_t}{1-β^{t+1}} + \\frac{(1-β)\\, g_t}{1-β^t}
        \\ \\ (\\text{or } m_t/(1-β^t) \\text{ without Nesterov}),\\qquad
        u_t = \\operatorname{NS}(\\hat m_t),

    where ``NS`` is :func:`orthogonalize_via_newton_schulz` applied to each matrix of the leaf
    (its layout from ``weight_dimension_numbers``, see :class:`MuonDimensionNumbers`). Leaves
    with fewer than 2 axes, when no dimension numbers are given for them, are not orthogonalised:
    their update is ``m̂_t`` (:func:`gradtx.muon` sends them to AdamW instead). With
    ``adaptive=True`` the update is ``⟨m̂_t, u_t⟩ u_t`` per leaf (Bernstein & Newhouse, 2024).
    The shape factor Muon applies next is :class:`scale_by_shape`.

    The numbers are optax's ``scale_by_muon`` (bias-corrected momentum, as above). Jordan's
    reference code does not bias-correct; since ``NS`` normalises its input this changes only
    the Nesterov mix of ``m_t`` and ``g_t`` during the first ``~1/(1−β)`` steps. Where optax
    raises (a leaf with more than 2 axes and no dimension numbers, a vector) this transform
    applies the default layout of :func:`muon_dimension_numbers`. The iteration runs in at least
    float32 (bfloat16 momentum is orthogonalised in float32 and the update cast back).

    ``mesh`` and ``mesh_axis``: a ``jax.sharding.Mesh`` and one of its axis names, to orthogonalise
    whole matrices on separate devices: the matrices of every leaf are stacked by shape (padded to a
    multiple of the axis size with copies) and split along ``mesh_axis`` with ``shard_map``, each
    device runs the iteration on the matrices it holds and the results are gathered. Without them, a
    matrix sharded over devices (FSDP) is orthogonalised by all of them together, with collectives
    inside every iteration. The numbers are the same either way.

    Args:
        ns_coeffs: the Newton–Schulz coefficients: a triple, a sequence of triples (one per
            iteration, ``ns_steps`` then ignored), or ``"standard"`` / ``"dion"`` /
            ``"polar_express"`` (see :func:`orthogonalize_via_newton_schulz`).
        ns_steps: iterations of a single triple.
        beta: momentum decay in [0, 1) (a leaf, or a schedule of the step count).
        eps: added to the norm that scales the matrix before the iteration.
        mu_dtype: dtype of ``mu``.
        nesterov: use the Nesterov (look-ahead) momentum above.
        adaptive: scale each leaf's update by ``⟨m̂_t, NS(m̂_t)⟩``.
        preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or ``"schatten"`` (see
            :func:`orthogonalize_via_newton_schulz`).
        weight_dimension_numbers: a :class:`MuonDimensionNumbers` for every leaf, a tree of
            them with the params' structure (or a prefix; ``None`` entries take the default
            rule), or a function of the params returning either. ``None``: the default rule.
        orthogonalizer: a function ``matrix -> matrix`` used instead of Newton–Schulz (called
            on each ``(reduction, output)`` matrix, under ``vmap`` for a batch), e.g. the exact
            polar factor ``lambda m: (lambda u, s, vt: u @ vt)(*jnp.linalg.svd(m, False))``.

    Example:
        >>> import jax.numpy as jnp, numpy as np, gradtx
        >>> tx = gradtx.scale_by_muon(ns_coeffs="polar_express")
        >>> g = {"w": jnp.array([[2.0, 0.0], [0.0, 0.1]]), "b": jnp.array([0.5, -0.5])}
        >>> u, state = tx.update(g, tx.init(g))
        >>> np.round(np.asarray(u["w"]), 2)  # singular values 2 and 0.1 both became ~1
        array([[0.88, 0.  ],
               [0.  , 0.97]], dtype=float32)
        >>> [round(float(x), 4) for x in u["b"]]  # not a matrix: m̂ = (0.95·0.05/0.0975 + 1) g
        [0.7436, -0.7436]

    References: Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
    (https://kellerjordan.github.io/posts/muon/); Bernstein & Newhouse, "Old Optimizer, New
    Norm: An Anthology", arXiv:2409.20325, 2024.
    """

    ns_coeffs: Any = static_field(_STANDARD)
    ns_steps: int = static_field(5)
    beta: Any = 0.95
    eps: Any = 1e-8
    mu_dtype: Any = static_field(None)
    nesterov: bool = static_field(True, kw_only=True)
    adaptive: bool = static_field(False, kw_only=True)
    preconditioning: str = static_field("frobenius", kw_only=True)
    weight_dimension_numbers: Any = static_field(None, kw_only=True)
    orthogonalizer: Any = static_field(None, kw_only=True)
    mesh: Any = static_field(None, kw_only=True)
    mesh_axis: str | None = static_field(None, kw_only=True)

    def _check(self):
        _check_ns("scale_by_muon", self)
        _check_mesh_axis("scale_by_muon", self.mesh, self.mesh_axis)
        check_decay("scale_by_muon", "beta", self.beta)
        object.__setattr__(
            self, "mu_dtype", check_dtype("scale_by_muon", "mu_dtype", self.mu_dtype)
        )

    def init(self, params):
        return MuonState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_lib.tree_zeros_like(params, self.mu_dtype),
            ns_coeffs=_coeff_array(self.ns_coeffs),
        )

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.mu, "scale_by_muon", "updates", "state (mu)")
        beta = hyper(self.beta, state.count)
        count = tree_lib.safe_increment(state.count)
        k_m, k_g = _momentum_scalars(beta, count, self.nesterov, bias_correction=True)
        b, one_minus_b = tree_lib.Scalar(beta), tree_lib.Scalar(1 - beta)
        specs = _leaf_specs("scale_by_muon", self.weight_dimension_numbers, updates)
        g_leaves, treedef = jax.tree_util.tree_flatten(updates, is_leaf=tree_lib.is_none)
        m_leaves = treedef.flatten_up_to(state.mu)
        mus, m_hats = _momenta(g_leaves, m_leaves, b, one_minus_b, k_m, k_g)
        orth = _orthogonalize_with(self, m_hats, specs, state.ns_coeffs, "scale_by_muon")
        out = []
        for g, m_hat, u in zip(g_leaves, m_hats, orth, strict=True):
            if g is None:
                out.append(None)
                continue
            if u is None:  # not a matrix
                u = m_hat
            elif self.adaptive:
                u = jnp.sum(jnp.conj(m_hat) * u) * u
            out.append(tree_lib.cast(u, jnp.result_type(g)))
        return treedef.unflatten(out), MuonState(
            count=count, mu=treedef.unflatten(mus), ns_coeffs=state.ns_coeffs
        )


@transform
class scale_by_shape(GradientTransformation):
    """Muon's shape factor: each matrix update times a factor of its fan-in and fan-out.

    With ``consistent_rms=None`` (optax's default, Jordan's Muon): ``u ← √max(1, n_out/n_in) · u``
    (a wide matrix, more outputs than inputs, gets the larger step). With a number ``r``:
    ``u ← r·√max(n_in, n_out) · u``, which gives an orthogonalised update the root-mean-square
    ``≈ r`` whatever its shape (Liu et al., 2025; ``r = 0.2`` matches AdamW's typical update).
    ``n_in``/``n_out`` are the sizes of the reduction/output axes of each leaf's layout
    (:class:`MuonDimensionNumbers`, by default :func:`muon_dimension_numbers`); leaves with fewer
    than 2 axes and no dimension numbers are left unchanged.

    Args:
        weight_dimension_numbers: as in :class:`scale_by_muon`.
        consistent_rms: ``None`` or the target RMS ``r > 0`` (a leaf).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_shape()
        >>> u, _ = tx.update({"w": jnp.ones((2, 8))}, tx.init(None))
        >>> float(u["w"][0, 0])  # √(8/2)
        2.0

    References: Jordan et al., "Muon", 2024; Liu et al., "Muon is Scalable for LLM Training",
    arXiv:2502.16982, 2025.
    """

    weight_dimension_numbers: Any = static_field(None)
    consistent_rms: Any = None

    def _check(self):
        object.__setattr__(
            self,
            "weight_dimension_numbers",
            _check_dims("scale_by_shape", self.weight_dimension_numbers),
        )
        _not_scheduled("scale_by_shape", self, "consistent_rms")
        if self.consistent_rms is not None:
            check_range("scale_by_shape", "consistent_rms", self.consistent_rms, low=0.0)

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        specs = _leaf_specs("scale_by_shape", self.weight_dimension_numbers, updates)
        leaves, treedef = jax.tree_util.tree_flatten(updates, is_leaf=tree_lib.is_none)
        rms = None if self.consistent_rms is None else tree_lib.Scalar(self.consistent_rms)
        out = []
        for u, spec in zip(leaves, specs, strict=True):
            if u is None or spec is None:
                out.append(u)
                continue
            u = tree_lib.as_array(u)
            fan_in, fan_out = _fan_in_out(spec, u.shape)
            if rms is None:
                out.append(tree_lib.smul(u, tree_lib.Scalar(math.sqrt(max(1.0, fan_out / fan_in)))))
            else:
                factor = tree_lib.Scalar(math.sqrt(max(fan_in, fan_out)))
                out.append(tree_lib.smul(tree_lib.smul(u, factor), rms))
        return treedef.unflatten(out), state


# ----------------------------------------------------------------------------------------------
# NorMuon.


@transform
class scale_by_normuon(GradientTransformation):
    """NorMuon's scaling: Muon's orthogonalised momentum, normalised neuron by neuron
    (Li et al., 2025, Algorithm 1).

    For each matrix ``W ∈ ℝ^{m×n}`` of a leaf (``m`` inputs, the reduction axes; ``n`` outputs,
    the neurons; see :class:`MuonDimensionNumbers`):

    .. math::
        M_t = β_1 M_{t-1} + (1-β_1) G_t,\\qquad O_t = \\operatorname{NS}(M_t),\\\\
        v_t = β_2 v_{t-1} + (1-β_2)\\, \\operatorname{mean}_{\\text{inputs}}(O_t ⊙ \\bar O_t),
        \\qquad \\hat O_t = O_t ⊘ (\\sqrt{v_t} + ε),\\qquad
        u_t = \\frac{r \\sqrt{mn}}{‖\\hat O_t‖_F}\\, \\hat O_t,

    ``v_t ∈ ℝ^n`` holding one second moment per output neuron (the paper's rows of a
    ``(out, in)`` matrix are the columns of JAX's ``(in, out)`` kernels), broadcast over the
    inputs. The last step sets the update's RMS to ``r`` (``rms_scale``; the paper's ``0.2``).
    There is no bias correction, as in the paper; ``nesterov=True`` feeds ``β_1 M_t + (1−β_1)
    G_t`` to ``NS`` instead of ``M_t`` (the authors' code does). Leaves with fewer than 2 axes
    and no dimension numbers get ``M_t`` itself (or its Nesterov look-ahead); an all-zero update
    stays zero.

    optax's later ``scale_by_normuon`` (not in optax 0.2.8) adds ``ε`` inside the square root
    and to the RMS; this follows the algorithm box (``ε`` outside, none on the RMS). With the
    default ``ε = 1e-8`` the two differ by a relative ``O(ε / √v_t)``: only for a neuron whose
    update (nearly) vanishes.

    ``ns_coeffs``, ``ns_steps``, ``preconditioning`` and ``orthogonalizer``: the orthogonaliser, as
    in :class:`scale_by_muon`.

    ``mesh`` and ``mesh_axis``: whole matrices on separate devices, as in :class:`scale_by_muon`.

    Args:
        b1: momentum decay in [0, 1).
        b2: decay of the per-neuron second moment in [0, 1).
        eps: added to ``√v_t`` (and to the norm scaling the matrix before the iteration).
        rms_scale: the RMS ``r >= 0`` of each matrix's update.
        mu_dtype: dtype of ``mu``.
        v_dtype: dtype of ``v`` (default: the real compute dtype of each leaf, at least
            float32).
        nesterov: orthogonalise the Nesterov look-ahead momentum.
        weight_dimension_numbers: as in :class:`scale_by_muon`.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_normuon()
        >>> g = {"w": jnp.array([[2.0, 0.0, 1.0], [0.0, 0.1, 0.0]])}
        >>> u, state = tx.update(g, tx.init(g))
        >>> round(float(jnp.sqrt(jnp.mean(u["w"] ** 2))), 4), state.v["w"].shape
        (0.2, (1, 3))

    Reference: Li, Liu, Liang, Chen & Zhao, "NorMuon: Making Muon more efficient and
    scalable", arXiv:2510.05491, 2025.
    """

    ns_coeffs: Any = static_field(_STANDARD)
    ns_steps: int = static_field(5)
    b1: Any = 0.95
    b2: Any = 0.95
    eps: Any = 1e-8
    rms_scale: Any = 0.2
    mu_dtype: Any = static_field(None)
    v_dtype: Any = static_field(None)
    nesterov: bool = static_field(False, kw_only=True)
    preconditioning: str = static_field("frobenius", kw_only=True)
    weight_dimension_numbers: Any = static_field(None, kw_only=True)
    orthogonalizer: Any = static_field(None, kw_only=True)
    mesh: Any = static_field(None, kw_only=True)
    mesh_axis: str | None = static_field(None, kw_only=True)

    def _check(self):
        _check_ns("scale_by_normuon", self)
        _check_mesh_axis("scale_by_normuon", self.mesh, self.mesh_axis)
        _not_scheduled("scale_by_normuon", self, "b1", "b2", "rms_scale")
        check_decay("scale_by_normuon", "b1", self.b1)
        check_decay("scale_by_normuon", "b2", self.b2)
        check_nonnegative("scale_by_normuon", "rms_scale", self.rms_scale)
        for name in ("mu_dtype", "v_dtype"):
            object.__setattr__(
                self, name, check_dtype("scale_by_normuon", name, getattr(self, name))
            )

    def _v_dtype(self, p: Any) -> Any:
        return self.v_dtype or tree_lib.real_dtype(tree_lib.compute_dtype(jnp.result_type(p)))

    def init(self, params):
        specs = _leaf_specs("scale_by_normuon", self.weight_dimension_numbers, params)
        leaves, treedef = jax.tree_util.tree_flatten(params, is_leaf=tree_lib.is_none)
        v = []
        for p, spec in zip(leaves, specs, strict=True):
            if p is None:
                v.append(None)
            elif spec is None:
                v.append(jnp.zeros((), self._v_dtype(p)))
            else:
                shape = tuple(jnp.shape(p))
                batch = math.prod(shape[a] for a in spec.batch)
                v.append(jnp.zeros((batch, _fan_in_out(spec, shape)[1]), self._v_dtype(p)))
        return NorMuonState(
            mu=tree_lib.tree_zeros_like(params, self.mu_dtype),
            v=treedef.unflatten(v),
            ns_coeffs=_coeff_array(self.ns_coeffs),
        )

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.mu, "scale_by_normuon", "updates", "state (mu)")
        b1, one_minus_b1 = tree_lib.Scalar(self.b1), tree_lib.Scalar(1 - self.b1)
        b2, one_minus_b2 = tree_lib.Scalar(self.b2), tree_lib.Scalar(1 - self.b2)
        k_m, k_g = _momentum_scalars(self.b1, None, self.nesterov, bias_correction=False)
        specs = _leaf_specs("scale_by_normuon", self.weight_dimension_numbers, updates)
        g_leaves, treedef = jax.tree_util.tree_flatten(updates, is_leaf=tree_lib.is_none)
        m_leaves = treedef.flatten_up_to(state.mu)
        v_leaves = treedef.flatten_up_to(state.v)
        mus, m_hats = _momenta(g_leaves, m_leaves, b1, one_minus_b1, k_m, k_g)
        orth = _orthogonalize_with(self, m_hats, specs, state.ns_coeffs, "scale_by_normuon")
        out, vs = [], []
        for g, m_hat, o, v, spec in zip(g_leaves, m_hats, orth, v_leaves, specs, strict=True):
            if g is None:
                out.append(None)
                vs.append(None)
                continue
            if spec is None:
                out.append(tree_lib.cast(m_hat, jnp.result_type(g)))
                vs.append(v)
                continue
            cd = m_hat.dtype
            o = _to_matrices(o, spec)  # (batch, inputs, outputs)
            v = tree_lib.as_array(v)
            rd = jnp.promote_types(tree_lib.real_dtype(cd), tree_lib.compute_dtype(v.dtype))
            row_sq = jnp.mean(tree_lib.abs_sq(o).astype(rd), axis=1)  # per neuron: (B, n)
            v_new = tree_lib.ema_leaf(row_sq, v, b2, one_minus_b2)
            den = jnp.sqrt(tree_lib.cast(v_new, rd)) + tree_lib.Scalar(self.eps)(rd)
            o_hat = o / den[:, None, :].astype(o.dtype)
            sq = jnp.mean(tree_lib.abs_sq(o_hat), axis=(1, 2), keepdims=True)
            rms = _roots([o_hat], [sq], axes=[(1, 2)], keepdims=True, mean=True)[0]
            positive = rms > 0
            scale = jnp.where(positive, 1 / jnp.where(positive, rms, 1), 0)
            scale = tree_lib.smul(scale, tree_lib.Scalar(self.rms_scale))
            u = _from_matrices(o_hat * scale.astype(o_hat.dtype), spec, jnp.shape(g))
            out.append(tree_lib.cast(u, jnp.result_type(g)))
            vs.append(v_new)
        return treedef.unflatten(out), NorMuonState(
            mu=treedef.unflatten(mus), v=treedef.unflatten(vs), ns_coeffs=state.ns_coeffs
        )
