"""Tuned comparisons on the four tasks: every method on one learning-rate grid, λ from measured norms.

    python scripts/tuned_comparison.py --tasks reddit            # one task
    python scripts/tuned_comparison.py                           # all four (hours on a CPU)
    python scripts/tuned_comparison.py --quick                   # the pipeline on tiny budgets
    python scripts/tuned_comparison.py --tasks cola -- task.data_root=/data/CoLA
    python scripts/tuned_comparison.py --tasks cola_mpnet -- task.model_name_or_path=<dir>

Each comparison's ``conf/experiment/<name>.yaml`` holds its budget and a ``comparison`` block:
the metric, an absolute target, the learning-rate grid shared by all methods, the quantile of the
unclipped gradient norm that places λ, the tuning and report seeds and the methods (name → the
``train.py`` overrides). The global rules (``norm``, ``*_stoch_norm``) take λ at that quantile;
``layer_wise`` and ``coord_wise`` its even share per tensor (λ/√T) or per coordinate (λ/√N), T
and N counted in the measurement run's model; the other methods have no λ. The protocol is
``scripts/sweeps.py``'s: measure, tune, report on fresh seeds; the comparisons of one call run side
by side, sharing ``--jobs`` processes. Runs go to
``results/tuned/<stage>/<task>/…`` (not committed); the report runs are named by method, so
``plot_comparison.py`` draws them, into ``results/readme/figures/``.

The four task comparisons are named by their task. Another comparison of a task (``cola_mpnet``:
CoLA with a larger encoder; ``cola_per_unit``: CoLA's protocol for the per-unit rules;
``reddit_agc``: the Reddit proxy's protocol for AGC at four clip factors) names it in
``comparison.task`` and keeps its runs, figures and tables in a folder of its own name
(``results/tuned/cola_mpnet/``, ``results/readme/figures/cola_mpnet/``), so that they never mix
with the task's own comparison. Its block is read on its own (not through its ``defaults``), so it
repeats the task's keys; ``comparison.report_methods`` may narrow what it reports.
"""

from __future__ import annotations

import argparse
import csv
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from suite.run_reader import Run, discover_runs, read_runs

ROOT = Path(__file__).resolve().parents[1]

import sweeps  # noqa: E402
from provenance import stamp  # noqa: E402

TASKS = ("reddit", "imagenet", "voc", "cola")
#: comparisons of a task under other settings, run only when asked for (``--tasks cola_mpnet``)
VARIANTS = ("cola_mpnet", "cola_per_unit", "reddit_agc")
RESULTS = ROOT / "results" / "tuned"
OVERRIDES = OverridesParser.create()
_ABSENT = object()  # a key the run's config does not have
FIGURES = sweeps.FIGURES
#: A real CoLA copy for benchmarking on this project's machines; the suite never requires it.
SHARED_COLA = ROOT.parent / "shared" / "data" / "cola"


def spec(name: str) -> dict[str, Any]:
    """The ``comparison`` block of ``conf/experiment/<name>.yaml``, with ``task`` filled in."""
    cfg = OmegaConf.load(ROOT / "conf" / "experiment" / f"{name}.yaml")
    c = OmegaConf.to_container(cfg.comparison, resolve=True)
    c.setdefault("task", name)
    return c


def folders(name: str, task: str, root: Path, out: Path) -> tuple[Path, Path]:
    """Where comparison ``name`` of ``task`` keeps its runs and its figures: ``root`` and ``out``
    for a task's own comparison, a subfolder named after it for any other."""
    return (root, out) if name == task else (root / name, out / name)


def method_of(methods: dict[str, list[str]]):
    """The method a run belongs to: its ``label`` (report runs) or its matching overrides (its
    optimizer preset, its step rule and the value of every dotted key the method sets, such as
    ``optimizer.peer_args.clip_factor``, so two methods may differ in one setting only)."""
    keyed = {}
    for name, overrides in methods.items():
        values = dict(o.split("=", 1) for o in overrides)
        keyed[name] = values

    def of(run: Run) -> str:
        if run.config.get("label"):
            return str(run.config["label"])
        for name, values in keyed.items():
            if values.get("optimizer") != run.preset:
                continue
            # torch_adamw selects step_rule=adamw itself; the others default to sgd
            rule = values.get(
                "step_rule", "adamw" if values["optimizer"] == "torch_adamw" else "sgd"
            )
            if rule != run.config["step_rule"]["name"]:
                continue
            if all(same_value(run.config, k, v) for k, v in values.items() if "." in k):
                return name
        return run.preset

    return of


