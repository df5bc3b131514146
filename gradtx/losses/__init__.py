"""Loss functions, one module per family, with optax's names, signatures and meanings.

``gradtx.losses`` is the namespace optax users reach for as ``optax.losses``; every loss is
also exported at the top level (``gradtx.softmax_cross_entropy``), as optax does for most.
Each is stable for large logits (log-sum-exp and log-sigmoid forms), works in bfloat16 and
under ``jax.jit``, and takes ``where=`` masks and ``axis=`` where optax's does.
"""

from gradtx.losses import classification, ctc, divergence, ranking, regression, self_supervised  # noqa: I001
from gradtx.losses.classification import *  # noqa: F403
from gradtx.losses.ctc import *  # noqa: F403
from gradtx.losses.divergence import *  # noqa: F403
from gradtx.losses.ranking import *  # noqa: F403
from gradtx.losses.regression import *  # noqa: F403
from gradtx.losses.self_supervised import *  # noqa: F403

__all__ = [
    *classification.__all__,
    *ctc.__all__,
    *divergence.__all__,
    *ranking.__all__,
    *regression.__all__,
    *self_supervised.__all__,
]
