"""Local sweeps without a process start per run: persistent workers that import once.

A run of ``python train.py`` spends seconds importing torch, Hydra and the tasks before a toy
run's fraction of a second of training. Here the runs of a sweep execute in a small pool of
long-lived worker processes (``concurrent.futures.ProcessPoolExecutor`` over the ``spawn``
context, kept for the whole driver process and shared by its stages), each importing torch and
``train.py`` once. A worker composes each run's config with Hydra's compose API as Hydra's
multirun would (the same ``hydra.overrides.task``, so the same run directory and hash), sets
Hydra's runtime config as ``hydra.core.utils.run_job`` does and calls ``train.run`` in-process:
the run writes what a ``python train.py`` run writes (``.hydra/``, config, summary, metrics).

Isolation per run: Hydra's global state is cleared before composing and after the run, torch's
thread count and deterministic mode are put back to the worker's start-up values, the working
directory is restored, and the trainer seeds Python's, NumPy's and torch's RNGs from the run's
``seed`` as in any ``train.py`` run. A run that raises is recorded ``failed`` in its own summary
(train.py's multirun handling) and reported here; a worker that dies (segfault, ``os._exit``,
out of memory) breaks the pool: every run in flight then reruns alone in a fresh one-worker pool,
which tells the run that killed its worker (reported ``crashed``) from the ones it interrupted,
and the sweep goes on with a new pool.

SIGINT (Ctrl-C, or ``kill -INT`` to the driver alone): the driver starts no more runs and hands
the signal to its workers (:func:`interrupt`); each run in flight saves its checkpoint and stops
``preempted`` as ``train.py`` does, printing the run's own resume command into its log, so the
driver's command, run again, resumes them. An idle worker ignores SIGINT.

Why a process pool and not hydra-joblib-launcher: joblib's loky workers are reusable too, but the
launcher hands Hydra a whole sweep at once and a worker that dies raises
``TerminatedWorkerError`` out of ``joblib.Parallel``, ending the sweep and losing every other
run's outcome; the stages here are made of many separately logged calls that must share workers
across calls (the regime map's batches, the tuned comparisons' one-run calls), which a launcher
that lives inside one ``train.py -m`` cannot do. It is not a dependency of the suite either.

The cluster route is unchanged: overrides that choose a launcher (``hydra/launcher=slurm``) go
through ``train.py -m`` (``torch_clip.suite.experiments.sweeps.run_stage``); workers are for
local runs only.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch_clip.suite.paths import ROOT

#: Hydra's compose state is global: one thread of the driver at a time may compose
HYDRA_STATE = threading.Lock()

#: spawn, not fork: a worker must not inherit the driver's threads or a half-held lock
CONTEXT = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class RunSpec:
    """One run: its ``train.py`` overrides, the log its output is appended to, its directory."""

    overrides: tuple[str, ...]
    log: Path
    cwd: Path = ROOT


def uses_launcher(overrides: Sequence[str]) -> bool:
    """Whether ``overrides`` choose a Hydra launcher (a cluster): those runs stay ``train.py -m``."""
    return any(o.lstrip("+~").startswith("hydra/launcher=") for o in overrides)


def expand(overrides: Sequence[str]) -> list[list[str]]:
    """The runs of ``train.py -m <overrides>``, each as its own override list, in the order and
    form of Hydra's basic sweeper (values of ``a=x,y`` one by one; a config's own
    ``hydra.sweeper.params`` first), so each run's ``hydra.overrides.task`` matches ``-m``'s."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = parser.parse_overrides(list(overrides))
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    params = _sweeper_params(fixed)
    if params:
        parsed = parser.parse_overrides([f"{k}={v}" for k, v in params.items()]) + parsed
    return BasicSweeper.split_arguments(parsed, None)[0]


def _sweeper_params(overrides: list[str]) -> dict[str, str]:
    from hydra import compose, initialize_config_dir

    with HYDRA_STATE, initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    return dict(cfg.hydra.sweeper.get("params") or {})


# ----------------------------------------------------------------------------- in a worker

_WORKER: dict[str, Any] = {}