def same_value(config: dict[str, Any], key: str, wanted: str) -> bool:
    """Whether the run's ``config`` holds the override ``key=wanted``, its value parsed as Hydra
    parses the command line (``1e-3`` and ``0.001`` are one setting)."""
    held = OmegaConf.select(OmegaConf.create(config), key, default=_ABSENT)
    return held == OVERRIDES.parse_override(f"{key}={wanted}").value()


def measure_lr(c: dict[str, Any], task: str) -> float:
    """The lr of λ's measurement run (torch SGD, seed 0): ``comparison.measure_lr``, by default
    the grid's smallest. Naming it lets a grid grow at its lower edge without moving λ, which
    would invalidate every clipped run already made."""
    lr = c.get("measure_lr")
    if lr is None:
        return min(c["lr_grid"])
    if lr not in c["lr_grid"]:
        raise SystemExit(f"[{task}] Invalid comparison.measure_lr: {lr}; expected one of "
                         f"comparison.lr_grid {c['lr_grid']}")  # fmt: skip
    return lr


def run_overrides(
    c: dict[str, Any],
    name: str,
    lr: float,
    seed: int,
    extra: list[str],
    level: float | None = None,
    label: bool = False,
) -> list[str]:
    """The ``train.py`` overrides of one run of method ``name`` (λ = ``level`` when it has one).
    Their order names the run directory of an unlabelled run, so it never changes."""
    over = [*c["methods"][name], f"step_rule.lr={lr}", f"seed={seed}"]
    over += [f"label='{name}'"] if label else []
    over += extra
    return over if level is None else [*over, f"optimizer.clipping_level={level}"]


# One job per run, not one multirun per method: the workers then stay busy to the end of a
# stage (a run's directory depends on its configuration only, so the split changes no path).
def tune_jobs(
    c: dict[str, Any], name: str, extra: list[str], level: float | None = None
) -> list[sweeps.Job]:
    """``name``'s tuning runs: every lr of the grid on every tuning seed, at λ = ``level``."""
    return [(run_overrides(c, name, lr, seed, extra, level), f"tune_{name}_lr{lr}_seed{seed}")
            for seed in c["tune_seeds"] for lr in c["lr_grid"]]  # fmt: skip


def report_jobs(c: dict[str, Any], best: dict[str, Any], extra: list[str]) -> list[sweeps.Job]:
    """Each method's chosen setting on the report seeds, seed-major: an interrupted stage
    already holds every method's first seeds."""
    jobs = []
    for seed in c["report_seeds"]:
        for name, chosen in best.items():
            lr, level = chosen["setting"]
            over = run_overrides(c, name, lr, seed, extra, level, label=True)
            jobs.append((over, f"report_{name}_seed{seed}"))
    return jobs


def reported(c: dict[str, Any], best: dict[str, Any]) -> dict[str, Any]:
    """The chosen settings of the methods the comparison reports: ``comparison.report_methods``
    when it names them (a variant that tunes SGD only to place λ and reports the methods it adds;
    the task's own comparison reports SGD), otherwise every method."""
    names = c.get("report_methods", list(best))
    unknown = [n for n in names if n not in c["methods"]]
    if unknown:
        raise SystemExit(f"[{c['task']}] Invalid comparison.report_methods: {unknown}; expected "
                         f"names among comparison.methods: {', '.join(c['methods'])}")  # fmt: skip
    return {n: b for n, b in best.items() if n in names}


def retire_superseded(root: Path, task: str, best: dict[str, Any], of) -> list[Path]:
    """Move the report runs whose (lr, λ) is no longer their method's choice (the tuning seeds
    or the grid changed) from ``<root>/report/<task>/`` to ``<root>/superseded/<task>/``.

    The figures read every run under ``report/``, and two settings of one method there would be
    pooled into one row. The runs are kept, not deleted; the moved directories are returned.
    """
    report = root / "report" / task
    moved = []
    # every run with a config, finished or not: an interrupted one would be drawn as well
    for run in discover_runs([report]) if report.exists() else []:
        if not (run.dir / "config.yaml").exists():
            continue
        chosen = best.get(of(run))
        if chosen is not None and (run.lr, run.clipping_level) == tuple(chosen["setting"]):
            continue
        source = run.dir.parent  # <method>-<hash>: every seed of one setting
        if not source.exists():
            continue  # moved with another seed of the same setting
        target = root / "superseded" / task / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        suffix = 1
        while target.exists():  # superseded twice: keep both
            target = target.with_name(f"{source.name}.{suffix}")
            suffix += 1
        source.rename(target)
        moved.append(target)
    return moved


