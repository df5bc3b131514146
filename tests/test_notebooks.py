"""Every notebook runs top to bottom (small size), and its committed outputs are from a
full-size run with no errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]


def test_there_are_seven_notebooks():
    assert len(NOTEBOOKS) == 7, IDS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_outputs_are_full_size_and_clean(path):
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    assert cells[0]["cell_type"] == "markdown"
    intro = "".join(cells[0]["source"]).lower()
    assert "takes" in intro, "the first cell must say how long the notebook takes"
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code and all(c["execution_count"] for c in code), "run it with make notebooks"
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), "cells were run out of order"
    texts = []
    for c in code:
        for out in c["outputs"]:
            assert out["output_type"] != "error", "".join(out.get("traceback", []))[:2000]
            texts.append("".join(out.get("text", "")))
            texts.append("".join(out.get("data", {}).get("text/plain", "")))
    assert "size: full" in "\n".join(texts), "outputs must come from a full-size run"
    assert any("image/png" in out.get("data", {}) for c in code for out in c["outputs"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_runs_top_to_bottom_small(path):
    from run_notebooks import execute

    nb = execute(path, small=True, timeout=600)
    printed = "\n".join(
        "".join(out.get("text", "")) for c in nb.cells if c.cell_type == "code" for out in c.outputs
    )
    assert "size: small" in printed
