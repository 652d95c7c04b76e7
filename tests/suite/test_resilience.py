"""Kill-and-resume equivalence, preemption signals, bad checkpoints and data-parallel equivalence."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
import yaml

from tests.fault_task import FAULTY_TOY
from tests.suite_helpers import (
    ROOT,
    assert_same_run,
    assert_same_training,
    composed_run_dir,
    find_run_dir,
    run_torchrun,
    run_train,
    train_command,
    train_env,
    wait_for_step,
)

pytestmark = pytest.mark.slow

BUDGET = ("trainer.max_steps=120", "trainer.checkpoint_every=10", "trainer.eval_every=30")
RUN = ("task=toy", *BUDGET)
FAULTY = (*FAULTY_TOY, *BUDGET)  # the same run on the toy task with faults to order


def _run_dir(results, *overrides):
    """Where train.py puts the run of these overrides (composed, so known before it runs)."""
    return composed_run_dir(results, *overrides)


def _start(results, *overrides):
    env = {**train_env(), "TORCH_CLIP_TEST_STEP_DELAY": "0.02"}
    return subprocess.Popen(
        train_command(results, *overrides),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("optimizer", ["quadratic_stoch_auto", "auto"])
def test_sigkill_at_an_arbitrary_step_then_resume_is_bit_identical(tmp_path, optimizer):
    straight = tmp_path / "straight"
    assert run_train(straight, *FAULTY, f"optimizer={optimizer}").returncode == 0

    killed = tmp_path / "killed"
    run_dir = _run_dir(killed, *FAULTY, f"optimizer={optimizer}")
    proc = _start(killed, *FAULTY, f"optimizer={optimizer}")
    wait_for_step(run_dir, 47, proc)  # past the checkpoint at 40, before the one at 50
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (
        json.loads((run_dir / "summary.json").read_text())["status"] == "running"
        if (run_dir / "summary.json").exists()
        else True
    )

    resumed = run_train(killed, *FAULTY, f"optimizer={optimizer}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout and "last.pt at step" in resumed.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert [r["step"] for r in summary["resumed_from"]] in ([40], [50])
    assert_same_run(_run_dir(straight, *FAULTY, f"optimizer={optimizer}"), run_dir)


def test_sigterm_saves_a_checkpoint_and_the_rerun_finishes_identically(tmp_path):
    straight = tmp_path / "straight"
    assert run_train(straight, *FAULTY, "optimizer=linear_stoch_norm").returncode == 0
    stopped = tmp_path / "stopped"
    run_dir = _run_dir(stopped, *FAULTY, "optimizer=linear_stoch_norm")
    proc = _start(stopped, *FAULTY, "optimizer=linear_stoch_norm")
    wait_for_step(run_dir, 33, proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "preempted" and 33 <= summary["steps"] < 120
    resumed = run_train(stopped, *FAULTY, "optimizer=linear_stoch_norm")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {summary['steps']}" in resumed.stdout
    assert_same_run(_run_dir(straight, *FAULTY, "optimizer=linear_stoch_norm"), run_dir)


# 16 steps per epoch (512 points, batch 32): epochs end at 16, 32, 48; checkpoints at 20, 40, 60
EPOCHS = (*FAULTY_TOY, "task.num_train=512", "optimizer=quadratic_stoch_auto", "label=run")
EPOCHS = (*EPOCHS, "trainer.max_steps=60", "trainer.checkpoint_every=20", "trainer.eval_every=25")
EPOCHS = (*EPOCHS, "trainer.extend=true")  # the grown budget continues the completed 50 steps


def _assert_same_record(a, b):
    """Every file of the two run records matches (wall-clock times aside)."""
    assert_same_run(a, b)
    for name in ("grad_norm_hist.jsonl", "config.yaml"):
        assert (a / name).read_text() == (b / name).read_text(), name
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["status"] == sb["status"] == "completed" and sa["steps"] == sb["steps"] == 60
    assert (sa["final"], sa["best"], sa["final_train_loss"]) == (
        sb["final"],
        sb["best"],
        sb["final_train_loss"],
    )


@pytest.mark.parametrize("interruption", ["killed_after_an_epoch_end", "budget_grown_mid_epoch"])
def test_an_interrupted_run_resumes_into_the_record_of_an_uninterrupted_one(tmp_path, interruption):
    """The resumed run rolls every record file back to its checkpoint: the epoch histogram
    written after the checkpoint (at an epoch end, or the partial epoch a shorter budget ended
    in) is not written twice."""
    results, run_dir = tmp_path / "results", _run_dir(tmp_path / "results", *EPOCHS)
    assert run_train(results, *EPOCHS).returncode == 0
    straight = tmp_path / "straight"
    run_dir.rename(straight)  # the same config (results_root included) for both runs

    if interruption == "killed_after_an_epoch_end":
        # a hard crash on step 36: after the epoch that ended at 32, before the checkpoint at 40
        first = subprocess.run(
            train_command(results, *EPOCHS),
            cwd=ROOT,
            env={**train_env(), "TORCH_CLIP_TEST_KILL_AFTER": "35"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
        resumed_at = 20
    else:  # 50 steps, then a budget of 60 continues from the final checkpoint
        first = run_train(results, *EPOCHS, "trainer.max_steps=50")
        assert first.returncode == 0, first.stderr[-2000:]
        resumed_at = 50
    last_hist = (run_dir / "grad_norm_hist.jsonl").read_text().splitlines()[-1]
    # a histogram row the checkpoint does not cover: its epoch had not ended at the checkpoint
    assert json.loads(last_hist)["epoch"] >= resumed_at // 16

    resumed = run_train(results, *EPOCHS)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"last.pt at step {resumed_at}" in resumed.stdout
    _assert_same_record(straight, run_dir)


def test_corrupt_checkpoint_is_a_clear_error_not_a_fresh_start(tmp_path):
    run_dir = _run_dir(tmp_path, *RUN, "optimizer=norm")
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    proc = run_train(tmp_path, *RUN, "optimizer=norm")
    assert proc.returncode == 2
    assert f"checkpoint {run_dir / 'checkpoints' / 'last.pt'} is corrupt" in proc.stderr
    assert "Traceback" not in proc.stderr
    # the refused start leaves the directory as it was: no summary of a run that never began
    assert sorted(p.name for p in run_dir.rglob("*")) == ["checkpoints", "last.pt"]


def test_two_configurations_never_share_a_directory(tmp_path):
    first = run_train(tmp_path, *RUN, "optimizer=norm", "label=same", "trainer.max_steps=10")
    assert first.returncode == 0, first.stderr[-2000:]
    # same label, another clipping rule: its own directory (the hash differs), trained, not skipped
    second = run_train(tmp_path, *RUN, "optimizer=auto", "label=same", "trainer.max_steps=10")
    assert second.returncode == 0 and "already completed" not in second.stdout
    dirs = sorted(p.parent for p in tmp_path.rglob("summary.json"))
    assert len(dirs) == 2 and dirs[0].parent != dirs[1].parent
    assert {d.parent.name.rsplit("-", 1)[0] for d in dirs} == {"same"}
    configs = [yaml.safe_load((d / "config.yaml").read_text()) for d in dirs]
    assert sorted(c["optimizer"]["clipping_type"] for c in configs) == ["auto", "norm"]
    # a directory forced onto another configuration's run is refused, never resumed or skipped
    norm_dir = next(d for d, c in zip(dirs, configs) if c["optimizer"]["clipping_type"] == "norm")
    forced = (f"hydra.run.dir={norm_dir}", "optimizer=auto")
    done = run_train(tmp_path, *RUN, *forced, "trainer.max_steps=10")
    assert done.returncode == 2
    assert "holds a completed run of a different configuration" in done.stderr
    longer = run_train(tmp_path, *RUN, *forced, "trainer.max_steps=20", "trainer.extend=true")
    assert longer.returncode == 2, longer.stderr[-2000:]
    assert "holds a completed run of a different configuration" in longer.stderr


def test_a_longer_budget_extends_a_completed_run_only_when_asked(tmp_path):
    short = run_train(tmp_path, *RUN, "optimizer=auto", "trainer.max_steps=60")
    assert short.returncode == 0, short.stderr[-2000:]
    refused = run_train(tmp_path, *RUN, "optimizer=auto")  # RUN asks for 120 steps
    assert refused.returncode == 2
    assert "holds a completed run of 60 steps, not the 120 asked for" in refused.stderr
    assert "trainer.extend=true" in refused.stderr
    extended = run_train(tmp_path, *RUN, "optimizer=auto", "trainer.extend=true")
    assert extended.returncode == 0, extended.stderr[-2000:]
    assert "at step 60" in extended.stdout
    # the extended run is the run that was asked for in one go (constant learning rate)
    straight = tmp_path / "straight"
    assert run_train(straight, *RUN, "optimizer=auto").returncode == 0
    assert_same_run(
        _run_dir(straight, *RUN, "optimizer=auto"), _run_dir(tmp_path, *RUN, "optimizer=auto")
    )


@pytest.mark.parametrize(
    ("optimizer", "knob"),
    [
        ("norm", "optimizer.clipping_level=0.5"),
        ("auto", "optimizer.p_autoclip=0.5"),
        ("quadratic_stoch_norm", "optimizer.clipping_level=0.5"),
    ],
)
def test_two_process_ddp_matches_one_process_on_the_global_batch(tmp_path, optimizer, knob):
    args = (
        "task=toy",
        f"optimizer={optimizer}",
        knob,
        "label=run",
        "trainer.max_steps=30",
        "trainer.checkpoint_every=30",
        "trainer.eval_every=30",
        "trainer.device=cpu",
    )
    single = run_train(tmp_path / "single", *args)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = run_torchrun(tmp_path / "ddp", *args)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a, b = find_run_dir(tmp_path / "single", "run"), find_run_dir(tmp_path / "ddp", "run")
    summary = json.loads((b / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed"
    # same clipping inputs on every step (all-reduced gradient == global-batch gradient) and the
    # same parameters at the end
    assert_same_training(a, b)
