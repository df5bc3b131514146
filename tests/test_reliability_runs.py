"""Reliability over runs (issue 14, parts 6 and 7), driven by the registry and gradtx's namespace.

- Determinism: every registry case, 10 jitted steps run twice in this process, gives
  bit-identical params, states and updates; a fresh Python process gives the same bits.
- Keys: every public callable of gradtx whose signature has a ``key``/``seed``/``rng`` parameter
  (found with ``inspect.signature``, so a new randomised transform is picked up) is reproducible
  from it: the same key gives bit-identical results (here and in a fresh process), another key
  different ones. ``add_noise``/``noisy_sgd`` built without a key use seed 0, as optax's do.
- Long runs: every registry case takes 100,000 float32 steps on a small quadratic under one
  ``jax.lax.scan`` and stays finite (params and every inexact state leaf).
- Counters: every int32 step counter in every registry state, started at ``2**31 − 2``,
  saturates at ``2**31 − 1`` (never wraps negative) and the updates there stay finite.
- Schedules (every one in gradtx's namespace): at their last knee, 10× past it and at
  ``2**31 − 1`` they are finite and hold their final value; the unbounded and periodic ones do
  what their docstrings say.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
import subprocess
import sys
import types
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from registry import BY_NAME, CASES

import gradtx

IDS = [c.name for c in CASES]
INT32_MAX = 2**31 - 1
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------------------------
# The problem: f(θ) = ½ Σ a_i θ_i² in float32, six parameters with curvatures 0.05 … 1.8. The
# curvatures stay below 2 so that the unit steps some cases take (lars, dog, adadelta and
# polyak_sgd at learning rate 1) are stable: gradient descent with α a > 2 diverges by the
# mathematics, which is not what these tests are about. The start is positive so that
# keep_params_nonnegative's projection is used as intended (it is placed before the learning
# rate in the registry, so on a negative parameter it would step uphill).

_CURVATURE = {"w": [[0.05, 0.3], [1.0, 1.8]], "b": [0.5, 1.2]}
_START = {"w": [[1.0, 2.0], [0.5, 3.0]], "b": [1.5, 0.25]}


def _tree(values, scale=1.0):
    return jax.tree_util.tree_map(
        lambda v: jnp.asarray(np.asarray(v) * scale, jnp.float32),
        values,
        is_leaf=lambda v: isinstance(v, list),
    )


def _loss(params, curvature) -> float:
    return sum(
        0.5 * float(np.sum(np.asarray(a, np.float64) * np.asarray(p, np.float64) ** 2))
        for a, p in zip(
            jax.tree_util.tree_leaves(curvature), jax.tree_util.tree_leaves(params), strict=True
        )
    )


# Cases that are not descent methods on a quadratic, with the curvature scale that keeps them
# stable and the reason. conditionally_transform passes the raw gradient through on odd steps
# (θ ← θ + a θ: ascent, growth (1 + a)^(t/2)); with a ≤ 1.8e-3 the wrapped Adam's pull of
# about its learning rate (1e-2) per even step outweighs it for |θ| ≤ 3.
_CURVATURE_SCALE = {"conditionally_transform": 1e-3}


def _curvature(case):
    return _tree(_CURVATURE, _CURVATURE_SCALE.get(case.name, 1.0))


# Cases whose updates are zero by design: their params must stay where they start.
_STANDS_STILL = {"set_to_zero_then_sgd": "set_to_zero zeroes every update"}


def _assert_progress(case, params, start, curvature) -> None:
    """The steps did something: the loss went down (or, by design, stayed put)."""
    after, before = _loss(params, curvature), _loss(start, curvature)
    if case.name in _STANDS_STILL:
        assert after == before, case.name
    else:
        assert after < before, (case.name, after, before)


def _extra(case, params, grads):
    # polyak_sgd and reduce_on_plateau take the objective value as an update argument
    return case.extra_args(params, grads) if case.extra_args else {}


def _to_numpy(x) -> np.ndarray:
    x = jnp.asarray(x) if not isinstance(x, np.ndarray) else x
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def _leaves(tree) -> list[np.ndarray]:
    return [_to_numpy(x) for x in jax.tree_util.tree_leaves(tree)]


def _inexact(x: np.ndarray) -> bool:
    return np.issubdtype(x.dtype, np.inexact)


def _assert_finite(tree, what: str) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        x = _to_numpy(leaf)
        if _inexact(x):
            assert np.all(np.isfinite(x)), f"{what}: non-finite at {jax.tree_util.keystr(path)}"


def _assert_bits_equal(a: list[np.ndarray], b: list[np.ndarray], what: str) -> None:
    assert len(a) == len(b), f"{what}: {len(a)} leaves vs {len(b)}"
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x.dtype == y.dtype and x.shape == y.shape, f"{what}: leaf {i} {x.dtype} vs {y.dtype}"
        # array_equal without equal_nan: a NaN anywhere fails too
        assert np.array_equal(x, y), f"{what}: leaf {i} differs\n{x!r}\n{y!r}"


# ---------------------------------------------------------------------------------------------
# One jitted step per case (compiled once, shared by the determinism and the counter tests).

_STEPS: dict[str, tuple[Any, Callable]] = {}


def _stepper(name: str):
    """``(opt, step)`` with ``step(params, state, grad_scale) -> (params, state, updates)``
    jitted; the gradient is ``grad_scale · a ⊙ θ`` (a NaN scale makes every gradient NaN)."""
    if name not in _STEPS:
        case = BY_NAME[name]
        opt = case.make(case.lr)
        curvature = _curvature(case)

        @jax.jit
        def step(params, state, grad_scale):
            g = jax.tree_util.tree_map(lambda a, p: grad_scale * a * p, curvature, params)
            u, state = opt.update(g, state, params, **_extra(case, params, g))
            return gradtx.apply_updates(params, u), state, u

        _STEPS[name] = (opt, step)
    return _STEPS[name]


def _ten_steps(name: str) -> list[np.ndarray]:
    """The leaves of (params, state) after 10 jitted steps and of every step's updates."""
    opt, step = _stepper(name)
    params = _tree(_START)
    state = opt.init(params)
    out = []
    for _ in range(10):
        params, state, u = step(params, state, jnp.float32(1.0))
        out += _leaves(u)
    return _leaves((params, state)) + out


