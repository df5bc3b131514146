"""One registry of every optimizer in gradtx, driving the property and convergence tests.

Each case builds an optimizer from a learning rate (so the same case can be swept, vmapped and
differentiated with respect to it). Add a case here when you add an optimizer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import gradtx


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Any], Any]  # learning rate -> optimizer
    lr: float = 1e-2  # a learning rate that trains the property-test problems
    complex_ok: bool = True  # defined for complex parameters
    extra_args: Callable[[Any, Any], dict] | None = None  # (params, grads) -> update kwargs
    quadratic_tol: float = 1e-3  # convergence test tolerances (distance to the minimiser)
    rosenbrock_tol: float = 5e-2
    steps: int = 2000
    conv_lr: float | None = None  # learning rate for the convergence tests (default: lr)
    converges: bool = True  # in the convergence tests (building blocks are not optimizers)
    # the step does not grow with the gradient's scale (tests/test_extreme_values.py: 1e-30..1e30)
    adaptive: bool = False


CASES: list[Case] = [
    Case("sgd", lambda lr: gradtx.sgd(lr), lr=1e-2, conv_lr=2e-3, steps=20000),
    Case("sgd_momentum", lambda lr: gradtx.sgd(lr, momentum=0.9), conv_lr=1e-3, steps=5000),
    Case(
        "sgd_nesterov",
        lambda lr: gradtx.sgd(lr, momentum=0.9, nesterov=True),
        conv_lr=1e-3,
        steps=5000,
    ),
    Case("adagrad", lambda lr: gradtx.adagrad(lr), conv_lr=0.5, steps=5000, adaptive=True),
    Case("rmsprop", lambda lr: gradtx.rmsprop(lr), conv_lr=3e-4, steps=10000, adaptive=True),
    Case(
        "rmsprop_centered_momentum",
        lambda lr: gradtx.rmsprop(lr, centered=True, momentum=0.9),
        conv_lr=3e-4,
        steps=5000,
        adaptive=True,
    ),
    Case(
        "adadelta",
        lambda lr: gradtx.adadelta(lr),
        lr=1.0,
        conv_lr=0.05,
        steps=10000,
        adaptive=True,
    ),
    Case("adam", lambda lr: gradtx.adam(lr), conv_lr=1e-2, steps=5000, adaptive=True),
    Case(
        "adamw",
        lambda lr: gradtx.adamw(lr, weight_decay=0.0),
        conv_lr=1e-2,
        steps=5000,
        adaptive=True,
    ),
    Case("nadam", lambda lr: gradtx.nadam(lr), conv_lr=1e-2, steps=5000, adaptive=True),
    Case(
        "nadamw",
        lambda lr: gradtx.nadamw(lr, weight_decay=0.0),
        conv_lr=1e-2,
        steps=5000,
        adaptive=True,
    ),
    Case("adamax", lambda lr: gradtx.adamax(lr), conv_lr=1e-2, steps=5000, adaptive=True),
    Case(
        "adamaxw",
        lambda lr: gradtx.adamaxw(lr, weight_decay=0.0),
        conv_lr=1e-2,
        steps=5000,
        adaptive=True,
    ),
    Case("amsgrad", lambda lr: gradtx.amsgrad(lr), conv_lr=0.1, steps=20000, adaptive=True),
]


def _polyak_value(params, grads):
    # A stand-in objective value for the property tests (the convergence test passes the loss).
    return {"value": 0.5 * gradtx.numerics.tree_l2_norm(grads, squared=True) + 0.1}


# Layer-wise, sign, noisy, step-size-free and optimistic methods. Trust-ratio and sign methods
# take steps of a fixed (relative) length, so they reach a minimum only to about that length:
# their convergence learning rates are small and their step counts large.
CASES += [
    Case(
        "lamb",
        lambda lr: gradtx.lamb(lr, weight_decay=1e-4),
        conv_lr=1e-4,
        steps=60000,
        adaptive=True,
    ),
    Case(
        "lars",
        lambda lr: gradtx.lars(lr, weight_decay=1e-4),
        lr=1.0,
        conv_lr=0.3,
        steps=60000,
        adaptive=True,
    ),
    Case("fromage", lambda lr: gradtx.fromage(lr), conv_lr=1e-4, steps=100000, adaptive=True),
    # Sign descent stalls in Rosenbrock's curved valley at a distance that shrinks with the
    # learning rate (about 0.12 at 1e-4): diagonal ±lr steps cannot follow the valley.
    Case(
        "sign_sgd",
        lambda lr: gradtx.sign_sgd(lr),
        conv_lr=1e-4,
        steps=200000,
        rosenbrock_tol=0.15,
        adaptive=True,
    ),
    Case("signum", lambda lr: gradtx.signum(lr), conv_lr=1e-4, steps=60000, adaptive=True),
    Case(
        "rprop",
        lambda lr: gradtx.rprop(lr),
        complex_ok=False,
        conv_lr=1e-2,
        steps=2000,
        adaptive=True,
    ),
    Case("noisy_sgd", lambda lr: gradtx.noisy_sgd(lr, key=0), conv_lr=2e-3, steps=20000),
    Case(
        "polyak_sgd",
        lambda lr: gradtx.polyak_sgd(scaling=lr),
        lr=1.0,
        extra_args=_polyak_value,
        steps=5000,
    ),
    Case(
        "optimistic_gradient_descent",
        lambda lr: gradtx.optimistic_gradient_descent(lr),
        conv_lr=6e-4,
        steps=100000,
    ),
    # DoG is learning-rate free: lr multiplies its step size and 1.0 is the paper's method.
    Case("dog", lambda lr: gradtx.dog(lr, weight_decay=1e-4), lr=1.0, steps=20000, adaptive=True),
]

# Adam's relatives and the memory-light adaptive methods (paper defaults; see
# the README). RAdam's first steps are plain momentum, so it needs a
# small learning rate on Rosenbrock; Lion takes ±lr steps; NovoGrad normalises each layer's
# gradient, so both reach a minimum only to about their step length; Adafactor (no momentum)
# oscillates at about lr·RMS(θ) like RMSProp.
CASES += [
    Case("radam", lambda lr: gradtx.radam(lr), conv_lr=1e-3, steps=10000, adaptive=True),
    Case("adabelief", lambda lr: gradtx.adabelief(lr), conv_lr=1e-2, steps=5000, adaptive=True),
    Case("yogi", lambda lr: gradtx.yogi(lr), conv_lr=1e-2, steps=10000, adaptive=True),
    Case("adan", lambda lr: gradtx.adan(lr), conv_lr=1e-2, steps=5000, adaptive=True),
    Case("novograd", lambda lr: gradtx.novograd(lr), conv_lr=1e-4, steps=20000, adaptive=True),
    Case(
        "lion",
        lambda lr: gradtx.lion(lr, weight_decay=0.0),
        conv_lr=1e-4,
        steps=60000,
        adaptive=True,
    ),
    Case(
        "optimistic_adam",
        lambda lr: gradtx.optimistic_adam(lr),
        conv_lr=1e-2,
        steps=5000,
        adaptive=True,
    ),
    # optimistic_adam_v2 orbits the quadratic's minimiser at a distance that depends on the last
    # bits of its arithmetic (0.006 at lr 1e-2 after the overflow guards changed an ulp; 0.003
    # at 3e-3): 5e-3 over 10000 steps reaches 1e-3 with a margin.
    Case(
        "optimistic_adam_v2",
        lambda lr: gradtx.optimistic_adam_v2(lr),
        conv_lr=5e-3,
        steps=10000,
        adaptive=True,
    ),
    Case(
        "sm3",
        lambda lr: gradtx.sm3(lr),
        complex_ok=False,
        conv_lr=0.5,
        steps=5000,
        adaptive=True,
    ),
    Case("adafactor", lambda lr: gradtx.adafactor(lr), conv_lr=3e-4, steps=40000, adaptive=True),
]

# Building blocks, each followed by a learning rate: the property tests (dtypes, jit, vmap,
# grad, no recompilation) hold for them too. L-BFGS without a line search needs no value_fn.
CASES += [
    Case(
        "scale_by_distance_over_gradients",
        lambda lr: gradtx.chain(
            gradtx.scale_by_distance_over_gradients(), gradtx.scale_by_learning_rate(lr)
        ),
        lr=1.0,
        converges=False,
        adaptive=True,
    ),
    Case(
        "scale_by_param_block_norm",
        lambda lr: gradtx.chain(
            gradtx.scale_by_param_block_norm(), gradtx.scale_by_learning_rate(lr)
        ),
        converges=False,
    ),
    Case(
        "scale_by_param_block_rms",
        lambda lr: gradtx.chain(
            gradtx.scale_by_param_block_rms(), gradtx.scale_by_learning_rate(lr)
        ),
        converges=False,
    ),
    Case(
        "normalize_by_update_norm",
        lambda lr: gradtx.chain(
            gradtx.normalize_by_update_norm(), gradtx.scale_by_learning_rate(lr)
        ),
        converges=False,
        adaptive=True,
    ),
    Case("lbfgs_no_linesearch", lambda lr: gradtx.lbfgs(lr, linesearch=None), converges=False),
]


def _cosine(lr, steps):
    # a cosine decay of lr (a number or array), or the schedule a test passes as lr
    return lr if callable(lr) else gradtx.cosine_decay_schedule(lr, steps)


def _then_lr(*transforms):
    """Building blocks followed by the learning rate (``lr`` may be a schedule)."""
    return lambda lr: gradtx.chain(*transforms, gradtx.scale_by_learning_rate(lr))


def _wrap(wrapper):
    """A wrapper around Adam (its learning rate is the case's)."""
    return lambda lr: wrapper(gradtx.adam(lr))


def _tree_map_double(g, p):
    return 2.0 * g


def _even_steps(step):  # one function object, so the transform's treedef stays the same
    return step % 2 == 0


def _matrices(params):
    return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)


