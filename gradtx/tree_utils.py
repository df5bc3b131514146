"""The functions of :mod:`gradtx.tree` under their ``tree_``-prefixed names, as in
``optax.tree_utils``: ``tree_utils.tree_norm`` is ``tree.norm`` (the same object).

The spellings optax 0.2.8 keeps for old code (``tree_l1_norm``, ``tree_l2_norm``,
``tree_linf_norm``, ``tree_scalar_mul``, ``tree_add_scalar_mul``) work too and warn with a
``DeprecationWarning`` naming the current spelling, as optax's do.

Example:
    >>> import jax.numpy as jnp, gradtx.tree, gradtx.tree_utils
    >>> gradtx.tree_utils.tree_norm is gradtx.tree.norm
    True
    >>> gradtx.tree_utils.tree_norm({"a": jnp.array([3.0, 4.0])})
    Array(5., dtype=float32)
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

from gradtx import tree as _tree

__all__ = [
    "NamedTupleKey",
    "tree_add",
    "tree_add_scale",
    "tree_allclose",
    "tree_batch_shape",
    "tree_bias_correction",
    "tree_cast",
    "tree_cast_like",
    "tree_clip",
    "tree_conj",
    "tree_div",
    "tree_dtype",
    "tree_full_like",
    "tree_get",
    "tree_get_all_with_path",
    "tree_map_params",
    "tree_max",
    "tree_min",
    "tree_mul",
    "tree_norm",
    "tree_ones_like",
    "tree_random_like",
    "tree_real",
    "tree_scale",
    "tree_set",
    "tree_size",
    "tree_split_key_like",
    "tree_sub",
    "tree_sum",
    "tree_unwrap_random_key_data",
    "tree_update_infinity_moment",
    "tree_update_moment",
    "tree_update_moment_per_elem_norm",
    "tree_vdot",
    "tree_where",
    "tree_zeros_like",
]

NamedTupleKey = _tree.NamedTupleKey
tree_add = _tree.add
tree_add_scale = _tree.add_scale
tree_allclose = _tree.allclose
tree_batch_shape = _tree.batch_shape
tree_bias_correction = _tree.bias_correction
tree_cast = _tree.cast
tree_cast_like = _tree.cast_like
tree_clip = _tree.clip
tree_conj = _tree.conj
tree_div = _tree.div
tree_dtype = _tree.dtype
tree_full_like = _tree.full_like
tree_get = _tree.get
tree_get_all_with_path = _tree.get_all_with_path
tree_map_params = _tree.map_params
tree_max = _tree.max
tree_min = _tree.min
tree_mul = _tree.mul
tree_norm = _tree.norm
tree_ones_like = _tree.ones_like
tree_random_like = _tree.random_like
tree_real = _tree.real
tree_scale = _tree.scale
tree_set = _tree.set
tree_size = _tree.size
tree_split_key_like = _tree.split_key_like
tree_sub = _tree.sub
tree_sum = _tree.sum
tree_unwrap_random_key_data = _tree.unwrap_random_key_data
tree_update_infinity_moment = _tree.update_infinity_moment
tree_update_moment = _tree.update_moment
tree_update_moment_per_elem_norm = _tree.update_moment_per_elem_norm
tree_vdot = _tree.vdot
tree_where = _tree.where
tree_zeros_like = _tree.zeros_like

# Old spellings optax still answers to (with a DeprecationWarning): name -> (new spelling, object).
_DEPRECATED = {
    "tree_scalar_mul": ("tree_scale", tree_scale),
    "tree_add_scalar_mul": ("tree_add_scale", tree_add_scale),
    "tree_l1_norm": ("tree_norm(..., ord=1)", functools.partial(tree_norm, ord=1)),
    "tree_l2_norm": ("tree_norm", functools.partial(tree_norm, ord=2)),
    "tree_linf_norm": ("tree_norm(..., ord='inf')", functools.partial(tree_norm, ord="inf")),
}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        new, obj = _DEPRECATED[name]
        warnings.warn(
            f"gradtx.tree_utils.{name} is deprecated (as in optax): use gradtx.tree_utils.{new}",
            DeprecationWarning,
            stacklevel=2,
        )
        return obj
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
