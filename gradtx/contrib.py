"""The ``gradtx.contrib`` namespace: the names optax users reach for as ``optax.contrib.X``.

optax keeps its recent methods in ``contrib``. gradtx defines each in its family module and
exports it at the top level as well; this namespace lists the ones gradtx has today (the rest
of optax.contrib is planned, see the README's table of what is not in gradtx).
"""

from __future__ import annotations

from gradtx.optimizers.layerwise_and_sign import dog
from gradtx.transforms.plateau import ReduceOnPlateauState, reduce_on_plateau
from gradtx.transforms.step_size_free import DoGState

__all__ = ["DoGState", "ReduceLROnPlateauState", "dog", "reduce_on_plateau"]

ReduceLROnPlateauState = ReduceOnPlateauState  # optax.contrib's name for the same state
