"""The ``gradtx.contrib`` namespace: the names optax users reach for as ``optax.contrib.X``.

optax keeps its recent methods in ``contrib``. gradtx defines each in its family module and
exports it at the top level as well; this namespace lists the ones gradtx has today (the rest
of optax.contrib is planned, see the README's table of what is not in gradtx).
"""

from __future__ import annotations

from gradtx.optimizers.layerwise_and_sign import dog
from gradtx.optimizers.muon import muon, normuon
from gradtx.transforms.adam_relatives_2021 import MadgradState, madgrad, scale_by_madgrad
from gradtx.transforms.adam_relatives_2024 import (
    ScaleByAdemamixState,
    ScaleBySimplifiedAdEMAMixState,
    ademamix,
    adopt,
    scale_by_ademamix,
    scale_by_adopt,
    scale_by_simplified_ademamix,
    simplified_ademamix,
)
from gradtx.transforms.modifiers import (
    DifferentiallyPrivateAggregateState,
    NormalizeState,
    SAMState,
    differentially_private_aggregate,
    dpsgd,
    normalize,
    sam,
)
from gradtx.transforms.muon import (
    MuonDimensionNumbers,
    MuonState,
    NorMuonState,
    scale_by_muon,
    scale_by_normuon,
)
from gradtx.transforms.plateau import ReduceOnPlateauState, reduce_on_plateau
from gradtx.transforms.schedule_free import (
    ScheduleFreeState,
    schedule_free,
    schedule_free_adamw,
    schedule_free_eval_params,
    schedule_free_sgd,
)
from gradtx.transforms.step_size_free import DoGState

__all__ = [
    "DifferentiallyPrivateAggregateState",
    "DoGState",
    "MadgradState",
    "MuonDimensionNumbers",
    "MuonState",
    "NorMuonState",
    "NormalizeState",
    "ReduceLROnPlateauState",
    "SAMState",
    "ScaleByAdemamixState",
    "ScaleBySimplifiedAdEMAMixState",
    "ScheduleFreeState",
    "ademamix",
    "adopt",
    "differentially_private_aggregate",
    "dog",
    "dpsgd",
    "madgrad",
    "muon",
    "normuon",
    "normalize",
    "reduce_on_plateau",
    "sam",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_madgrad",
    "scale_by_muon",
    "scale_by_normuon",
    "scale_by_simplified_ademamix",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "simplified_ademamix",
]

ReduceLROnPlateauState = ReduceOnPlateauState  # optax.contrib's name for the same state
