"""The tuning protocol shared by ``regime_map.py`` and ``tuned_comparison.py``.

1. **Measure** the unclipped gradient norm of a task (``torch.optim.SGD``, seed 0, at the grid's
   smallest learning rate unless the task names another) so clipping levels are placed on its
   quantiles, not copied constants.
2. **Tune** every method, baselines included, on one shared learning-rate grid (``step_rule.lr``)
   on the tuning seeds; a setting scores the median over them, a run that diverged or failed
   scores worst (``torch_clip.suite.protocol``, the protocol written once).
3. **Report** each method's best setting on fresh seeds, so the reported numbers are not the ones
   the choice was made on; mean and a 90% Student-t interval over those seeds.

Each stage is a list of ``train.py -m`` calls (the regime map sweeps many short runs per call,
the tuned comparisons make one run per call). Locally their runs execute in persistent worker
processes that import torch and the suite once (``local_runs``); with a launcher override
(``hydra/launcher=slurm``) each call is a ``train.py -m`` process that submits its runs. A
completed run is skipped, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import math
import re
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from torch_clip.suite import protocol, registry
from torch_clip.suite.experiments import local_runs
from torch_clip.suite.paths import ROOT
from torch_clip.suite.run_reader import Run

FIGURES = ROOT / "results" / "readme" / "figures"

Job = tuple[list[str], str]  # (train.py overrides, log name)
#: Hydra's compose state is global: one worker at a time may compose a config to check it
_HYDRA_STATE = local_runs.HYDRA_STATE

#: --quick: a few steps of a task shrunk by its smoke overrides, through the same stages as the
#: full budget
QUICK_TRAINER = ["trainer.max_steps=4", "trainer.eval_every=2", "trainer.log_every=1"]

#: --quick: the noise probe's budget (mini-batches of its noise sample and of the reference
#: gradient, and bootstrap resamples: 200 took a third of a quick ImageNet probe's CPU time)
QUICK_PROBE = ["--batches", "8", "--reference-batches", "4", "--bootstrap", "20"]


def quick_task_overrides(task: str, quick: bool, trainer: bool = True) -> list[str]:
    """The overrides that shrink ``task`` for ``--quick`` (none without it): its smoke overrides
    (``conf/task/<task>.yaml``'s ``smoke``), and a few steps unless ``trainer`` is false."""
    if not quick:
        return []
    return (QUICK_TRAINER if trainer else []) + registry.smoke(task)


#: A real CoLA copy for benchmarking on this project's machines; the suite never requires it.
SHARED_COLA = ROOT.parent / "shared" / "data" / "cola"


def shared_data_overrides(task: str, quick: bool, given: Sequence[str] = ()) -> list[str]:
    """``task.data_root`` of the real data this machine holds for ``task`` (CoLA), unless
    ``--quick`` (the embedded proxy) or the overrides ``given`` name a data root already."""
    if quick or any(o.startswith("task.data_root") for o in given):
        return []
    if task == "cola" and (SHARED_COLA / "train.tsv").exists():
        return [f"task.data_root={SHARED_COLA}"]
    return []


def run_stage(
    jobs: Iterable[Job],
    root: Path,
    workers: int,
    experiment: str,
    extra: Sequence[str] = (),
    slots: threading.Semaphore | None = None,
) -> None:
    """Run every job (``train.py -m experiment=<experiment> <overrides> <extra>``), ``workers`` at
    once, and no more than ``slots`` allows when stages run side by side and share it. Locally the
    runs of all jobs execute in the driver's persistent workers (``local_runs``: no process start
    per run); a job whose overrides or ``extra`` choose a launcher (``hydra/launcher=slurm``) is a
    ``train.py -m`` call, a cluster job (array) that one thread waits for, so ``workers`` is the
    number of such jobs queued at once."""
    jobs = list(jobs)
    local = [job for job in jobs if not local_runs.uses_launcher([*job[0], *extra])]
    if local:
        run_stage_locally(local, root, workers, experiment, extra, slots)
    launched = [job for job in jobs if job not in local]
    if not launched:
        return

    def one(job: Job) -> None:
        overrides, name = job
        args = stage_overrides(experiment, root, overrides, extra)
        if finished(args):  # in the worker: the first runs start without waiting
            print(f"  {name}: already completed", flush=True)
            return
        cmd = [sys.executable, "train.py", "-m", *args]
        log = root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.time()
        with slots or contextlib.nullcontext(), open(log, "a") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            code = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        print(f"  {name}: exit {code} after {time.time() - started:.0f} s", flush=True)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, launched))


