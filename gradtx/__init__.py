"""gradtx: composable, jit-compiled gradient transformations for JAX.

Every public name is defined in one module and gathered here; ``tests/test_api.py`` checks that
each is exported and documented.
"""

# Namespaces laid out as optax's: gradtx.tree, gradtx.tree_utils, gradtx.transforms,
# gradtx.schedules, gradtx.losses and gradtx.contrib mean what optax's do.
from gradtx import contrib, losses, schedules, transforms, tree, tree_utils  # noqa: I001

# optax also offers these tree functions at its top level, under these names.
from gradtx.tree import (
    bias_correction,
    update_infinity_moment,
    update_moment,
    update_moment_per_elem_norm,
)
from gradtx.tree import map_params as tree_map_params
from gradtx.accumulation import *
from gradtx.averaging import *
from gradtx.checkpoint import *
from gradtx.core import *
from gradtx.flat import *
from gradtx.gradcheck import *
from gradtx.hyperparams import *
from gradtx.lbfgs import *
from gradtx.linalg import *
from gradtx.linesearch import *
from gradtx.losses.classification import *
from gradtx.losses.ctc import *
from gradtx.losses.divergence import *
from gradtx.losses.ranking import *
from gradtx.losses.regression import *
from gradtx.losses.self_supervised import *
from gradtx.microbatching import *
from gradtx.minimize import *
from gradtx.optimizers.adam_variants import *
from gradtx.optimizers.classic import *
from gradtx.optimizers.full_batch import *
from gradtx.optimizers.layerwise_and_sign import *
from gradtx.optimizers.muon import *
from gradtx.param_updates import *
from gradtx.partition import *
from gradtx.safe_math import *
from gradtx.safety import *
from gradtx.schedules import *
from gradtx.sharding import *
from gradtx.transforms.adam_relatives_2021 import *
from gradtx.transforms.adam_relatives_2024 import *
from gradtx.transforms.adam_variants import *
from gradtx.transforms.adaptive import *
from gradtx.transforms.clipping import *
from gradtx.transforms.coin_betting import *
from gradtx.transforms.decay import *
from gradtx.transforms.factored import *
from gradtx.transforms.galore import *
from gradtx.transforms.kron import *
from gradtx.transforms.layerwise import *
from gradtx.transforms.learning_rate_free import *
from gradtx.transforms.modifiers import *
from gradtx.transforms.momentum import *
from gradtx.transforms.muon import *
from gradtx.transforms.noise import *
from gradtx.transforms.optimistic import *
from gradtx.transforms.plateau import *
from gradtx.transforms.scaling import *
from gradtx.transforms.schedule_free import *
from gradtx.transforms.sign import *
from gradtx.transforms.soap import *
from gradtx.transforms.sophia import *
from gradtx.transforms.step_size_free import *
from gradtx.wrappers import *

__version__ = "0.1.0"
