"""Per-parameter optimizers: partition by label, masking, freezing, and parameter groups.

``partition`` (alias ``multi_transform``) sends each parameter to the transform named by its
label; ``masked`` applies a transform to some parameters and passes the others through;
``freeze`` zeroes the updates of some parameters. ``param_groups`` builds a ``partition`` the
way ``torch.optim`` param groups read: groups selected by key-path pattern, ``ndim`` or a
predicate, each with its own hyperparameter overrides.

An inner transform sees only its own parameters: the others are replaced by
:class:`MaskedNode`, an empty record, so its state holds arrays for its parameters only and
keeps their readable key paths.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax

from gradtx import numerics as tree_lib
from gradtx.checkpoint import key_path_str
from gradtx.core import (
    FrozenTree,
    GradientTransformation,
    _as_member,
    _is_mask_fn,
    _StaticFn,
    broadcast_mask,
    chain,
    check_range,
    set_to_zero,
    static_field,
    transform,
)
from gradtx.transforms.scaling import scale

__all__ = [
    "MaskOrFn",
    "MaskedNode",
    "MaskedState",
    "PartitionState",
    "MultiTransformState",
    "masked",
    "partition",
    "multi_transform",
    "freeze",
    "selective_transform",
    "select",
    "group",
    "ParamGroup",
    "param_groups",
]


# A mask: a pytree of bools shaped like (a prefix of) the params, or a function of the params
# returning one.
MaskOrFn = Any | Callable[[Any], Any]


class MaskedNode(NamedTuple):
    """Stands in for a parameter an inner transform does not see (a pytree with no leaves)."""


class MaskedState(NamedTuple):
    """The state of the transform applied to the selected parameters."""

    inner_state: Any


class PartitionState(NamedTuple):
    """The state of each labelled transform, keyed by label (each a :class:`MaskedState`)."""

    inner_states: Any


MultiTransformState = PartitionState
"""optax's older name of :class:`PartitionState`."""


def _hide(tree: Any, keep: Any) -> Any:
    """``tree`` with every part whose ``keep`` entry (a prefix of ``tree``) is False replaced by
    one :class:`MaskedNode` (a whole masked-out subtree becomes one node, as in optax)."""
    return jax.tree_util.tree_map(lambda m, x: x if m else MaskedNode(), keep, tree)


def _merge(keep: Any, new: Any, old: Any) -> Any:
    """The parts of ``new`` where ``keep`` (a prefix) is True, of ``old`` elsewhere."""
    return jax.tree_util.tree_map(lambda m, n, o: n if m else o, keep, new, old)


def _hide_extra_args(extra_args: dict, like: Any, keep: Any, enabled: bool) -> dict:
    """With ``enabled``, extra arguments with the structure of ``like`` are masked as well."""
    if not enabled or not extra_args:
        return extra_args
    structure = jax.tree_util.tree_structure(like)
    return {
        k: _hide(v, keep) if jax.tree_util.tree_structure(v) == structure else v
        for k, v in extra_args.items()
    }


def _static_bool(value: Any, owner: str, what: str) -> bool:
    try:
        return bool(value)
    except jax.errors.ConcretizationTypeError as e:
        raise TypeError(
            f"{owner}: {what} must be a Python bool decided from the tree's structure and "
            f"shapes, not from array values (got a traced value)"
        ) from e


def _freeze(spec: Any) -> Any:
    """A mask or label tree made static; ``select`` and the group labeller compare by value.

    A spec is a function of the params when every leaf of it is callable (optax's rule), so a
    tree of bools that is also callable (an Equinox module with ``__call__``) is a tree.
    """
    if isinstance(spec, select | _GroupLabels | FrozenTree | _StaticFn):
        return spec
    return _StaticFn(spec) if _is_mask_fn(spec) else FrozenTree(spec)