def stage_overrides(experiment: str, root: Path, overrides: Sequence[str], extra: Sequence[str]):
    return [f"experiment={experiment}", f"results_root={root}", *overrides, *extra]


def run_stage_locally(
    jobs: list[Job], root: Path, workers: int, experiment: str, extra: Sequence[str], slots
) -> None:
    """:func:`run_stage` without a launcher: each job's runs (its sweep expanded as Hydra's
    basic sweeper would) in the persistent workers, each run's output appended to its job's log;
    one line per job when its last run ends."""
    specs, left, started = [], {}, time.time()
    for overrides, name in jobs:
        runs = local_runs.expand(stage_overrides(experiment, root, overrides, extra))
        log = root / "logs" / f"{name}.log"
        specs += [local_runs.RunSpec(tuple(run), log) for run in runs]
        left[log] = [name, len(runs), 0]

    def report(result: dict[str, Any]) -> None:
        entry = left[result["log"]]
        entry[1] -= 1
        entry[2] += result["status"] not in ("completed", "skipped")
        if result["status"] == "crashed":
            print(f"  {entry[0]}: a run crashed: {result['overrides']}", flush=True)
        if entry[1] == 0:
            print(f"  {entry[0]}: {entry[2]} run(s) not completed; {time.time() - started:.0f} s",
                  flush=True)  # fmt: skip

    local_runs.run_local(specs, workers, slots, report)


def finished(overrides: Sequence[str]) -> bool:
    """Whether ``train.py -m <overrides>`` would skip its one run as completed: train.py's own
    check (:func:`torch_clip.suite.trainer.completed_summary` on the directory Hydra would give the run),
    made without starting a process, which costs seconds of imports per run when a sweep resumes.
    What this cannot decide (values to sweep, on the command line or in the config's
    ``hydra.sweeper.params``; a config that does not compose here; a finished run of another
    budget) is left to train.py, which runs it or says what is wrong."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    import torch_clip.suite.naming  # noqa: F401  (registers the run_dir resolver of the run directory)
    from torch_clip.suite.trainer import completed_summary

    with _HYDRA_STATE:
        try:
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
            if cfg.hydra.sweeper.get("params") or not cfg.trainer.get("resume", True):
                return False  # the config sweeps values itself (regime_map), or nothing is skipped
            HydraConfig.instance().set_config(cfg)  # the ${hydra:...} parts of the run directory
            run_dir = Path(cfg.hydra.sweep.dir) / cfg.hydra.sweep.subdir
            return completed_summary(run_dir, cfg) is not None
        except Exception:  # train.py decides, and reports any error in the run's own log
            return False
        finally:
            HydraConfig.instance().cfg = None


def sweep_parser(doc: str, root_help: str, jobs: int = 2) -> argparse.ArgumentParser:
    """The options every sweep script takes: ``--quick``, ``--figures-only``, ``--jobs``,
    ``--root`` (where runs go) and ``--out`` (where figures and tables go)."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny budgets: the whole pipeline")
    parser.add_argument("--figures-only", action="store_true", help="only redraw finished runs")
    parser.add_argument("--jobs", type=int, default=jobs, help="train.py processes at once")
    parser.add_argument("--root", type=Path, help=root_help)
    parser.add_argument("--out", type=Path, default=FIGURES, help="figure and table directory")
    parser.add_argument("overrides", nargs="*",
                        help="train.py overrides for every run, after --: a launcher "
                             "(hydra/launcher=slurm ...), a data root")  # fmt: skip
    return parser


def parse_sweep_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"Invalid --jobs: {args.jobs}; expected an integer >= 1")
    return args


#: the scripts whose ``main`` runs sweeps: :func:`call` runs them in the calling thread, so that
#: their runs share this process's workers; the other entry points of ``scripts/`` (a probe, a
#: figure) run in one of those workers
DRIVERS = ("regime_map.py", "tuned_comparison.py", "tail_over_training.py")


def call(script: list[str]) -> int:
    """``python <script> <args>`` without a process start: a thin entry point of ``scripts/``
    (``from <module> import main``) runs its module's ``main`` here (a driver) or in a worker
    (``local_runs.call_main``); any other script runs in a process of this interpreter, from
    the repository root. Its exit status."""
    print("$ python " + " ".join(script), flush=True)
    module = entry_module(ROOT / script[0])
    if module is None:
        return subprocess.call([sys.executable, *script], cwd=ROOT)
    if Path(script[0]).name in DRIVERS:
        return local_runs.call_here(module, script[1:])
    return local_runs.call_main(module, script[1:])


