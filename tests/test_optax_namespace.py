"""Every public name of optax's namespaces is in gradtx under the same name with a compatible
signature, or listed in the README's table of what is not in gradtx (with the reason and the
alternative); and the table lists nothing that gradtx has."""

from __future__ import annotations

import enum
import inspect
import re
import types
from pathlib import Path

import optax
import pytest

import gradtx

NAMESPACES = ["", "tree", "tree_utils", "transforms", "schedules", "losses", "contrib"]
README = (Path(__file__).parents[1] / "README.md").read_text()


def _not_in_gradtx() -> dict[str, str]:
    """The README's "Not in gradtx" table: qualified optax name -> the row's text."""
    section = README.split("### Not in gradtx", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`optax."):
            continue
        for name in re.findall(r"`(optax\.[\w.]+)`", cells[0]):
            rows[name] = line
    return rows


def _names(namespace: str) -> list[tuple[str, str]]:
    module = optax if not namespace else getattr(optax, namespace)
    return [
        (namespace, n)
        for n in sorted(dir(module))
        if not n.startswith("_") and not isinstance(getattr(module, n), types.ModuleType)
    ]


ALL = [pair for ns in NAMESPACES for pair in _names(ns)]
TABLE = _not_in_gradtx()


def _qualified(namespace: str, name: str) -> str:
    return f"optax.{namespace + '.' if namespace else ''}{name}"


def _gradtx_object(namespace: str, name: str):
    module = gradtx if not namespace else getattr(gradtx, namespace)
    return getattr(module, name, None)


def test_the_namespaces_exist_as_in_optax():
    for ns in NAMESPACES[1:]:
        assert isinstance(getattr(gradtx, ns), types.ModuleType), ns


@pytest.mark.parametrize("namespace,name", ALL, ids=[_qualified(*p) for p in ALL])
def test_optax_name_is_in_gradtx_or_in_the_table(namespace, name):
    qualified = _qualified(namespace, name)
    present = _gradtx_object(namespace, name) is not None
    listed = qualified in TABLE
    assert present or listed, f"{qualified} is neither in gradtx nor in the README's table"
    assert not (present and listed), f"{qualified} is in gradtx but listed as missing"


def test_the_table_lists_only_optax_names():
    qualified = {_qualified(*p) for p in ALL}
    assert set(TABLE) <= qualified, sorted(set(TABLE) - qualified)


# Signatures: every parameter of optax's function is accepted under the same name and, when
# positional, at the same position. Defaults that differ on purpose are documented in the
# README's difference tables and pinned by tests there.
INTENDED_DEFAULTS = {
    ("", "optimistic_adam", "nesterov"),  # the paper's Adam; optax defaults to Nesterov
    ("", "lbfgs", "linesearch"),  # "zoom": optax's zoom search, built per call at the x64 width
    ("contrib", "sophia", "hessian_diagonal_fn"),  # gradtx's estimator (Gaussian probes, paper)
}


def _signature_problems(namespace: str, name: str) -> list[str]:
    theirs, ours = getattr(optax if not namespace else getattr(optax, namespace), name), None
    ours = _gradtx_object(namespace, name)
    if (
        ours is None
        or not callable(theirs)
        or isinstance(theirs, type)
        and issubclass(theirs, tuple)
    ):
        return []
    try:
        st, so = inspect.signature(theirs), inspect.signature(ours)
    except (TypeError, ValueError):
        return []
    problems = []
    ours_params = so.parameters
    var_kw = any(p.kind is p.VAR_KEYWORD for p in ours_params.values())
    positional = [
        p.name
        for p in ours_params.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    for i, p in enumerate(st.parameters.values()):
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.name not in ours_params:
            if not var_kw:
                problems.append(f"no argument {p.name!r}")
            continue
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and (
            i >= len(positional) or positional[i] != p.name
        ):
            problems.append(f"{p.name!r} is not argument {i}")
        q = ours_params[p.name]
        if p.default is p.empty or (namespace, name, p.name) in INTENDED_DEFAULTS:
            continue
        if q.default is q.empty:
            problems.append(f"{p.name!r} is required")
        elif not callable(p.default) and not _same_default(p.default, q.default):
            problems.append(f"default {p.name}={q.default!r}, optax {p.default!r}")
    for q in ours_params.values():
        if q.default is q.empty and q.kind not in (q.VAR_KEYWORD, q.VAR_POSITIONAL):
            if q.name not in st.parameters:
                problems.append(f"requires {q.name!r}, which optax does not take")
    return problems


def _same_default(a, b) -> bool:
    if isinstance(a, enum.Enum) and isinstance(b, enum.Enum):  # each library has its own enum
        return a.name == b.name
    try:
        return bool(a == b) or (a is None and b is None)
    except Exception:  # noqa: BLE001  (arrays)
        return True


PRESENT = [p for p in ALL if _gradtx_object(*p) is not None]


@pytest.mark.parametrize("namespace,name", PRESENT, ids=[_qualified(*p) for p in PRESENT])
def test_signature_is_compatible_with_optax(namespace, name):
    assert _signature_problems(namespace, name) == []


def test_the_signature_check_catches_a_renamed_argument():
    def adam(lr, b1=0.9):  # noqa: ARG001
        pass

    original = gradtx.adam
    try:
        gradtx.adam = adam
        assert _signature_problems("", "adam")
    finally:
        gradtx.adam = original
