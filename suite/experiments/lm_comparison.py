"""The language-model comparison (``experiment=lm``): every method tuned and reported alike.

    python scripts/lm_comparison.py                      # bytes: measure, tune, report, draw
    python scripts/lm_comparison.py --figures-only       # tables and figures from the runs
    python scripts/lm_comparison.py --name lm_wordpiece -- task.tokenizer=minilm

The protocol is the suite's (``suite/experiments/sweeps.py``): unclipped SGD's run at ``measure_lr`` on
seed 0 measures the gradient norm; the fixed-threshold rules take λ at its ``lambda_quantile``
(an even share λ/√N per coordinate for ``coord_wise``), except a method marked ``fixed``, which
keeps its own λ (AdamW + norm at 1.0, the LM recipe); every method runs its family's
learning-rate grid (the same number of settings for all) on the tuning seeds, the setting with
the best median final metric over them is chosen (``torch_clip.suite.protocol.select``), and the choice
runs on fresh report seeds. Every run is labelled with its method. Runs go to ``--root``
(default ``outputs/lm``, gitignored); tables and figures to ``results/lm/``
(``suite/reports/lm_report.py``).

Only the learning rate is tuned here. ``scripts/tuned_comparison.py`` now takes this block's
grid families and ``fixed_level`` as well, with each method's second knob; this driver stays
until the LM comparison is rerun through it, so that the committed runs keep their directories.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from torch_clip.suite import registry
from torch_clip.suite.experiments import sweeps
from torch_clip.suite.paths import ROOT
from torch_clip.suite.run_reader import Run, read_runs

OUT = ROOT / "results" / "lm"


def default_root() -> Path:
    return ROOT / "outputs" / "lm"


def spec(experiment: str = "lm") -> dict[str, Any]:
    """The protocol ``conf/comparison/<experiment>.yaml``, checked: every method names a grid, all
    grids are one length."""
    c = registry.comparison(experiment)
    lengths = {name: len(grid) for name, grid in c["lr_grids"].items()}
    if len(set(lengths.values())) != 1:
        raise SystemExit(f"Invalid comparison.lr_grids: {lengths}; expected grids of one length")
    for name, m in c["methods"].items():
        if m["grid"] not in c["lr_grids"]:
            raise SystemExit(
                f"Invalid comparison.methods[{name!r}].grid: {m['grid']!r}; expected one of "
                f"{', '.join(c['lr_grids'])}"
            )
    if c["measure_lr"] not in c["lr_grids"][c["methods"]["SGD"]["grid"]]:
        raise SystemExit(f"Invalid comparison.measure_lr: {c['measure_lr']}; not in SGD's grid")
    return c


def overrides(c, name: str, lr: float, seed: int, level: float | None, extra: list[str]):
    """One run's ``train.py`` overrides (its order names an unlabelled directory: keep it)."""
    over = [*c["methods"][name]["overrides"], f"step_rule.lr={lr}", f"seed={seed}"]
    over += [f"label='{name}'", *extra]
    return over if level is None else [*over, f"optimizer.clipping_level={level}"]


def levels(c: dict[str, Any], measured: Run) -> dict[str, float]:
    """λ of each method with a fixed threshold placed by the measurement run."""
    (level,) = sweeps.norm_quantiles(measured, [c["lambda_quantile"]])
    from torch_clip.suite.experiments.tuned_comparison import clipping_type

    placed = {}
    for name, m in c["methods"].items():
        kind = clipping_type(m["overrides"])
        if m.get("fixed") or kind not in sweeps.threshold_units():
            continue
        placed[name] = float(f"{level * sweeps.unit_share(kind, measured.summary):.4g}")
    return placed


def run_all(c: dict[str, Any], args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """Measure and tune SGD, tune the others at their λ, report every choice on fresh seeds."""
    root, experiment = args.root, args.experiment

    def stage(jobs: list[sweeps.Job], name: str) -> list[Run]:
        if not args.figures_only and jobs:
            jobs = [([f"experiment_name={name}", *o], f"{args.name}_{log}") for o, log in jobs]
            sweeps.run_stage(jobs, root, args.jobs, experiment)
        return read_runs(root / name / "lm") if (root / name / "lm").exists() else []

    def tune(names, placed):
        return [(overrides(c, n, lr, s, placed.get(n), extra), f"tune_{n}_lr{lr}_seed{s}")
                for s in c["tune_seeds"] for n in names
                for lr in c["lr_grids"][c["methods"][n]["grid"]]]  # fmt: skip

    runs = stage(tune(["SGD"], {}), "tune")
    of = method_label
    measured = [r for r in runs if of(r) == "SGD" and r.lr == c["measure_lr"] and r.seed == 0]
    if not measured:
        raise SystemExit(f"no measurement run (SGD, lr {c['measure_lr']}, seed 0) under {root}")
    placed = levels(c, measured[0])
    runs = stage(tune([n for n in c["methods"] if n != "SGD"], placed), "tune")
    best = sweeps.best_settings(runs, of, c["tune_seeds"], c["metric"], lower_is_better=False)
    jobs = [(overrides(c, n, b["setting"][0], s, placed.get(n), extra), f"report_{n}_seed{s}")
            for s in c["report_seeds"] for n, b in best.items()]  # fmt: skip
    reports = stage(jobs, "report")
    return {"tune": runs, "report": reports, "best": best, "placed": placed}


def method_label(run: Run) -> str:
    return str(run.config.get("label"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="lm",
                        help="the runs' conf/experiment/<name>.yaml and protocol conf/comparison/<name>.yaml")  # fmt: skip
    parser.add_argument("--name", default="lm", help="the comparison's name (its run folder)")
    parser.add_argument("--root", type=Path, default=None, help="where runs go")
    parser.add_argument("--out", type=Path, default=OUT, help="where tables and figures go")
    parser.add_argument("--jobs", type=int, default=4, help="runs at once (niced, they yield)")
    parser.add_argument("--figures-only", action="store_true", help="no runs, only drawing")
    parser.add_argument("--default-run", type=Path, help="a `train.py task=lm` run, for the cost")
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:split]), argv[split + 1 :]
    args.root = (args.root or default_root()) / args.name
    c = spec(args.experiment)
    result = run_all(c, args, extra)
    from torch_clip.suite.reports import lm_report

    out = args.out / args.name if args.name != "lm" else args.out
    lm_report.write_all(c, result, out, args.default_run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
