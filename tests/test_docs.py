"""The documentation site's own pages: every ```python block that uses only gradtx (not torch,
which the tests do not install) runs. The README's blocks, which the site embeds, are checked
with their printed outputs by test_readme.py; the docstring examples by test_api.py."""

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
    monkeypatch.chdir(tmp_path)
    exec(compile(code, name, "exec", dont_inherit=True), {"__name__": "__docs__"})