def _not_matrices(params):
    return jax.tree.map(lambda x: jnp.ndim(x) < 2, params)


# Every other public transform and wrapper, so that the property tests hold for each. Not here:
# the line searches (they need a value_fn that agrees with the gradient, which the registry's
# synthetic gradients do not have; tests/test_linesearch.py covers them), and lookahead (its
# params are LookaheadParams; tests/test_averaging.py covers it).
CASES += [
    Case(
        "clip_and_friends",
        _then_lr(gradtx.clip(10.0), gradtx.clip_by_global_norm(10.0), gradtx.zero_nans()),
        complex_ok=False,  # element-wise clipping is for real numbers
        converges=False,
        adaptive=True,
    ),
    Case(
        "adaptive_grad_clip",
        _then_lr(gradtx.adaptive_grad_clip(0.1)),
        converges=False,
        adaptive=True,
    ),
    Case("centralize", _then_lr(gradtx.centralize()), converges=False),
    Case(
        "keep_params_nonnegative",
        _then_lr(gradtx.keep_params_nonnegative()),
        complex_ok=False,
        converges=False,
    ),
    Case("apply_every", _then_lr(gradtx.apply_every(2)), converges=False),
    Case(
        "scale_by_schedule",
        _then_lr(gradtx.scale_by_schedule(gradtx.linear_schedule(1.0, 0.5, 10))),
        converges=False,
    ),
    Case(
        "set_to_zero_then_sgd", _then_lr(gradtx.identity(), gradtx.set_to_zero()), converges=False
    ),
    Case("stateless", _then_lr(gradtx.stateless(lambda u, p: u)), converges=False),
    Case(
        "stateless_with_tree_map",
        _then_lr(gradtx.stateless_with_tree_map(_tree_map_double)),
        converges=False,
    ),
    Case(
        "function_pair",
        _then_lr(gradtx.GradientTransformation(lambda p: (), lambda u, s, p=None: (u, s))),
        converges=False,
    ),
    Case(
        "monitors",
        _then_lr(
            gradtx.monitor(
                {"norm": gradtx.tree.norm, "ema": gradtx.measure_with_ema(gradtx.tree.norm)}
            ),
            gradtx.snapshot("first", lambda u: gradtx.tree.norm(u)),
        ),
        converges=False,
    ),
    Case("monitor_norms", _wrap(gradtx.monitor_norms), converges=False, adaptive=True),
    Case(
        "MultiSteps",
        _wrap(lambda o: gradtx.MultiSteps(o, every_k_schedule=2)),
        converges=False,
        adaptive=True,
    ),
    Case(
        "apply_if_finite",
        _wrap(lambda o: gradtx.apply_if_finite(o, 3)),
        converges=False,
        adaptive=True,
    ),
    Case(
        "conditionally_transform",
        _wrap(lambda o: gradtx.conditionally_transform(o, _even_steps)),
        converges=False,
    ),
    Case(
        "conditionally_mask",
        _wrap(lambda o: gradtx.conditionally_mask(o, _even_steps)),
        converges=False,
        adaptive=True,
    ),
    Case("flatten", _wrap(gradtx.flatten), converges=False, adaptive=True),
    Case("param_ema", _wrap(gradtx.param_ema), converges=False, adaptive=True),
    Case("swa", _wrap(gradtx.swa), converges=False, adaptive=True),
    Case(
        "masked",
        lambda lr: gradtx.chain(
            gradtx.masked(gradtx.adam(lr), _matrices), gradtx.masked(gradtx.sgd(lr), _not_matrices)
        ),
        converges=False,
    ),
    Case(
        "named_chain",
        lambda lr: gradtx.named_chain(
            ("clip", gradtx.clip_by_global_norm(10.0)), ("adam", gradtx.adam(lr))
        ),
        converges=False,
        adaptive=True,
    ),
    Case(
        "inject_hyperparams",
        # float32 hyperparameters: in float16, adam's eps = 1e-8 would round to 0 (issue 14)
        lambda lr: gradtx.inject_hyperparams(gradtx.adam, hyperparam_dtype=jnp.float32)(
            learning_rate=lr
        ),
        converges=False,
        adaptive=True,
    ),
    Case(
        "reduce_on_plateau",
        lambda lr: gradtx.chain(gradtx.adam(lr), gradtx.reduce_on_plateau(patience=1)),
        extra_args=_polyak_value,
        converges=False,
        adaptive=True,
    ),
]

