"""The examples run: ``examples/sharded_training.py`` for one epoch on 8 simulated devices (in a
subprocess). ``make demo``'s ``examples/digits_mlp.py`` is run by test_demo.py; the comparison
of the modern optimizers is notebook 6, run by test_notebooks.py."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[1] / "examples"


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