def as_run(c: dict[str, Any], quick: bool, extra: list[str]) -> list[str]:
    """Shape comparison ``c`` (in place) and the extra overrides as this call runs them:
    ``--quick`` keeps one lr, one seed and two methods on a shrunken task; real CoLA comes from
    the shared copy when it is present and no data root was given."""
    task = c["task"]
    if quick:
        c.update(lr_grid=c["lr_grid"][:1], measure_lr=None, tune_seeds=[0], report_seeds=[0])
        others = [n for n in c["methods"] if n != "SGD"]  # a norm-clipped method if it has one
        clipped = next((n for n in others if "optimizer=norm" in c["methods"][n]), others[0])
        c["methods"] = {n: c["methods"][n] for n in ("SGD", clipped)}
        if "report_methods" in c:
            c["report_methods"] = [n for n in c["report_methods"] if n in c["methods"]]
        return [*sweeps.quick_task_overrides(task, True), *extra]
    if (
        task == "cola"
        and (SHARED_COLA / "train.tsv").exists()
        and not any(o.startswith("task.data_root") for o in extra)
    ):
        return [f"task.data_root={SHARED_COLA}", *extra]
    return extra


def clipping_type(overrides: list[str]) -> str | None:
    """The clipping type of a method: its optimizer preset's (``conf/optimizer/<preset>.yaml``),
    unless its overrides set one."""
    values = dict(o.split("=", 1) for o in overrides if "=" in o)
    if "optimizer.clipping_type" in values:
        return values["optimizer.clipping_type"]
    presets = sorted(p.stem for p in (ROOT / "conf" / "optimizer").glob("*.yaml"))
    name = values.get("optimizer")
    if name not in presets:
        raise SystemExit(f"Invalid optimizer preset in comparison.methods: {name!r} (overrides "
                         f"{overrides}); expected one of {', '.join(presets)}")  # fmt: skip
    return OmegaConf.load(ROOT / "conf" / "optimizer" / f"{name}.yaml").get("clipping_type")


def thresholds(c: dict[str, Any], measured: Run, level: float) -> tuple[dict, dict]:
    """λ of each fixed-threshold method and how it was placed: the measured quantile ``level``
    of the global norm, shared evenly over tensors (layer_wise, λ/√T) or coordinates (coord_wise,
    λ/√N), counted in the measurement run's model; no λ for the other methods."""
    where = f"q{c['lambda_quantile']}={level:.4g}"
    levels, placed = {}, {}
    for name, overrides in c["methods"].items():
        kind = clipping_type(overrides)
        if kind not in sweeps.THRESHOLD_UNITS:
            continue
        count = sweeps.UNIT_COUNTS.get(sweeps.THRESHOLD_UNITS[kind])  # None: a global rule
        if count and count not in measured.summary:
            raise SystemExit(f"[{c['task']}] {measured.dir}: its summary has no {count}, which "
                             f"places {name}'s λ; rerun the measurement run with this code")  # fmt: skip
        levels[name] = float(f"{level * sweeps.unit_share(kind, measured.summary):.4g}")
        split = f"/√{measured.summary[count]}" if count else ""
        placed[name] = f"{where}{split} (SGD lr {c['measure_lr']:g})"
    return levels, placed