# The recent optimizers (README, "Recent optimizers"). Schedule-Free SGD's training point holds a
# plain running average, which closes in slowly on deterministic problems; AdEMAMix uses
# b3=0.999, the paper's setting for short runs (at 0.9999 it is 0.22 from Rosenbrock's minimum
# after 5000 steps); with warmups as long as the run it wanders, so that variant is
# property-only. SAM with rho = 1e-2 orbits the minimiser at about rho.
CASES += [
    Case("schedule_free_sgd", lambda lr: gradtx.schedule_free_sgd(lr), conv_lr=2e-3, steps=40000),
    Case(
        "schedule_free_sgd_wd",
        lambda lr: gradtx.schedule_free_sgd(lr, weight_decay=1e-3),
        converges=False,
    ),
    Case(
        "schedule_free_adamw",
        lambda lr: gradtx.schedule_free_adamw(lr),
        conv_lr=3e-3,
        steps=20000,
        adaptive=True,
    ),
    Case(
        "ademamix",
        lambda lr: gradtx.ademamix(lr, b3=0.999),
        conv_lr=1e-2,
        steps=5000,
        adaptive=True,
    ),
    Case(
        "ademamix_warmup",
        lambda lr: gradtx.ademamix(lr, alpha_warmup=10, b3_warmup=10),
        converges=False,
        adaptive=True,
    ),
    Case(
        "simplified_ademamix",
        lambda lr: gradtx.simplified_ademamix(lr, alpha=1.0),
        lr=1e-3,
        conv_lr=3e-4,
        steps=3000,
        adaptive=True,
    ),
    Case("adopt", lambda lr: gradtx.adopt(lr), conv_lr=0.1, steps=10000, adaptive=True),
    Case(
        "adopt_nesterov_unclipped",
        lambda lr: gradtx.adopt(lr, nesterov=True, use_clipping=False),
        converges=False,
        adaptive=True,
    ),
    Case(
        "cautious_adamw",
        lambda lr: gradtx.cautious(gradtx.adamw(lr, weight_decay=0.0)),
        conv_lr=1e-2,
        steps=5000,
        adaptive=True,
    ),
    Case("mars_adamw", lambda lr: gradtx.mars_adamw(lr), conv_lr=1e-2, steps=5000, adaptive=True),
    Case(
        "sam",
        lambda lr: gradtx.sam(gradtx.adam(lr), gradtx.chain(gradtx.normalize(), gradtx.sgd(1e-3))),
        conv_lr=1e-2,
        steps=10000,
        adaptive=True,
    ),
]

