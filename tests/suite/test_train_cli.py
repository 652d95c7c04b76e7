"""End-to-end checks of ``train.py``: the results contract, sweeps, launchers and error messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from tests.fault_task import FAULTY_TOY
from tests.suite_helpers import find_run_dir, metric_rows, run_train, summaries

pytestmark = pytest.mark.slow


def test_single_run_writes_the_results_contract(tmp_path):
    proc = run_train(
        tmp_path, "task=toy", "optimizer=auto", "trainer.max_steps=40", "trainer.eval_every=20"
    )
    assert proc.returncode == 0, proc.stderr
    run = find_run_dir(tmp_path, "auto")
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == [
        "config.yaml",
        "grad_norm_hist.jsonl",
        "grad_norms.npy",
        "metrics.jsonl",
        "summary.json",
    ]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["optimizer"]["clipping_type"] == "auto" and config["seed"] == 0
    norms = np.load(run / "grad_norms.npy")
    assert norms.shape == (40,) and np.all(np.isfinite(norms)) and np.all(norms > 0)
    rows = metric_rows(run)
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    assert [r["step"] for r in train] == list(range(5, 41, 5))
    assert [r["step"] for r in val] == [20, 40]
    for r in train:
        assert {"train_loss", "lr", "grad_norm", "clip_threshold", "clip_fraction", "epoch"} <= set(
            r
        )
        assert 0.0 <= r["clip_fraction"] <= 1.0
    # the logged window mean of the gradient norm is the mean of the per-step norms
    np.testing.assert_allclose(train[0]["grad_norm"], norms[:5].mean(), rtol=1e-5)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 40
    assert summary["embedded_data"] is True and "Student-t" in summary["data_source"]
    # the toy MLP dim -> hidden -> 1: two weights and two biases
    dim, hidden = config["task"]["dim"], config["task"]["hidden"]
    assert summary["num_parameter_tensors"] == 4
    assert summary["num_parameters"] == dim * hidden + hidden + hidden + 1
    assert summary["best"]["value"] == max(r["val_r2"] for r in val)
    assert summary["final"]["val_r2"] == val[-1]["val_r2"]
    assert "status" in proc.stdout and "completed" in proc.stdout  # the end-of-run table


def test_rerunning_a_completed_run_skips_it(tmp_path):
    args = ("task=toy", "optimizer=norm", "trainer.max_steps=10")
    assert run_train(tmp_path, *args).returncode == 0
    again = run_train(tmp_path, *args)
    assert again.returncode == 0 and "already completed" in again.stdout
    # a shorter budget never gets the longer run's result back, in a sweep or alone
    shorter = run_train(tmp_path, "-m", "task=toy", "optimizer=norm", "trainer.max_steps=5")
    assert "holds a completed run of 10 steps, not the 5 asked for" in shorter.stderr
    summary = json.loads((find_run_dir(tmp_path, "norm") / "summary.json").read_text())
    assert summary["steps"] == 10 and summary["status"] == "completed"


@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_multirun_of_two_optimizers_writes_every_run(tmp_path, launcher):
    proc = run_train(
        tmp_path,
        "-m",
        f"hydra/launcher={launcher}",
        "task=toy",
        "optimizer=norm,quadratic_stoch_auto",
        "seed=0,1",
        "trainer.max_steps=10",
        "trainer.eval_every=10",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = summaries(tmp_path)
    expected = {
        f"default/toy/{o}/seed{s}" for o in ("norm", "quadratic_stoch_auto") for s in (0, 1)
    }
    assert set(found) == expected
    assert all(s["status"] == "completed" and s["steps"] == 10 for s in found.values())


def test_step_rule_and_swept_hyperparameters_get_their_own_directories(tmp_path):
    proc = run_train(
        tmp_path,
        "-m",
        "task=toy",
        "optimizer=norm",
        "step_rule=sgd,adamw",
        "optimizer.clipping_level=0.5,2",
        "trainer.max_steps=5",
        "trainer.eval_every=5",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(summaries(tmp_path)) == {
        "default/toy/norm,optimizer.clipping_level=0.5/seed0",
        "default/toy/norm,optimizer.clipping_level=2/seed0",
        "default/toy/norm-adamw,optimizer.clipping_level=0.5/seed0",
        "default/toy/norm-adamw,optimizer.clipping_level=2/seed0",
    }


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    proc = run_train(
        tmp_path,
        "-m",
        *FAULTY_TOY,
        "task.fail_at_step=null,7",
        "optimizer=norm",
        "trainer.max_steps=12",
        "trainer.eval_every=12",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = summaries(tmp_path)
    assert len(found) == 2
    failed = [s for s in found.values() if s["status"] == "failed"]
    completed = [s for s in found.values() if s["status"] == "completed"]
    assert len(failed) == 1 and len(completed) == 1
    assert "deliberate failure at step 8" in failed[0]["error"]
    assert completed[0]["steps"] == 12

    # the sweep summary lists the failure and exits non-zero; a deleted run shows as missing
    import shutil
    import subprocess
    import sys

    from tests.suite_helpers import ROOT

    completed_dir = next(
        p.parent
        for p in tmp_path.rglob("summary.json")
        if json.loads(p.read_text())["status"] == "completed"
    )
    shutil.rmtree(completed_dir)
    listing = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "summarize.py"), str(tmp_path / "default")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert listing.returncode == 1
    assert "FAILED" in listing.stdout and "deliberate failure at step 8" in listing.stdout
    assert "MISSING" in listing.stdout and "task.fail_at_step=null" in listing.stdout
    assert "0/1 runs completed, 1 failed, 1 missing" in listing.stdout


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ("task=nosuchtask",),
            r"Could not find 'task/nosuchtask'[\s\S]*Available options[\s\S]*toy",
        ),
        (
            ("task=toy", "optimizer=nosuch"),
            r"Could not find 'optimizer/nosuch'[\s\S]*quadratic_stoch_auto",
        ),
        (("task=toy", "step_rule.lr=-1"), r"error: Invalid lr: -1(\.0)?; expected a value >= 0"),
        (
            ("task=toy", "optimizer.clipping_level=-2"),
            r"error: Invalid clipping_level: -2(\.0)?; expected a value >= 0",
        ),
        (
            ("task=toy", "optimizer.beta=1.5", "optimizer=linear_stoch_norm"),
            r"error: Invalid beta: 1.5; expected a value in \(0(\.0)?, 1(\.0)?\)",
        ),
        (
            ("task=toy", "optimizer.clipping_type=bogus"),
            r"error: Invalid clipping_type: 'bogus'; expected one of none, norm",
        ),
        (
            ("task=toy", "trainer.max_steps=0"),
            r"error: Invalid trainer.max_steps: 0; expected an integer >= 1",
        ),
        (
            ("task=toy", "task.noise=x"),
            r"error: Invalid task.noise: 'x'; expected one of gaussian, student_t, stable",
        ),
        (
            ("task=toy", "trainer.checkpoint_every=7"),
            r"error: Invalid trainer.checkpoint_every: 7; expected a multiple of "
            r"trainer.log_every \(5\)",
        ),
        (
            ("task=toy", "seed=-1"),
            r"error: Invalid seed: -1; expected an integer >= 0",
        ),
        (
            ("task=toy", "trainer.device=tpu"),
            r"error: Invalid trainer.device: 'tpu'; expected one of auto, cpu, cuda",
        ),
        (
            ("task=toy", "trainer.precision=16-mixed"),
            r"error: Invalid trainer.precision: '16-mixed'; expected one of 32, bf16-mixed",
        ),
    ],
)
def test_bad_overrides_end_with_one_clear_message(tmp_path, overrides, expected):
    proc = run_train(tmp_path, *overrides)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    import re

    assert re.search(expected, proc.stderr), proc.stderr[-2000:]
