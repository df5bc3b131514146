"""Every ```python block in README.md runs, and prints what the README says it prints (so the
README cannot drift from the code)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
# An inline comment that states a printed number: ``print(x)  # 0.5: why``.
INLINE_NUMBER = re.compile(r"#\s*(-?\d[\d.e+-]*)(?::|\s*$)")


def _expected_outputs(block: str) -> list[str | None]:
    """For each ``print`` of a block, in order, the output the README states: the comment line
    right below it (``# {...}``), or a number in its inline comment, else None."""
    lines = block.splitlines()
    expected = []
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("print("):
            continue
        below = lines[i + 1].lstrip() if i + 1 < len(lines) else ""
        inline = INLINE_NUMBER.match("#" + line.split(")  #", 1)[1]) if ")  #" in line else None
        if below.startswith("# "):
            expected.append(below[2:])
        elif inline:
            expected.append(inline.group(1))
        else:
            expected.append(None)
    return expected


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


def test_readme_states_outputs_that_are_checked():
    stated = [e for b in BLOCKS for e in _expected_outputs(b) if e is not None]
    assert len(stated) >= 10, stated


def test_a_wrong_stated_output_fails(tmp_path, monkeypatch):
    block = "print(1 + 1)  # 3\nprint([2])\n# [2]\n"
    assert _expected_outputs(block) == ["3", "[2]"]
    BLOCKS.append(block)
    try:
        with pytest.raises(AssertionError, match="README says 3"):
            test_readme_block_runs_and_prints_what_it_says(len(BLOCKS) - 1, tmp_path, monkeypatch)
    finally:
        BLOCKS.pop()


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_block_runs_and_prints_what_it_says(i, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_and_check(BLOCKS[i], f"README.md block {i}", "README says")


def run_and_check(block: str, label: str, says: str) -> None:
    """Run ``block`` and compare what it prints with the outputs it states (also used for the
    documentation pages' own blocks, by test_docs.py)."""
    code = compile(block, label, "exec", dont_inherit=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {"__name__": "__readme__"})
    expected = _expected_outputs(block)
    printed = out.getvalue().splitlines()
    if len(printed) != len(expected):
        assert not any(expected), f"{label}: prints in a loop, but states outputs"
        return  # prints inside loops or multi-line values: the block only has to run
    for k, (got, want) in enumerate(zip(printed, expected, strict=True)):
        if want is None:
            continue
        if INLINE_NUMBER.fullmatch("# " + want) and not want.startswith(("[", "{")):
            assert float(got.split()[0].rstrip(",")) == pytest.approx(float(want), rel=1e-3), (
                f"{label}, print {k}: {says} {want}, it printed {got}"
            )
        else:
            assert got == want, f"{label}, print {k}: {says} {want!r}, it printed {got!r}"
