"""Sweeps in persistent workers (``torch_clip.suite.experiments.local_runs``): a worker's run is
the run ``python train.py`` makes, a failed or crashed run is reported and the others go on, and
one run leaves nothing behind for the next in its worker."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.fault_task import FAULTY_TOY
from tests.suite_helpers import run_train, train_command
from torch_clip.suite.experiments import local_runs

pytestmark = pytest.mark.slow

TOY = ("task=toy", "optimizer=auto", "trainer.max_steps=20", "trainer.eval_every=10")


def cli_overrides(results, *overrides: str) -> tuple[str, ...]:
    """The overrides ``tests.suite_helpers.run_train`` gives ``train.py``, for a worker."""
    return tuple(train_command(results, *overrides)[2:])


def spec(results, *overrides: str) -> local_runs.RunSpec:
    return local_runs.RunSpec(cli_overrides(results, *overrides), results / "logs" / "runs.log")


def summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_worker_runs_write_what_train_py_writes(tmp_path):
    runs = [(*TOY, f"seed={s}") for s in (0, 1)]
    for overrides in runs:
        proc = run_train(tmp_path, *overrides)
        assert proc.returncode == 0, proc.stderr
    shutil.move(tmp_path / "default", tmp_path / "cli")  # the same results_root for both
    results = local_runs.run_local([spec(tmp_path, *o) for o in runs], workers=2)
    assert sorted(r["status"] for r in results) == ["completed", "completed"]
    for r in results:
        mine = r["run_dir"]
        theirs = tmp_path / "cli" / mine.relative_to(tmp_path / "default")  # same hash
        assert theirs.is_dir(), f"train.py made no {theirs}"
        for name in ("config.yaml", ".hydra/config.yaml", ".hydra/overrides.yaml"):
            assert (mine / name).read_bytes() == (theirs / name).read_bytes(), name
        a, b = summary(mine), summary(theirs)
        assert a["final"] == b["final"] and a["final_train_loss"] == b["final_train_loss"]
        assert a["steps"] == b["steps"] == 20
        assert (mine / "metrics.jsonl").exists()


def test_a_run_that_raises_is_reported_failed_and_the_others_complete(tmp_path):
    fail = spec(tmp_path, *FAULTY_TOY, "trainer.max_steps=20", "task.fail_at_step=3")
    ok = spec(tmp_path, *TOY)
    results = {r["overrides"][-1]: r for r in local_runs.run_local([fail, ok], workers=2)}
    assert results["task.fail_at_step=3"]["status"] == "failed"
    assert "deliberate failure" in results["task.fail_at_step=3"]["error"]
    assert results[ok.overrides[-1]]["status"] == "completed"


def test_a_worker_that_dies_is_reported_and_the_sweep_continues(tmp_path):
    dies = spec(tmp_path, *FAULTY_TOY, "trainer.max_steps=20", "task.exit_at_step=3")
    others = [spec(tmp_path, *TOY, f"seed={s}") for s in (0, 1)]
    results = {r["overrides"][-1]: r for r in local_runs.run_local([dies, *others], workers=2)}
    assert results["task.exit_at_step=3"]["status"] == "crashed"
    assert "died" in results["task.exit_at_step=3"]["error"]
    assert [results[o.overrides[-1]]["status"] for o in others] == ["completed", "completed"]
    # the pool was rebuilt: a later sweep runs
    assert local_runs.run_local([spec(tmp_path, *TOY, "seed=2")], 2)[0]["status"] == "completed"


def test_two_runs_in_one_worker_do_not_leak_state(tmp_path):
    # the first run changes the worker's thread count, seed and deterministic mode
    first = spec(tmp_path / "a", "task=toy", "trainer.max_steps=20", "seed=7",
                 "trainer.num_threads=3", "trainer.deterministic=true")  # fmt: skip
    overrides = [o for o in cli_overrides(tmp_path / "a", *TOY) if "num_threads" not in o]
    second = local_runs.RunSpec(tuple(overrides), tmp_path / "a.log")
    with local_runs.new_pool(1) as pool:  # one worker: the second run follows the first there
        assert pool.submit(local_runs.execute, first).result()["status"] == "completed"
        after = pool.submit(local_runs.execute, second).result()
    alone_spec = local_runs.RunSpec(
        tuple(o.replace("/a", "/b") for o in overrides), tmp_path / "b.log"
    )
    with local_runs.new_pool(1) as pool:
        alone = pool.submit(local_runs.execute, alone_spec).result()
    a, b = summary(after["run_dir"]), summary(alone["run_dir"])
    assert a["torch_threads"] == b["torch_threads"]
    assert a["final"] == b["final"] and a["final_train_loss"] == b["final_train_loss"]
