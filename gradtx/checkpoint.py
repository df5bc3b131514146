"""Named optimizer state: a flat mapping from readable key paths to arrays, and back.

``state_dict(state)`` names every array of an optimizer state by its path through the state's
records (NamedTuple field names, dict keys, tuple positions), e.g. ``0/mu/layer1/w`` for a
:class:`gradtx.chain` or ``adam/mu/layer1/w`` for a :class:`gradtx.named_chain`. The mapping can
be written with ``numpy.savez``, orbax-checkpoint or any key-value store;
``load_state_dict(template, mapping)`` puts it back into the structure of ``template`` (a fresh
``opt.init(params)`` or its ``jax.eval_shape``) and names every missing, unexpected,
mis-shaped and mis-typed key when they do not match; it never casts lossily.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["state_dict", "load_state_dict", "key_path_str"]


def _key_str(k: Any) -> str:
    tu = jax.tree_util
    if isinstance(k, tu.DictKey):
        return str(k.key)
    if isinstance(k, tu.GetAttrKey):
        return k.name
    if isinstance(k, tu.SequenceKey):
        return str(k.idx)
    if isinstance(k, tu.FlattenedIndexKey):
        return str(k.key)
    return str(k)


def key_path_str(path: tuple, sep: str = "/") -> str:
    """A readable string for a key path from ``jax.tree_util.tree_flatten_with_path``.

    Dict keys, attribute (NamedTuple field) names and sequence indices are joined by ``sep``:
    ``(DictKey('layer1'), DictKey('w'))`` becomes ``layer1/w``.

    Example:
        >>> import jax, gradtx
        >>> [(path, _)], _ = jax.tree_util.tree_flatten_with_path({"layer1": {"w": 1.0}})
        >>> gradtx.key_path_str(path)
        'layer1/w'
    """
    return sep.join(_key_str(k) for k in path)


def _is_flat_state(x: Any) -> bool:
    from gradtx.flat import FlatState

    return isinstance(x, FlatState)


def _unpack(state: Any) -> Any:
    """The state with every :class:`gradtx.FlatState` shown as the tree path's state, so its
    arrays are named by parameter (and checkpoints move between ``opt`` and ``flat(opt)``)."""
    return jax.tree_util.tree_map(
        lambda x: x.unpacked() if _is_flat_state(x) else x, state, is_leaf=_is_flat_state
    )


def _repack(template: Any, view: Any) -> Any:
    """The inverse of :func:`_unpack`, guided by the template's flat states."""
    return jax.tree_util.tree_map(
        lambda t, v: t.packed(v) if _is_flat_state(t) else v, template, view, is_leaf=_is_flat_state
    )


def _flatten(tree: Any, sep: str) -> tuple[list[tuple[str, Any]], Any]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    named = [(key_path_str(p, sep), x) for p, x in leaves]
    seen: dict[str, int] = {}
    for name, _ in named:
        seen[name] = seen.get(name, 0) + 1
    dup = sorted(n for n, c in seen.items() if c > 1)
    if dup:
        raise ValueError(
            f"state_dict: several arrays share the key(s) {dup}; a dict key probably contains "
            f"the separator {sep!r} (pass another sep)"
        )
    return named, treedef


def state_dict(state: Any, *, sep: str = "/") -> dict[str, Any]:
    """The optimizer state as a flat ``{key path: array}`` dict (stateless parts give no keys).

    Args:
        state: any optimizer state (a pytree of arrays).
        sep: the separator between the parts of a key.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.named_chain(("clip", gradtx.clip(1.0)), ("adam", gradtx.scale_by_adam()))
        >>> sorted(gradtx.state_dict(opt.init({"w": jnp.zeros(2)})))
        ['adam/count', 'adam/mu/w', 'adam/nu/w']
    """
    named, _ = _flatten(_unpack(state), sep)
    return dict(named)


def _category(dtype: Any) -> str | None:
    """The kind of number a dtype holds: bool, integer, float or complex (None otherwise)."""
    for name, base in (
        ("bool", jnp.bool_),
        ("integer", jnp.integer),
        ("float", jnp.floating),
        ("complex", jnp.complexfloating),
    ):
        if jnp.issubdtype(dtype, base):
            return name
    return None


def _convert(value: Any, dtype: Any) -> tuple[Any, str | None]:
    """``value`` as a NumPy array of ``dtype``, or ``(None, why)`` when the cast would lose
    information (see :func:`load_state_dict` for the rule)."""
    arr = np.asarray(value)
    dtype = np.dtype(dtype)
    # numpy writes extension dtypes (bfloat16, float8) to .npz as raw bytes ("V2"): view back.
    if arr.dtype.type is np.void and arr.dtype.names is None:
        if arr.dtype.itemsize != dtype.itemsize:
            return None, f"expected {dtype}, got raw {arr.dtype.itemsize}-byte values"
        return arr.view(dtype), None
    if arr.dtype == dtype:
        return arr, None
    got, want = _category(arr.dtype), _category(dtype)
    if got is None or got != want:
        return None, f"expected {dtype}, got {arr.dtype}: a different kind of number"
    with np.errstate(all="ignore"):
        cast = arr.astype(dtype)
        back = cast.astype(arr.dtype)
    if not np.array_equal(back, arr, equal_nan=want in ("float", "complex")):
        return None, f"expected {dtype}, got {arr.dtype} with values that {dtype} cannot hold"
    return cast, None


