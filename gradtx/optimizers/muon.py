"""Muon and NorMuon: orthogonalised momentum on the matrices, AdamW on everything else.

Each is a :class:`gradtx.partition` with two labels, optax's layout: ``"muon"`` (or
``"normuon"``) for the parameters that are matrices, ``"adam"`` for the others (biases, norms'
gains, scalars). The math lives on :class:`gradtx.scale_by_muon`,
:class:`gradtx.scale_by_shape` and :class:`gradtx.scale_by_normuon`.
"""

from __future__ import annotations

import weakref
from typing import Any

import jax
import jax.numpy as jnp

from gradtx.core import FrozenTree, ScalarOrSchedule, chain, user_facing
from gradtx.optimizers.classic import adamw
from gradtx.partition import partition
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.muon import (
    _STANDARD,
    MuonDimensionNumbers,
    _check_dims,
    _is_dims_leaf,
    scale_by_muon,
    scale_by_normuon,
    scale_by_shape,
)
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = ["muon", "normuon"]


class _Labels:
    """Labels each parameter ``label`` (a matrix for the orthogonalised branch) or ``"adam"``.

    Without dimension numbers a leaf is a matrix when it has exactly 2 axes (optax's rule). A
    single :class:`MuonDimensionNumbers` makes every leaf with at least 2 axes a matrix; a tree
    of them (or a function returning one) labels ``None`` entries ``"adam"`` and the others
    ``label``. One object per configuration (see :func:`_labels`), so an optimizer rebuilt with
    a new learning rate has the same structure and a jitted step does not recompile.
    """

    def __init__(self, dims: Any, label: str):
        self.dims, self.label = dims, label

    def __call__(self, params: Any) -> Any:
        dims = self.dims
        value = (
            None if dims is None else (dims.tree if isinstance(dims, FrozenTree) else dims(params))
        )
        if value is None:
            return jax.tree_util.tree_map(
                lambda x: self.label if jnp.ndim(x) == 2 else "adam", params
            )
        if isinstance(value, MuonDimensionNumbers):
            return jax.tree_util.tree_map(
                lambda x: self.label if jnp.ndim(x) >= 2 else "adam", params
            )
        return jax.tree_util.tree_map(
            lambda d, sub: jax.tree_util.tree_map(
                lambda _: "adam" if d is None else self.label, sub
            ),
            value,
            params,
            is_leaf=_is_dims_leaf,
        )


_LABELS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def _labels(dims: Any, label: str) -> _Labels:
    key = (dims, label)
    found = _LABELS.get(key)
    if found is None:
        found = _Labels(dims, label)
        _LABELS[key] = found
    return found


_ADAM_RENAMES = {
    ("adamw", "b1"): "adam_b1",
    ("adamw", "b2"): "adam_b2",
    ("adamw", "eps_root"): "adam_eps_root",
    ("adamw", "weight_decay"): "adam_weight_decay",
    ("adamw", "learning_rate"): "adam_learning_rate",
    ("add_decayed_weights", "mask"): "weight_decay_mask",
}


@user_facing(
    renames={
        **_ADAM_RENAMES,
        ("scale_by_muon", "weight_dimension_numbers"): "muon_weight_dimension_numbers",
    }
)
def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: Any = _STANDARD,
    ns_steps: int = 5,
    beta: Any = 0.95,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    weight_decay_mask: Any = None,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: Any = 0.9,
    adam_b2: Any = 0.999,
    adam_eps_root: Any = 0.0,
    adam_weight_decay: Any = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    muon_weight_dimension_numbers: Any = None,
    consistent_rms: Any = None,
    orthogonalizer: Any = None,
    mesh: Any = None,
    mesh_axis: str | None = None,
) -> partition:
    """Muon: Momentum Orthogonalized by Newton–Schulz on the matrices, AdamW on the rest.

    Matrices (by default the parameters with exactly 2 axes, optax's rule) take
    :class:`scale_by_muon`, then :class:`scale_by_shape` (``√max(1, n_out/n_in)``, or
    ``consistent_rms·√max(n_in, n_out)``), then decoupled weight decay and ``−α``:
    ``θ ← θ − α (s · NS(m̂) + λ θ)``. Every other parameter takes ``adamw(adam_learning_rate or
    learning_rate, adam_b1, adam_b2, eps, adam_eps_root, mu_dtype, adam_weight_decay,
    nesterov=nesterov)``, as in optax (so its Adam is Nadam by default). The state is a
    :class:`gradtx.PartitionState` with the labels ``"muon"`` and ``"adam"``.

    To orthogonalise convolution kernels or stacked layers too, pass
    ``muon_weight_dimension_numbers``: :func:`gradtx.muon_dimension_numbers` (2-D as
    ``(in, out)``, more axes flattened into the inputs, vectors to AdamW), a tree of
    :class:`MuonDimensionNumbers` with ``None`` for the AdamW leaves, or a function of the params
    returning one.

    ``ns_coeffs``, ``ns_steps``, ``beta``, ``eps``, ``mu_dtype``, ``nesterov``, ``adaptive``,
    ``preconditioning``, ``orthogonalizer``, ``mesh`` and ``mesh_axis``: see :class:`scale_by_muon`
    (``eps`` is AdamW's too).

    ``adam_b1``, ``adam_b2``, ``adam_eps_root`` and ``adam_weight_decay``: AdamW's, for the other
    parameters.

    Args:
        learning_rate: ``α`` (a float or a schedule).
        weight_decay: decoupled weight decay of the matrices (multiplied by ``α``).
        weight_decay_mask: which matrices decay (a tree of bools or a function).
        adam_learning_rate: AdamW's learning rate (default: ``learning_rate``).
        muon_weight_dimension_numbers: which parameters are matrices, and their layout.
        consistent_rms: see :class:`scale_by_shape`.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.muon(0.02)
        >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
        >>> state = opt.init(params)
        >>> sorted(state.inner_states)
        ['adam', 'muon']
        >>> u, _ = opt.update({"w": jnp.eye(4, 3), "b": jnp.ones(3)}, state, params)
        >>> round(float(u["w"][0, 0]), 3), round(float(u["b"][0]), 3)
        (-0.014, -0.029)

    Reference: Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
    (https://kellerjordan.github.io/posts/muon/).
    """
    dims = _check_dims("muon", muon_weight_dimension_numbers, "muon_weight_dimension_numbers")
    return partition(
        {
            "muon": chain(
                scale_by_muon(
                    ns_coeffs,
                    ns_steps,
                    beta,
                    eps,
                    mu_dtype,
                    nesterov=nesterov,
                    adaptive=adaptive,
                    preconditioning=preconditioning,
                    weight_dimension_numbers=dims,
                    orthogonalizer=orthogonalizer,
                    mesh=mesh,
                    mesh_axis=mesh_axis,
                ),
                scale_by_shape(dims, consistent_rms),
                add_decayed_weights(weight_decay, weight_decay_mask),
                scale_by_learning_rate(learning_rate),
            ),
            "adam": adamw(
                learning_rate if adam_learning_rate is None else adam_learning_rate,
                adam_b1,
                adam_b2,
                eps,
                adam_eps_root,
                mu_dtype,
                adam_weight_decay,
                nesterov=nesterov,
            ),
        },
        _labels(dims, "muon"),
    )