def run_task(
    name: str, args: argparse.Namespace, extra: list[str], slots: threading.Semaphore | None = None
) -> dict[str, Any]:
    """Measure, tune and report comparison ``name``; its runs take ``slots`` shared with the
    comparisons running beside it."""
    c = spec(name)
    task = c["task"]
    root, out = folders(name, task, args.root, args.out)
    extra = as_run(c, args.quick, extra)
    methods: dict[str, list[str]] = c["methods"]
    of = method_of(methods)
    lrs = c["lr_grid"]
    small = c["measure_lr"] = measure_lr(c, task)
    seeds = ",".join(map(str, c["tune_seeds"]))

    def stage(title: str, jobs: list[sweeps.Job], stage_name: str) -> list[Run]:
        """Run ``jobs`` into ``<root>/<stage_name>/<task>/`` and read back what is there."""
        if not args.figures_only and jobs:
            print(f"[{name}] {title}", flush=True)
            jobs = [([f"experiment_name={stage_name}", *o], f"{name}_{log}") for o, log in jobs]
            sweeps.run_stage(jobs, root, args.jobs, name, slots=slots)
        return read_runs(root / stage_name / task)

    # unclipped SGD first: its run at measure_lr on seed 0 is the norm measurement. A one-point
    # grid (--quick) leaves nothing to choose, so there is no tuning: SGD's report runs measure.
    one_point = len(lrs) == 1
    if one_point:
        runs = stage("reporting SGD (and measuring the unclipped gradient norm)",
                      report_jobs(c, {"SGD": {"setting": (lrs[0], None)}}, extra), "report")  # fmt: skip
    else:
        runs = stage("tuning SGD (and measuring the unclipped gradient norm)",
                      tune_jobs(c, "SGD", extra), "tune")  # fmt: skip
    measured = [r for r in runs if of(r) == "SGD" and r.lr == small and r.seed == 0]
    if not measured:
        log = f"{name}_{'report' if one_point else 'tune'}_SGD_*.log"
        raise SystemExit(f"[{name}] no measurement run on seed 0; see {root}/logs/{log}")
    (level,) = sweeps.norm_quantiles(measured[0], [c["lambda_quantile"]])
    levels, placed = thresholds(c, measured[0], level)
    if one_point:
        best = {n: {"setting": (lrs[0], levels.get(n))} for n in methods}
    else:
        jobs = [j for n in methods if n != "SGD" for j in tune_jobs(c, n, extra, levels.get(n))]
        runs = stage("tuning on seeds " + seeds, jobs, "tune")
        best = sweeps.best_settings(runs, of, c["tune_seeds"], c["metric"], lower_is_better=False)
    for moved in retire_superseded(root, task, best, of):
        print(f"[{name}] report runs of a choice no longer made, kept out of the figures: {moved}")
    shown = reported(c, best)
    reports = report_jobs(
        c, {n: b for n, b in shown.items() if not (one_point and n == "SGD")}, extra
    )
    stage("reporting on seeds " + ",".join(map(str, c["report_seeds"])), reports, "report")
    return {"task": name, "placed": placed, "best": best, "spec": c, "grid": tuning_grid(runs, of, c),
            "root": root, "out": out}  # fmt: skip


