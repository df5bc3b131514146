"""The examples run: ``examples/modern_optimizers.py`` on a two-epoch budget, and
``examples/sharded_training.py`` for one epoch on 8 simulated devices (in a subprocess)."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[1] / "examples"


def _load(name: str):
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


def test_modern_optimizers_compares_all_six_and_plots(tmp_path):
    example = _load("modern_optimizers")
    assert set(example.CONTENDERS) == {
        "AdamW",
        "Muon",
        "SOAP",
        "PSGD-Kron",
        "AdEMAMix",
        "Schedule-Free AdamW",
    }
    runs = example.compare(epochs=2)
    for name, r in runs.items():
        assert len(r.losses) == len(r.accuracies) == 2, name
        assert all(math.isfinite(x) for x in r.losses), (name, r.losses)
        # The first epoch starts from about ln 10 ≈ 2.3 (ten classes; PSGD-Kron's first steps
        # overshoot to a mean of 2.42); every optimizer learns, and the second epoch's mean
        # loss is below the first's.
        assert r.losses[1] < r.losses[0] < 3.0, (name, r.losses)
        # chance is 10%; PSGD-Kron at 1e-3 is the slowest starter (about 20% then 66%)
        assert r.accuracies[1] > max(r.accuracies[0], 0.5), (name, r.accuracies)
    path = tmp_path / "curves.png"
    example.plot(runs, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sharded_training_runs_on_eight_simulated_devices():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTEST_XDIST_WORKER")}
    env.update(GRADTX_SMALL="1", JAX_PLATFORMS="cpu")
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "sharded_training.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("8 devices")
    rows = {}
    for line in lines[2:7]:
        name, numbers = line[:28].strip(), line[28:].split()
        rows[name] = (
            float(numbers[0]),
            float(numbers[1]),
            *(int(n.replace(",", "")) for n in numbers[2:]),
        )
    assert set(rows) == {
        "data parallel",
        "FSDP",
        "ZeRO-1",
        "Muon, FSDP",
        "Muon, FSDP, whole matrices",
    }
    dp, fsdp, zero = rows["data parallel"], rows["FSDP"], rows["ZeRO-1"]
    assert math.isclose(dp[0], fsdp[0], rel_tol=1e-4) and math.isclose(dp[0], zero[0], rel_tol=1e-4)
    assert dp[2] == dp[3]  # a full copy of the state on each device
    assert fsdp[2] < dp[3] / 7 and zero[2] < dp[3] / 7  # about an eighth
    assert math.isclose(rows["Muon, FSDP"][0], rows["Muon, FSDP, whole matrices"][0], rel_tol=1e-3)
    assert "whole matrices: {'all-reduce': 0, 'all-gather': 0" in run.stdout
