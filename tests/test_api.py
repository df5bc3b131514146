"""The public namespace: every public name is exported from ``gradtx``, documented, and every
docstring example runs."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

import pytest

import gradtx

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(gradtx.__path__, prefix="gradtx.") if not m.ispkg
)


# Namespaces with optax's layout (``optax.tree``, ``optax.losses``, ...): their names are reached
# through the namespace, not all at the top level; and gradtx's internal numerics.
NAMESPACES = {"gradtx.tree", "gradtx.tree_utils", "gradtx.numerics", "gradtx.contrib"}


def _public(module):
    return [n for n in getattr(module, "__all__", [])]


@pytest.mark.parametrize("name", MODULES)
def test_module_has_all_and_exports_it(name):
    module = importlib.import_module(name)
    if name in NAMESPACES:  # reached through the namespace, by design
        assert hasattr(module, "__all__"), f"{name} has no __all__"
        return
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    for n in _public(module):
        assert getattr(gradtx, n, None) is getattr(module, n), f"gradtx.{n} is not {name}.{n}"


@pytest.mark.parametrize("name", MODULES)
def test_every_public_definition_is_listed_and_documented(name):
    module = importlib.import_module(name)
    listed = set(_public(module))
    for attr, obj in vars(module).items():
        if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if getattr(obj, "__module__", None) != name:
            continue  # imported from elsewhere
        assert attr in listed, f"{name}.{attr} is public but not in __all__"
        assert inspect.getdoc(obj), f"{name}.{attr} has no docstring"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    sys.path.insert(0, str(Path(__file__).parent))
    failures, _ = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert failures == 0


def test_public_transforms_and_optimizers_have_examples():
    missing = []
    for n in dir(gradtx):
        obj = getattr(gradtx, n)
        if n.startswith("_") or not callable(obj) or inspect.ismodule(obj):
            continue
        is_tx = inspect.isclass(obj) and issubclass(obj, gradtx.GradientTransformation)
        is_opt = inspect.isfunction(obj) and getattr(obj, "__module__", "").startswith(
            "gradtx.optimizers"
        )
        if (is_tx or is_opt) and ">>>" not in (inspect.getdoc(obj) or ""):
            missing.append(n)
    assert not missing, f"no runnable example in: {missing}"
