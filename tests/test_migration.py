"""Migration: optax scripts run unchanged with ``import gradtx as optax`` and give optax's numbers.

Each script in ``tests/migration/`` is ordinary optax code (the optax "Getting started"
notebook, the Flax NNX and Linen tutorials, an Equinox loop, optax's recipes for
``inject_hyperparams``, ``reduce_on_plateau``, ``MultiSteps`` and L-BFGS, orbax checkpointing,
and a typical 20-line training script). The test runs it twice in this process: once with
optax, once with ``sys.modules["optax"]`` (and its submodules) pointing at gradtx, and compares
the ``RESULT`` each run leaves behind.
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import equinox  # noqa: F401  (imported here, with optax in sys.modules, not during a gradtx run)
import flax.nnx  # noqa: F401
import flax.training.train_state  # noqa: F401
import jax
import numpy as np
import optax
import orbax.checkpoint  # noqa: F401
import pytest
from conftest import F32_ORACLE_ATOL, F32_ORACLE_RTOL

import gradtx

SCRIPTS = sorted((Path(__file__).parent / "migration").glob("*.py"))
SUBMODULES = ("tree", "tree_utils", "transforms", "schedules", "losses", "contrib")


def _run(path: Path, library, monkeypatch) -> dict:
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "optax", library)
        for name in SUBMODULES:
            m.setitem(sys.modules, f"optax.{name}", getattr(library, name))
        return runpy.run_path(str(path))["RESULT"]


def _compare(path, got, expected, rtol, atol):
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for (where, a), b in zip(
        jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(expected), strict=True
    ):
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=f"{path.stem}: {where}"
        )


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script_gives_optax_numbers_with_gradtx(path, monkeypatch):
    # With x64 on, every hyperparameter and per-step scalar is a float64 number in both
    # libraries (the arrays keep the dtypes the script gives them), so what remains is any
    # difference of meaning: none is allowed beyond rtol 1e-5.
    with jax.enable_x64(True):
        expected = _run(path, optax, monkeypatch)
        got = _run(path, gradtx, monkeypatch)
    _compare(path, got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script_gives_optax_numbers_in_float32(path, monkeypatch):
    # In float32 the libraries round one number differently: gradtx forms 1 - beta from the
    # float32 beta (so it cancels against the bias correction 1 - beta^t), optax in Python's
    # float64 (README, "One set of numbers"); trajectories then agree to about 2e-5.
    expected = _run(path, optax, monkeypatch)
    got = _run(path, gradtx, monkeypatch)
    _compare(path, got, expected, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)


def test_the_scripts_are_there():
    assert len(SCRIPTS) >= 10, [p.stem for p in SCRIPTS]


def test_package_metadata_is_typed_and_spdx_licensed():
    root = Path(__file__).parents[1]
    pyproject = (root / "pyproject.toml").read_text()
    assert re.search(r'^license = "Apache-2.0"$', pyproject, re.M)  # PEP 639: an SPDX string
    assert (root / "gradtx" / "py.typed").exists()
    assert re.search(r'gradtx = \["py.typed"\]', pyproject)