def _resolve(spec: Any, tree: Any, owner: str, what: str = "mask") -> Any:
    """The frozen mask or labels (``what`` names which, in errors) for ``tree``: a prefix of
    its structure, checked to be one."""
    value = spec.tree if isinstance(spec, FrozenTree) else spec(tree)
    broadcast_mask(value, tree, owner, what)  # raises, naming both structures, if it is not
    return value


def _is_placeholder(params: Any) -> bool:
    """Params with no leaves at all, such as the placeholder optax's ``tree_map_params`` passes
    to ``init`` to find the parts of a state that mirror the params."""
    return not jax.tree_util.tree_leaves(params)


# ----------------------------------------------------------------------------------------------
# masked, partition, freeze.


@transform
class masked(GradientTransformation):
    """Apply ``inner`` to the parameters the mask selects; pass the other updates through.

    ``u_i ← inner(u)_i`` where ``mask_i``, else ``u_i`` unchanged. ``inner`` sees (and keeps
    state for) the selected parameters only: every part of the tree the mask leaves out is one
    :class:`MaskedNode` where the mask has its ``False`` (a mask ``{"a": True, "b": False}``
    over ``{"a": ..., "b": {"x": ..., "y": ...}}`` shows ``inner`` ``{"a": ..., "b":
    MaskedNode()}``), the state layout of optax's ``masked``.

    Args:
        inner: the transform (gradtx or optax) for the selected parameters.
        mask: a pytree of bools with the params' structure (or a prefix of it), or a function
            of the params returning one (e.g. :class:`select`). As in optax, the mask is a
            function when every leaf of it is callable: a tree of bools that is also callable
            (an Equinox module with ``__call__``) is used as a tree.
        mask_compatible_extra_args: also mask the extra keyword arguments of ``update`` that
            have the structure of the updates.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.masked(gradtx.scale(10.0), {"w": True, "b": False})
        >>> p = {"w": jnp.ones(1), "b": jnp.ones(1)}
        >>> u, _ = tx.update(p, tx.init(p), p)
        >>> float(u["w"][0]), float(u["b"][0])
        (10.0, 1.0)
        >>> gradtx.masked(gradtx.trace(0.9), {"w": False, "b": True}).init(p).inner_state.trace
        {'b': Array([0.], dtype=float32), 'w': MaskedNode()}
    """

    inner: Any
    mask: Any = static_field()
    mask_compatible_extra_args: bool = static_field(False)
    _checks_param_dtypes = False  # the inner transform checks the parameters it is given

    def __init__(self, inner: Any, mask: Any, *, mask_compatible_extra_args: bool = False):
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "mask_compatible_extra_args", mask_compatible_extra_args)
        self.__post_init__()

    def _check(self):
        object.__setattr__(self, "inner", _as_member(self.inner))
        if self.mask is None:
            raise TypeError("masked: mask must be a pytree of bools or a function, got None")
        object.__setattr__(self, "mask", _freeze(self.mask))

    def _keep(self, tree: Any) -> Any:
        m = _resolve(self.mask, tree, "masked")
        return jax.tree_util.tree_map(lambda b: _static_bool(b, "masked", "the mask"), m)

    def init(self, params):
        try:
            keep = self._keep(params)
        except Exception:
            if not _is_placeholder(params):
                raise
            # Placeholder params: the inner state mirrors them as they are (as in optax).
            return MaskedState(inner_state=self.inner.init(params))
        return MaskedState(inner_state=self.inner.init(_hide(params, keep)))

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, params, "masked", "updates", "params")
        keep = self._keep(params if params is not None else updates)
        hidden_params = None if params is None else _hide(params, keep)
        extra = _hide_extra_args(extra_args, updates, keep, self.mask_compatible_extra_args)
        new, inner_state = self.inner.update(
            _hide(updates, keep), state.inner_state, hidden_params, **extra
        )
        return _merge(keep, new, updates), MaskedState(inner_state=inner_state)


