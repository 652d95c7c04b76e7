"""Running ``train.py`` as a user would, in a subprocess, for the suite's end-to-end tests."""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def train_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return env


def train_command(results: Path, *overrides: str) -> list[str]:
    flags = [o for o in overrides if o.startswith("-")]  # argparse wants -m before the overrides
    overrides = tuple(o for o in overrides if not o.startswith("-"))
    return [
        sys.executable,
        str(ROOT / "train.py"),
        *flags,
        f"results_root={results}",
        "trainer.progress=false",
        "trainer.num_threads=1",
        *overrides,
    ]


def run_train(results: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_command(results, *overrides),
        cwd=ROOT,
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def torchrun_command(results: Path, *overrides: str, nproc: int = 2) -> list[str]:
    """``torchrun --nproc_per_node=<nproc> train.py ...`` (gloo on CPU), on a free port."""
    command = train_command(results, *overrides)
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command[1:2] = [
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={port}",
        command[1],
    ]
    return command


def run_torchrun(
    results: Path, *overrides: str, nproc: int = 2, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        torchrun_command(results, *overrides, nproc=nproc),
        cwd=ROOT,
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def summaries(results: Path) -> dict[str, dict]:
    """``<experiment>/<task>/<method>/seed<N>`` -> the summary.json of that run.

    The method is the run's display name (``summary["method"]``); its directory also carries the
    configuration hash, which :func:`find_run_dir` and :func:`composed_run_dir` check.
    """
    found = {}
    for path in sorted(results.rglob("summary.json")):
        summary = json.loads(path.read_text())
        rel = path.parent.relative_to(results)
        found[str(rel.parent.parent / summary["method"] / rel.name)] = summary
    return found


def find_run_dir(results: Path, method: str, task: str = "toy", seed: int = 0) -> Path:
    """The directory of the one run of ``method`` (display name) under ``results``."""
    pattern = f"{glob.escape(method)}-{'[0-9a-f]' * 8}/seed{seed}"
    matches = sorted((results / "default" / task).glob(pattern))
    assert len(matches) == 1, f"expected one run of {method!r} under {results}, found {matches}"
    return matches[0]


def composed_run_dir(results: Path, *overrides: str) -> Path:
    """Where ``train.py`` puts a run with these overrides, from the composed config alone
    (Hydra's compose API), so a test can prepare the directory before the run."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    import torch_clip.suite.naming  # noqa: F401  registers the run_dir resolver

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[f"results_root={results}", *overrides],
            return_hydra_config=True,
        )
        HydraConfig.instance().set_config(cfg)
        return Path(cfg.hydra.run.dir)


def metric_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("wall_time", None)
    return rows


def final_params(run_dir: Path) -> dict[str, np.ndarray]:
    payload = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    return {k: v.numpy() for k, v in payload["model"].items()}


def assert_same_run(a: Path, b: Path) -> None:
    """Two runs logged the same rows, saw the same gradient norms and ended with the same
    parameters, bit for bit."""
    assert metric_rows(a) == metric_rows(b)
    np.testing.assert_array_equal(np.load(a / "grad_norms.npy"), np.load(b / "grad_norms.npy"))
    pa, pb = final_params(a), final_params(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)


def assert_same_training(a: Path, b: Path, atol: float = 1e-6) -> None:
    """Two runs saw the same gradient norms and ended with the same parameters (float32 tolerance)."""
    np.testing.assert_allclose(
        np.load(a / "grad_norms.npy"), np.load(b / "grad_norms.npy"), rtol=1e-5
    )
    pa, pb = final_params(a), final_params(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        np.testing.assert_allclose(pa[key], pb[key], rtol=1e-5, atol=atol, err_msg=key)


def wait_for_step(run_dir, step, proc, timeout=120.0):
    """Block until the run has logged ``step`` (or died)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stderr.read()[-2000:]}")
        path = run_dir / "metrics.jsonl"
        if path.exists() and any(
            json.loads(line).get("step", 0) >= step
            for line in path.read_text().splitlines()
            if line.strip()
        ):
            return
        time.sleep(0.02)
    raise AssertionError(f"step {step} not reached in {timeout} s")
