"""`make demo`: the digits MLP trained with gradtx.adamw reaches at least 95% test accuracy."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def test_demo_reaches_95_percent():
    path = Path(__file__).parents[1] / "examples" / "digits_mlp.py"
    spec = importlib.util.spec_from_file_location("digits_mlp", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    acc = demo.train(progress=False)
    assert acc >= 0.95, acc