@user_facing(
    renames={
        **_ADAM_RENAMES,
        ("scale_by_normuon", "weight_dimension_numbers"): "normuon_weight_dimension_numbers",
    }
)
def normuon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: Any = _STANDARD,
    ns_steps: int = 5,
    b1: Any = 0.95,
    b2: Any = 0.95,
    eps: Any = 1e-8,
    rms_scale: Any = 0.2,
    weight_decay: Any = 0.0,
    weight_decay_mask: Any = None,
    mu_dtype: Any = None,
    v_dtype: Any = None,
    *,
    nesterov: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: Any = 0.9,
    adam_b2: Any = 0.999,
    adam_eps_root: Any = 0.0,
    adam_weight_decay: Any = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    normuon_weight_dimension_numbers: Any = None,
    orthogonalizer: Any = None,
    mesh: Any = None,
    mesh_axis: str | None = None,
) -> partition:
    """NorMuon: neuron-wise normalised Muon on the matrices, AdamW on the rest.

    Matrices (chosen as in :func:`muon`) take :class:`scale_by_normuon` (whose update has RMS
    ``rms_scale``; no shape factor), decoupled weight decay and ``−α``:
    ``W_t = W_{t−1} − α λ W_{t−1} − α r √(mn) Ô_t / ‖Ô_t‖_F`` (Li et al., 2025, Algorithm 1).
    Every other parameter takes ``adamw(adam_learning_rate or learning_rate, adam_b1, adam_b2,
    eps, adam_eps_root, mu_dtype, adam_weight_decay)``. The state is a
    :class:`gradtx.PartitionState` with the labels ``"normuon"`` and ``"adam"``.

    ``ns_coeffs``, ``ns_steps``, ``b1``, ``b2``, ``eps``, ``rms_scale``, ``mu_dtype``, ``v_dtype``,
    ``nesterov``, ``preconditioning``, ``orthogonalizer``, ``mesh`` and ``mesh_axis``: see
    :class:`scale_by_normuon` (``eps`` is AdamW's too).

    ``adam_b1``, ``adam_b2``, ``adam_eps_root`` and ``adam_weight_decay``: AdamW's, for the other
    parameters.

    Args:
        learning_rate: ``α`` (a float or a schedule).
        weight_decay: decoupled weight decay ``λ`` of the matrices (multiplied by ``α``).
        weight_decay_mask: which matrices decay (a tree of bools or a function).
        adam_learning_rate: AdamW's learning rate (default: ``learning_rate``).
        normuon_weight_dimension_numbers: which parameters are matrices, and their layout (as
            ``muon_weight_dimension_numbers`` in :func:`muon`).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.normuon(0.02)
        >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
        >>> u, state = opt.update({"w": jnp.eye(4, 3), "b": jnp.ones(3)}, opt.init(params), params)
        >>> round(float(jnp.sqrt(jnp.mean(u["w"] ** 2))), 4)  # α · rms_scale
        0.004

    Reference: Li, Liu, Liang, Chen & Zhao, "NorMuon: Making Muon more efficient and
    scalable", arXiv:2510.05491, 2025.
    """
    dims = _check_dims(
        "normuon", normuon_weight_dimension_numbers, "normuon_weight_dimension_numbers"
    )
    return partition(
        {
            "normuon": chain(
                scale_by_normuon(
                    ns_coeffs,
                    ns_steps,
                    b1,
                    b2,
                    eps,
                    rms_scale,
                    mu_dtype,
                    v_dtype,
                    nesterov=nesterov,
                    preconditioning=preconditioning,
                    weight_dimension_numbers=dims,
                    orthogonalizer=orthogonalizer,
                    mesh=mesh,
                    mesh_axis=mesh_axis,
                ),
                add_decayed_weights(weight_decay, weight_decay_mask),
                scale_by_learning_rate(learning_rate),
            ),
            "adam": adamw(
                learning_rate if adam_learning_rate is None else adam_learning_rate,
                adam_b1,
                adam_b2,
                eps,
                adam_eps_root,
                mu_dtype,
                adam_weight_decay,
            ),
        },
        _labels(dims, "normuon"),
    )
