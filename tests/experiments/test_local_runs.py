"""Sweeps in persistent workers (``torch_clip.suite.experiments.local_runs``): a worker's run is
the run ``python train.py`` makes, a failed or crashed run is reported and the others go on, and
one run leaves nothing behind for the next in its worker."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from datetime import datetime

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict, read_write

from tests.fault_task import FAULTY_TOY
from tests.suite_helpers import (
    ROOT,
    assert_same_run,
    run_train,
    train_command,
    train_env,
    wait_for_step,
)
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
    runs = [(*TOY, "trainer.checkpoint_every=10", f"seed={s}") for s in (0, 1)]  # final params
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
        assert_same_run(mine, theirs)  # every logged metric, gradient norm and final parameter


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


# a driver process that runs these specs in its pool, as sweeps.run_stage does
DRIVER = """
import json, signal, sys
from pathlib import Path
from torch_clip.suite.experiments import local_runs
# as in a terminal: a shell starts a background job (pytest under nohup ... &) ignoring SIGINT
signal.signal(signal.SIGINT, signal.default_int_handler)
specs = [local_runs.RunSpec(tuple(o), Path(sys.argv[2])) for o in json.loads(sys.argv[1])]
local_runs.run_local(specs, workers=2)
"""
SLOW = (*FAULTY_TOY, "trainer.max_steps=200", "trainer.checkpoint_every=10",
        "trainer.eval_every=50")  # fmt: skip


def test_sigint_to_the_driver_leaves_resumable_runs_whose_logs_name_their_own_command(tmp_path):
    runs = [cli_overrides(tmp_path / "sweep", *SLOW, f"seed={s}") for s in (0, 1)]
    log = tmp_path / "runs.log"
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(runs), str(log)],
        cwd=ROOT, env={**train_env(), "TORCH_CLIP_TEST_STEP_DELAY": "0.02"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    dirs = [local_runs.compose_run(o)[1] for o in runs]
    for run_dir in dirs:
        wait_for_step(run_dir, 20, driver)
    driver.send_signal(signal.SIGINT)  # the driver alone, as ``kill -INT`` does
    driver.wait(timeout=120)
    assert driver.returncode != 0 and "KeyboardInterrupt" in driver.stderr.read()
    hints = [line.split("resume with: ", 1)[1] for line in log.read_text().splitlines()
             if "resume with: " in line]  # fmt: skip
    assert len(hints) == 2
    for overrides, run_dir in zip(runs, dirs, strict=True):
        stopped = summary(run_dir)
        assert stopped["status"] == "preempted" and 20 <= stopped["steps"] < 200
        # the hint is the run's own one-run command line, not the worker's argv
        (hint,) = [h for h in hints if f"seed={stopped['seed']}" in shlex.split(h)]
        argv = shlex.split(hint)
        assert argv[1] == "train.py" and sorted(argv[2:]) == sorted(overrides)
        resumed = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, env=train_env(),
                                 capture_output=True, text=True, timeout=300)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert f"at step {stopped['steps']}" in resumed.stdout
        seed = next(o for o in overrides if o.startswith("seed="))
        straight = run_train(tmp_path / "straight", *SLOW, seed)
        assert straight.returncode == 0, straight.stderr[-2000:]
        (theirs,) = (tmp_path / "straight").rglob(f"seed{stopped['seed']}")
        assert_same_run(run_dir, theirs)


def test_the_resume_hint_of_a_run_from_a_moved_sweep_names_its_directory(tmp_path):
    """A ``-m`` run's hint is a one-run command: no multirun-only override, and a sweep moved
    with ``hydra.sweep.dir`` is named by the run's own ``hydra.run.dir``."""
    train = local_runs.load_train()
    overrides = ["task=toy", "seed=3", f"hydra.sweep.dir={tmp_path / 'moved'}",
                 "hydra/launcher=basic"]  # fmt: skip
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    run_dir = tmp_path / "moved" / "toy" / "x" / "seed3"
    argv = shlex.split(train.resume_command(cfg.hydra, run_dir))
    assert argv[2:] == ["task=toy", "seed=3", f"hydra.run.dir={run_dir}"]


