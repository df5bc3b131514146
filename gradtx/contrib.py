"""The ``gradtx.contrib`` namespace: the names optax users reach for as ``optax.contrib.X``.

optax keeps its recent methods in ``contrib``. gradtx defines each in its family module and
exports it at the top level as well. This namespace holds every optax.contrib name (the README
lists the few gradtx leaves out, with the reason) and gradtx's own recent methods that optax
lacks (SOAP, PSGD-Kron), so code written for ``optax.contrib`` runs with the import swapped.
"""

from __future__ import annotations

from gradtx.optimizers.layerwise_and_sign import dog
from gradtx.optimizers.muon import muon, normuon
from gradtx.transforms.adam_relatives_2021 import (
    MadgradState,
    MomoAdamState,
    MomoState,
    acprop,
    madgrad,
    momo,
    momo_adam,
    scale_by_acprop,
    scale_by_madgrad,
)
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
from gradtx.transforms.coin_betting import (
    COCOBState,
    MechanicState,
    cocob,
    mechanize,
    scale_by_cocob,
)
from gradtx.transforms.galore import GaLoreDimensionNumbers, GaLoreState, galore, scale_by_galore
from gradtx.transforms.kron import KronState, kron, precond_update_prob_schedule, scale_by_kron
from gradtx.transforms.learning_rate_free import (
    DAdaptAdamWState,
    DoWGState,
    ProdigyState,
    dadapt_adamw,
    dowg,
    prodigy,
)
from gradtx.transforms.modifiers import (
    DifferentiallyPrivateAggregateState,
    NormalizeState,
    SAMState,
    SplitRealAndImaginaryState,
    differentially_private_aggregate,
    dpsgd,
    normalize,
    sam,
    split_real_and_imaginary,
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
from gradtx.transforms.soap import SoapState, scale_by_soap, soap
from gradtx.transforms.sophia import (
    HutchinsonState,
    SophiaState,
    hutchinson_estimator_diag_hessian,
    sophia,
)
from gradtx.transforms.step_size_free import DoGState

__all__ = [
    "COCOBState",
    "DAdaptAdamWState",
    "DifferentiallyPrivateAggregateState",
    "DoGState",
    "DoWGState",
    "GaLoreDimensionNumbers",
    "GaLoreState",
    "HutchinsonState",
    "KronState",
    "MadgradState",
    "MechanicState",
    "MomoAdamState",
    "MomoState",
    "MuonDimensionNumbers",
    "MuonState",
    "NorMuonState",
    "NormalizeState",
    "ProdigyState",
    "ReduceLROnPlateauState",
    "SAMState",
    "ScaleByAdemamixState",
    "ScaleBySimplifiedAdEMAMixState",
    "ScheduleFreeState",
    "SoapState",
    "SophiaState",
    "SplitRealAndImaginaryState",
    "acprop",
    "ademamix",
    "adopt",
    "cocob",
    "dadapt_adamw",
    "differentially_private_aggregate",
    "dog",
    "dowg",
    "dpsgd",
    "galore",
    "hutchinson_estimator_diag_hessian",
    "kron",
    "madgrad",
    "mechanize",
    "momo",
    "momo_adam",
    "muon",
    "normalize",
    "normuon",
    "precond_update_prob_schedule",
    "prodigy",
    "reduce_on_plateau",
    "sam",
    "scale_by_acprop",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_cocob",
    "scale_by_galore",
    "scale_by_kron",
    "scale_by_madgrad",
    "scale_by_muon",
    "scale_by_normuon",
    "scale_by_simplified_ademamix",
    "scale_by_soap",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "simplified_ademamix",
    "soap",
    "sophia",
    "split_real_and_imaginary",
]

ReduceLROnPlateauState = ReduceOnPlateauState  # optax.contrib's name for the same state