@transform
class partition(GradientTransformation):
    """Send each parameter to the transform named by its label.

    ``u_i ← transforms[label_i](u)_i``: every transform sees only the parameters with its
    label (the others are :class:`MaskedNode`, as in :class:`masked`), and its state is kept
    under that label as a :class:`MaskedState`: optax's layout.

    Args:
        transforms: a dict ``{label: transform}`` (gradtx or optax transforms).
        param_labels: a pytree of labels with the params' structure (or a prefix of it), or a
            function of the params returning one (a function when every leaf is callable).
        mask_compatible_extra_args: also mask the extra keyword arguments of ``update`` that
            have the structure of the updates, for each transform.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.partition(
        ...     {"fast": gradtx.sgd(1.0), "slow": gradtx.sgd(0.1)}, {"w": "fast", "b": "slow"}
        ... )
        >>> p = {"w": jnp.ones(1), "b": jnp.ones(1)}
        >>> u, _ = tx.update(p, tx.init(p), p)
        >>> round(float(u["w"][0]), 4), round(float(u["b"][0]), 4)
        (-1.0, -0.1)
    """

    transforms: Any
    param_labels: Any = static_field()
    mask_compatible_extra_args: bool = static_field(False)
    _checks_param_dtypes = False  # each transform checks the parameters it is given

    def __init__(
        self, transforms: Any, param_labels: Any, *, mask_compatible_extra_args: bool = False
    ):
        object.__setattr__(self, "transforms", transforms)
        object.__setattr__(self, "param_labels", param_labels)
        object.__setattr__(self, "mask_compatible_extra_args", mask_compatible_extra_args)
        self.__post_init__()

    def _check(self):
        if not isinstance(self.transforms, Mapping):
            raise TypeError(
                f"partition: transforms must be a dict {{label: transform}}, "
                f"got {type(self.transforms).__name__}"
            )
        object.__setattr__(
            self, "transforms", {k: _as_member(t) for k, t in self.transforms.items()}
        )
        object.__setattr__(self, "param_labels", _freeze(self.param_labels))

    def _labels(self, tree: Any) -> Any:
        labels = _resolve(self.param_labels, tree, "partition", "labels")
        found = set(jax.tree_util.tree_leaves(labels))
        unknown = sorted(str(x) for x in found if x not in self.transforms)
        if unknown:
            raise ValueError(
                f"partition: parameters are labelled {unknown} but transforms has only the "
                f"labels {sorted(map(str, self.transforms))}"
            )
        return labels

    def init(self, params):
        try:
            labels = self._labels(params)
        except Exception:
            if not _is_placeholder(params):
                raise
            # Placeholder params: each inner state mirrors them as they are (as in optax).
            return PartitionState(
                inner_states={k: MaskedState(tx.init(params)) for k, tx in self.transforms.items()}
            )
        states = {}
        for label, tx in self.transforms.items():
            keep = jax.tree_util.tree_map(lambda x, lab=label: x == lab, labels)
            states[label] = MaskedState(inner_state=tx.init(_hide(params, keep)))
        return PartitionState(inner_states=states)

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, params, "partition", "updates", "params")
        labels = self._labels(params if params is not None else updates)
        out = updates
        states = {}
        for label, tx in self.transforms.items():
            keep = jax.tree_util.tree_map(lambda x, lab=label: x == lab, labels)
            hidden_params = None if params is None else _hide(params, keep)
            extra = _hide_extra_args(extra_args, updates, keep, self.mask_compatible_extra_args)
            new, inner = tx.update(
                _hide(updates, keep),
                state.inner_states[label].inner_state,
                hidden_params,
                **extra,
            )
            states[label] = MaskedState(inner_state=inner)
            out = _merge(keep, new, out)
        return out, PartitionState(inner_states=states)


multi_transform = partition
"""Alias of :class:`partition` (optax's older name)."""


