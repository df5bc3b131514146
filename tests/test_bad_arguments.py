"""Every optimizer, transform and schedule refuses bad hyperparameters in the user's words.

The functions are enumerated from gradtx's namespaces, and the bad values from their
signatures: every numeric argument refuses text (``TypeError``) and NaN (``ValueError``), and,
by what its name means, infinity, negative values, values past 1 for decay rates, and
fractions for counts. The message must start with ``<function the user called>: <argument the
user passed>``, e.g. ``sgd: momentum must be in [0, 1], got -0.5``. So a new optimizer without
validation, or one whose errors name a building block the user never called, fails here.

To add a function whose arguments this file cannot build, give them in ``REQUIRED`` or
``OVERRIDES``; an argument that legitimately takes one of the "bad" values goes in ``ALLOWED``
with the reason.
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers

import jax
import jax.numpy as jnp
import pytest

import gradtx

# Modules whose public callables build transforms, optimizers or schedules.
MODULES = [
    "accumulation",
    "averaging",
    "contrib",
    "core",
    "flat",
    "hyperparams",
    "lbfgs",
    "linesearch",
    "optimizers.adam_variants",
    "optimizers.classic",
    "optimizers.full_batch",
    "optimizers.layerwise_and_sign",
    "optimizers.muon",
    "partition",
    "safety",
    "schedules",
    "transforms.adam_relatives_2021",
    "transforms.adam_relatives_2024",
    "transforms.adam_variants",
    "transforms.adaptive",
    "transforms.clipping",
    "transforms.coin_betting",
    "transforms.decay",
    "transforms.factored",
    "transforms.galore",
    "transforms.kron",
    "transforms.layerwise",
    "transforms.learning_rate_free",
    "transforms.modifiers",
    "transforms.momentum",
    "transforms.muon",
    "transforms.noise",
    "transforms.optimistic",
    "transforms.plateau",
    "transforms.scaling",
    "transforms.schedule_free",
    "transforms.sign",
    "transforms.soap",
    "transforms.sophia",
    "transforms.step_size_free",
    "wrappers",
]


def _inner():
    return gradtx.sgd(0.1)


def _all_true(params):
    return jax.tree.map(lambda _: True, params)


# Valid values for arguments without a default (and for ``None`` defaults that are numbers when
# given), by argument name.
REQUIRED = {
    "learning_rate": 0.1,
    "decay": 0.9,
    "eta": 0.01,
    "gamma": 0.55,
    "max_delta": 1.0,
    "max_norm": 1.0,
    "threshold": 1.0,
    "clipping": 0.1,
    "step_size": 0.1,
    "init_value": 1.0,
    "end_value": 0.1,
    "transition_steps": 10,
    "power": 2.0,
    "decay_steps": 10,
    "decay_rate": 0.5,
    "first_period": 10,
    "peak_value": 1.0,
    "warmup_steps": 5,
    "stable_steps": 5,
    "min_value": 0.1,
    "max_value": 1.0,
    "half_cycle_steps": 5,
    "value": 1.0,
    "max_linesearch_steps": 10,
    "max_backtracking_steps": 10,
    "interpolate_type": "linear",
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "weight_decay_rate": 1e-3,
    "max_learning_rate": 1.0,
    "optimism": 1.0,
    "seed": 0,
    "l2_norm_clip": 1.0,
    "noise_multiplier": 1.0,
}

# Callables taking an inner optimizer, a function or a tree; the value they are built with.
STRUCTURAL = {
    "opt": _inner,
    "inner": _inner,
    "fast_optimizer": _inner,
    "optimizer": _inner,
    "base_optimizer": _inner,
    "adv_optimizer": _inner,
    "inner_factory": lambda: gradtx.adam,
    "should_transform_fn": lambda: lambda count: count % 2 == 0,
    "f": lambda: lambda g, p: g,
    "step_size_fn": lambda: lambda count: 0.1,
    "measure_name": lambda: "norm",
    "measure": lambda: lambda u: 0.0,
    "mask": lambda: _all_true,
    "freeze_mask": lambda: _all_true,
    "param_labels": lambda: lambda params: jax.tree.map(lambda _: "a", params),
    "patterns": lambda: ("w",),
    "schedules": lambda: [gradtx.constant_schedule(1.0), gradtx.constant_schedule(0.5)],
    "boundaries": lambda: [5],
    "transforms": lambda: {"a": gradtx.sgd(0.1)},
    "groups": lambda: [gradtx.group("b", lr_scale=0.5)],
}

# Functions whose defaults do not build (an argument optax requires but gradtx lets default).
OVERRIDES = {
    "add_proximal_decay": {"learning_rate": 0.1},
    "scale_by_learning_rate": {"learning_rate": 0.1},
    "param_groups": {"optimizer": gradtx.sgd, "learning_rate": 0.1},
    "sgdr_schedule": {
        "cosine_kwargs": [
            {"init_value": 0.0, "peak_value": 1.0, "warmup_steps": 2, "decay_steps": 10}
        ]
    },
    "monitor": {"measures": {"norm": gradtx.tree.norm}},
}

# Arguments whose name says what is valid. "unit": a decay rate in [0, 1]; "nonneg": >= 0;
# "positive": > 0; "count": a whole number >= 0.
KIND_BY_NAME = {
    "b1": "unit",
    "b2": "unit",
    "b3": "unit",
    "beta": "unit",
    "rho": "unit",
    "momentum": "unit",
    "decay": "unit",
    "smooth_beta": "nonneg",
    "eps": "nonneg",
    "eps_root": "nonneg",
    "epsilon": "nonneg",
    "weight_decay": "nonneg",
    "weight_decay_rate": "nonneg",
    "initial_accumulator_value": "nonneg",
    "initial_scale": "nonneg",
    "min_norm": "nonneg",
    "min_scale": "nonneg",
    "trust_coefficient": "nonneg",
    "max_delta": "nonneg",
    "max_norm": "nonneg",
    "clipping": "nonneg",
    "f_min": "any",
    "max_learning_rate": "nonneg",
    "threshold": "nonneg",
    "clipping_threshold": "nonneg",
    "memory_size": "count",
    "every_k_schedule": "count",
    "k": "count",
    "sync_period": "count",
    "every": "count",
    "start": "count",
    "patience": "count",
    "cooldown": "count",
    "accumulation_size": "count",
    "max_consecutive_errors": "count",
    "transition_steps": "count",
    "transition_begin": "count",
    "decay_steps": "count",
    "warmup_steps": "count",
    "stable_steps": "count",
    "half_cycle_steps": "count",
    "first_period": "count",
    "min_dim_size_to_factor": "count",
    "decay_offset": "count",
    "step_offset": "count",
    "max_linesearch_steps": "count",
    "ns_steps": "count",
    "rank": "count",
    "update_proj_gap": "count",
    "max_precond_dim": "count",
    "precondition_frequency": "count",
    "update_interval": "count",
    "max_size_triangular": "count",
    "min_ndim_triangular": "count",
    "num_betas": "count",
    "clip_threshold": "positive",
    "l2_norm_clip": "nonneg",
    "noise_multiplier": "nonneg",
    "max_backtracking_steps": "count",
}

# (function, argument) pairs where a value this file calls bad is valid, with the reason.
ALLOWED = {
    # +inf means "no limit" in optax's line searches: jump straight to the largest step, and
    # no curvature condition
    ("scale_by_backtracking_linesearch", "increase_factor", "inf"),
    ("scale_by_zoom_linesearch", "increase_factor", "inf"),
    ("scale_by_zoom_linesearch", "curv_rtol", "inf"),
}

# Arguments whose meaning differs from what their name usually says.
KIND_OVERRIDES = {
    # optimistic gradient descent's coefficients (alpha, beta) are not decay rates
    ("scale_by_optimistic_gradient", "beta"): "any",
    ("optimistic_gradient_descent", "beta"): "any",
    ("optimistic_adam_v2", "beta"): "any",
    # PSGD-Kron's probability schedule: decay is a rate per step, not a decay factor
    ("precond_update_prob_schedule", "decay"): "nonneg",
}

SKIP_FUNCTIONS = {
    # not constructors of transforms or schedules: helpers for writing transforms, type
    # aliases, states, and functions applied to trees
    "check_range",
    "check_nonnegative",
    "check_decay",
    "check_count",
    "check_dtype",
    "concrete_float",
    "hyper",
    "is_scheduled",
    "freeze_mask",
    "resolve_mask",
    "broadcast_mask",
    "field_repr",
    "static_field",
    "transform",
    "apply_updates",
    "as_optax",
    "eager_jit",
    "init_empty_state",
    "with_extra_args_support",
    "user_facing",
    "hyperparams",
    "replace",
    "unitwise_norm",
    "unitwise_clip",
    "per_example_global_norm_clip",
    "per_example_layer_norm_clip",
    "scale_gradient",
    "multi_normal",
    "skip_not_finite",
    "skip_large_updates",
    "all_finite",
    "value_and_grad_from_state",
    "schedule_free_eval_params",
    "stochastic_round",
    "apply_updates_stochastic",
    # applied to matrices and trees, not constructors (their options are checked when called)
    "orthogonalize_via_newton_schulz",
    "muon_dimension_numbers",
    "polar_express_coeffs",
    # a parameter-group spec for param_groups, not a transform (param_groups checks it)
    "group",
}


def _targets():
    seen = {}
    for m in MODULES:
        mod = importlib.import_module(f"gradtx.{m}")
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if name in SKIP_FUNCTIONS or not callable(obj) or name[0].isupper():
                continue
            if getattr(obj, "__name__", name) != name:
                continue  # an alias under another name (multi_transform = partition)
            seen.setdefault(name, obj)
    return seen


def _numeric_args(fn):
    """(argument, kind) for every argument that takes a number."""
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        d = p.default
        number_default = isinstance(d, numbers.Real) and not isinstance(d, bool)
        if number_default or (
            p.name in REQUIRED
            and isinstance(REQUIRED[p.name], numbers.Real)
            and d in (None, p.empty)
        ):
            kind = KIND_OVERRIDES.get((fn.__name__, p.name), KIND_BY_NAME.get(p.name, "any"))
            out.append((p.name, kind))
    return out


def _valid_kwargs(fn):
    kwargs = dict(OVERRIDES.get(fn.__name__, {}))
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is not p.empty:
            continue
        if p.name in kwargs:
            continue
        if p.name in STRUCTURAL:
            kwargs[p.name] = STRUCTURAL[p.name]()
        elif p.name in REQUIRED:
            kwargs[p.name] = REQUIRED[p.name]
        else:
            raise KeyError(f"{fn.__name__}: add a valid value for {p.name!r} to REQUIRED")
    return kwargs


def _bad_values(kind):
    either = (TypeError, ValueError)
    # a count given a non-integer float is of the wrong type as much as out of range
    not_finite = either if kind == "count" else ValueError
    vals = [
        ("text", "0.1", either),
        ("list", [0.1], either),
        ("nan", math.nan, not_finite),
        ("inf", math.inf, not_finite),
    ]
    if kind in ("unit", "nonneg", "positive", "count"):
        vals.append(("negative", -0.5 if kind != "count" else -1, ValueError))
    if kind == "unit":
        vals.append(("above one", 1.5, ValueError))
    if kind == "positive":
        vals.append(("zero", 0.0, ValueError))
    if kind == "count":
        vals.append(("fraction", 2.5, either))
    return vals


TARGETS = _targets()
CASES = [
    pytest.param(name, arg, kind, id=f"{name}-{arg}")
    for name, fn in sorted(TARGETS.items())
    for arg, kind in _numeric_args(fn)
]


def test_every_target_builds_with_valid_arguments():
    built = {}
    for name, fn in TARGETS.items():
        built[name] = fn(**_valid_kwargs(fn))
    assert len(built) > 100
    for name, obj in built.items():
        assert isinstance(obj, gradtx.GradientTransformation) or callable(obj), name


@pytest.mark.parametrize(("name", "arg", "kind"), CASES)
def test_bad_value_names_function_and_argument(name, arg, kind):
    fn = TARGETS[name]
    kwargs = _valid_kwargs(fn)
    for what, value, exc in _bad_values(kind):
        if (name, arg, what) in ALLOWED:
            continue
        with pytest.raises(exc) as info:
            fn(**{**kwargs, arg: value})
        msg = str(info.value)
        assert msg.startswith(f"{name}: {arg}"), f"{what} {value!r}: {msg}"
        assert repr(value) in msg or str(value) in msg, f"{what}: the value is not shown: {msg}"


def test_the_issue_example():
    with pytest.raises(ValueError, match=r"^sgd: momentum must be in \[0, 1\], got -0\.5$"):
        gradtx.sgd(0.1, momentum=-0.5)
    with pytest.raises(TypeError, match=r"^adam: b1 must be a number"):
        gradtx.adam(1e-3, b1="0.9")
    # a dtype argument names the optimizer too
    with pytest.raises(TypeError, match=r"^adam: mu_dtype"):
        gradtx.adam(1e-3, mu_dtype=jnp.int32)
