"""Kill-and-resume equivalence, preemption signals, bad checkpoints and data-parallel equivalence."""

from __future__ import annotations

import json
import signal
import subprocess

import numpy as np
import pytest
import yaml

from tests.suite_helpers import (
    ROOT,
    assert_same_training,
    composed_run_dir,
    final_params,
    find_run_dir,
    metric_rows,
    run_torchrun,
    run_train,
    train_command,
    train_env,
    wait_for_step,
)

pytestmark = pytest.mark.slow

RUN = ("task=toy", "trainer.max_steps=120", "trainer.checkpoint_every=10", "trainer.eval_every=30")


def _run_dir(results, optimizer):
    return composed_run_dir(results, *RUN, f"optimizer={optimizer}")


def _assert_same_run(a, b):
    assert metric_rows(a) == metric_rows(b)
    np.testing.assert_array_equal(np.load(a / "grad_norms.npy"), np.load(b / "grad_norms.npy"))
    pa, pb = final_params(a), final_params(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)


def _start(results, *overrides):
    env = {**train_env(), "TORCH_CLIP_TOY_STEP_DELAY": "0.02"}
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
    assert run_train(straight, *RUN, f"optimizer={optimizer}").returncode == 0

    killed = tmp_path / "killed"
    run_dir = _run_dir(killed, optimizer)
    proc = _start(killed, *RUN, f"optimizer={optimizer}")
    wait_for_step(run_dir, 47, proc)  # past the checkpoint at 40, before the one at 50
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (
        json.loads((run_dir / "summary.json").read_text())["status"] == "running"
        if (run_dir / "summary.json").exists()
        else True
    )

    resumed = run_train(killed, *RUN, f"optimizer={optimizer}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout and "last.pt at step" in resumed.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert [r["step"] for r in summary["resumed_from"]] in ([40], [50])
    _assert_same_run(_run_dir(straight, optimizer), run_dir)


def test_sigterm_saves_a_checkpoint_and_the_rerun_finishes_identically(tmp_path):
    straight = tmp_path / "straight"
    assert run_train(straight, *RUN, "optimizer=linear_stoch_norm").returncode == 0
    stopped = tmp_path / "stopped"
    run_dir = _run_dir(stopped, "linear_stoch_norm")
    proc = _start(stopped, *RUN, "optimizer=linear_stoch_norm")
    wait_for_step(run_dir, 33, proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "preempted" and 33 <= summary["steps"] < 120
    resumed = run_train(stopped, *RUN, "optimizer=linear_stoch_norm")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {summary['steps']}" in resumed.stdout
    _assert_same_run(_run_dir(straight, "linear_stoch_norm"), run_dir)


def test_corrupt_checkpoint_is_a_clear_error_not_a_fresh_start(tmp_path):
    run_dir = _run_dir(tmp_path, "norm")
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    proc = run_train(tmp_path, *RUN, "optimizer=norm")
    assert proc.returncode == 2
    assert f"checkpoint {run_dir / 'checkpoints' / 'last.pt'} is corrupt" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"


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
    _assert_same_run(_run_dir(straight, "auto"), _run_dir(tmp_path, "auto"))


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
