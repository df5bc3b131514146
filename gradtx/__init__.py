"""gradtx: composable, jit-compiled gradient transformations for JAX.

Every public name is defined in one module and gathered here; ``tests/test_api.py`` checks that
each is exported and documented.
"""

from gradtx.accumulation import *
from gradtx.averaging import *
from gradtx.checkpoint import *
from gradtx.core import *
from gradtx.flat import *
from gradtx.gradcheck import *
from gradtx.hyperparams import *
from gradtx.lbfgs import *
from gradtx.linesearch import *
from gradtx.minimize import *
from gradtx.optimizers.adam_variants import *
from gradtx.optimizers.classic import *
from gradtx.optimizers.full_batch import *
from gradtx.optimizers.layerwise_and_sign import *
from gradtx.partition import *
from gradtx.safety import *
from gradtx.schedules import *
from gradtx.transforms.adam_variants import *
from gradtx.transforms.adaptive import *
from gradtx.transforms.clipping import *
from gradtx.transforms.decay import *
from gradtx.transforms.factored import *
from gradtx.transforms.layerwise import *
from gradtx.transforms.momentum import *
from gradtx.transforms.noise import *
from gradtx.transforms.optimistic import *
from gradtx.transforms.plateau import *
from gradtx.transforms.scaling import *
from gradtx.transforms.sign import *
from gradtx.transforms.step_size_free import *
from gradtx.wrappers import *

__version__ = "0.1.0"