# Muon and NorMuon orthogonalise the momentum of each matrix (vectors go to AdamW in muon, and
# pass through the building blocks).
CASES += [
    # An orthogonalised step has a fixed spectral size, so with a constant rate Muon only
    # hovers near the minimum (0.6e-3 to 1.5e-3 on the quadratic, depending on rounding); a
    # cosine decay lets it settle (1e-7).
    Case(
        "muon",
        lambda lr: gradtx.muon(_cosine(lr, 20000)),
        conv_lr=1e-3,
        steps=20000,
        adaptive=True,
    ),
    Case(
        "normuon",
        lambda lr: gradtx.normuon(_cosine(lr, 20000)),
        conv_lr=1e-3,
        steps=20000,
        adaptive=True,
    ),
    Case("scale_by_muon", _then_lr(gradtx.scale_by_muon()), converges=False, adaptive=True),
    Case("scale_by_normuon", _then_lr(gradtx.scale_by_normuon()), converges=False, adaptive=True),
    Case("scale_by_shape", _then_lr(gradtx.scale_by_shape()), converges=False),
]

# MADGRAD and MoMo (MoMo's step size needs the loss: value=).
CASES += [
    Case("madgrad", lambda lr: gradtx.madgrad(lr), conv_lr=3e-3, steps=5000),
    Case(
        "momo",
        lambda lr: gradtx.momo(lr),
        lr=0.1,
        conv_lr=1.0,
        steps=2000,
        extra_args=_polyak_value,
    ),
    Case(
        "momo_adam",
        lambda lr: gradtx.momo_adam(lr),
        conv_lr=0.1,
        steps=2000,
        extra_args=_polyak_value,
    ),
]


