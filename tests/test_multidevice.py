"""Runs ``tests/multidevice`` (sharded training, ZeRO-1, checkpoints across meshes, distributed
Muon) in a subprocess on 8 simulated CPU devices, and two processes joined by
``jax.distributed`` training data-parallel."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).parents[1]


def _env(**extra: str) -> dict:
    env = dict(os.environ)
    env.pop("PYTEST_XDIST_WORKER", None)
    env.update(extra)
    return env


def test_eight_device_session_passes():
    env = _env(
        GRADTX_MULTIDEVICE="1",
        XLA_FLAGS="--xla_force_host_platform_device_count=8 "
        "--xla_cpu_enable_concurrency_optimized_scheduler=false",  # see multidevice/conftest.py
        JAX_PLATFORMS="cpu",
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/multidevice"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "failed" not in run.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_train_data_parallel_as_one(tmp_path):
    worker = ROOT / "tests" / "multidevice" / "two_process_worker.py"
    port = _free_port()
    env = _env(JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    outs = [tmp_path / f"process{i}.npz" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(i), str(port), str(outs[i])],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=300)[0])
    finally:
        for p in procs:  # never leave a process behind, even on a timeout
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-4000:]
    a, b = (np.load(o) for o in outs)
    spec = importlib.util.spec_from_file_location("two_process_worker", worker)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ref = jax.tree_util.tree_leaves(module.train(jax.device_put, jax.device_put))
    assert len(a.files) == len(ref) == 4
    for k, r in zip(a.files, ref, strict=True):
        np.testing.assert_array_equal(a[k], b[k])  # both processes hold the same parameters
        np.testing.assert_allclose(a[k], np.asarray(r), rtol=1e-5, atol=1e-6)
    first = np.asarray(module.init_mlp(jax.random.PRNGKey(0), module.SIZES)[0]["w"])
    assert not np.allclose(a[a.files[1]], first, atol=1e-3)  # it trained
