"""The flat multi-tensor path: an optimizer's state kept as a few contiguous buffers.

A model with many small parameter arrays makes every step (and every compilation) pay per
array. :func:`flat` gathers the gradients and parameters into one vector per dtype (and per
mask group), runs the optimizer on those few vectors, and splits the updates back into the
parameter tree once. The numbers are those of the tree path: only transforms that act on each
element (Adam, momentum, weight decay, ...) or on the norm of all updates together
(:class:`gradtx.clip_by_global_norm`) are accepted, and every other one is refused when
``flat`` is built, naming it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradtx import numerics as tree_lib
from gradtx.core import (
    FrozenTree,
    GradientTransformation,
    _Foreign,
    broadcast_mask,
    chain,
    named_chain,
    transform,
)

__all__ = ["flat", "FlatState", "FlatLayout"]


@jax.tree_util.register_static
class FlatLayout:
    """Where each parameter lives in the flat buffers (static: part of the state's treedef).

    Leaves are grouped by dtype and, when the optimizer has masks, by the mask bits of each
    leaf; a group's buffer is the group's leaves raveled and concatenated in tree order.
    """

    def __init__(self, treedef, shapes, dtypes, groups, offsets, sizes, group_bits):
        self.treedef = treedef
        self.shapes = shapes  # per leaf (None for a None leaf)
        self.dtypes = dtypes
        self.groups = groups  # per leaf: the name of its group (None for a None leaf)
        self.offsets = offsets
        self.sizes = sizes  # {group: number of elements}, as a tuple of pairs
        self.group_bits = group_bits  # {group: tuple of mask bits}, as a tuple of pairs
        self._key = (treedef, shapes, dtypes, groups, offsets, sizes, group_bits)

    @classmethod
    def of(cls, params: Any, masks: list[Any]) -> FlatLayout:
        leaves, treedef = jax.tree_util.tree_flatten(params, is_leaf=tree_lib.is_none)
        bits = [
            jax.tree_util.tree_leaves(broadcast_mask(m, params, "flat"), is_leaf=tree_lib.is_none)
            for m in masks
        ]
        shapes, dtypes, groups, offsets, sizes, group_bits = [], [], [], [], {}, {}
        for i, x in enumerate(leaves):
            if x is None:
                shapes.append(None), dtypes.append(None), groups.append(None), offsets.append(0)
                continue
            b = tuple(_concrete_bit(m[i]) for m in bits)
            dt = jnp.dtype(jnp.result_type(x))
            name = dt.name + ("" if not b else "_" + "".join("1" if v else "0" for v in b))
            shape = tuple(np.shape(x))
            shapes.append(shape), dtypes.append(dt.name), groups.append(name)
            offsets.append(sizes.get(name, 0))
            sizes[name] = sizes.get(name, 0) + int(np.prod(shape, dtype=np.int64))
            group_bits[name] = b
        return cls(
            treedef,
            tuple(shapes),
            tuple(dtypes),
            tuple(groups),
            tuple(offsets),
            tuple(sorted(sizes.items())),
            tuple(sorted(group_bits.items())),
        )

    def check(self, tree: Any, what: str) -> list[Any]:
        """The leaves of ``tree`` after checking it has the params' structure and shapes."""
        expected = getattr(self, "_expected", None)
        if expected is None:  # abstract params, built once per layout
            expected = jax.tree_util.tree_unflatten(
                self.treedef,
                [
                    None if s is None else jax.ShapeDtypeStruct(s, d)
                    for s, d in zip(self.shapes, self.dtypes, strict=True)
                ],
            )
            self._expected = expected
        tree_lib.check_structure(tree, expected, "flat", what, "params flat was initialised with")
        return jax.tree_util.tree_leaves(tree, is_leaf=tree_lib.is_none)

    def gather(self, tree: Any, what: str = "updates") -> dict[str, jax.Array]:
        """The leaves of ``tree`` raveled into one buffer per group (one concatenation each)."""
        leaves = self.check(tree, what)
        parts: dict[str, list[jax.Array]] = {name: [] for name, _ in self.sizes}
        for x, name in zip(leaves, self.groups, strict=True):
            if name is not None:
                x = tree_lib.as_array(x)
                parts[name].append(lax.reshape(x, (x.size,)) if x.ndim != 1 else x)
        return {name: _concatenate(_common_dtype(xs)) for name, xs in parts.items()}

    def scatter(self, buffers: dict[str, jax.Array], offsets: tuple | None = None) -> Any:
        """The parameter tree cut back out of the group buffers (one slice per leaf).

        With ``offsets`` (the state's run-time copy of :attr:`offsets`) the slices start at
        run-time values: XLA then compiles one kernel per leaf *shape* instead of one per leaf
        (a constant start makes every slice a distinct kernel, which made compiling a
        1,000-leaf split take ten times longer).
        """
        leaves = []
        if offsets is None:
            offsets = self.offsets
        for shape, name, off in zip(self.shapes, self.groups, offsets, strict=True):
            if name is None:
                leaves.append(None)
                continue
            buf = buffers[name]
            if not jax.tree_util.tree_leaves(buf):  # a group a mask hides (``MaskedNode()``)
                leaves.append(buf)
                continue
            if isinstance(buf, jax.ShapeDtypeStruct):  # an abstract state (``eval_shape``)
                leaves.append(jax.ShapeDtypeStruct(shape, buf.dtype))
                continue
            buf = tree_lib.as_array(buf)
            n = int(np.prod(shape, dtype=np.int64))
            if n == buf.shape[0]:
                piece = buf
            elif isinstance(off, int):
                piece = lax.slice(buf, (off,), (off + n,))
            else:
                piece = lax.dynamic_slice(buf, (off,), (n,))
            leaves.append(lax.reshape(piece, shape) if shape != (n,) else piece)
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def is_group_dict(self, x: Any) -> bool:
        return (
            isinstance(x, dict)
            and len(x) == len(self.sizes)
            and all(name in x for name, _ in self.sizes)
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FlatLayout) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"FlatLayout({dict(self.sizes)})"


def _concatenate(xs: list[jax.Array], fan_in: int = 8) -> jax.Array:
    """One vector from many, concatenated ``fan_in`` at a time: XLA's CPU code for a
    1,000-operand concatenation copied 10 MB in 1.8 ms, in groups of 8 in 1.3 ms."""
    while len(xs) > 1:
        xs = [
            xs[i] if i + 1 == len(xs) else lax.concatenate(xs[i : i + fan_in], 0)
            for i in range(0, len(xs), fan_in)
        ]
    return xs[0]


def _offsets(layout: FlatLayout) -> tuple:
    return tuple(jnp.asarray(o, jnp.int32) for o in layout.offsets)


def _common_dtype(xs: list[jax.Array]) -> list[jax.Array]:
    dt = xs[0].dtype
    return [tree_lib.cast(x, dt) for x in xs]


def _concrete_bit(m: Any) -> bool:
    if isinstance(m, bool | np.bool_):
        return bool(m)
    if isinstance(m, jax.core.Tracer):
        raise TypeError("flat: masks must be concrete (Python bools), got a traced value")
    return bool(np.asarray(m))


class FlatState(NamedTuple):
    """The inner optimizer's state on the flat buffers, and the layout that maps them back.

    :func:`gradtx.state_dict` names its arrays as the tree path would (``mu/layer1/w``), so a
    checkpoint moves freely between ``opt`` and ``flat(opt)``.
    """

    inner: Any
    layout: FlatLayout
    offsets: tuple = ()  # where each leaf starts in its buffer, as int32 scalars (see scatter)

    def unpacked(self) -> Any:
        """The inner state with every flat buffer group cut back into the parameter tree."""
        return jax.tree_util.tree_map(
            lambda x: self.layout.scatter(x) if self.layout.is_group_dict(x) else x,
            self.inner,
            is_leaf=self.layout.is_group_dict,
        )

    def packed(self, view: Any) -> FlatState:
        """The inverse of :meth:`unpacked`: ``view`` (shaped like ``unpacked()``) as a state."""
        inner = jax.tree_util.tree_map(
            lambda t, v: self._regather(t, v) if self.layout.is_group_dict(t) else v,
            self.inner,
            view,
            is_leaf=self.layout.is_group_dict,
        )
        return FlatState(inner, self.layout, _offsets(self.layout))

    def _regather(self, buffers: dict, view: Any) -> dict:
        """``view`` (a params-shaped tree) as group buffers; a group a mask hides (its buffer a
        ``MaskedNode()``) stays hidden."""
        hidden = {n for n, b in buffers.items() if not jax.tree_util.tree_leaves(b)}
        if not hidden:
            return self.layout.gather(view, "state")
        layout = self.layout
        parts = layout.treedef.flatten_up_to(view)
        filled = [
            jnp.zeros(shape, dt) if shape is not None and not jax.tree_util.tree_leaves(x) else x
            for x, shape, dt in zip(parts, layout.shapes, layout.dtypes, strict=True)
        ]
        out = layout.gather(jax.tree_util.tree_unflatten(layout.treedef, filled), "state")
        return {n: buffers[n] if n in hidden else b for n, b in out.items()}


# ----------------------------------------------------------------------------------------------
# Which transforms run on flat buffers.


def _members(tx: Any) -> list[tuple[str, Any]]:
    """The transforms nested in ``tx`` (chain members, a wrapper's ``inner``), by field."""
    if isinstance(tx, chain | named_chain):
        return [(f"transforms[{i}]", t) for i, t in enumerate(tx.transforms)]
    return [
        (f.name, getattr(tx, f.name))
        for f in dataclasses.fields(tx)
        if isinstance(getattr(tx, f.name), GradientTransformation | _Foreign)
    ]


def _flat_safe_types() -> set[type]:
    """gradtx's transforms that act element by element or through the norm of all updates
    (a transform of your own opts in with a class attribute ``flat_safe = True``)."""
    import gradtx as g

    return {
        g.chain, g.named_chain, g.identity, g.set_to_zero, g.masked,
        g.scale, g.scale_by_schedule, g.scale_by_learning_rate,
        g.trace, g.ema, g.add_decayed_weights, g.add_proximal_decay,
        g.clip, g.clip_by_global_norm,
        g.scale_by_adam, g.scale_by_amsgrad, g.scale_by_adamax, g.scale_by_rms,
        g.scale_by_stddev, g.scale_by_rss, g.scale_by_adadelta,
        g.scale_by_radam, g.scale_by_belief, g.scale_by_yogi, g.scale_by_adan, g.scale_by_lion,
        g.scale_by_sign, g.scale_by_rprop, g.scale_by_optimistic_gradient,
        g.scale_by_polyak, g.scale_by_dog, g.reduce_on_plateau,
    }  # fmt: skip


def _check_flat(tx: Any) -> list[Any]:
    """Refuse what cannot run on flat buffers; return the masks found (in walk order)."""
    if isinstance(tx, _Foreign):
        raise TypeError(
            f"flat: {tx!r} is not a gradtx transform, so flat cannot tell whether it works on "
            "flat buffers; use gradtx's transform of the same name"
        )
    name = getattr(tx, "_owner", type(tx).__name__)  # GradientTransformation(init, update)
    if not (type(tx) in _flat_safe_types() or getattr(type(tx), "flat_safe", False)):
        raise TypeError(
            f"flat: {name} needs each parameter's own shape or norm (or is not known to act "
            f"element by element), so it cannot run on flat buffers; use {name} without "
            "gradtx.flat"
        )
    masks = []
    mask = getattr(tx, "mask", None) if dataclasses.is_dataclass(tx) else None
    if mask is not None:
        masks.append(mask)
    for _, member in _members(tx):
        masks += _check_flat(member)
    return masks


def _with_group_masks(tx: Any, bits: dict[str, tuple], counter: list[int]) -> Any:
    """``tx`` with every mask replaced by its value on the group buffers."""
    changes = {}
    mask = getattr(tx, "mask", None) if dataclasses.is_dataclass(tx) else None
    if mask is not None:
        i = counter[0]
        counter[0] += 1
        changes["mask"] = FrozenTree({g: b[i] for g, b in bits.items()})
    if isinstance(tx, chain):
        return tx._with_members(_with_group_masks(t, bits, counter) for t in tx.transforms)
    if isinstance(tx, named_chain):
        return named_chain(
            *(
                (n, _with_group_masks(t, bits, counter))
                for n, t in zip(tx.names, tx.transforms, strict=True)
            )
        )
    for field, member in _members(tx):
        changes[field] = _with_group_masks(member, bits, counter)
    return dataclasses.replace(tx, **changes) if changes else tx


@transform
class flat(GradientTransformation):
    """Run ``inner`` on a few contiguous buffers instead of one array per parameter.

    Gradients (and parameters, for weight decay) are gathered once per step into one vector
    per dtype, or per mask group when ``inner`` has masks (``add_decayed_weights(mask=...)``);
    ``inner`` updates those vectors and its updates are split back into the parameter tree
    once. For a model with many small arrays this compiles much faster and runs faster than
    one operation per array; the results are those of ``inner`` itself: bit for bit op by op
    for transforms that act element by element, and to rounding otherwise (the global norm of
    :class:`clip_by_global_norm` is summed in another order; a compiled step fuses another
    program).

    Accepted: transforms that act on each element, or on the norm of all updates together
    (``sgd``, ``adam``, ``adamw``, ``rmsprop``, ``lion``, ``clip_by_global_norm``, ...), in
    ``chain``/``named_chain`` and ``masked``. Refused at construction, with a ``TypeError``
    naming the transform: those that need each parameter's own shape or norm (``lamb``,
    ``lars``, ``adafactor``, ``novograd``, ``sm3``, ``clip_by_block_rms``, ...), per-leaf
    random noise, and transforms from other libraries.

    The state is a :class:`FlatState`; :func:`gradtx.state_dict` names its arrays by parameter
    (``1/0/mu/layer1/w``), exactly as for ``inner`` alone, so checkpoints are interchangeable.
    (:class:`gradtx.flatten`, optax's wrapper of the same idea, runs any transform on a single
    vector of one promoted dtype and keeps its state unnamed; ``flat`` keeps each dtype, checks
    that the result cannot change, and keeps the names.)

    Args:
        inner: the optimizer to run on the flat buffers.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.flat(gradtx.adamw(0.1, weight_decay=0.0))
        >>> p = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
        >>> state = opt.init(p)
        >>> state.inner[0].mu["float32"].shape  # one buffer for all six numbers
        (6,)
        >>> u, state = opt.update({"w": jnp.ones((2, 2)), "b": -jnp.ones(2)}, state, p)
        >>> [round(float(x), 4) for x in u["b"]]  # Adam's first step: -0.1 * sign(g)
        [0.1, 0.1]
        >>> sorted(gradtx.state_dict(state))[:2]
        ['0/count', '0/mu/b']
    """

    inner: Any

    def _check(self):
        if isinstance(self.inner, GradientTransformation):
            _check_flat(self.inner)
        elif _is_pair(self.inner):
            _check_flat(_Foreign(self.inner))
        else:
            raise TypeError(f"flat: inner must be a gradient transformation, got {self.inner!r}")

    def _masks(self) -> list[Any]:
        return _check_flat(self.inner)

    def init(self, params):
        masks = [m.tree if isinstance(m, FrozenTree) else m(params) for m in self._masks()]
        layout = FlatLayout.of(params, masks)
        inner = self._inner_for(layout)
        return FlatState(
            inner=inner.init(layout.gather(params, "params")),
            layout=layout,
            offsets=_offsets(layout),
        )

    def update(self, updates, state, params=None, **extra_args):
        if not isinstance(state, FlatState):
            raise ValueError(
                f"flat: the state must be the FlatState flat's init builds, got "
                f"{type(state).__name__}"
            )
        layout = state.layout
        g = layout.gather(updates, "updates")
        p = None if params is None else layout.gather(params, "params")
        u, inner_state = self._inner_for(layout).update(g, state.inner, p, **extra_args)
        return layout.scatter(u, state.offsets), state._replace(inner=inner_state)

    def _inner_for(self, layout: FlatLayout) -> Any:
        bits = dict(layout.group_bits)
        if not any(bits.values()):
            return self.inner
        return _with_group_masks(self.inner, bits, [0])


def _is_pair(x: Any) -> bool:
    try:
        a, b = x
    except (TypeError, ValueError):
        return False
    return callable(a) and callable(b)