# Learning-rate-free methods (Prodigy, D-Adaptation, DoWG, COCOB, Mechanic). With a constant
# rate Prodigy and D-Adaptation wander near the minimum; the authors pair them with a cosine
# decay, as here. Mechanic's learned scale keeps oscillating on noise-free problems (the
# quadratic stalls near 1e-3), so it is not in the convergence tests.
CASES += [
    Case(
        "prodigy",
        lambda lr: gradtx.prodigy(_cosine(lr, 5000)),
        lr=1.0,
        steps=5000,
        adaptive=True,
    ),
    Case(
        "dadapt_adamw",
        lambda lr: gradtx.dadapt_adamw(_cosine(lr, 3000)),
        lr=1.0,
        steps=3000,
        adaptive=True,
    ),
    Case("dowg", lambda lr: gradtx.dowg(lr), lr=1.0, steps=20000, adaptive=True),
    Case(
        "cocob",
        lambda lr: gradtx.cocob(lr),
        lr=1.0,
        complex_ok=False,
        steps=20000,
        rosenbrock_tol=0.1,
        adaptive=True,
    ),
    Case(
        "mechanize_adam",
        lambda lr: gradtx.mechanize(gradtx.adam(lr)),
        converges=False,
        adaptive=True,
    ),
    Case(
        "mechanize_sgd_optax",
        lambda lr: gradtx.mechanize(gradtx.sgd(lr, momentum=0.9), variant="optax"),
        converges=False,
    ),
]