def freeze(mask: Any) -> masked:
    """Zero the updates of the parameters the mask selects (they do not train).

    ``masked(set_to_zero(), mask)``, as in optax. It zeroes what reaches it, so put it last
    in the chain (after the optimizer) when the optimizer adds terms of its own: placed first,
    ``chain(freeze(mask), adamw(...))`` still moves frozen parameters by AdamW's weight decay
    ``−αλθ``, which is computed from the parameters, not the gradient. To keep no state for
    frozen parameters either, use :func:`selective_transform`.

    Args:
        mask: a bool (freeze everything or nothing), a pytree of bools (or a prefix of the
            params' tree) marking the frozen parameters, or a function of the params returning
            one (e.g. :class:`select`).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.chain(gradtx.freeze({"w": True, "b": False}), gradtx.sgd(0.1))
        >>> p = {"w": jnp.ones(1), "b": jnp.ones(1)}
        >>> u, _ = tx.update(p, tx.init(p), p)
        >>> abs(float(u["w"][0])), round(float(u["b"][0]), 4)
        (0.0, -0.1)
    """
    return masked(set_to_zero(), mask)


def selective_transform(optimizer: Any, *, freeze_mask: Any) -> partition:
    """Optimize only the parameters that are not frozen: ``optimizer`` for those whose
    ``freeze_mask`` entry is False, zero updates for the frozen ones.

    Unlike ``chain(freeze(mask), optimizer)``, the optimizer keeps no state for the frozen
    parameters and never sees them (weight decay does not move them either). The result is a
    :class:`partition` with the labels ``"train"`` and ``"freeze"``, optax's layout.

    Args:
        optimizer: the optimizer for the trained parameters (gradtx or optax).
        freeze_mask: a bool (freeze everything or nothing) or a pytree of bools (or a prefix of
            the params' tree), True for the frozen parameters. It must not depend on values.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.selective_transform(gradtx.sgd(0.5), freeze_mask={"w": True, "b": False})
        >>> p = {"w": jnp.ones(2), "b": jnp.ones(2)}
        >>> u, state = tx.update(p, tx.init(p), p)
        >>> u["w"].tolist(), u["b"].tolist()
        ([0.0, 0.0], [-0.5, -0.5])
        >>> sorted(state.inner_states)
        ['freeze', 'train']
    """
    labels = jax.tree_util.tree_map(
        lambda m: "freeze" if _static_bool(m, "selective_transform", "freeze_mask") else "train",
        freeze_mask,
    )
    return partition({"train": optimizer, "freeze": set_to_zero()}, labels)


# ----------------------------------------------------------------------------------------------
# Parameter groups.


@jax.tree_util.register_static
class select:
    """A function of the params giving a tree of bools: which leaves match.

    A leaf matches when its readable path (``layer1/bias``, see :func:`key_path_str`) matches
    any of the glob ``patterns`` (``*`` also crosses ``/``), AND its ``ndim`` is one of ``ndim``
    (when given), AND ``where(path, leaf)`` is true (when given). With no pattern every path
    matches. Usable wherever a mask is accepted, and to define a :func:`group`.

    Args:
        *patterns: glob patterns (``fnmatch``, case-sensitive) such as ``"*bias"``,
            ``"*norm*"``, ``"encoder/*"``.
        ndim: an int or a tuple of ints.
        where: a predicate ``(path: str, leaf) -> bool`` decided from the path, shape or dtype
            (the leaf may be traced inside ``jit``).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> p = {"dense": {"w": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "ln": jnp.ones(2)}
        >>> gradtx.select("*bias", ndim=1)(p)
        {'dense': {'bias': True, 'w': False}, 'ln': False}
    """

    def __init__(
        self,
        *patterns: str,
        ndim: int | Sequence[int] | None = None,
        where: Callable[[str, Any], bool] | None = None,
    ):
        for pat in patterns:
            if not isinstance(pat, str):
                raise TypeError(f"select: patterns must be strings, got {pat!r}")
        if ndim is not None:
            dims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
            if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
                raise TypeError(
                    f"select: ndim must be an int >= 0 or a tuple of them, got {ndim!r}"
                )
            ndim = dims
        if where is not None and not callable(where):
            raise TypeError(f"select: where must be a callable (path, leaf) -> bool, got {where!r}")
        self.patterns = tuple(patterns)
        self.ndim = ndim
        self.where = where

    def matches(self, path: str, leaf: Any) -> bool:
        """Whether the leaf at ``path`` is selected."""
        if self.patterns and not any(fnmatch.fnmatchcase(path, p) for p in self.patterns):
            return False
        if self.ndim is not None and len(jax.numpy.shape(leaf)) not in self.ndim:
            return False
        if self.where is not None:
            return _static_bool(self.where(path, leaf), "select", "where(path, leaf)")
        return True

    def __call__(self, params: Any) -> Any:
        return jax.tree_util.tree_map_with_path(
            lambda p, x: self.matches(key_path_str(p), x), params
        )

    def _key(self) -> tuple:
        return (self.patterns, self.ndim, self.where)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, select) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        parts = [repr(p) for p in self.patterns]
        if self.ndim is not None:
            parts.append(f"ndim={self.ndim!r}")
        if self.where is not None:
            parts.append(f"where={getattr(self.where, '__name__', self.where)!r}")
        return f"select({', '.join(parts)})"


