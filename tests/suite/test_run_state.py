"""The trainer's run state round-trips through a checkpoint, and the run record rolls back to one."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from torch_clip.suite.records import RunRecord, read_jsonl
from torch_clip.suite.run_state import RunState

CPU = torch.device("cpu")


def _draws() -> tuple[float, float, float]:
    """One draw from each global stream a checkpoint saves (python, numpy, torch)."""
    return random.random(), np.random.rand(), torch.rand(()).item()  # noqa: NPY002


def test_run_state_round_trip_continues_the_same_random_streams():
    state = RunState(step=7, grad_norms=[1.0, 2.5], epoch_norm_start=1, wall_before=3.0)
    state.window = [{"loss": torch.tensor(0.25), "grad_norm": torch.tensor(1.5)}]
    state.best = {"metric": "r2", "value": 0.5, "step": 5}
    state.last_train = {"step": 5, "train_loss": 0.3}
    state.resumed_from = [{"checkpoint": "last.pt", "step": 5}]
    saved = state.state_dict()
    after_save = _draws()

    loaded = RunState()
    loaded.load_state_dict(saved, CPU)
    assert _draws() == after_save
    assert (loaded.step, loaded.grad_norms, loaded.epoch_norm_start) == (7, [1.0, 2.5], 1)
    assert (loaded.best, loaded.last_train, loaded.resumed_from) == (
        state.best,
        state.last_train,
        state.resumed_from,
    )
    assert [{k: float(v) for k, v in w.items()} for w in loaded.window] == [
        {"loss": 0.25, "grad_norm": 1.5}
    ]
    assert loaded.wall_before == saved["wall_seconds"] >= 3.0


def _recorded_run(tmp_path):
    """A record of 40 steps with 16 steps per epoch, log_every 5, ended mid-epoch 2."""
    record = RunRecord(tmp_path)
    record.write_config("seed: 0\n")
    for step in [*range(5, 41, 5), 16, 32]:
        record.log({"step": step, "split": "train", "train_loss": float(step)})
    for epoch, step in ((0, 16), (1, 32), (2, 40)):  # the last one: the partial epoch
        record.log_histogram(epoch, step, np.arange(1.0, 5.0))
    record.save_grad_norms([1.0] * 40)
    record.write_summary({"status": "completed", "steps": 40})
    record.close()
    return record


@pytest.mark.parametrize(
    ("checkpoint", "epochs", "steps", "histograms"),
    [
        (20, 1, [5, 10, 15, 16, 20], [0]),  # killed after epoch 1 ended at 32
        (40, 2, [5, 10, 15, 16, 20, 25, 30, 32, 35, 40], [0, 1]),  # the final checkpoint
    ],
)
def test_rollback_drops_what_was_recorded_after_the_checkpoint(
    tmp_path, checkpoint, epochs, steps, histograms
):
    record = _recorded_run(tmp_path)
    record.rollback(checkpoint, epochs=epochs)
    assert sorted(r["step"] for r in read_jsonl(record.metrics_path)) == steps
    # the partial epoch 2 was written at step 40, after the final checkpoint: dropped too
    assert [r["epoch"] for r in read_jsonl(record.histogram_path)] == histograms
    assert not record.grad_norms_path.exists()
    assert json.loads(record.summary_path.read_text())["steps"] == 40  # rewritten at the end


def test_reset_leaves_only_the_config(tmp_path):
    record = _recorded_run(tmp_path)
    record.reset()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