def test_stages_side_by_side_share_their_slots_and_both_finish(tmp_path):
    """Two stages in threads, three workers each, sharing two slots: never more than two runs at
    once (their recorded start and end times), and both stages end (a thread that blocked on a
    slot with runs in flight used to hold the slots those runs would free: a deadlock)."""
    slots = threading.BoundedSemaphore(2)
    stages = [[spec(tmp_path / name, *TOY, f"seed={s}") for s in range(3)] for name in "ab"]
    results: list[dict] = []
    threads = [threading.Thread(target=lambda s=s: results.extend(local_runs.run_local(s, 3, slots)),
                                daemon=True)
               for s in stages]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "the stages did not finish"
    assert sorted(r["status"] for r in results) == ["completed"] * 6
    times = [summary(r["run_dir"]) for r in results]
    spans = [(datetime.fromisoformat(t["started_at"]), datetime.fromisoformat(t["finished_at"]))
             for t in times]  # fmt: skip
    for start, _ in spans:  # the runs under way at each start, that one included
        assert sum(a <= start < b for a, b in spans) <= 2


def test_a_stage_waiting_for_a_slot_starts_no_run_after_an_interrupt(monkeypatch):
    """A stage blocked on a shared slot when SIGINT arrives (a comparison beside one with runs
    in flight) takes the slot those runs free, and must then stop, not start its next run."""
    from concurrent.futures import Future

    monkeypatch.setattr(local_runs, "STOP", threading.Event())
    slots = threading.BoundedSemaphore(1)
    slots.acquire()  # the other stage's run in flight holds the only slot
    submitted, raised = [], []

    class Pool:  # records what the stage submits; no process is started
        def submit(self, fn, spec):
            submitted.append(spec)
            future = Future()
            future.set_result({"spec": spec})
            return future

    def stage():
        try:
            local_runs._drain(Pool(), ["run a", "run b"], 1, slots, lambda result: None)
        except KeyboardInterrupt:
            raised.append(True)

    thread = threading.Thread(target=stage, daemon=True)
    thread.start()
    thread.join(timeout=0.5)
    assert thread.is_alive()  # waiting for the slot
    local_runs.interrupt()
    slots.release()  # the other stage's run has stopped
    thread.join(timeout=10)
    assert not thread.is_alive() and raised == [True] and submitted == []
    assert slots.acquire(blocking=False)  # the slot it took was given back


PROBE = ("--overrides", "task=toy", "--at", "start", "--batches", "8", "--reference-batches", "4",
         "--bootstrap", "20")  # fmt: skip


def test_a_probe_in_a_worker_after_a_run_equals_the_probe_of_its_own_process(tmp_path):
    """``sweeps.call`` runs a probe in the driver's worker, which trained a run before (its RNG,
    threads and Hydra state touched): the probe's numbers are those of ``python
    scripts/noise_probe.py`` in a fresh process, digit for digit."""
    from torch_clip.suite.experiments import sweeps

    (trained,) = local_runs.run_local([spec(tmp_path / "sweep", *TOY)], workers=1)
    assert trained["status"] == "completed"
    assert sweeps.call(["scripts/noise_probe.py", *PROBE, "--out", str(tmp_path / "worker")]) == 0
    alone = subprocess.run([sys.executable, "scripts/noise_probe.py", *PROBE, "--out",
                            str(tmp_path / "process")], cwd=ROOT, env=train_env(),
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert alone.returncode == 0, alone.stderr[-2000:]
    worker, process = (json.loads((tmp_path / d / "noise_probe.json").read_text())
                       for d in ("worker", "process"))  # fmt: skip
    worker.pop("seconds"), process.pop("seconds")
    assert worker == process


def test_scripts_run_without_a_process_start_and_keep_their_exit_status(tmp_path, monkeypatch):
    """A figure script runs in a worker, a driver in the calling thread; neither starts a
    process, and each ends with the status its process would have (a usage error 2, a refused
    comparison's message 1)."""
    from torch_clip.suite.experiments import sweeps

    def no_process(*args, **kwargs):
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess, "call", no_process)
    (run,) = local_runs.run_local([spec(tmp_path / "sweep", *TOY)], workers=1)
    out = tmp_path / "figs" / "heavy_tail.png"
    assert sweeps.call(["scripts/plot_heavy_tail.py", str(run["run_dir"]), "--out", str(out)]) == 0
    assert out.stat().st_size > 1000 and "| toy |" in out.with_suffix(".md").read_text()
    assert (
        sweeps.call(["scripts/plot_heavy_tail.py", "--ncols", "x"]) == 2
    )  # argparse's usage error
    refused = ["scripts/tuned_comparison.py", "--tasks", "nonesuch", "--root", str(tmp_path)]
    assert sweeps.call(refused) == 2  # parser.error in this thread, not an exit of the driver
    assert (
        sweeps.call(
            [
                "scripts/tuned_comparison.py",
                "--quick",
                "--figures-only",
                "--tasks",
                "reddit",
                "--root",
                str(tmp_path / "empty"),
                "--out",
                str(tmp_path),
            ]
        )
        == 1
    )