class ParamGroup(NamedTuple):
    """One parameter group of :func:`param_groups`: which leaves, and how to optimise them."""

    selector: select
    overrides: dict
    optimizer: Any
    name: str | None
    lr_scale: Any = None


def group(
    *patterns: str | select,
    ndim: int | Sequence[int] | None = None,
    where: Callable[[str, Any], bool] | None = None,
    name: str | None = None,
    optimizer: Any = None,
    lr_scale: Any = None,
    **overrides: Any,
) -> ParamGroup:
    """A parameter group for :func:`param_groups`: a selection plus hyperparameter overrides.

    Args:
        *patterns: glob patterns on the readable key path (see :class:`select`), or one
            :class:`select`.
        ndim: a further condition on the number of dimensions, as in :class:`select`.
        where: a further condition on the leaf, as in :class:`select`.
        name: the group's label (its state is kept under it); default ``group<i>``.
        optimizer: a ready transform for this group, instead of overrides.
        lr_scale: multiply this group's updates by this factor (a leaf), after its optimizer:
            for every optimizer whose last step is ``scale_by_learning_rate`` (all of
            gradtx's), this is the learning rate times ``lr_scale``, schedules included.
        **overrides: keyword arguments passed to the optimizer factory for this group,
            over the common ones (e.g. ``weight_decay=0.0``, ``learning_rate=5e-4``).

    Example:
        >>> import gradtx
        >>> g = gradtx.group("*bias", "*norm*", weight_decay=0.0)
        >>> g.overrides
        {'weight_decay': 0.0}
    """
    if len(patterns) == 1 and isinstance(patterns[0], select):
        if ndim is not None or where is not None:
            raise TypeError("group: give ndim/where to the select, not next to it")
        sel = patterns[0]
    else:
        sel = select(*patterns, ndim=ndim, where=where)
    if not sel.patterns and sel.ndim is None and sel.where is None:
        raise ValueError("group: give at least one pattern, ndim or where to select leaves")
    if optimizer is not None and overrides:
        raise TypeError(
            f"group: give either optimizer or hyperparameter overrides, got both "
            f"(overrides {sorted(overrides)})"
        )
    check_range("group", "lr_scale", lr_scale)
    return ParamGroup(
        selector=sel, overrides=dict(overrides), optimizer=optimizer, name=name, lr_scale=lr_scale
    )


