"""The `slurm` launcher preset on a real one-node SLURM cluster (scripts/slurm_local.sh).

Skipped unless ``slurmctld`` is installed, the tests run as root and the cluster starts. A sweep
goes through ``hydra/launcher=slurm`` and every run's record is checked; a run requeued in the
middle (``scontrol requeue``) resumes from its checkpoint and ends bit-identical to a run that
was never interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.fault_task import FAULTY_TOY
from tests.suite_helpers import (
    ROOT,
    final_params,
    metric_rows,
    run_train,
    train_command,
    train_env,
    wait_for_step,
)

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "slurm_local.sh"
# tiny jobs: a toy run needs one CPU and well under a GB
LAUNCHER = (
    "hydra/launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
)


@pytest.fixture(scope="module")
def slurm_env():
    if shutil.which("slurmctld") is None or os.geteuid() != 0:
        pytest.skip("needs root and slurm-wlm (apt-get install -y slurm-wlm munge)")
    # the cluster stays up afterwards: test workers running side by side may share it
    try:
        started = subprocess.run(
            [str(SCRIPT), "start"], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:  # a cluster that cannot come up is no test of the preset
        pytest.skip("the local SLURM cluster did not start within 120 s")
    if started.returncode != 0:
        pytest.skip(f"the local SLURM cluster did not start: {started.stderr[-500:]}")
    conf = subprocess.run([str(SCRIPT), "env"], capture_output=True, text=True).stdout
    return {**train_env(), "SLURM_CONF": conf.strip().split("=", 1)[1]}


def sweep(results, env, *overrides, delay=None):
    extra = {"TORCH_CLIP_TEST_STEP_DELAY": delay} if delay else {}
    return subprocess.Popen(
        train_command(results, "-m", *LAUNCHER, *overrides),
        cwd=ROOT,
        env={**env, **extra},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_sweep_through_the_slurm_preset_records_every_run(tmp_path, slurm_env):
    proc = sweep(tmp_path, slurm_env, "task=toy", "optimizer=norm,auto", "trainer.max_steps=20")
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-3000:]
    summaries = {p.parent: json.loads(p.read_text()) for p in tmp_path.rglob("summary.json")}
    assert sorted(s["optimizer"] for s in summaries.values()) == ["auto", "norm"]
    for run_dir, summary in summaries.items():
        assert summary["status"] == "completed" and summary["steps"] == 20, run_dir
        assert len(np.load(run_dir / "grad_norms.npy")) == 20
        assert [r["step"] for r in metric_rows(run_dir) if r["split"] == "val"] == [20]
        assert (run_dir / "config.yaml").exists() and (run_dir / ".hydra/overrides.yaml").exists()
    report = subprocess.run(
        [sys.executable, "scripts/summarize.py", str(tmp_path / "default")],
        cwd=ROOT,
        env=slurm_env,
        capture_output=True,
        text=True,
    )
    assert report.returncode == 0 and "2/2 runs completed, 0 failed, 0 missing" in report.stdout


def _job_id(env):
    """The one job of ours on the cluster (pending or running)."""
    for _ in range(100):
        ids = subprocess.run(
            ["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True
        ).stdout.split()
        if ids:
            return ids[0]
        time.sleep(0.2)
    raise AssertionError("no job in squeue")


def test_a_requeued_run_resumes_from_its_checkpoint_bit_identically(tmp_path, slurm_env):
    run = (*FAULTY_TOY, "optimizer=quadratic_stoch_auto", "label=run", "trainer.max_steps=40")
    run = (*run, "trainer.checkpoint_every=10", "trainer.eval_every=20")
    straight = run_train(tmp_path / "straight", *run)
    assert straight.returncode == 0, straight.stderr[-2000:]

    proc = sweep(tmp_path / "slurm", slurm_env, *run, delay="0.15")
    job = _job_id(slurm_env)
    (run_dir,) = _wait_for_run_dir(tmp_path / "slurm", proc)
    wait_for_step(run_dir, 15, proc)  # past the checkpoint at 10: the requeue's SIGTERM saves
    subprocess.run(["scontrol", "requeue", job], env=slurm_env, check=True)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-3000:]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 40
    assert len(summary["resumed_from"]) == 1 and 15 <= summary["resumed_from"][0]["step"] < 40
    (reference,) = (tmp_path / "straight").rglob("seed0")
    assert metric_rows(run_dir) == metric_rows(reference)
    np.testing.assert_array_equal(
        np.load(run_dir / "grad_norms.npy"), np.load(reference / "grad_norms.npy")
    )
    for key, value in final_params(reference).items():
        np.testing.assert_array_equal(final_params(run_dir)[key], value, err_msg=key)


def _wait_for_run_dir(results, proc, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [p.parent for p in results.rglob("metrics.jsonl")]
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read()[-2000:])
        time.sleep(0.2)
    raise AssertionError("the job wrote no record")
