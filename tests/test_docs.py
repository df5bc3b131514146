"""The documentation site's own pages: every ```python block that uses only gradtx (not torch,
which the tests do not install) runs and prints what the page says it prints. The README's
blocks, which the site embeds, are checked by test_readme.py; the docstring examples by
test_api.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[1] / "docs"
BLOCKS = [
    (f"{page.relative_to(DOCS)} block {i}", code)
    for page in sorted(DOCS.rglob("*.md"))
    for i, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))
    if "import torch" not in code
]


def test_docs_have_examples():
    assert len(BLOCKS) >= 5, [name for name, _ in BLOCKS]


@pytest.mark.parametrize("name,code", BLOCKS, ids=[name for name, _ in BLOCKS])
def test_docs_block_runs(name, code, tmp_path, monkeypatch):
    from test_readme import run_and_check

    monkeypatch.chdir(tmp_path)
    run_and_check(code, name, "the page says")


def test_a_wrong_stated_output_on_a_page_fails():
    from test_readme import run_and_check

    with pytest.raises(AssertionError, match="the page says 3"):
        run_and_check("print(1 + 1)  # 3\n", "a page", "the page says")


def _hooks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gradtx_docs_hooks", DOCS / "_ext" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for page in sorted((DOCS / "api").glob("*.md")):
        for identifier in module.ENTRY.findall(page.read_text()):
            module._entries[identifier] = page.name
    return module


def test_the_docs_build_refuses_a_public_name_without_an_api_entry():
    from mkdocs.exceptions import PluginError

    hooks = _hooks()
    hooks.on_post_build({})  # every public name has its entry
    del hooks._entries["gradtx.scale_by_adam"]
    with pytest.raises(PluginError, match=r"no API entry: gradtx\.scale_by_adam\b"):
        hooks.on_post_build({})


def test_the_docs_build_refuses_a_public_name_without_a_docstring(monkeypatch):
    from mkdocs.exceptions import PluginError

    import gradtx

    hooks = _hooks()
    monkeypatch.setattr(gradtx.cosine_decay_schedule, "__doc__", None)
    with pytest.raises(PluginError, match=r"without a docstring: gradtx\.cosine_decay_schedule"):
        hooks.on_post_build({})


def test_readme_anchors_are_githubs():
    hooks = _hooks()
    assert hooks._slug("Adam's relatives and memory-light optimizers") == (
        "adams-relatives-and-memory-light-optimizers"
    )
    assert hooks._slug("Composition beyond `chain`") == "composition-beyond-chain"
    assert hooks._slug("`reduce_on_plateau`") == "reduce_on_plateau"
    # every link between README sections points at a heading the README has
    text = (DOCS.parent / "README.md").read_text()
    anchors = {hooks._slug(t) for lv, t, _ in hooks._readme_lines() if lv}
    linked = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert linked <= anchors, linked - anchors
