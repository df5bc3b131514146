"""Named optimizer state: a flat mapping from readable key paths to arrays, and back.

``state_dict(state)`` names every array of an optimizer state by its path through the state's
records (NamedTuple field names, dict keys, tuple positions), e.g. ``0/mu/layer1/w`` for a
:class:`gradtx.chain` or ``adam/mu/layer1/w`` for a :class:`gradtx.named_chain`. The mapping can
be written with ``numpy.savez``, orbax-checkpoint or any key-value store;
``load_state_dict(template, mapping)`` puts it back into the structure of ``template`` (a fresh
``opt.init(params)`` or its ``jax.eval_shape``) and names every missing, unexpected and
mis-shaped key when they do not match.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    named, _ = _flatten(state, sep)
    return dict(named)


def _as_dtype(value: Any, dtype: Any) -> Any:
    arr = np.asarray(value)
    dtype = np.dtype(dtype)
    # numpy writes extension dtypes (bfloat16, float8) to .npz as raw bytes ("V2"): view back.
    if arr.dtype.kind == "V" and arr.dtype.itemsize == dtype.itemsize:
        arr = arr.view(dtype)
    return jnp.asarray(arr, dtype=dtype)


def _leaf_dtype(leaf: Any) -> Any:
    dtype = getattr(leaf, "dtype", None)
    return dtype if dtype is not None else jnp.result_type(leaf)


def load_state_dict(
    template: Any, mapping: Mapping[str, Any], *, sep: str = "/", strict: bool = True
) -> Any:
    """Rebuild a state with the structure of ``template`` from a :func:`state_dict` mapping.

    Each array is converted to the dtype of the template's leaf at the same key. When the keys
    or shapes do not match, nothing is loaded and a ``ValueError`` lists the missing keys (in
    the template, not in the mapping), the unexpected keys (in the mapping only) and the
    mis-shaped keys (with both shapes).

    Args:
        template: a state of the optimizer to load into, e.g. ``opt.init(params)`` or
            ``jax.eval_shape(opt.init, params)``.
        mapping: the flat dict (or an ``np.load`` archive) made by :func:`state_dict`.
        sep: the separator used when the mapping was made.
        strict: when False, keys missing from the mapping keep the template's values (e.g.
            the fresh state of a stateful member added to a :class:`gradtx.named_chain`) and
            unexpected keys are ignored; mis-shaped keys are still an error.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.adam(0.1)
        >>> state = opt.init({"w": jnp.zeros(2)})
        >>> saved = gradtx.state_dict(state)
        >>> restored = gradtx.load_state_dict(opt.init({"w": jnp.zeros(2)}), saved)
        >>> sorted(gradtx.state_dict(restored)) == sorted(saved)
        True
    """
    named, treedef = _flatten(template, sep)
    keys = set(mapping.keys())
    missing = [k for k, _ in named if k not in keys]
    template_keys = {k for k, _ in named}
    unexpected = sorted(k for k in keys if k not in template_keys)
    misshaped = []
    for k, leaf in named:
        if k in keys:
            want, got = tuple(np.shape(leaf)), tuple(np.shape(mapping[k]))
            if want != got:
                misshaped.append(f"{k} (expected {want}, got {got})")
    if not strict:
        missing, unexpected = [], []
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if misshaped:
            parts.append(f"mis-shaped keys {misshaped}")
        raise ValueError(
            "load_state_dict: the mapping does not fit the template: " + "; ".join(parts)
        )
    leaves = [_as_dtype(mapping[k], _leaf_dtype(leaf)) if k in keys else leaf for k, leaf in named]
    return jax.tree_util.tree_unflatten(treedef, leaves)
