"""Every task under ``torchrun --nproc_per_node=2`` (gloo), with an evaluation inside the budget;
parameters equal to a one-process run on the same global batch; ``trainer.strategy=fsdp2``;
checkpoint and resume under both strategies."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess

import pytest
from omegaconf import OmegaConf

from tests.fault_task import FAULTY_TOY
from tests.suite_helpers import (
    ROOT,
    assert_same_training,
    composed_run_dir,
    find_run_dir,
    run_torchrun,
    run_train,
    torchrun_command,
    train_command,
    train_env,
    wait_for_step,
)
from torch_clip.suite.trainer import check_trainer_config

pytestmark = pytest.mark.slow

TRAINER = {"max_steps": 4, "eval_every": 2, "log_every": 2, "checkpoint_every": 4}
BUDGET = (
    "trainer.max_steps=4",
    "trainer.eval_every=2",
    "trainer.log_every=2",
    "trainer.checkpoint_every=4",
    "trainer.device=cpu",
    "label=run",
)
COLA = (
    "task=cola",
    "task.dropout=0",  # per-rank dropout masks cannot equal one process's
    "task.batch_size=4",
    "task.max_length=16",
    "task.embedded_train_size=32",
    "task.embedded_dev_size=16",
    "task.eval_batch_size=16",
)
LM = (
    "task=lm",
    "task.width=32",
    "task.num_layers=2",
    "task.num_heads=2",
    "task.context=16",
    "task.batch_size=4",
    "task.max_val_blocks=8",
)
# BatchNorm normalises each rank's half batch (SyncBatchNorm needs a GPU): completion only.
BATCHNORM = {
    "imagenet": ("task=imagenet", "task.batch_size=8", "task.max_val_items=16"),
    "voc": (
        "task=voc",
        "task.batch_size=4",
        "task.image_size=32",
        "task.embedded_train_size=16",
        "task.embedded_val_size=4",
        "task.eval_batch_size=4",
    ),
}


def _run_dir(results, task):
    return find_run_dir(results, "run", task=task)


def _completed(results, task, args, **kwargs):
    proc = run_torchrun(results, *args, **kwargs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _run_dir(results, task)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2
    assert 2 in _val_metric(run_dir, "step")  # an evaluation ran
    return run_dir


def _val_metric(run_dir, key):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if r["split"] == "val"]


def _one_process(results, task, args):
    proc = run_train(results, *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _run_dir(results, task)


def _resumed(results, task, args):
    """Two processes: half the budget, then the same command with the full budget resumes."""
    _completed(results, task, (*args, "trainer.max_steps=2"))
    again = run_torchrun(results, *args, "trainer.extend=true")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout and "at step 2" in again.stdout
    return _run_dir(results, task)


def test_reddit_under_ddp_and_fsdp2_equals_one_process_and_resumes(tmp_path):
    args = ("task=reddit", "task.dropout=0", *BUDGET, "optimizer=quadratic_stoch_auto")
    single = _one_process(tmp_path / "single", "reddit", args)
    resumed = _resumed(tmp_path / "ddp", "reddit", (*args, "trainer.strategy=ddp"))
    assert_same_training(single, resumed)
    # its evaluation calls a method of the bare module other than forward (layer-wise inference)
    fsdp2 = _completed(tmp_path / "fsdp2", "reddit", (*args, "trainer.strategy=fsdp2"))
    assert_same_training(single, fsdp2)
    accuracy = _val_metric(single, "val_accuracy")
    assert _val_metric(fsdp2, "val_accuracy") == pytest.approx(accuracy, abs=1e-3)


def test_cola_under_ddp_and_fsdp2_equals_one_process_and_resumes(tmp_path):
    args = (*COLA, *BUDGET, "optimizer=quadratic_stoch_auto")
    single = _one_process(tmp_path / "single", "cola", args)
    # The attention key biases get a gradient that is zero up to rounding (softmax ignores a
    # constant shift): they hold accumulated float32 noise of ~1e-6, hence atol 1e-5.
    ddp = _completed(tmp_path / "ddp", "cola", (*args, "trainer.strategy=ddp"))
    assert_same_training(single, ddp, atol=1e-5)
    fsdp2 = _resumed(tmp_path / "fsdp2", "cola", (*args, "trainer.strategy=fsdp2"))
    assert_same_training(single, fsdp2, atol=1e-5)


def test_lm_under_ddp_and_fsdp2_equals_one_process_and_resumes(tmp_path):
    # the tied embedding is one parameter used twice (input and output layer) in both strategies
    args = (*LM, *BUDGET, "optimizer=quadratic_stoch_auto")
    single = _one_process(tmp_path / "single", "lm", args)
    ddp = _resumed(tmp_path / "ddp", "lm", (*args, "trainer.strategy=ddp"))
    assert_same_training(single, ddp, atol=1e-5)
    fsdp2 = _resumed(tmp_path / "fsdp2", "lm", (*args, "trainer.strategy=fsdp2"))
    assert_same_training(single, fsdp2, atol=1e-5)
    loss = _val_metric(single, "val_loss")
    assert _val_metric(fsdp2, "val_loss") == pytest.approx(loss, abs=1e-4)


@pytest.mark.parametrize("task", sorted(BATCHNORM))
def test_batchnorm_tasks_complete_under_torchrun(tmp_path, task):
    _completed(tmp_path, task, (*BATCHNORM[task], *BUDGET, "optimizer=norm"))


def test_invalid_strategy_is_a_clear_error():
    cfg = OmegaConf.create({"trainer": {**TRAINER, "strategy": "zero"}, "seed": 0})
    expected = "Invalid trainer.strategy: 'zero'; expected one of ddp, fsdp2"
    with pytest.raises(ValueError, match=re.escape(expected)):
        check_trainer_config(cfg)


def test_submitit_slurm_tasks_join_one_process_group(tmp_path):
    """Two SLURM tasks of one submitit job (tasks_per_node=2), as srun starts them."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    slurm = {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "1",
        "SLURM_NTASKS": "2",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NODELIST": "localhost",
        "MASTER_PORT": str(port),
    }
    command = train_command(tmp_path, "task=toy", *BUDGET)
    procs = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env={**train_env(), **slurm, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    summary = json.loads((_run_dir(tmp_path, "toy") / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2


def test_sigterm_under_fsdp2_saves_at_a_window_end_and_resumes(tmp_path):
    args = (*FAULTY_TOY, *BUDGET, "optimizer=quadratic_stoch_auto", "trainer.strategy=fsdp2")
    args = (*args, "trainer.max_steps=30", "trainer.checkpoint_every=30", "trainer.eval_every=10")
    single = _one_process(tmp_path / "single", "faulty_toy", args)
    run_dir = composed_run_dir(tmp_path / "two", *args)
    proc = subprocess.Popen(
        torchrun_command(tmp_path / "two", *args),
        cwd=ROOT,
        env={**train_env(), "TORCH_CLIP_TEST_STEP_DELAY": "0.05"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_step(run_dir, 7, proc)
    proc.send_signal(signal.SIGTERM)  # torchrun hands it to both ranks
    proc.communicate(timeout=120)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "preempted"
    stopped = summary["steps"]
    assert 7 <= stopped < 30 and stopped % 2 == 0  # the end of a logging window
    again = run_torchrun(tmp_path / "two", *args)
    if again.returncode != 0 and "terminate called without an active exception" in again.stderr:
        # Known flake (about 1 run in 6 under load): a rank aborts in C++ teardown after the
        # resumed run; the same command resumes again from the checkpoint it left.
        again = run_torchrun(tmp_path / "two", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"at step {stopped}" in again.stdout or "already completed" in again.stdout
    assert_same_training(single, run_dir)