def warm() -> None:
    """Worker start-up: import torch and ``train.py`` (with the suite) once, and note the
    process-wide torch settings a run may change."""
    import torch

    _WORKER.update(train=load_train(), threads=torch.get_num_threads())
    # idle, a worker ignores SIGINT (a Ctrl-C reaches the whole process group): it must not die
    # between runs; during a run the trainer's guard turns it into a checkpoint and a clean stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def load_train() -> Any:
    """``train.py`` as a module (it is a script at the repository's root, not in the package)."""
    spec = importlib.util.spec_from_file_location("train", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_run(overrides: Sequence[str]) -> tuple[Any, Path]:
    """The run's full config (Hydra's part set up as ``run_job`` does in a multirun) and its
    directory; leaves it in ``HydraConfig`` for ``train.run``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict, read_write

    import torch_clip.suite.naming  # noqa: F401  registers the run_dir resolver of conf/

    GlobalHydra.instance().clear()
    conf = str(ROOT / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3", job_name="train"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN  # a failed run is recorded, not an exit
        cfg.hydra.job.id = cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    run_dir = Path(OmegaConf.select(cfg, "hydra.sweep.dir")) / str(
        OmegaConf.select(cfg, "hydra.sweep.subdir")
    )
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = str(run_dir.absolute())
    HydraConfig.instance().set_config(cfg)
    return cfg, run_dir


def execute(spec: RunSpec) -> dict[str, Any]:
    """Run ``spec`` in this worker; its outcome as :func:`outcome` has it."""
    if not _WORKER:
        warm()
    started = time.perf_counter()
    spec.log.parent.mkdir(parents=True, exist_ok=True)
    old_cwd = os.getcwd()
    run_dir, error = None, None
    with (
        open(spec.log, "a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        print("$ python train.py " + " ".join(spec.overrides), flush=True)
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.chdir(spec.cwd)
            cfg, run_dir = compose_run(spec.overrides)
            _run(cfg, run_dir)
        except BaseException as exc:  # SystemExit too: a refused run must not end the worker
            error = f"{type(exc).__name__}: {exc}"
            print(f"torch-clip: run failed: {error}", flush=True)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            _reset(old_cwd)
    return outcome(spec, run_dir, error, time.perf_counter() - started)


def run_main(module: str, argv: tuple[str, ...], cwd: str) -> int:
    """``module.main(argv)`` in this worker, from ``cwd``; its exit status as its process's would
    be. Matplotlib's settings are put back and its figures closed after, so that one figure
    script leaves nothing for the next."""
    import matplotlib

    if not _WORKER:
        warm()
    old_cwd = os.getcwd()
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(cwd)
        with matplotlib.rc_context():
            return call_here(module, argv)
    finally:
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _reset(old_cwd)


def call_here(module: str, argv: Sequence[str]) -> int:
    """``module.main(argv)`` in this thread; its exit status as ``python -m module`` would end
    with (a ``SystemExit`` message printed, an exception's traceback, 130 on SIGINT)."""
    try:
        return exit_status(importlib.import_module(module).main(list(argv)))
    except SystemExit as exc:
        return exit_status(exc.code)
    except KeyboardInterrupt:
        return 130
    except Exception:
        traceback.print_exc()
        return 1


def exit_status(code: object) -> int:
    """The status of ``sys.exit(code)``: 0 for ``None``, the integer, 1 for a message (printed)."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr, flush=True)
    return 1


def _run(cfg: Any, run_dir: Path) -> None:
    from omegaconf import open_dict

    from torch_clip.suite.results_root import check_results_root

    task_cfg = copy.deepcopy(cfg)
    with open_dict(task_cfg):
        del task_cfg["hydra"]
    check_results_root(task_cfg)  # conf/config.yaml's callback, as Hydra calls it
    run_dir.mkdir(parents=True, exist_ok=True)
    _WORKER["train"].run(task_cfg)


def _reset(cwd: str) -> None:
    """Put back what a run may change for the next one in this worker."""
    import torch
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    os.chdir(cwd)
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()
    torch.set_num_threads(_WORKER["threads"])
    torch.use_deterministic_algorithms(False)


def outcome(spec: RunSpec, run_dir: Path | None, error: str | None, seconds: float) -> dict:
    """``{"overrides", "log", "run_dir", "status", "error", "seconds"}``: the status is the run's summary's
    (``completed``, ``failed``, ...), ``failed`` when it raised before writing one, ``crashed``
    when its worker died."""
    summary = {}
    if run_dir is not None and (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
    status = summary.get("status") or ("failed" if error or run_dir is None else "missing")
    return {"overrides": list(spec.overrides), "log": spec.log, "run_dir": run_dir,
            "status": status, "error": error or summary.get("error"), "seconds": seconds}  # fmt: skip


# ----------------------------------------------------------------------------- in the driver

_POOL: dict[str, Any] = {"pool": None, "width": 0}
_POOL_LOCK = threading.Lock()


def shared_pool(width: int) -> ProcessPoolExecutor:
    """The driver's pool of ``width`` workers or more, started on first use and kept: every stage
    of a driver reuses its warm workers."""
    with _POOL_LOCK:
        if _POOL["pool"] is None or _POOL["width"] < width:
            if _POOL["pool"] is not None:
                _POOL["pool"].shutdown(wait=False)  # runs in flight on it still finish
            _POOL.update(pool=new_pool(width), width=width)
        return _POOL["pool"]


def new_pool(width: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=width, mp_context=CONTEXT, initializer=warm)


def discard(pool: ProcessPoolExecutor) -> None:
    """Drop a broken ``pool``: the next :func:`shared_pool` starts a new one."""
    with _POOL_LOCK:
        if _POOL["pool"] is pool:
            _POOL.update(pool=None, width=0)
    pool.shutdown(wait=False, cancel_futures=True)


def run_local(
    specs: Sequence[RunSpec],
    workers: int,
    slots: threading.Semaphore | None = None,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``specs`` in the shared pool, ``workers`` at once (and no more than ``slots`` allows
    when stages share it); every run's :func:`outcome`, in order of completion. A worker that
    dies costs its run (``crashed``) and nothing else."""
    results: list[dict[str, Any]] = []

    def done(result: dict[str, Any]) -> None:
        results.append(result)
        if report is not None:
            report(result)

    queue = list(specs)
    while queue:
        pool = shared_pool(workers)
        broken = _drain(pool, queue, workers, slots, done)
        if broken:
            discard(pool)
            for spec in broken:
                done(_alone(spec))
    return results


def _drain(pool, queue: list[RunSpec], width: int, slots, done) -> list[RunSpec]:
    """Submit from ``queue`` while fewer than ``width`` run (none once :func:`interrupt` was
    called); the runs in flight when the pool broke (none if it did not)."""
    inflight: dict[Future, RunSpec] = {}
    broken: list[RunSpec] = []
    while (queue and not broken and not STOP.is_set()) or inflight:
        while queue and not broken and not STOP.is_set() and len(inflight) < width:
            # with runs in flight, never block on a slot: their slots come back only once this
            # thread collects them below (blocking here deadlocked stages that share slots)
            if slots is not None and not slots.acquire(blocking=not inflight):
                break
            if STOP.is_set():  # interrupted while this stage waited for the slot
                if slots is not None:
                    slots.release()
                break
            spec = queue.pop(0)
            try:
                inflight[pool.submit(execute, spec)] = spec
            except (BrokenProcessPool, RuntimeError):  # broken, or shut down by another stage
                broken.append(spec)
                if slots is not None:
                    slots.release()
        if not inflight:
            break
        try:
            finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
        except KeyboardInterrupt:  # the driver's main thread waits here: stop, collect in flight
            interrupt()
            continue
        for future in finished:
            spec = inflight.pop(future)
            if slots is not None:
                slots.release()
            try:
                done(future.result())
            except BrokenProcessPool:
                broken.append(spec)
    if STOP.is_set():
        raise KeyboardInterrupt("sweep interrupted; rerunning it resumes its runs")
    return broken


#: set by :func:`interrupt`: the driver's pool takes no more runs
STOP = threading.Event()


def interrupt() -> None:
    """Stop the driver's sweeps after SIGINT: no run starts any more, and the workers get the
    signal too (a ``kill -INT`` reaches the driver alone), so each run in flight saves a
    checkpoint and stops as ``train.py`` does (status ``preempted``, a resume hint in its log).
    A driver whose main thread does not wait in :func:`run_local` calls it on KeyboardInterrupt."""
    STOP.set()
    with _POOL_LOCK:
        pool = _POOL["pool"]
    processes = getattr(pool, "_processes", None) or {}  # no public API lists an executor's workers
    for process in list(processes.values()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGINT)


def call_main(module: str, argv: Sequence[str]) -> int:
    """``module.main(argv)`` in one of the driver's workers (its pool, or one worker when it has
    none yet): a probe or a figure script without a process start. Its exit status; 130 once
    :func:`interrupt` was called, 1 if it killed its worker."""
    if STOP.is_set():
        return 130
    pool = shared_pool(1)
    try:
        return pool.submit(run_main, module, tuple(argv), os.getcwd()).result()
    except BrokenProcessPool:
        discard(pool)
        print(f"{module}: its worker process died (a crash, os._exit or a signal)",
              file=sys.stderr, flush=True)  # fmt: skip
        return 1


def _alone(spec: RunSpec) -> dict[str, Any]:
    """``spec`` in a fresh pool of its own: a run that kills this worker too is the culprit."""
    with new_pool(1) as pool:
        try:
            return pool.submit(execute, spec).result()
        except BrokenProcessPool:
            error = "its worker process died (a crash, os._exit or a signal)"
            return outcome(spec, None, error, 0.0) | {"status": "crashed"}
