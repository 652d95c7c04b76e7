"""Tail index of the gradient noise over training: a noise probe at initialisation, mid-run and
at the end of one run per task, and the figure of the indices against the step.

    python scripts/tail_over_training.py                      # the README's tasks
    python scripts/tail_over_training.py --tasks cola reddit --seeds 0
    python scripts/tail_over_training.py --quick              # tiny budgets: the pipeline
    python scripts/tail_over_training.py --figures-only
    python scripts/tail_over_training.py --tasks cola --root results/tail_over_training_cola \
        --out results/readme/figures/cola_tail_over_training \
        -- step_rule.lr=1e-4 task.pooling=mean trainer.max_steps=534   # a run that learns

Per task and seed (``--seeds``, 0-2 by default: the bootstrap interval of one probe covers the
resampling of its mini-batches, not the run, and runs of one recipe differ by more), the run is
the task's own recipe (``conf/task/<task>.yaml``: its optimizer, learning
rate and budget; real CoLA from ``../shared/data/cola`` when present, never required), changed by
the ``train.py`` overrides after ``--``; give such a run its own ``--root``, which holds one run
per task. Keep the scheduler constant: the run is made in two calls (below), and a schedule that
depends on ``trainer.max_steps`` would differ between them.

1. ``train.py`` to half the budget, keeping its final checkpoint (both ``train.py`` runs execute
   in a persistent worker, ``local_runs``, with their output in ``<root>/logs/train.log``);
2. ``noise_probe.py --at start`` and ``--at end`` on that run (initialisation and mid-run);
3. ``train.py`` again with the whole budget and ``trainer.extend=true``, which continues the run
   from its checkpoint (with the constant scheduler: the uninterrupted run);
4. ``noise_probe.py --at end`` (the end).

A finished step is skipped, so an interrupted call resumes. Runs go to
``results/tail_over_training/<task>/<run>/seed<k>`` (not committed), the figure to
``results/readme/figures/tail_over_training.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch_clip.suite import registry
from torch_clip.suite.experiments import local_runs, sweeps
from torch_clip.suite.paths import ROOT

RESULTS = ROOT / "results" / "tail_over_training"
#: mini-batches of a probe: its noise sample and the reference gradient's average
PROBE = ["--batches", "100", "--reference-batches", "64"]
SEEDS = (0, 1, 2)


def task_overrides(task: str, quick: bool, extra: Sequence[str] = ()) -> list[str]:
    """The task, shrunk for ``--quick``, on real CoLA when this machine has it, then ``extra``."""
    over = [f"task={task}", *sweeps.quick_task_overrides(task, quick, trainer=False)]
    if quick:
        over.append("trainer.log_every=1")
    return [*over, *sweeps.shared_data_overrides(task, quick, extra), *extra]


def budget(overrides: list[str], quick: bool) -> tuple[int, int]:
    """(mid, end) steps: the task's own budget and its half, on a logging-window boundary."""
    from torch_clip.suite.experiments.noise_probe import _compose

    cfg = _compose(overrides)
    end = 8 if quick else int(cfg.trainer.max_steps)
    window = int(cfg.trainer.log_every)
    return max(window, end // 2 // window * window), end


def run_dir_of(root: Path, task: str, seed: int) -> Path | None:
    """The one run directory of ``task`` and ``seed`` under ``root`` (None before the first
    stage)."""
    found = sorted((root / task).glob(f"*/seed{seed}"))
    if len(found) > 1:
        raise SystemExit(
            f"{root / task} holds {len(found)} runs of seed {seed}; expected one (one --root "
            f"per recipe): {found}"
        )
    return found[0] if found else None


def _steps(run: Path) -> int:
    from torch_clip.suite.records import read_json

    summary = read_json(run / "summary.json") or {}
    return int(summary.get("steps") or 0) if summary.get("status") == "completed" else 0


def train(overrides: list[str], root: Path, steps: int, checkpoint: int, extend: bool) -> int:
    """The ``train.py`` run in the driver's persistent worker (``local_runs``); its output goes to
    ``<root>/logs/train.log``. 0 when it completed."""
    args = (f"results_root={root.parent}", f"experiment_name={root.name}", *overrides,
            f"trainer.max_steps={steps}", f"trainer.checkpoint_every={checkpoint}",
            "trainer.progress=false", f"trainer.extend={str(extend).lower()}")  # fmt: skip
    log = root / "logs" / "train.log"
    print(f"$ python train.py {' '.join(args)}  (output in {log})", flush=True)
    (result,) = local_runs.run_local([local_runs.RunSpec(args, log)], workers=1)
    if result["status"] != "completed":
        print(f"  run {result['status']}: {result['error']}", flush=True)
    return 0 if result["status"] == "completed" else 1


def probe(run: Path, at: str, out_name: str, quick: bool) -> int:
    """Probe ``run`` at ``start`` or at its checkpoint, unless that probe exists."""
    if (run / out_name / "noise_probe.json").exists():
        return 0
    args = [
        "scripts/noise_probe.py",
        str(run),
        "--at",
        at,
        *(sweeps.QUICK_PROBE if quick else PROBE),
    ]
    return sweeps.call(args)


def run_task(task: str, seed: int, root: Path, quick: bool, extra: list[str]) -> int:
    overrides = [*task_overrides(task, quick, extra), f"seed={seed}"]
    mid, end = budget(overrides, quick)
    run = run_dir_of(root, task, seed)
    code = 0
    if run is None or _steps(run) < mid:  # an extended run has passed the mid-run probe
        code = train(overrides, root, mid, mid, extend=False)
        run = run_dir_of(root, task, seed)
    if run is None or not (run / "config.yaml").exists():
        return code or 1
    code |= probe(run, "start", "noise_probe_start", quick)
    code |= probe(run, "end", f"noise_probe_step{mid}", quick)
    code |= train(overrides, root, end, mid, extend=True)
    return code | probe(run, "end", f"noise_probe_step{end}", quick)


def main(argv: list[str] | None = None) -> int:
    parser = sweeps.sweep_parser(__doc__, f"run directory (default {RESULTS})", jobs=1)
    parser.add_argument("--tasks", nargs="+", choices=registry.tasks(),
                        default=list(registry.evidence_tasks()), help="default: the README's")  # fmt: skip
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=None,
        help=f"run seeds (default {' '.join(map(str, SEEDS))}; with --quick 0)",
    )  # fmt: skip
    args = sweeps.parse_sweep_args(parser, argv)
    root = args.root or (RESULTS.with_name(RESULTS.name + "_quick") if args.quick else RESULTS)
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else list(SEEDS))
    code = 0
    if not args.figures_only:
        for task in args.tasks:
            for seed in seeds:
                print(f"[{task}, seed {seed}] tail index over training", flush=True)
                code |= run_task(task, seed, root, args.quick, list(args.overrides))
    runs = [
        str(run)
        for task in args.tasks
        for seed in seeds
        if (run := run_dir_of(root, task, seed)) is not None
    ]
    if runs:
        out = args.out / "tail_over_training.png"
        code |= sweeps.call(["scripts/plot_heavy_tail.py", *runs, "--over-training",
                             "--out", str(out)])  # fmt: skip
    return code


if __name__ == "__main__":
    raise SystemExit(main())
