"""Run records that survive reruns, interrupts and each other, and checkpoints that never run code.

Each test drives ``train.py`` (or a script) in a subprocess, as a user would, and checks the
directory it leaves against a snapshot taken before, or against an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.fault_task import FAULTY_TOY
from tests.suite_helpers import (
    ROOT,
    composed_run_dir,
    metric_rows,
    run_train,
    train_command,
    train_env,
    wait_for_step,
)

pytestmark = pytest.mark.slow

BUDGET = ("trainer.max_steps=40", "trainer.checkpoint_every=10", "trainer.eval_every=20")
RUN = ("task=toy", "optimizer=norm", *BUDGET)
SLOW = (*FAULTY_TOY, "optimizer=norm", *BUDGET)  # the toy run, made slow enough to signal


def snapshot(run_dir):
    """Every file under ``run_dir`` with the hash of its bytes."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def one_error_line(proc, *needles):
    """The run failed as a user error: exit 2, one line on stderr naming each of ``needles``."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("torch-clip: error: "), proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def start(results, *overrides, delay="0.05"):
    return subprocess.Popen(
        train_command(results, *overrides),
        cwd=ROOT,
        env={**train_env(), "TORCH_CLIP_TEST_STEP_DELAY": delay},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class RunsCode:
    """Unpickling this runs ``touch <marker>``: a crafted checkpoint."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_and_never_run(tmp_path):
    assert run_train(tmp_path, *RUN, "trainer.max_steps=10").returncode == 0
    run_dir = composed_run_dir(tmp_path, *RUN)
    marker = tmp_path / "ran"
    torch.save(
        {"format_version": 2, "model": RunsCode(marker)}, run_dir / "checkpoints" / "last.pt"
    )
    before = snapshot(run_dir)
    proc = run_train(tmp_path, *RUN, "trainer.max_steps=20", "trainer.extend=true")
    one_error_line(proc, "checkpoint", "last.pt", "holds more than tensors", "trainer.resume=false")
    assert not marker.exists() and snapshot(run_dir) == before
    probe = subprocess.run(
        [sys.executable, "scripts/noise_probe.py", str(run_dir), "--at", "end", "--batches", "4"],
        cwd=ROOT,
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 2 and "holds more than tensors" in probe.stderr, probe.stderr
    assert not marker.exists()


def test_a_real_checkpoint_loads_with_weights_only(tmp_path):
    assert run_train(tmp_path, *RUN, "trainer.max_steps=10").returncode == 0
    path = composed_run_dir(tmp_path, *RUN) / "checkpoints" / "last.pt"
    payload = torch.load(path, weights_only=True)
    assert payload["step"] == 10 and isinstance(payload["random"]["numpy"]["keys"], torch.Tensor)


def _refusals(run_dir):
    """Reruns that must be refused before they touch ``run_dir`` (a completed 20-step run)."""
    ckpt = run_dir / "checkpoints" / "last.pt"
    return {
        "grown_budget_with_a_bad_value": (
            None,
            ("trainer.max_steps=40", "trainer.extend=true", "trainer.eval_every=0"),
            ("trainer.eval_every",),
        ),
        "another_configuration_forced_in": (
            None,
            (f"hydra.run.dir={run_dir}", "optimizer.clipping_level=0.5", "trainer.max_steps=40"),
            ("different configuration",),
        ),
        "a_corrupt_checkpoint": (
            lambda: (ckpt.write_bytes(b"not a checkpoint"), (run_dir / "summary.json").unlink()),
            (),
            (str(ckpt), "corrupt"),
        ),
        "max_steps_as_a_float": (None, ("trainer.max_steps=1e3",), ("trainer.max_steps", "1000")),
    }


@pytest.mark.parametrize("case", list(_refusals(ROOT)))
def test_a_refused_rerun_leaves_the_run_directory_byte_identical(tmp_path, case):
    first = ("task=toy", "optimizer=norm", "trainer.checkpoint_every=10", "trainer.eval_every=10")
    assert run_train(tmp_path, *first, "trainer.max_steps=20").returncode == 0
    run_dir = composed_run_dir(tmp_path, *first, "trainer.max_steps=20")
    prepare, overrides, needles = _refusals(run_dir)[case]
    if prepare is not None:
        prepare()
    before = snapshot(run_dir)
    proc = run_train(tmp_path, *first, "trainer.max_steps=20", *overrides)
    one_error_line(proc, *needles)
    assert snapshot(run_dir) == before


def test_a_second_process_on_the_same_run_directory_is_refused(tmp_path):
    run_dir = composed_run_dir(tmp_path, *SLOW)
    first = start(tmp_path, *SLOW, delay="0.3")  # 12 s of training: the second starts inside
    wait_for_step(run_dir, 5, first)
    second = run_train(tmp_path, *SLOW)
    first.wait(timeout=120)
    one_error_line(second, str(run_dir), f"in use by process {first.pid}")
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"] == []
    assert [r["step"] for r in metric_rows(run_dir) if r["split"] == "val"] == [20, 40]


def test_a_torn_metrics_line_stops_the_resume_naming_it(tmp_path):
    run_dir = composed_run_dir(tmp_path, *SLOW)
    env = {**train_env(), "TORCH_CLIP_TEST_KILL_AFTER": "25"}
    killed = subprocess.run(train_command(tmp_path, *SLOW), cwd=ROOT, env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    lines = (run_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[1] = lines[1][: len(lines[1]) // 2] + "\n"  # a row torn in the middle of the record
    (run_dir / "metrics.jsonl").write_text("".join(lines))
    before = snapshot(run_dir)
    proc = run_train(tmp_path, *SLOW)
    one_error_line(proc, f"{run_dir / 'metrics.jsonl'} line 2 is not a JSON row")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_saves_says_how_to_resume_and_exits_128_plus_the_signal(
    tmp_path, signum, code
):
    run_dir = composed_run_dir(tmp_path, *SLOW, "trainer.checkpoint_every=0")
    proc = start(tmp_path, *SLOW, "trainer.checkpoint_every=0")
    wait_for_step(run_dir, 12, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert f"stopped by {signal.Signals(signum).name} at step" in lines[0]
    assert f"resume with: {os.path.basename(sys.executable)} {ROOT / 'train.py'}" in lines[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "preempted" and summary["signal"] == signum
    payload = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert payload["step"] == summary["steps"] >= 12


def test_leftover_temporary_checkpoints_are_removed_at_the_next_start(tmp_path):
    run_dir = composed_run_dir(tmp_path, *RUN)
    (run_dir / "checkpoints").mkdir(parents=True)
    leftover = run_dir / "checkpoints" / ".last.pt.abc123.tmp"
    leftover.write_bytes(b"x" * 1000)  # what a write killed before its rename leaves
    proc = run_train(tmp_path, *RUN, "trainer.max_steps=10")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.pt"]


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("scheduler=cosine scheduler.T_max=0", ("scheduler.T_max", "integer >= 1")),
        ("trainer.num_threads=-2", ("trainer.num_threads", "integer >= 1")),
        ("trainer.resume=maybe", ("trainer.resume", "true or false")),
        ("trainer.max_steps=1e3", ("trainer.max_steps", "write 1000")),
        ("results_root={file}/runs", ("results_root", "is a file, not a directory")),
        ("results_root=/sys/torch-clip-runs", ("results_root", "cannot write there")),
    ],
)
def test_bad_values_are_one_line_naming_the_key(tmp_path, override, needles):
    regular = tmp_path / "a_file"
    regular.write_text("")
    overrides = override.format(file=regular).split()
    proc = run_train(tmp_path / "results", *RUN, *overrides)
    one_error_line(proc, *needles)


def test_summarize_reports_a_run_that_failed_in_set_up_and_exits_non_zero(tmp_path):
    sweep = ("-m", "task=toy", "optimizer=norm", "trainer.max_steps=5", "trainer.eval_every=5")
    proc = run_train(tmp_path, *sweep, "task.num_train=-5,512")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for target in (tmp_path, tmp_path / "default"):  # the results root, and the sweep
        listing = subprocess.run(
            [sys.executable, "scripts/summarize.py", str(target)],
            cwd=ROOT,
            env=train_env(),
            capture_output=True,
            text=True,
        )
        assert listing.returncode == 1, listing.stdout
        failed = [line for line in listing.stdout.splitlines() if line.startswith("FAILED")]
        assert len(failed) == 1 and "Invalid task.num_train: -5" in failed[0], listing.stdout
        assert "1/2 runs completed, 1 failed, 0 missing" in listing.stdout