# ---------------------------------------------------------------------------------------------
# Randomised callables: every public callable whose signature has a key/seed/rng parameter.

_RANDOM_PARAMETERS = {"key", "seed", "rng", "rng_key", "prng_key", "random_key", "random_seed"}

# Callables with such a parameter that draw nothing from it (with the reason).
_NOT_RANDOMISED = {
    "AddNoiseState": "add_noise's state record: rng_key is the key it holds",
    "DifferentiallyPrivateAggregateState": "its state record: rng_key is the key it holds",
    "get": "gradtx.tree.get: key is the field or dict key looked up",
    "get_all_with_path": "gradtx.tree.get_all_with_path: key is the field or dict key",
    "tree_get": "optax's name of gradtx.tree.get",
    "tree_get_all_with_path": "optax's name of gradtx.tree.get_all_with_path",
    "KronState": "kron's state record: key is the key it holds",
    "HutchinsonState": "the Hessian estimator's state record: key is the key it holds",
}


def _gradtx_callables() -> dict[int, tuple[Any, set[str]]]:
    """Every public callable defined in gradtx (any loaded gradtx module, public methods of
    public classes included), by identity, with the names it goes by."""
    found: dict[int, tuple[Any, set[str]]] = {}

    def add(obj, name):
        found.setdefault(id(obj), (obj, set()))[1].add(name)

    modules = [m for n, m in list(sys.modules.items()) if n == "gradtx" or n.startswith("gradtx.")]
    for mod in modules:
        for name, obj in list(vars(mod).items()):
            if name.startswith("_") or isinstance(obj, types.ModuleType) or not callable(obj):
                continue
            if not str(getattr(obj, "__module__", "")).startswith("gradtx"):
                continue
            add(obj, name)
            if inspect.isclass(obj):
                for m_name, m in vars(obj).items():
                    if not m_name.startswith("_") and inspect.isfunction(m):
                        add(m, f"{obj.__name__}.{m_name}")
    return found


def _randomised_callables() -> dict[str, Any]:
    out = {}
    for obj, names in _gradtx_callables().values():
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            continue
        if _RANDOM_PARAMETERS & set(params):
            out[min(names, key=len)] = (obj, names)
    return out


_NOISE_PARAMS = {"w": np.ones((3, 2), np.float32), "z": np.zeros(4, np.complex64)}


@jax.jit
def _noise_step(opt, state):
    # the transform is an argument: one compilation serves every key of the same kind
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.5), _NOISE_PARAMS)
    return opt.update(grads, state, _NOISE_PARAMS)


def _noise_trajectory(opt) -> list[np.ndarray]:
    """Five jitted steps of ``opt`` on fixed gradients: every step's updates and the states."""
    state = opt.init(_NOISE_PARAMS)
    out = []
    for _ in range(5):
        u, state = _noise_step(opt, state)
        out += _leaves((u, state))
    return out