# AcProp; MoMo with its online lower bound (MoMo*); optax.contrib's complex-as-pairs wrapper.
# AcProp's centred second moment falls towards eps_root on a noise-free quadratic, so its
# iterate hovers about 1e-3 from the minimiser. Its first step is lr·g (not adaptive).
CASES += [
    Case(
        "acprop",
        lambda lr: gradtx.acprop(lr),
        lr=1e-2,
        conv_lr=1e-3,
        steps=8000,
        quadratic_tol=5e-3,
    ),
    Case("scale_by_acprop", _then_lr(gradtx.scale_by_acprop()), converges=False),
    Case(
        "momo_adapt_lower_bound",
        lambda lr: gradtx.momo(lr, adapt_lower_bound=True),
        lr=0.1,
        conv_lr=1.0,
        steps=2000,
        extra_args=_polyak_value,
    ),
    Case(
        "momo_adam_adapt_lower_bound",
        lambda lr: gradtx.momo_adam(lr, adapt_lower_bound=True),
        converges=False,
        extra_args=_polyak_value,
    ),
    Case(
        "split_real_and_imaginary_adam",
        lambda lr: gradtx.split_real_and_imaginary(gradtx.adam(lr)),
        conv_lr=1e-2,
        steps=5000,
        adaptive=True,
    ),
]


def _half_squared_norm(p):
    return 0.5 * sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(p))


def _sophia_objective(params, grads):
    # A stand-in objective (Hessian = I) for the property tests; the convergence tests pass the
    # true loss. A Partial, not a lambda, so a jitted update can take it as an argument.
    return {"obj_fn": jax.tree_util.Partial(_half_squared_norm)}


# Matrix preconditioners (SOAP, PSGD-Kron), low-rank projection (GaLore), Sophia.
CASES += [
    Case(
        "soap",
        lambda lr: gradtx.soap(lr),
        complex_ok=False,
        conv_lr=1e-2,
        steps=5000,
        adaptive=True,
    ),
    Case(
        "scale_by_soap",
        _then_lr(gradtx.scale_by_soap()),
        complex_ok=False,
        converges=False,
        adaptive=True,
    ),
    Case("kron", lambda lr: gradtx.kron(lr), lr=1e-2, conv_lr=5e-4, steps=10000, adaptive=True),
    Case("galore", lambda lr: gradtx.galore(lr), conv_lr=1e-2, steps=5000, adaptive=True),
    Case(
        "galore_rank1",
        lambda lr: gradtx.galore(lr, rank=1, update_proj_gap=10),
        conv_lr=1e-2,
        steps=5000,
        adaptive=True,
    ),
    Case(
        "scale_by_galore",
        _then_lr(gradtx.scale_by_galore(rank=1, update_proj_gap=3)),
        converges=False,
        adaptive=True,
    ),
    Case(
        "sophia",
        lambda lr: gradtx.sophia(lr),
        complex_ok=False,
        extra_args=_sophia_objective,
        conv_lr=1e-2,
        steps=5000,
        adaptive=True,
    ),
]

BY_NAME = {c.name: c for c in CASES}