# Migrations from earlier state layouts. A change to a state's fields (a field renamed, added,
# split or re-shaped) adds a function here that rewrites a mapping of the previous layout into
# the new one, given the template's keys, and leaves a mapping of the current layout as it is.
# They run in order before the keys are matched; tests/test_reliability_state.py keeps a
# checkpoint of the previous release's layout (tests/fixtures/state_layout.npz) loading.
_MIGRATIONS: list[Callable[[dict[str, Any], set[str]], dict[str, Any]]] = []


def _migrate(mapping: Mapping[str, Any], template_keys: set[str]) -> Mapping[str, Any]:
    if not _MIGRATIONS:
        return mapping  # an np.load archive stays lazy
    migrated = dict(mapping)  # the caller's mapping is never changed
    for migration in _MIGRATIONS:
        migrated = migration(dict(migrated), template_keys)
    return migrated


def _leaf_dtype(leaf: Any) -> Any:
    dtype = getattr(leaf, "dtype", None)
    return dtype if dtype is not None else jnp.result_type(leaf)


def _place(value: Any, leaf: Any) -> jax.Array:
    """``value`` as an array where the template's leaf is: on its devices, with its sharding
    (an array's, or a ``jax.ShapeDtypeStruct``'s from :func:`gradtx.abstract_state`), so a
    checkpoint saved on one mesh restores onto another."""
    value = jnp.asarray(value)  # a copy: a NumPy buffer put on the CPU could be shared
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, jax.sharding.Sharding):
        return jax.device_put(value, sharding)
    return value


def load_state_dict(
    template: Any, mapping: Mapping[str, Any], *, sep: str = "/", strict: bool = True
) -> Any:
    """Rebuild a state with the structure of ``template`` from a :func:`state_dict` mapping.

    Each array takes the dtype of the template's leaf at the same key, but only when that cast
    loses nothing: the saved dtype must be the same kind of number as the template's (bool,
    integer, float or complex: signed and unsigned integers count as one kind, bfloat16 and
    the other extension floats are floats), and every value must survive the cast and the cast
    back unchanged (NaN stays NaN). So ``int64`` counts load into an ``int32`` slot and a
    ``bfloat16`` moment into a ``float32`` one, but a float count (even ``3.0``) never loads
    into an integer slot, a complex array never into a real one, and ``float64`` values that
    ``float32`` would round are refused. Raw bytes (how ``numpy.savez`` stores bfloat16) of
    the slot's item size are read as the slot's dtype.

    When the keys, shapes or dtypes do not fit, nothing is loaded and a ``ValueError`` lists
    the missing keys (in the template, not in the mapping), the unexpected keys (in the mapping
    only), the mis-shaped keys (with both shapes) and the mis-typed keys (with both dtypes).
    Neither the template nor the mapping is changed, and the state returned shares no memory
    with the mapping's arrays.

    Checkpoints written by earlier releases keep loading: when a state's fields change, the
    keys of the old layout are mapped onto the new one before they are matched.

    Args:
        template: a state of the optimizer to load into, e.g. ``opt.init(params)``,
            ``jax.eval_shape(opt.init, params)`` or, to restore onto a mesh,
            :func:`gradtx.abstract_state`: each array is placed with its template leaf's
            sharding when the leaf has one.
        mapping: the flat dict (or an ``np.load`` archive) made by :func:`state_dict`.
        sep: the separator used when the mapping was made.
        strict: when False, keys missing from the mapping keep the template's values (e.g.
            the fresh state of a stateful member added to a :class:`gradtx.named_chain`) and
            unexpected keys are ignored; mis-shaped and mis-typed keys are still an error.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.adam(0.1)
        >>> state = opt.init({"w": jnp.zeros(2)})
        >>> saved = gradtx.state_dict(state)
        >>> restored = gradtx.load_state_dict(opt.init({"w": jnp.zeros(2)}), saved)
        >>> sorted(gradtx.state_dict(restored)) == sorted(saved)
        True
    """
    flat_template, template = template, _unpack(template)
    named, treedef = _flatten(template, sep)
    template_keys = {k for k, _ in named}
    mapping = _migrate(mapping, template_keys)
    keys = set(mapping.keys())
    missing = [k for k, _ in named if k not in keys]
    unexpected = sorted(k for k in keys if k not in template_keys)
    misshaped, mistyped, loaded = [], [], {}
    for k, leaf in named:
        if k not in keys:
            continue
        value = mapping[k]  # read once: an np.load archive reads the file on every access
        want, got = tuple(np.shape(leaf)), tuple(np.shape(value))
        if want != got:
            misshaped.append(f"{k} (expected {want}, got {got})")
        loaded[k], why = _convert(value, _leaf_dtype(leaf))
        if why is not None:
            mistyped.append(f"{k} ({why})")
    if not strict:
        missing, unexpected = [], []
    if missing or unexpected or misshaped or mistyped:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if misshaped:
            parts.append(f"mis-shaped keys {misshaped}")
        if mistyped:
            parts.append(f"mis-typed keys {mistyped}")
        raise ValueError(
            "load_state_dict: the mapping does not fit the template: " + "; ".join(parts)
        )
    leaves = [_place(loaded[k], leaf) if k in loaded else leaf for k, leaf in named]
    return _repack(flat_template, jax.tree_util.tree_unflatten(treedef, leaves))