def entry_module(script: Path) -> str | None:
    """The module a thin entry point runs (its ``from torch_clip.<module> import main``)."""
    if not script.is_file():
        return None
    found = re.search(r"^from (torch_clip(?:\.\w+)+) import main$", script.read_text(), re.M)
    return found.group(1) if found else None


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """``rows`` (dicts) as a CSV file with a header: every key of any row, in first-seen order
    (rows of an older table lack the newer columns, left empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(rows)


def score(values: list[float], lower_is_better: bool) -> float:
    """The protocol's score of a setting (``torch_clip.suite.protocol.robust_score``): the median over
    seeds, oriented so that smaller is better; a diverged or failed seed counts worst (+inf)."""
    return protocol.robust_score(values, lower_is_better)


def best_settings(
    runs: Iterable[Run],
    method_of: Callable[[Run], str],
    seeds: Iterable[int],
    metric: str,
    lower_is_better: bool,
    setting_of: Callable[[Run], Hashable] = lambda r: (r.lr, r.clipping_level),
    tie_break: str | None = "loss",
) -> dict[str, dict[str, Any]]:
    """Per method: the setting with the best median final ``metric`` over all of ``seeds``
    (``torch_clip.suite.protocol.select``: a failed seed counts worst, a setting missing a seed is no
    candidate), as ``{"setting", "score", "tie", "tied", "rule"}``.

    Settings whose medians are equal (MCC 0 on a majority-class plateau, say) are told apart by
    the lower median final ``tie_break`` metric (the validation loss), then by the order in which
    ``runs`` first show them.
    """
    seeds = sorted(set(seeds))
    values: dict[str, dict[Hashable, dict[int, float]]] = defaultdict(dict)
    second: dict[str, dict[Hashable, dict[int, float]]] = defaultdict(dict)
    for run in runs:
        if run.seed in seeds:
            method, setting = method_of(run), setting_of(run)
            values[method].setdefault(setting, {})[run.seed] = run.final(metric)
            second[method].setdefault(setting, {})[run.seed] = (
                run.final(tie_break) if tie_break else 0.0
            )
    best: dict[str, dict[str, Any]] = {}
    for method, results in values.items():
        chosen = protocol.select(results, seeds, lower_is_better, second[method])
        if chosen is not None:
            tie = protocol.robust_score(list(second[method][chosen.setting].values()), True)
            best[method] = {"setting": chosen.setting, "score": chosen.score, "tie": tie,
                            "tied": chosen.tied, "rule": chosen.rule}  # fmt: skip
    return best


def interval90(values: list[float]) -> tuple[float, float, float]:
    """Mean and a 90% Student-t interval over seeds (NaN when a seed diverged)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if v.size == 0 or not np.all(np.isfinite(v)):
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.95, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


@functools.cache
def threshold_units() -> dict[str, str]:
    """The fixed-threshold clipping types (a level λ that clips) and the unit each one bounds
    (``global``, ``tensor``, ``coordinate``), from clip_core's rule table. A global level λ becomes
    an even share per unit (λ/√T over T tensors, λ/√N over N coordinates), so that all units at
    their threshold make an update of norm λ, as the global rule's does."""
    from clip_core import PRESET_RULES, FixedThreshold, Never  # torch: only when λ is placed

    return {name: rule.granularity for name, rule in PRESET_RULES.items()
            if isinstance(rule.threshold, FixedThreshold) and not isinstance(rule.decision, Never)}  # fmt: skip


#: the run summary's key that counts each unit of a model
UNIT_COUNTS = {"tensor": "num_parameter_tensors", "coordinate": "num_parameters"}


def unit_share(clipping_type: str, counts: dict[str, int]) -> float:
    """The factor from a global λ to ``clipping_type``'s per-unit λ (:func:`threshold_units`), given
    the model's unit counts (a run summary, or any mapping with the ``UNIT_COUNTS`` keys)."""
    unit = threshold_units()[clipping_type]
    return 1.0 if unit == "global" else counts[UNIT_COUNTS[unit]] ** -0.5


def norm_quantiles(run: Run, quantiles: Iterable[float]) -> list[float]:
    """Quantiles of the global gradient norm along a (measurement) run, 4 significant digits."""
    norms = run.grad_norms()
    if norms is None:
        raise FileNotFoundError(f"{run.dir}: no grad_norms.npy to place λ on")
    norms = norms[np.isfinite(norms)]
    return [float(f"{v:.4g}") for v in np.quantile(norms, list(quantiles))]
