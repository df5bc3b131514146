"""Shared fixtures: float64 mode, a random pytree problem, and compile counting."""

from __future__ import annotations

import contextlib
import os

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# tests/multidevice runs in its own session on 8 simulated devices (tests/test_multidevice.py
# starts it); the device count is fixed when JAX starts, so this session leaves it out.
collect_ignore = [] if os.environ.get("GRADTX_MULTIDEVICE") else ["multidevice"]

# Property-based tests: a bounded profile in CI (CI=true, set by .ci/run), a thorough one on
# request (HYPOTHESIS_PROFILE=thorough), and a middle one for everyday local runs. Examples run
# jitted optimizers, so there is no per-example deadline (the first example of a new tree
# structure compiles).
_NO_DEADLINE = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=8, derandomize=True, **_NO_DEADLINE)
settings.register_profile("dev", max_examples=25, **_NO_DEADLINE)
settings.register_profile("thorough", max_examples=300, **_NO_DEADLINE)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

# Comparing float32 trajectories with optax: gradtx forms 1 − β and 1 − β^t from the same float32
# β on every path (eager, jitted, optimizer as an argument), optax forms 1 − β in Python's float64
# and β^t in float32. Their trajectories separate by up to about 2e-5 (absolute, parameters of
# order 1) over 200 steps; the formulas themselves are pinned in float64 by test_formulas.py.
F32_ORACLE_ATOL = 4e-5
F32_ORACLE_RTOL = 2e-5


@pytest.fixture
def x64():
    """Run the test with ``jax_enable_x64`` on (float64 arithmetic), restoring it afterwards."""
    with jax.enable_x64(True):
        yield


def random_problem(seed: int = 0, dtype=np.float64):
    """A small random pytree of parameters and a quadratic-plus-sine gradient oracle.

    Returns ``params`` (a dict of NumPy arrays) and ``grad(params, t)``: a NumPy function giving
    a deterministic, step-dependent gradient for every leaf, so any optimizer can be stepped
    identically in gradtx, optax and a NumPy reference.
    """
    rng = np.random.default_rng(seed)
    params = {
        "dense": {
            "w": rng.normal(size=(3, 4)).astype(dtype),
            "b": rng.normal(size=(4,)).astype(dtype),
        },
        "scale": rng.normal(size=()).astype(dtype),
    }
    targets = jax.tree_util.tree_map(lambda p: rng.normal(size=np.shape(p)).astype(dtype), params)
    noise = [
        jax.tree_util.tree_map(lambda p: rng.normal(size=np.shape(p)).astype(dtype), params)
        for _ in range(7)
    ]

    def grad(p, t):
        return jax.tree_util.tree_map(
            lambda x, c, n: (np.asarray(x) - c) + 0.5 * np.sin(3 * np.asarray(x)) + 0.3 * n,
            p,
            targets,
            noise[t % 7],
        )

    return params, grad


@contextlib.contextmanager
def count_compilations():
    """Count XLA backend compilations inside the block (``counter["n"]``).

    Uses JAX's monitoring events: every backend compile records a duration event.
    """
    counter = {"n": 0}
    from jax._src import monitoring

    def listener(event, *args, **kwargs):
        if event.endswith("backend_compile_duration"):
            counter["n"] += 1

    monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counter
    finally:
        monitoring.unregister_event_duration_listener(listener)


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs_after_each_module():
    # A worker process runs thousands of jitted steps; two CI workers crashed (segmentation
    # faults in XLA) late in a run once the registry had ~100 cases. Dropping the compiled
    # programs after each module keeps a worker's memory from growing all run long.
    yield
    jax.clear_caches()