@jax.tree_util.register_static
class _GroupLabels:
    """The labelling function of :func:`param_groups` (hashable, so jit caches it by value)."""

    def __init__(self, selectors: tuple, names: tuple, default: str | None):
        self.selectors, self.names, self.default = selectors, names, default

    def __call__(self, params: Any) -> Any:
        unmatched, overlaps = [], []

        def label(path, leaf):
            p = key_path_str(path)
            hits = [
                n for s, n in zip(self.selectors, self.names, strict=True) if s.matches(p, leaf)
            ]
            if len(hits) > 1:
                overlaps.append(f"{p} (groups {hits})")
            if not hits:
                if self.default is None:
                    unmatched.append(p)
                return self.default
            return hits[0]

        labels = jax.tree_util.tree_map_with_path(label, params)
        if unmatched or overlaps:
            parts = []
            if unmatched:
                parts.append(
                    f"matched by no group: {unmatched} (add a group, or pass default={{}} to "
                    f"optimise them with the common settings)"
                )
            if overlaps:
                parts.append(f"matched by several groups: {overlaps}")
            raise ValueError("param_groups: parameters " + "; ".join(parts))
        return labels

    def _key(self) -> tuple:
        return (self.selectors, self.names, self.default)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _GroupLabels) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())


def param_groups(
    optimizer: Callable[..., Any] | None,
    groups: Sequence[ParamGroup],
    *,
    default: bool | Mapping[str, Any] | Any = None,
    **common: Any,
) -> partition:
    """Parameter groups in the style of ``torch.optim``: one optimizer per group of leaves.

    Each group is ``optimizer(**{**common, **group.overrides})`` (or the group's own
    ``optimizer``) applied to the leaves the group selects. Every leaf must be selected by
    exactly one group: a leaf selected by none (when there is no ``default``) or by several
    raises ``ValueError`` naming the paths. The result is a :class:`partition` whose state
    holds each group's state under the group's name.

    Args:
        optimizer: a factory such as ``gradtx.adamw`` (or ``None`` when every group has its
            own ``optimizer``).
        groups: :func:`group` entries.
        default: what optimises the leaves no group selects: ``None`` (an error), ``True`` or a
            dict of overrides (the factory with the common settings, plus the overrides), or a
            transform. Its label is ``"default"``.
        **common: keyword arguments shared by every group (e.g. ``learning_rate=1e-3``).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.param_groups(
        ...     gradtx.adamw,
        ...     [gradtx.group("*bias", "*norm*", weight_decay=0.0, name="no_decay")],
        ...     default=True, learning_rate=1e-3, weight_decay=0.01,
        ... )
        >>> state = opt.init({"w": jnp.ones((2, 2)), "bias": jnp.zeros(2)})
        >>> sorted(state.inner_states)
        ['default', 'no_decay']
    """
    groups = list(groups)
    for i, g in enumerate(groups):
        if not isinstance(g, ParamGroup):
            raise TypeError(f"param_groups: groups[{i}] must be made by gradtx.group(), got {g!r}")
    names = tuple(g.name if g.name is not None else f"group{i}" for i, g in enumerate(groups))
    if default is not None and default is not False and "default" in names:
        raise ValueError("param_groups: the name 'default' is taken by the default group")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"param_groups: group names must be unique, got duplicates {dup}")

    def build(owner: str, overrides: Mapping[str, Any], own: Any) -> Any:
        if own is not None:
            return own
        if optimizer is None:
            raise TypeError(f"param_groups: {owner} has no optimizer and no factory was given")
        return optimizer(**{**common, **overrides})

    transforms = {}
    for n, g in zip(names, groups, strict=True):
        tx = build(f"group {n!r}", g.overrides, g.optimizer)
        transforms[n] = tx if g.lr_scale is None else chain(tx, scale(g.lr_scale))
    default_name = None
    if default is True:
        default = {}
    if default is not None and default is not False:
        default_name = "default"
        if isinstance(default, Mapping):
            transforms[default_name] = build("the default group", default, None)
        else:
            transforms[default_name] = default
    labels = _GroupLabels(tuple(g.selector for g in groups), names, default_name)
    return partition(transforms, labels)
