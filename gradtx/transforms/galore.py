"""GaLore: the base optimizer (Adam by default) run on low-rank projections of matrix gradients.

Zhao et al. (arXiv 2403.03507) observe that the gradients of weight matrices are close to low
rank. Every ``T`` steps GaLore takes the SVD of a matrix's gradient ``G`` (``m × n``) and keeps
its top ``r`` singular vectors as a projector ``P``; in between, ``P`` stays fixed. The
optimizer's moments live in the projected space (``r × n`` or ``m × r`` instead of ``m × n``),
and its update is projected back and scaled by ``α``. Which axes of a parameter form the matrix
is given by :class:`GaLoreDimensionNumbers` (optax's convention); leaves that are not matrices
get the base optimizer at full size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradtx import numerics as tree_lib
from gradtx.core import (
    FrozenTree,
    GradientTransformation,
    ScalarOrSchedule,
    _as_member,
    chain,
    check_count,
    check_nonnegative,
    freeze_mask,
    hyper,
    static_field,
    transform,
    user_facing,
)
from gradtx.transforms.adaptive import scale_by_adam
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.muon import _broadcast_dims, _spec
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = ["GaLoreDimensionNumbers", "GaLoreState", "scale_by_galore", "galore"]

_OWNER = "scale_by_galore"
_SIDES = ("smaller", "larger")


class GaLoreDimensionNumbers(NamedTuple):
    """Which axes of a parameter form the matrix GaLore projects (optax.contrib's convention).

    The parameter is read as a map from its ``reduction_axis`` (input side; one axis or several,
    flattened in the order given) to its ``output_axis``. Any other axis is a batch axis: each
    slice along it is a separate matrix with its own projector (optax refuses such axes).
    Negative axes count from the end.

    Example:
        >>> import gradtx
        >>> gradtx.GaLoreDimensionNumbers()  # a dense kernel (in, out)
        GaLoreDimensionNumbers(reduction_axis=0, output_axis=1)
        >>> attn = gradtx.GaLoreDimensionNumbers(0, (1, 2))  # (embed, heads, head_dim)
    """

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


class GaLoreState(NamedTuple):
    """GaLore's state (optax.contrib's layout).

    ``count`` is the number of steps taken (the projectors are recomputed when it is a multiple
    of ``update_proj_gap``); ``base_optimizer_state`` is the base optimizer's state for the
    low-rank gradients (full-size for leaves that are not projected); ``projector`` holds, per
    leaf, the ``(rows, r)`` matrix of singular vectors (``(batch, rows, r)`` with batch axes), or
    ``None`` for leaves that are not projected (optax keeps an empty ``(0, 0)`` array there,
    whose dtype a checkpoint loader cannot check).
    """

    count: jax.Array
    base_optimizer_state: Any
    projector: Any


# ----------------------------------------------------------------------------------------------
# Which axes form the matrix, and which side the projector acts on.


class _Layout(NamedTuple):
    """A projected leaf: its batch, reduction and output axes; the matrix ``m × n`` (``b`` of
    them), whether ``P`` acts on the left (``Pᴴ G``) and the effective rank ``k``."""

    batch: tuple
    reduction: tuple
    output: tuple
    b: int
    m: int
    n: int
    left: bool
    k: int

    def projector_shape(self) -> tuple:
        rows = self.m if self.left else self.n
        return (self.b, rows, self.k) if self.batch else (rows, self.k)

    def low_rank_shape(self) -> tuple:
        shape = (self.k, self.n) if self.left else (self.m, self.k)
        return (self.b, *shape) if self.batch else shape


def _layout(dims: Any, shape: tuple, rank: int, side: str) -> _Layout:
    batch, red, out = _spec(_OWNER, dims, shape)  # Muon's axis rules and messages
    b = math.prod(shape[a] for a in batch)
    m, n = math.prod(shape[a] for a in red), math.prod(shape[a] for a in out)
    # the paper (Algorithm 2, "m ≤ n": P = U[:, :r], a left projector) puts P on the smaller
    # side; optax.contrib on the larger one. Both are left for a square matrix (the authors'
    # code puts it on the right there).
    left = m <= n if side == "smaller" else m >= n
    return _Layout(batch, red, out, b, m, n, left, min(rank, m, n))


def _is_dims_leaf(x: Any) -> bool:
    return x is None or isinstance(x, GaLoreDimensionNumbers)


def _per_leaf_dims(dims: Any, tree: Any, leaves: list) -> list:
    """One ``GaLoreDimensionNumbers`` (or ``None``: not projected) per leaf of ``tree``."""
    if dims is None:  # optax's default: every 2-D leaf, as (in, out)
        return [
            GaLoreDimensionNumbers() if x is not None and jnp.ndim(x) == 2 else None for x in leaves
        ]
    value = dims.tree if isinstance(dims, FrozenTree) else dims(tree)
    if isinstance(value, GaLoreDimensionNumbers):  # one layout for every leaf that is a matrix
        return [value if x is not None and jnp.ndim(x) >= 2 else None for x in leaves]
    if value is None:
        return [None] * len(leaves)
    return _broadcast_dims(_OWNER, value, tree, _is_dims_leaf)


def _check_dims(value: Any) -> Any:
    """``weight_dimension_numbers`` made static: ``None``, a frozen tree, or a function."""
    if value is None:
        return None
    if isinstance(value, GaLoreDimensionNumbers):
        for axes in value:
            axes = (axes,) if isinstance(axes, int | np.integer) else axes
            if not isinstance(axes, Sequence) or not all(
                isinstance(a, int | np.integer) and not isinstance(a, bool) for a in axes
            ):
                raise TypeError(
                    f"{_OWNER}: weight_dimension_numbers axes must be ints or sequences of "
                    f"ints, got {value}"
                )
    try:
        return freeze_mask(value)
    except TypeError as e:
        raise TypeError(
            f"{_OWNER}: weight_dimension_numbers must be None, a GaLoreDimensionNumbers, a tree "
            f"of them, or a function of the params returning one; got {value!r}"
        ) from e


def _to_matrices(x: jax.Array, lay: _Layout) -> jax.Array:
    """``x`` transposed and reshaped to ``(b, m, n)``."""
    perm = lay.batch + lay.reduction + lay.output
    if perm != tuple(range(x.ndim)):
        x = lax.transpose(x, perm)
    return x.reshape(lay.b, lay.m, lay.n)


def _from_matrices(y: jax.Array, lay: _Layout, shape: tuple) -> jax.Array:
    """The inverse of :func:`_to_matrices` for a leaf of ``shape``."""
    perm = lay.batch + lay.reduction + lay.output
    y = y.reshape(tuple(shape[a] for a in perm))
    if perm != tuple(range(len(shape))):
        y = lax.transpose(y, tuple(int(i) for i in np.argsort(perm)))
    return y


def _h(x: jax.Array) -> jax.Array:
    """Conjugate transpose of the last two axes."""
    return jnp.conj(jnp.swapaxes(x, -1, -2))


# ----------------------------------------------------------------------------------------------
# The projector.


def _projector(g: jax.Array, lay: _Layout, canonical_signs: bool) -> jax.Array:
    """The top ``k`` left (or right) singular vectors of each ``(m, n)`` matrix of ``g`` (in
    its compute dtype), shape ``(b, rows, k)``."""
    # Singular vectors do not depend on the matrix's scale: dividing by max |G| first keeps the
    # SVD finite for gradients near the ends of the float range, on every backend.
    big = jnp.max(jnp.abs(g), axis=(-2, -1), keepdims=True)
    g = g / jnp.where(big > 0, big, 1).astype(g.dtype)
    u, _, vh = jnp.linalg.svd(g, full_matrices=False)
    p = u[..., :, : lay.k] if lay.left else _h(vh[..., : lay.k, :])
    if canonical_signs:
        # each singular vector is defined up to a sign (a phase): fix it so that the entry of
        # largest magnitude (the first, on a tie) is real and positive
        i = jnp.argmax(jnp.abs(p), axis=-2, keepdims=True)
        pivot = jnp.take_along_axis(p, i, axis=-2)
        mag = jnp.abs(pivot)
        p = p * (jnp.conj(pivot) / jnp.where(mag > 0, mag, 1)).astype(p.dtype)
    return p


def _cond(pred: Any, true_fn: Any, false_fn: Any) -> Any:
    if isinstance(pred, jax.core.Tracer):
        return lax.cond(pred, true_fn, false_fn)
    return true_fn() if bool(pred) else false_fn()


# ----------------------------------------------------------------------------------------------
# GaLore.


@transform
class scale_by_galore(GradientTransformation):
    """GaLore: the base optimizer run on low-rank projections of the matrix gradients.

    For a gradient matrix ``G_t`` (``m × n``) and ``t`` the number of steps taken before this
    one, Algorithm 2 of the paper ("Adam with GaLore"):

    .. math::
        P_t = \\begin{cases} U[:, :r] & t \\bmod T = 0,\\ U S V^H = \\mathrm{SVD}(G_t) \\\\
        P_{t-1} & \\text{otherwise} \\end{cases},\\qquad
        R_t = P_t^H G_t,\\qquad N_t = \\mathrm{base}(R_t),\\qquad u_t = α\\, P_t N_t,

    with ``r = min(rank, m, n)``, ``T = update_proj_gap``, ``α = scale`` and the base optimizer
    (Adam by default: ``N = m̂/(√v̂ + ε)``) keeping its moments in the ``r × n`` space. That is
    the paper's case ``m ≤ n``; for ``m > n`` the projector acts on the right,
    ``P = V[:, :r]``, ``R = G P`` and ``u = α N Pᴴ``, so ``P`` always spans the smaller side
    (the paper's memory count ``mn + mr + 2nr``, and the authors' code, except that for a
    square matrix the paper's box and gradtx use the left side, the authors' code the right).
    A leaf that is not a matrix gets the base optimizer at full size and no ``α``. The moments
    carry over when ``P`` is recomputed (the paper's choice).

    Which leaves are matrices is set by ``weight_dimension_numbers``: ``None`` (every 2-D leaf,
    ``(in, out)``), one :class:`GaLoreDimensionNumbers` for every leaf with 2 or more axes, a
    tree of them (``None`` to skip a leaf; a prefix of the params' tree is broadcast), or a
    function of the params returning such a tree.

    Differences from optax.contrib, each with the argument that gives optax's numbers:

    - ``projector_side="smaller"`` follows the paper (above); optax puts ``P`` on the larger
      side (left when ``m ≥ n``: its moments are ``r × min(m, n)`` and its projector
      ``max(m, n) × r``): ``projector_side="larger"``. Both act on the left of a square matrix.
    - ``canonical_signs=True``: singular vectors are defined only up to sign (a phase, if
      complex), and the moments carried across a refresh of ``P`` add to or cancel the new ones
      depending on it. Each column of ``P`` is therefore multiplied by ``±1`` so that its entry
      of largest magnitude is positive (real and positive if complex): runs are then the same on
      every backend. ``canonical_signs=False`` keeps the SVD's own signs (optax).

    The SVD runs in the gradient's compute dtype (float32 for 16-bit gradients, float64 for
    float64 ones; optax always uses float32) on the matrix divided by its largest entry, so it
    stays finite for gradients up to the largest float. Complex gradients are projected with
    ``Pᴴ`` (optax's ``Pᵀ`` is only right for real ones). Projectors and low-rank gradients are
    kept in the parameters' dtype, as in optax.

    Args:
        rank: the target rank ``r``, an integer ``>= 1`` (capped at ``min(m, n)`` per matrix).
        update_proj_gap: ``T``, the number of steps between recomputations of ``P``.
        scale: ``α``, the factor of the projected-back update (a number or a schedule).
        base_optimizer: the transform run in the low-rank space (default
            ``scale_by_adam()``). It receives no ``params`` (they do not have the low-rank
            shapes): use ``galore``'s ``weight_decay`` rather than ``adamw`` here.
        weight_dimension_numbers: which axes of each leaf form the matrix (see above).
        projector_side: ``"smaller"`` (the paper's) or ``"larger"`` (optax's).
        canonical_signs: fix the singular vectors' signs (see above).

    Example:
        >>> import jax.numpy as jnp, numpy as np, gradtx
        >>> tx = gradtx.scale_by_galore(rank=1)
        >>> g = {"w": jnp.array([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), "b": jnp.array([2.0])}
        >>> u, state = tx.update(g, tx.init(g))
        >>> np.round(u["w"], 4).tolist()  # only the top direction: Adam's first step ±1 on it
        [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
        >>> state.projector["w"].shape, state.projector["b"]
        ((2, 1), None)

    Reference: Zhao, Zhang, Chen, Wang, Anandkumar & Tian, "GaLore: Memory-Efficient LLM
    Training by Gradient Low-Rank Projection", ICML 2024, arXiv 2403.03507, Algorithm 2.
    """

    rank: int = static_field(128)
    update_proj_gap: int = static_field(200)
    scale: ScalarOrSchedule = 1.0
    base_optimizer: Any = None
    weight_dimension_numbers: Any = static_field(None)
    projector_side: str = static_field("smaller", kw_only=True)
    canonical_signs: bool = static_field(True, kw_only=True)

    def _check(self):
        owner = _OWNER
        for name in ("rank", "update_proj_gap"):
            value = getattr(self, name)
            if isinstance(value, np.ndarray | jax.Array) and value.ndim == 0:
                if jnp.issubdtype(value.dtype, jnp.integer) and not isinstance(
                    value, jax.core.Tracer
                ):
                    value = int(value)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise TypeError(
                    f"{owner}: {name} must be an integer >= 1 (it fixes the shapes of the "
                    f"state and the compiled program), got {value!r}"
                )
            check_count(owner, name, value, low=1)
            object.__setattr__(self, name, int(value))
        check_nonnegative(owner, "scale", self.scale)
        base = scale_by_adam() if self.base_optimizer is None else self.base_optimizer
        try:
            base = _as_member(base)
        except TypeError as e:
            raise TypeError(
                f"{owner}: base_optimizer must be a gradient transformation (init, update), "
                f"got {self.base_optimizer!r}"
            ) from e
        object.__setattr__(self, "base_optimizer", base)
        object.__setattr__(
            self, "weight_dimension_numbers", _check_dims(self.weight_dimension_numbers)
        )
        if self.projector_side not in _SIDES:
            raise ValueError(
                f"{owner}: projector_side must be one of {list(_SIDES)}, "
                f"got {self.projector_side!r}"
            )
        if not isinstance(self.canonical_signs, bool | np.bool_):
            raise TypeError(
                f"{owner}: canonical_signs must be a bool, got {self.canonical_signs!r}"
            )

    def _layouts(self, tree: Any) -> tuple[list, list, Any]:
        """The leaves of ``tree`` (``None`` kept), a layout (or ``None``) per leaf, the treedef."""
        leaves, treedef = jax.tree_util.tree_flatten(tree, is_leaf=tree_lib.is_none)
        dims = _per_leaf_dims(self.weight_dimension_numbers, tree, leaves)
        layouts = [
            None
            if x is None or d is None
            else _layout(d, tuple(jnp.shape(x)), self.rank, self.projector_side)
            for x, d in zip(leaves, dims, strict=True)
        ]
        # an empty matrix has no singular vectors: the base optimizer takes it as it is
        layouts = [None if lay is None or lay.b * lay.k == 0 else lay for lay in layouts]
        return leaves, layouts, treedef

    def init(self, params):
        leaves, layouts, treedef = self._layouts(params)
        projectors, proxies = [], []
        for x, lay in zip(leaves, layouts, strict=True):
            if x is None:
                projectors.append(None)
                proxies.append(None)
                continue
            dt = jnp.result_type(x)
            if lay is None:
                projectors.append(None)
                proxies.append(tree_lib.full_like(x, 0, dt))
            else:
                projectors.append(jnp.zeros(lay.projector_shape(), dt))
                low = lay.low_rank_shape()  # full size (and sharded like x) when the rank is
                proxies.append(
                    tree_lib.full_like(x, 0, dt) if low == jnp.shape(x) else jnp.zeros(low, dt)
                )
        return GaLoreState(
            count=jnp.zeros([], jnp.int32),
            base_optimizer_state=self.base_optimizer.init(treedef.unflatten(proxies)),
            projector=treedef.unflatten(projectors),
        )

    def update(self, updates, state, params=None, **extra_args):
        leaves, layouts, treedef = self._layouts(updates)
        proj_def = jax.tree_util.tree_structure(state.projector, is_leaf=tree_lib.is_none)
        if proj_def != treedef:
            raise ValueError(
                f"{_OWNER}: the structure of updates differs from the state (projector): "
                f"{treedef} vs {proj_def}"
            )
        old = treedef.flatten_up_to(state.projector)
        todo = [i for i, lay in enumerate(layouts) if lay is not None and leaves[i] is not None]
        mats = {}
        for i in todo:
            g = tree_lib.as_array(leaves[i])
            mats[i] = _to_matrices(tree_lib.cast(g, tree_lib.compute_dtype(g.dtype)), layouts[i])

        def fresh():
            return [
                _projector(mats[i], layouts[i], self.canonical_signs)
                .reshape(layouts[i].projector_shape())
                .astype(old[i].dtype)
                for i in todo
            ]

        def kept():
            return [old[i] for i in todo]

        new = _cond(state.count % self.update_proj_gap == 0, fresh, kept)
        projectors, low = list(old), list(leaves)
        for i, p in zip(todo, new, strict=True):
            lay, g = layouts[i], mats[i]
            projectors[i] = p
            pc = tree_lib.cast(p, g.dtype).reshape(lay.b, *p.shape[-2:])
            r = _h(pc) @ g if lay.left else g @ pc  # R = Pᴴ G or G P
            low[i] = tree_lib.cast(r.reshape(lay.low_rank_shape()), jnp.result_type(leaves[i]))
        out, base_state = self.base_optimizer.update(
            treedef.unflatten(low), state.base_optimizer_state, None, **extra_args
        )
        out_leaves = treedef.flatten_up_to(out)
        scale = tree_lib.Scalar(hyper(self.scale, state.count))
        for i in todo:
            lay, g, p = layouts[i], leaves[i], projectors[i]
            cd = mats[i].dtype
            pc = tree_lib.cast(p, cd).reshape(lay.b, *p.shape[-2:])
            n = tree_lib.cast(out_leaves[i], cd).reshape(lay.b, *lay.low_rank_shape()[-2:])
            full = pc @ n if lay.left else n @ _h(pc)  # P N or N Pᴴ
            full = tree_lib.smul(_from_matrices(full, lay, jnp.shape(g)), scale)
            out_leaves[i] = tree_lib.cast(full, jnp.result_type(g))
        return treedef.unflatten(out_leaves), GaLoreState(
            count=tree_lib.safe_increment(state.count),
            base_optimizer_state=base_state,
            projector=treedef.unflatten(projectors),
        )


@user_facing
def galore(
    learning_rate: ScalarOrSchedule,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: ScalarOrSchedule = 1.0,
    base_optimizer: Any = None,
    weight_decay: Any = 0.0,
    mask: Any = None,
    weight_dimension_numbers: Any = None,
    *,
    projector_side: str = "smaller",
    canonical_signs: bool = True,
) -> chain:
    """GaLore: :class:`scale_by_galore`, decoupled :class:`add_decayed_weights` in the full
    parameter space, then ``−η``: ``θ ← θ − η (α P N + λ θ)`` (Algorithm 2, with AdamW's decay).

    ``projector_side="larger", canonical_signs=False`` gives optax.contrib's numbers (see
    :class:`scale_by_galore` for why the defaults differ).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.galore(1e-2, rank=1)
        >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
        >>> state = opt.init(params)
        >>> state[0].projector["w"].shape  # P on the smaller side (3 × 1); R = G P is 4 × 1
        (3, 1)
        >>> u, state = opt.update({"w": jnp.ones((4, 3)), "b": jnp.ones(3)}, state, params)
        >>> round(float(u["w"][0, 0]), 4), round(float(u["b"][0]), 4)  # −η/√3 and −η
        (-0.0058, -0.01)

    Reference: Zhao et al., ICML 2024, arXiv 2403.03507.
    """
    return chain(
        scale_by_galore(
            rank,
            update_proj_gap,
            scale,
            base_optimizer,
            weight_dimension_numbers,
            projector_side=projector_side,
            canonical_signs=canonical_signs,
        ),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
