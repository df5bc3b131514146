"""Execute the notebooks in ``notebooks/`` in place, at full size, to refresh their outputs.

Usage: ``python scripts/run_notebooks.py [NAME ...]`` (``make notebooks`` runs them all).
Outputs are what readers see on GitHub and on the documentation site, so they are always
committed from a full-size run; CI runs the same notebooks with ``GRADTX_NOTEBOOK_SMALL=1``
(``tests/test_notebooks.py``) without writing anything.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def execute(path: Path, *, small: bool, timeout: int = 1800) -> nbformat.NotebookNode:
    """Run ``path`` top to bottom in a fresh kernel and return the executed notebook."""
    nb = nbformat.read(path, as_version=4)
    env = {"GRADTX_NOTEBOOK_SMALL": "1" if small else "0", "JAX_PLATFORMS": "cpu"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        )
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def main(names: list[str]) -> None:
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if names:
        paths = [p for p in paths if any(n in p.name for n in names)]
    for path in paths:
        start = time.perf_counter()
        nb = execute(path, small=False)
        nbformat.write(nb, path)
        print(f"{path.name}: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