def _hessian_estimates(estimator) -> list[np.ndarray]:
    """Three estimates of the Hessian diagonal of a fixed quartic by ``estimator``."""
    params = {"w": jnp.asarray([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.asarray([0.3, -0.7])}

    def quartic(p):
        return sum(jnp.sum(x**4 + x[..., :1] * x) for x in jax.tree_util.tree_leaves(p))

    state, out = estimator.init(params), []
    for _ in range(3):
        h, state = estimator.update(params, state, params, obj_fn=quartic)
        out += _leaves(h)
    return out


def _bad_gradient_sum_of_squares():
    # ½ Σ x_i² with a gradient wrong by a relative 1e-3 · i: check_grads' worst element is the
    # highest index in the random subset it checks, so the report tells the subsets apart.
    @jax.custom_jvp
    def f(x):
        return 0.5 * jnp.sum(x**2)

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        wrong = x * (1.0 + 1e-3 * jnp.arange(x.size, dtype=x.dtype))
        return f(x), jnp.sum(wrong * t)

    return f


def _check_grads_report(seed) -> list[np.ndarray]:
    x = jnp.linspace(0.5, 1.5, 400, dtype=jnp.float32)
    r = gradtx.check_grads(_bad_gradient_sum_of_squares(), x, tol=10.0, max_checks=4, seed=seed)
    return [np.asarray(r.where), np.asarray([r.max_rel_error, r.analytic, r.numeric])]


_SYMMETRIC = np.diag([1.0, 0.95, 0.9, 0.85]) + 0.01


def _dp_trajectory(opt) -> list[np.ndarray]:
    """Three jitted steps of a differentially private transform on per-example gradients (a
    leading batch axis of 4)."""
    grads = {"w": jnp.ones((4, 3, 2)), "b": jnp.ones((4, 2))}
    params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    state = opt.init(params)
    step = jax.jit(lambda s: opt.update(grads, s, params))
    out = []
    for _ in range(3):
        u, state = step(state)
        out += _leaves((u, state))
    return out


# How to run each randomised callable from an int seed (keys are made from it where the
# callable takes a jax key). A callable missing here fails test_every_randomised_callable_is_run.
_RANDOMISED: dict[str, Callable[[int], Any]] = {
    "add_noise": lambda k: _noise_trajectory(gradtx.add_noise(0.1, 0.55, key=k)),
    "noisy_sgd": lambda k: _noise_trajectory(gradtx.noisy_sgd(0.1, key=k)),
    "power_iteration": lambda k: _leaves(
        gradtx.power_iteration(
            jnp.asarray(_SYMMETRIC, jnp.float32), num_iters=2, key=jax.random.key(k)
        )
    ),
    "check_grads": _check_grads_report,
    "random_like": lambda k: _leaves(
        gradtx.tree.random_like(jax.random.key(k), {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)})
    ),
    "split_key_like": lambda k: _leaves(
        gradtx.tree.split_key_like(jax.random.key(k), {"w": jnp.zeros(3), "b": jnp.zeros(2)})
    ),
    "differentially_private_aggregate": lambda k: _dp_trajectory(
        gradtx.differentially_private_aggregate(1.0, 1.1, key=k)
    ),
    "dpsgd": lambda k: _dp_trajectory(gradtx.dpsgd(0.1, 1.0, 1.1, seed=k)),
    "stochastic_round": lambda k: _leaves(
        gradtx.stochastic_round(
            jnp.linspace(1.0, 2.0, 64) + 1e-3, jnp.bfloat16, jax.random.key(k)
        ).astype(jnp.float32)
    ),
    "apply_updates_stochastic": lambda k: _leaves(
        gradtx.apply_updates_stochastic(
            {"w": jnp.ones(64, jnp.bfloat16)}, {"w": jnp.full(64, 1e-3)}, jax.random.key(k)
        )["w"].astype(jnp.float32)
    ),
    "kron": lambda k: _noise_trajectory(gradtx.kron(0.1, random_seed=jax.random.PRNGKey(k))),
    "scale_by_kron": lambda k: _noise_trajectory(
        gradtx.scale_by_kron(random_seed=jax.random.PRNGKey(k))
    ),
    "hutchinson_estimator_diag_hessian": lambda k: _hessian_estimates(
        gradtx.hutchinson_estimator_diag_hessian(random_seed=jax.random.PRNGKey(k))
    ),
    "MultiNormalDiagFromLogScale.sample": lambda k: _leaves(
        gradtx.multi_normal(jnp.asarray([1.0, -1.0]), jnp.asarray([0.0, -1.0])).sample((4,), k)
    ),
}


def _write_fresh_runs(path: str) -> None:
    """Run in a fresh process by test_fresh_process_gives_the_same_bits."""
    arrays = {}
    for case in FRESH_CASES:
        for i, x in enumerate(_ten_steps(case.name)):
            arrays[f"case/{case.name}/{i}"] = x
    for name, run in _RANDOMISED.items():
        for i, x in enumerate(run(7)):
            arrays[f"random/{name}/{i}"] = x
    np.savez(path, **arrays)


# ---------------------------------------------------------------------------------------------
# Determinism.

_WARM: dict[str, list[np.ndarray]] = {}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ten_jitted_steps_are_bit_identical(case):
    first = _ten_steps(case.name)  # compiles
    second = _ten_steps(case.name)  # the cached executable
    _assert_bits_equal(first, second, case.name)
    for x in first:
        if _inexact(x):
            assert np.all(np.isfinite(x)), case.name
    start = _tree(_START)
    n = len(jax.tree_util.tree_leaves(start))
    moved = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(start), first[:n])
    _assert_progress(case, moved, start, _curvature(case))
    _WARM[case.name] = second


