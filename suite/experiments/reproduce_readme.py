"""Regenerate every README figure and table with the current code, in one resumable command.

    python scripts/reproduce_readme.py                    # everything (hours on 2 CPU cores)
    python scripts/reproduce_readme.py --quick            # the whole pipeline on tiny budgets
    python scripts/reproduce_readme.py --parts regime_map # one part: regime_map, tuned, noise
    python scripts/reproduce_readme.py --figures-only     # redraw from the runs that exist
    python scripts/reproduce_readme.py --mpnet <dir>      # also CoLA with MPNet-base from <dir>
    python scripts/reproduce_readme.py --jobs 64 -- hydra/launcher=slurm hydra.launcher.partition=cpu

The overrides after ``--`` go to every ``train.py`` run of every part: with a submitit launcher
(``hydra/launcher=slurm``, ``conf/hydra/launcher/slurm.yaml``) each ``train.py -m`` call of the
sweeps becomes a cluster job (an array for the regime map's batched calls) that one of ``--jobs``
workers waits for; the runs of ``tail_over_training.py`` (single runs between probes) and the
noise probes stay on this machine. A run's directory does not depend on the launcher, so runs made
locally are skipped on the cluster and the other way round.

The parts:

* ``regime_map`` — ``scripts/regime_map.py``: the heavy-tail regime maps, noise in the gradient
  and noise in the labels (``regime_map/``: ``gradient_map.png``, ``labels_map.png``, their
  performance profiles and tables; docs/evidence/regime-map.md).
* ``tuned`` — ``scripts/tuned_comparison.py``: every method on one learning-rate grid on the four
  tasks (``<task>_comparison.png``, ``<task>_table.md``, ``<task>_clipping.png``,
  ``performance_profile.png``, ``tuned_choices.md``), the Reddit proxy's comparison of AGC's clip
  factors (``reddit_agc/``), CoLA's comparison of the per-unit rules (``cola_per_unit/``) and the
  gradient-norm distributions of the unclipped SGD runs that placed the λ grids
  (``heavy_tail.png``). With ``--mpnet <model dir>`` (all-mpnet-base-v2, which the project does
  not install: README, "A larger encoder"), also the ``cola_mpnet`` comparison (``cola_mpnet/``); without it those committed
  figures are left as they are.
* ``noise`` — ``scripts/noise_probe.py`` at initialisation on every task, and the noise figure;
  ``scripts/tail_over_training.py``: the probes at the start, middle and end of three runs (seeds
  0-2) per task (``tail_over_training.png``; with ``--quick`` one run, on reddit only).

Runs go under ``results/`` (not committed); every finished run is skipped and an interrupted one
resumes from its checkpoint, so rerunning the same command continues where it stopped. Figures
and tables go to ``results/readme/figures/`` (``--out``) and carry the commit and command.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from torch_clip.suite import registry
from torch_clip.suite.experiments import local_runs, sweeps, tuned_comparison
from torch_clip.suite.paths import ROOT
from torch_clip.suite.run_reader import Run, discover_runs

PARTS = ("regime_map", "tuned", "noise")
FIGURES = sweeps.FIGURES


def variants_of(tasks: list[str]) -> list[str]:
    """The variants (``conf/evidence.yaml``) of ``tasks``, run with the task's own; they need
    nothing it does not (cola_mpnet, which needs its model, is no variant there: ``--mpnet``)."""
    return [v for v in registry.evidence()["variants"]
            if registry.comparison(v).get("task", v) in tasks]  # fmt: skip


def regime_map(args: argparse.Namespace) -> int:
    flags = ["--out", str(args.out), "--jobs", str(args.jobs)]
    flags += ["--quick"] * args.quick + ["--figures-only"] * args.figures_only
    if args.root:
        flags += ["--root", str(args.root / "regime_map")]
    return sweeps.call(["scripts/regime_map.py", *flags, "--", *args.overrides])


def tuned(args: argparse.Namespace) -> int:
    variants = variants_of(args.tasks)
    flags = ["--out", str(args.out), "--tasks", *args.tasks, *variants, "--jobs", str(args.jobs)]
    flags += ["--quick"] * args.quick + ["--figures-only"] * args.figures_only
    root = (
        args.root / "tuned"
        if args.root
        else ROOT / "results" / ("tuned_quick" if args.quick else "tuned")
    )
    code = sweeps.call(["scripts/tuned_comparison.py", *flags, "--root", str(root), "--",
                        *args.overrides])  # fmt: skip
    if args.mpnet and not args.quick and "cola" in args.tasks:
        variant = ["--out", str(args.out), "--tasks", "cola_mpnet", "--jobs", str(args.jobs)]
        variant += ["--figures-only"] * args.figures_only
        code |= sweeps.call(["scripts/tuned_comparison.py", *variant, "--root", str(root), "--",
                             f"task.model_name_or_path={args.mpnet}", *args.overrides])  # fmt: skip
    sgd = [str(run.dir) for t in args.tasks for run in measuring_run(root, t)]
    if sgd:  # the gradient-norm distribution along the unclipped SGD run that placed each λ grid
        code |= sweeps.call(
            ["scripts/plot_heavy_tail.py", *sgd, "--out", str(args.out / "heavy_tail.png")]
        )
    return code


def measuring_run(root: Path, task: str) -> list[Run]:
    """The unclipped SGD run that placed ``task``'s λ grid (none before it ran): the measurement
    run of the task's comparison, else of a variant of it (``<root>/<variant>/tune/<task>``),
    else, with ``--quick``'s one setting, SGD's first report run, which measured there."""
    tune = [root / "tune" / task, *sorted(root.glob(f"*/tune/{task}"))]
    runs = discover_runs([d for d in tune if d.exists()])
    found = [r for r in runs if r.config.get("label") == tuned_comparison.MEASURE and r.seed == 0]
    if not found and (root / "report" / task).exists():
        found = [r for r in discover_runs([root / "report" / task]) if r.method == "SGD"]
    return found[:1]


def noise(args: argparse.Namespace) -> int:
    root = (
        args.root / "noise"
        if args.root
        else ROOT / "results" / ("noise_quick" if args.quick else "noise")
    )

    def probe(task: str) -> int:
        out = root / task
        if args.figures_only or (out / "noise_probe.json").exists():
            return 0
        budget = sweeps.QUICK_PROBE if args.quick else []
        overrides = [f"task={task}", *sweeps.quick_task_overrides(task, args.quick, trainer=False),
                     *sweeps.shared_data_overrides(task, args.quick)]  # fmt: skip
        return sweeps.call(["scripts/noise_probe.py", "--overrides", *overrides, "--at", "start",
                            *budget, "--out", str(out)])  # fmt: skip

    # the probes at initialisation and the run of tail_over_training share nothing: side by side
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        over_training = pool.submit(tail_over_training, args)
        code = 0
        for c in pool.map(probe, args.tasks):
            code |= c
        code |= over_training.result()
    probes = [str(root / t) for t in args.tasks if (root / t / "noise_probe.json").exists()]
    if probes:
        code |= sweeps.call(["scripts/plot_heavy_tail.py", *probes, "--out",
                             str(args.out / "noise_heavy_tail.png")])  # fmt: skip
    return code


def tail_over_training(args: argparse.Namespace) -> int:
    tasks = [t for t in args.tasks if t == "reddit" or not args.quick]  # quick: the cheapest
    if not tasks:
        return 0
    flags = [
        flag for flag, on in (("--quick", args.quick), ("--figures-only", args.figures_only)) if on
    ]
    if args.root:
        flags += ["--root", str(args.root / "tail_over_training")]
    return sweeps.call(["scripts/tail_over_training.py", "--tasks", *tasks, "--out", str(args.out),
                        *flags, "--", *args.overrides])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = sweeps.sweep_parser(__doc__, "put every run under this directory instead")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    tasks = registry.evidence_tasks()
    parser.add_argument("--tasks", nargs="+", default=list(tasks), choices=tasks)
    parser.add_argument("--mpnet", type=Path, metavar="DIR",
                        help="all-mpnet-base-v2 model directory: also run the cola_mpnet comparison")  # fmt: skip
    args = sweeps.parse_sweep_args(parser, argv)
    parts = {"regime_map": regime_map, "tuned": tuned, "noise": noise}

    def run_part(part: str) -> int:
        started = time.time()
        code = parts[part](args)
        print(f"[reproduce] {part}: exit {code} after {time.time() - started:.0f} s", flush=True)
        return code

    # The parts share nothing, so with --jobs > 1 they all run side by side in this process, and
    # their runs, probes and figures in its --jobs workers (sweeps.call): the machine stays busy
    # while one part waits on its slowest run, and nothing imports torch twice.
    local_runs.shared_pool(args.jobs)  # one pool of --jobs workers for every part
    with ThreadPoolExecutor(max_workers=len(args.parts) if args.jobs > 1 else 1) as pool:
        try:
            codes = dict(zip(args.parts, pool.map(run_part, args.parts)))
        except KeyboardInterrupt:  # the parts stop after their runs in flight
            local_runs.interrupt()
            raise
    failed = [part for part, code in codes.items() if code]
    if failed:
        print(
            f"[reproduce] failed parts: {', '.join(failed)} (see the logs above)", file=sys.stderr
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