def merge_task_rows(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` after the rows of the other tasks already in the CSV at ``path``.

    Tasks are often run one invocation at a time (``--tasks imagenet``, later ``--tasks voc``);
    a table keeps every task's rows, each with the command that made it (``made_by``).
    """
    tasks = {r["task"] for r in rows}
    kept = []
    if path.exists():
        with open(path, newline="") as f:
            kept = [r for r in csv.DictReader(f) if r["task"] not in tasks]
    return kept + rows


def stamps_by_task(rows: list[dict[str, Any]]) -> list[str]:
    """One provenance line per command that made some of ``rows``, naming its tasks."""
    tasks: dict[str, list[str]] = {}
    for r in rows:
        names = tasks.setdefault(r["made_by"], [])
        if r["task"] not in names:
            names.append(r["task"])
    return [f"{', '.join(names)}: {made_by}" for made_by, names in tasks.items()]


def write_choices(results: list[dict[str, Any]], out: Path, command: str) -> None:
    """The grid and each method's chosen lr and λ: the tuned table's hyper-parameter columns."""
    made_by = stamp(command)
    rows = []
    for r in results:
        for method, chosen in r["best"].items():
            lr, level = chosen["setting"]
            rows.append({"task": r["task"], "method": method, "lr": f"{lr:g}",
                         "clipping_level": "" if level is None else level,
                         "lr_grid": " ".join(f"{x:g}" for x in r["spec"]["lr_grid"]),
                         "measured_norm_quantile": r["placed"].get(method, ""),
                         "tune_seeds": " ".join(map(str, r["spec"]["tune_seeds"])),
                         "report_seeds": " ".join(map(str, r["spec"]["report_seeds"])),
                         "made_by": made_by})  # fmt: skip
    if not rows:
        return
    rows = merge_task_rows(out / "tuned_choices.csv", rows)
    sweeps.write_csv(out / "tuned_choices.csv", rows)
    lines = ["# Tuned settings: best learning rate (and λ) per method, chosen on the tuning seeds",
             "", "| task | method | lr | λ | lr grid | λ placed at | tuning seeds | report seeds |",
             "| --- | --- | ---: | ---: | --- | --- | --- | --- |"]  # fmt: skip
    lines += [f"| {r['task']} | {r['method']} | {r['lr']} | {r['clipping_level']} | {r['lr_grid']} "
              f"| {r['measured_norm_quantile']} | {r['tune_seeds']} | {r['report_seeds']} |" for r in rows]  # fmt: skip
    lines += ["", *(f"- {line}" for line in stamps_by_task(rows)), ""]
    (out / "tuned_choices.md").write_text("\n".join(lines))


def tuning_grid(runs: list, of, c: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"method": of(r), "lr": r.lr, "seed": r.seed, "value": r.final(c["metric"]),
             "val_loss": r.final("loss")} for r in runs if r.seed in c["tune_seeds"]]  # fmt: skip


def write_grid(results: list[dict[str, Any]], out: Path, command: str) -> None:
    """Every tuning run's final metric: what each method's choice was made from."""
    made_by = stamp(command)
    rows = [{"task": r["task"], "metric": r["spec"]["metric"], "method": g["method"],
             "lr": f"{g['lr']:g}", "seed": g["seed"], "value": f"{g['value']:.4f}",
             "val_loss": f"{g['val_loss']:.4f}", "made_by": made_by}
            for r in results for g in sorted(r["grid"], key=lambda g: (g["method"], g["lr"], g["seed"]))]  # fmt: skip
    if not rows:
        return
    rows = merge_task_rows(out / "tuning_grid.csv", rows)
    sweeps.write_csv(out / "tuning_grid.csv", rows)
    lines = ["# The tuning grid: final validation metric of every tuning run", ""]
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        metric = mine[0]["metric"]
        lines += [f"## {task} (val_{metric}; val_loss)", "",
                  f"| method | lr | seed | {metric} | val_loss |", "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
        lines += [f"| {r['method']} | {r['lr']} | {r['seed']} | {r['value']} | {r['val_loss']} |" for r in mine]  # fmt: skip
        lines += ["", mine[0]["made_by"], ""]
    (out / "tuning_grid.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = sweeps.sweep_parser(__doc__, "run directory (default results/tuned)", jobs=1)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS + VARIANTS,
                        help="the four task comparisons (default) or a variant of one")  # fmt: skip
    args = sweeps.parse_sweep_args(parser, argv)
    args.root = args.root or (RESULTS.with_name("tuned_quick") if args.quick else RESULTS)
    for name in args.tasks:  # a comparison's config error now, not after the others' runs
        c = spec(name)
        reported(c, dict.fromkeys(c["methods"]))
        for overrides in c["methods"].values():
            clipping_type(overrides)
    # the comparisons side by side, sharing --jobs processes: none waits for another's last run
    slots = threading.BoundedSemaphore(args.jobs)
    with ThreadPoolExecutor(max_workers=len(args.tasks)) as pool:
        results = list(
            pool.map(lambda n: run_task(n, args, list(args.overrides), slots), args.tasks)
        )
    command = "python scripts/tuned_comparison.py " + " ".join(
        (["--quick"] if args.quick else []) + ["--tasks", *args.tasks]
    )
    code = 0
    # the task comparisons share one folder of figures (and the profile); a variant has its own
    for out in dict.fromkeys(r["out"] for r in results):
        mine = [r for r in results if r["out"] == out]
        write_choices(mine, out, command)
        write_grid(mine, out, command)
        if out == args.out:
            plot = plot_command(args.root / "report", out, [r["task"] for r in mine])
        else:
            (r,) = mine
            plot = variant_plot_command(r["root"] / "report", out, r["spec"])
        code = sweeps.call(plot) or code  # every folder is drawn, even after a failure
    return code


def variant_plot_command(report: Path, out: Path, c: dict[str, Any]) -> list[str]:
    """The figures of a variant: its own task's runs only, at its own target, no profile (the
    profile compares the four tasks' comparisons)."""
    task = c["task"]
    return ["scripts/plot_comparison.py", str(report), "--out", str(out), f"--tasks={task}",
            f"--target={task}={c['target']}", "--no-profile"]  # fmt: skip


def plot_command(report: Path, out: Path, tasks: list[str]) -> list[str]:
    """The figures of this call's tasks only: runs of other tasks under ``report`` may be of
    another machine or code than their committed figures, which the profile reads instead."""
    return ["scripts/plot_comparison.py", str(report), "--out", str(out),
            f"--tasks={','.join(tasks)}", *target_flags(report, tasks)]  # fmt: skip


def target_flags(report: Path, tasks: list[str]) -> list[str]:
    """``--target`` of every task the figures show: those of this call and those already under
    ``report``, each at the target its experiment config holds now (a run's own config keeps the
    target of the day it was made)."""
    shown = [t for t in TASKS if t in tasks or (report / t).is_dir()]
    return [f"--target={t}={spec(t)['target']}" for t in shown]


if __name__ == "__main__":
    sys.exit(main())