# Every tenth case (compiling all of them again took 40-75 s of CI, every third 31-46 s, every
# fifth 32-41 s); the randomised callables all run, since their keys are what a fresh process
# could get wrong.
FRESH_CASES = CASES[::10]


def test_fresh_process_gives_the_same_bits(tmp_path):
    # One fresh interpreter runs every case (and every randomised callable) from scratch; XLA
    # on the CPU is deterministic for these ops, so its arrays equal this (warm) process's.
    out = tmp_path / "fresh.npz"
    module = os.path.splitext(os.path.basename(__file__))[0]
    code = (
        f"import sys; sys.path.insert(0, sys.argv[1]); import {module}; "
        f"{module}._write_fresh_runs(sys.argv[2])"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", code, TESTS_DIR, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    fresh = np.load(out)
    for case in FRESH_CASES:
        warm = _WARM.get(case.name) or _ten_steps(case.name)
        theirs = [fresh[f"case/{case.name}/{i}"] for i in range(len(warm))]
        assert f"case/{case.name}/{len(warm)}" not in fresh.files
        _assert_bits_equal(warm, theirs, f"{case.name}: fresh process vs this one")
    for name, run in _RANDOMISED.items():
        ours = run(7)
        theirs = [fresh[f"random/{name}/{i}"] for i in range(len(ours))]
        _assert_bits_equal(ours, theirs, f"{name}: fresh process vs this one")


# ---------------------------------------------------------------------------------------------
# Keys.


def test_every_randomised_callable_is_run():
    found = _randomised_callables()
    assert {"add_noise", "noisy_sgd"} <= set(found)
    missing = {
        n: sorted(names)
        for n, (_, names) in found.items()
        if not (names & set(_RANDOMISED)) and not (names & set(_NOT_RANDOMISED))
    }
    assert not missing, (
        f"{missing}: these take a key, seed or rng; add how to run them to _RANDOMISED (or, if "
        "the parameter is not randomness, to _NOT_RANDOMISED with the reason)"
    )
    listed = set().union(*(names for _, names in found.values()))
    assert set(_RANDOMISED) <= listed, set(_RANDOMISED) - listed  # no stale entries


@pytest.mark.parametrize("name", sorted(_RANDOMISED))
def test_randomised_callable_is_reproducible_from_its_key(name):
    run = _RANDOMISED[name]
    a, again, other = run(0), run(0), run(1)
    _assert_bits_equal(a, again, f"{name}, same key")
    assert len(a) == len(other)
    assert any(not np.array_equal(x, y) for x, y in zip(a, other, strict=True)), (
        f"{name}: keys 0 and 1 gave the same result"
    )


_NOISE_MAKERS = {
    "add_noise": lambda **kw: gradtx.add_noise(0.1, 0.55, **kw),
    "noisy_sgd": lambda **kw: gradtx.noisy_sgd(0.1, **kw),
}


@pytest.mark.parametrize("name", sorted(_NOISE_MAKERS))
def test_noise_key_forms_and_default(name):
    # The same randomness from an int seed, a typed key, its raw data, and optax's older
    # ``seed=`` keyword; no key at all means seed 0 (optax's choice too), so two runs built
    # without a key are identical: pass a key to vary the noise between runs.
    make = _NOISE_MAKERS[name]
    ref = _noise_trajectory(make(key=3))
    for form in (jax.random.key(3), jax.random.key_data(jax.random.key(3))):
        _assert_bits_equal(ref, _noise_trajectory(make(key=form)), f"{form!r}")
    _assert_bits_equal(ref, _noise_trajectory(make(seed=3)), "seed=3")
    _assert_bits_equal(_noise_trajectory(make()), _noise_trajectory(make(key=0)), "no key")
    assert not np.array_equal(ref[0], _noise_trajectory(make(key=4))[0])
    sig = inspect.signature(getattr(gradtx, name)).parameters
    assert sig["key"].default is None and sig["seed"].kind is inspect.Parameter.KEYWORD_ONLY


def test_noise_variance_follows_its_annealing():
    # add_noise's first sample is N(0, η) (σ_0² = η / 1^γ), the next N(0, η / 2^γ): the
    # empirical variances of 20,000 draws agree with the formula to a few percent, as optax's
    # do (the two draw different numbers from the same key: only the distribution is shared).
    eta, gamma = 0.3, 0.55
    params = jnp.zeros(20_000, jnp.float32)
    for tx in (gradtx.add_noise(eta, gamma, key=1), optax.add_noise(eta, gamma, key=1)):
        state = tx.init(params)
        for t in range(2):
            u, state = tx.update(params, state)
            var = float(np.var(np.asarray(u, np.float64)))
            np.testing.assert_allclose(var, eta / (1.0 + t) ** gamma, rtol=0.05)


# ---------------------------------------------------------------------------------------------
# Long runs.

LONG_STEPS = 100_000


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_long_run_stays_finite(case):
    opt = case.make(case.lr)
    curvature = _curvature(case)

    @jax.jit
    def run(params):
        def body(carry, _):
            p, s = carry
            g = jax.tree_util.tree_map(lambda a, x: a * x, curvature, p)
            u, s = opt.update(g, s, p, **_extra(case, p, g))
            return (gradtx.apply_updates(p, u), s), None

        return jax.lax.scan(body, (params, opt.init(params)), length=LONG_STEPS)[0]

    start = _tree(_START)
    params, state = run(start)
    _assert_finite((params, state), case.name)
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        x = _to_numpy(leaf)
        if np.issubdtype(x.dtype, np.signedinteger):
            assert np.all(x >= 0), f"{case.name}: {jax.tree_util.keystr(path)} = {x}"
    _assert_progress(case, params, start, curvature)


# ---------------------------------------------------------------------------------------------
# Step counters.

# Integer state fields by what they count. Step counters advance by at most one per update and
# must saturate at 2**31 − 1. Indices must never go negative. Bounded fields are reset long
# before int32 matters (they are left alone). Non-finite counters advance on non-finite updates
# only (driven with NaN gradients). A field not listed fails test_step_counters_saturate.
# (step_count, count_m2 and t are optax's names in the Schedule-Free, AdEMAMix and ADOPT states)
_STEP_COUNTERS = {"count", "gradient_step", "step", "n_averaged", "step_count", "count_m2", "t"}
_INDICES = {
    "num_pairs",  # L-BFGS: pairs written so far (kept below 2m); the next goes to num_pairs % m
    "ApplyEveryState.count",  # its phase is count % k: near the limit it steps back by k's
}
_BOUNDED = {
    "mini_step": "MultiSteps: micro-steps since the last optimizer step, < k",
    "plateau_count": "reduce_on_plateau: evaluations without improvement, reset at patience",
    "cooldown_count": "reduce_on_plateau: evaluations of cooldown left, <= cooldown",
    "SAMState.steps_since_sync": "sam: calls since the last outer step, < sync_period",
    "ReduceOnPlateauState.count": "reduce_on_plateau: values since the last evaluation",
}
_NONFINITE_COUNTERS = {"notfinite_count", "total_notfinite"}


def _field(state, path) -> str:
    """``Owner.field`` of an integer leaf (the owner's class name and the field's name)."""
    node = state
    for k in path[:-1]:
        if isinstance(k, jax.tree_util.GetAttrKey):
            node = getattr(node, k.name)
        elif isinstance(k, jax.tree_util.DictKey | jax.tree_util.SequenceKey):
            node = node[k.key if isinstance(k, jax.tree_util.DictKey) else k.idx]
        else:
            return ""
    last = path[-1]
    name = getattr(last, "name", getattr(last, "key", getattr(last, "idx", "")))
    return f"{type(node).__name__}.{name}"


def _kind(state, path) -> str:
    qual = _field(state, path)
    name = qual.rsplit(".", 1)[-1]
    if qual in _BOUNDED or name in _BOUNDED:
        return "bounded"
    if qual in _INDICES:
        return "index"
    if name in _STEP_COUNTERS:
        return "step"
    if name in _INDICES:
        return "index"
    if name in _NONFINITE_COUNTERS:
        return "nonfinite"
    return "unknown: " + qual


def _set_counters(state, kinds, value):
    def f(path, leaf):
        if _kind(state, path) in kinds:
            return jnp.full_like(leaf, value)
        return leaf

    return jax.tree_util.tree_map_with_path(f, state)


def _int_paths(state, kinds) -> list:
    return [
        (path, leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
        if np.issubdtype(_to_numpy(leaf).dtype, np.signedinteger) and _kind(state, path) in kinds
    ]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_step_counters_saturate(case):
    opt, step = _stepper(case.name)
    params = _tree(_START)
    state = opt.init(params)
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        x = _to_numpy(leaf)
        if np.issubdtype(x.dtype, np.signedinteger):
            assert x.dtype == np.int32, f"{case.name}: {jax.tree_util.keystr(path)} is {x.dtype}"
            kind = _kind(state, path)
            assert not kind.startswith("unknown"), f"{case.name}: classify the counter {kind}"
    state = _set_counters(state, {"step", "index"}, INT32_MAX - 1)
    for _ in range(3):
        params, state, u = step(params, state, jnp.float32(1.0))
        _assert_finite((params, state, u), case.name)
    for path, leaf in _int_paths(state, {"step"}):
        assert int(leaf) == INT32_MAX, f"{case.name}: {jax.tree_util.keystr(path)} = {int(leaf)}"
    for path, leaf in _int_paths(state, {"step", "index", "bounded"}):
        assert int(leaf) >= 0, f"{case.name}: {jax.tree_util.keystr(path)} = {int(leaf)}"
    if _int_paths(state, {"nonfinite"}):
        # counters of non-finite updates: NaN gradients drive them to the top, the updates
        # stay finite (the step is skipped) and the counters do not wrap
        state = _set_counters(state, {"nonfinite"}, INT32_MAX - 1)
        for _ in range(3):
            params, state, u = step(params, state, jnp.float32(np.nan))
            _assert_finite((params, u), case.name)
        for path, leaf in _int_paths(state, {"nonfinite"}):
            assert int(leaf) == INT32_MAX, f"{case.name}: {jax.tree_util.keystr(path)}"


def test_counter_classification_has_no_stale_entries():
    # every listed counter name occurs in some registry state (no stale entries)
    seen = set()
    params = _tree(_START)
    for case in CASES:
        state = case.make(case.lr).init(params)
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
            if np.issubdtype(_to_numpy(leaf).dtype, np.signedinteger):
                qual = _field(state, path)
                seen |= {qual, qual.rsplit(".", 1)[-1]}
    listed = _STEP_COUNTERS | _INDICES | set(_BOUNDED) | _NONFINITE_COUNTERS
    assert listed <= seen, listed - seen


# ---------------------------------------------------------------------------------------------
# Schedules past their end.


@dataclasses.dataclass(frozen=True)
class Spec:
    """How a schedule behaves past its end.

    ``ends``: constant ``final`` from step ``knee`` on (and not yet at ``knee − 1``).
    ``to_zero``: decays towards 0 without end; ``formula(t)`` in float64 gives its value.
    ``periodic``: ``v(t + k·period) = v(t)``; values in ``[low, high]``.
    ``restarts``: returns to ``high`` at every ``restarts`` step; values in ``[low, high]``.
    ``to_limit``: tends to ``final`` (reached exactly in float32 at 2**31 − 1); values in
    ``[low, high]``.
    """

    build: Callable[[], Any]
    kind: str
    knee: int = 0
    final: float | None = None
    formula: Callable[[float], float] | None = None
    period: int | None = None
    restarts: tuple = ()
    low: float | None = None
    high: float | None = None


_ONECYCLE_FINAL = 1.0 / (25.0 * 1e4)  # α_peak / (d · d_final) with the defaults
_RUN1 = dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=100, end_value=0.1)
_RUN2 = dict(init_value=0.1, peak_value=0.5, warmup_steps=10, decay_steps=50, end_value=0.05)

SCHEDULES: dict[str, list[Spec]] = {
    "constant_schedule": [Spec(lambda: gradtx.constant_schedule(0.3), "ends", 0, 0.3)],
    # exp(−0.001 (n − 500)) falls below 0.03 between steps 4006 and 4007
    "precond_update_prob_schedule": [
        Spec(lambda: gradtx.precond_update_prob_schedule(), "ends", 4007, 0.03)
    ],
    "polynomial_schedule": [
        Spec(lambda: gradtx.polynomial_schedule(1.0, 0.1, 2, 100, 20), "ends", 120, 0.1)
    ],
    "linear_schedule": [Spec(lambda: gradtx.linear_schedule(1.0, 0.1, 100, 20), "ends", 120, 0.1)],
    "piecewise_constant_schedule": [
        Spec(
            lambda: gradtx.piecewise_constant_schedule(1.0, {50: 0.5, 200: 0.1}), "ends", 200, 0.05
        )
    ],
    "piecewise_interpolate_schedule": [
        Spec(
            lambda k=k: gradtx.piecewise_interpolate_schedule(k, 1.0, {50: 0.5, 200: 0.1}),
            "ends",
            200,
            0.05,
        )
        for k in ("linear", "cosine")
    ],
    "exponential_decay": [
        # 0.5^((t − 10)/100) reaches 0.01 at t − 10 = 100 log2(100) = 664.4
        Spec(
            lambda: gradtx.exponential_decay(1.0, 100, 0.5, 10, end_value=0.01), "ends", 675, 0.01
        ),
        # staircase: 0.5^7 = 0.0078 is the first power below 0.01, from t = 700
        Spec(
            lambda: gradtx.exponential_decay(1.0, 100, 0.5, staircase=True, end_value=0.01),
            "ends",
            700,
            0.01,
        ),
        # growth capped from above: 0.1 · 2^(t/100) reaches 1 at t = 100 log2(10) = 332.2
        Spec(lambda: gradtx.exponential_decay(0.1, 100, 2.0, end_value=1.0), "ends", 333, 1.0),
        # no end_value: decays towards 0 without end
        Spec(
            lambda: gradtx.exponential_decay(1.0, 100, 0.5, 10),
            "to_zero",
            formula=lambda t: 0.5 ** (max(t - 10, 0) / 100),
        ),
    ],
    "inverse_time_decay": [
        Spec(
            lambda: gradtx.inverse_time_decay(1.0, 10, 1.0),
            "to_zero",
            formula=lambda t: 1 / (1 + t / 10),
        ),
        Spec(
            lambda: gradtx.inverse_time_decay(1.0, 10, 1.0, staircase=True),
            "to_zero",
            formula=lambda t: 1 / (1 + t // 10),
        ),
    ],
    "natural_exp_decay": [
        Spec(
            lambda: gradtx.natural_exp_decay(1.0, 10, 1.0),
            "to_zero",
            formula=lambda t: math.exp(-t / 10),
        )
    ],
    "cosine_decay_schedule": [
        Spec(lambda: gradtx.cosine_decay_schedule(1.0, 100, alpha=0.1), "ends", 100, 0.1),
        Spec(
            lambda: gradtx.cosine_decay_schedule(1.0, 100, alpha=0.1, exponent=2.0),
            "ends",
            100,
            0.1,
        ),
    ],
    "cosine_restarts_schedule": [
        Spec(
            lambda: gradtx.cosine_restarts_schedule(1.0, 50, alpha=0.1),
            "periodic",
            period=50,
            low=0.1,
            high=1.0,
        ),
        # periods 50, 100, 200, …: restarts at 50 (2^i − 1)
        Spec(
            lambda: gradtx.cosine_restarts_schedule(1.0, 50, period_multiplier=2.0, alpha=0.1),
            "restarts",
            restarts=tuple(50 * (2**i - 1) for i in range(1, 15)),
            low=0.1,
            high=1.0,
        ),
    ],
    "warmup_constant_schedule": [
        Spec(lambda: gradtx.warmup_constant_schedule(0.0, 1.0, 50), "ends", 50, 1.0)
    ],
    "warmup_cosine_decay_schedule": [
        Spec(lambda: gradtx.warmup_cosine_decay_schedule(0.0, 1.0, 50, 200, 0.1), "ends", 200, 0.1),
        Spec(
            lambda: gradtx.warmup_cosine_decay_schedule(0.0, 1.0, 50, 200, 0.1, exponent=2.0),
            "ends",
            200,
            0.1,
        ),
    ],
    "warmup_exponential_decay_schedule": [
        Spec(
            lambda: gradtx.warmup_exponential_decay_schedule(
                0.0, 1.0, 50, 100, 0.5, end_value=0.01
            ),
            "ends",
            50 + 665,
            0.01,
        ),
        Spec(
            lambda: gradtx.warmup_exponential_decay_schedule(0.0, 1.0, 50, 100, 0.5),
            "to_zero",
            formula=lambda t: t / 50 if t < 50 else 0.5 ** ((t - 50) / 100),
        ),
    ],
    "warmup_stable_decay_schedule": [
        Spec(
            lambda shape=shape: gradtx.warmup_stable_decay_schedule(
                1.0, 50, 100, 200, end_value=0.05, decay_shape=shape
            ),
            "ends",
            350,
            0.05,
        )
        for shape in ("linear", "cosine", "1-sqrt")
    ],
    "join_schedules": [
        Spec(
            lambda: gradtx.join_schedules(
                [
                    gradtx.warmup_constant_schedule(0.0, 1.0, 50),
                    gradtx.linear_schedule(1.0, 0.2, 100),
                ],
                [80],
            ),
            "ends",
            180,
            0.2,
        )
    ],
    "sgdr_schedule": [Spec(lambda: gradtx.sgdr_schedule([_RUN1, _RUN2]), "ends", 150, 0.05)],
    "cyclic_schedule": [
        Spec(
            lambda: gradtx.cyclic_schedule(0.1, 1.0, 25), "periodic", period=50, low=0.1, high=1.0
        ),
        # the amplitude halves every cycle: towards min_value
        Spec(
            lambda: gradtx.cyclic_schedule(0.1, 1.0, 25, mode="triangular2"),
            "to_limit",
            final=0.1,
            low=0.1,
            high=1.0,
        ),
        Spec(
            lambda: gradtx.cyclic_schedule(0.1, 1.0, 25, mode="exp_range", gamma=0.99),
            "to_limit",
            final=0.1,
            low=0.1,
            high=1.0,
        ),
    ],
    "linear_onecycle_schedule": [
        Spec(lambda: gradtx.linear_onecycle_schedule(1000, 1.0), "ends", 1000, _ONECYCLE_FINAL)
    ],
    "cosine_onecycle_schedule": [
        Spec(lambda: gradtx.cosine_onecycle_schedule(1000, 1.0), "ends", 1000, _ONECYCLE_FINAL)
    ],
}


def _schedule_names() -> set[str]:
    """Every schedule in gradtx's namespace: BaseSchedule subclasses and the callables named
    like one (``*_schedule(s)``, ``*_decay``, ``warmup_*``, ``piecewise_*``, …) that are not
    transforms."""
    pattern = re.compile(r"_schedules?$|_decay$|^(warmup|piecewise|sgdr|cyclic)_")
    names = set()
    for mod in (gradtx, gradtx.schedules):
        for name in getattr(mod, "__all__", dir(mod)):
            obj = getattr(mod, name, None)
            if name.startswith(("_", "check_")) or not callable(obj) or obj is gradtx.BaseSchedule:
                continue
            if inspect.isclass(obj) and issubclass(obj, gradtx.GradientTransformation):
                continue
            is_schedule = inspect.isclass(obj) and issubclass(obj, gradtx.BaseSchedule)
            if is_schedule or pattern.search(name):
                names.add(name)
    return names


def test_every_schedule_has_a_spec():
    names = _schedule_names()
    assert names >= {"sgdr_schedule", "join_schedules", "exponential_decay", "cyclic_schedule"}
    assert set(SCHEDULES) == names, (set(SCHEDULES) ^ names, "add a Spec for each new schedule")


_eval = jax.jit(lambda s, t: s(t))  # the schedule as an argument, as in a jitted step


def _values(schedule, steps) -> list[np.ndarray]:
    """The schedule at each step: eagerly on a Python int, on an int32 scalar, and jitted."""
    out = []
    for t in steps:
        t32 = jnp.asarray(t, jnp.int32)
        vals = [
            np.asarray(schedule(t)),
            np.asarray(schedule(t32)),
            np.asarray(_eval(schedule, t32)),
        ]
        for v in vals:
            assert v.dtype == np.float32 and np.isfinite(v), (t, vals)
        out.append(vals)
    return out


SPEC_IDS = [f"{n}-{i}" for n, specs in SCHEDULES.items() for i in range(len(specs))]
SPECS = [spec for specs in SCHEDULES.values() for spec in specs]


def _assert_in(spec, per_form):
    for v in per_form:
        assert spec.low <= float(v) <= spec.high, per_form


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_schedule_past_its_end(spec):
    s = spec.build()
    if spec.kind == "ends":
        steps = [spec.knee, max(10 * spec.knee, 10), INT32_MAX]
        vals = _values(s, steps)
        for t, per_form in zip(steps, vals, strict=True):
            for v in per_form:
                np.testing.assert_allclose(float(v), spec.final, rtol=1e-6, err_msg=str(t))
        for form in range(3):  # held: the same bits at the knee, 10× past it and at 2**31 − 1
            assert len({vals[i][form].tobytes() for i in range(3)}) == 1, vals
        if spec.knee > 0:  # the knee is the last one: the step before it is not yet final
            (before,) = _values(s, [spec.knee - 1])
            assert before[0] != vals[0][0], (before, vals[0])
    elif spec.kind == "to_zero":
        steps = [0, 100, 1_000, 10_000, 1_000_000, INT32_MAX]
        vals = _values(s, steps)
        for t, per_form in zip(steps, vals, strict=True):
            for v in per_form:
                want = spec.formula(float(t))
                np.testing.assert_allclose(float(v), want, rtol=2e-5, atol=1e-30, err_msg=str(t))
        # past the warmup: non-increasing, never negative, 0 (or nearly) at 2**31 − 1
        tail = [float(per_form[0]) for per_form in vals[1:]]
        assert all(a >= b >= 0.0 for a, b in zip(tail, tail[1:], strict=False)), tail
        assert tail[-1] < 1e-8, tail
    elif spec.kind == "periodic":
        for t in (0, 7, spec.period // 2, spec.period - 1):
            (now,) = _values(s, [t])
            for later in _values(s, [t + spec.period, t + 10 * spec.period]):
                np.testing.assert_allclose(
                    np.asarray(later, np.float64), np.asarray(now, np.float64), rtol=1e-5
                )
            _assert_in(spec, now)
        (start,), (middle,) = _values(s, [0]), _values(s, [spec.period // 2])
        assert start[0] != middle[0]  # it does vary within a period
        # at 2**31 − 1 the float32 step cannot resolve the phase; the value stays in range
        _assert_in(spec, _values(s, [INT32_MAX])[0])
    elif spec.kind == "restarts":
        vals = _values(s, [*spec.restarts, INT32_MAX])
        for per_form in vals[:-1]:
            for v in per_form:
                np.testing.assert_allclose(float(v), spec.high, rtol=1e-6)
            (before,) = _values(s, [spec.restarts[0] - 1])
            assert float(before[0]) < 0.5 * spec.high
        _assert_in(spec, vals[-1])
    elif spec.kind == "to_limit":
        steps = [25, 2 * 50 + 25, 5 * 50 + 25, INT32_MAX]  # peaks of cycles 0, 2, 5; the end
        vals = _values(s, steps)
        peaks = [float(per_form[0]) for per_form in vals]
        assert all(a > b for a, b in zip(peaks, peaks[1:], strict=False)), peaks
        for per_form in vals:
            _assert_in(spec, per_form)
        for v in vals[-1]:
            np.testing.assert_allclose(float(v), spec.final, rtol=1e-6)
    else:
        raise AssertionError(spec.kind)
