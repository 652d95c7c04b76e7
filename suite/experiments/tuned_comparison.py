"""Tuned comparisons under the fair protocol: each method on its lr grid × its own knob, λ from measured norms.

    python scripts/tuned_comparison.py --tasks reddit            # one task
    python scripts/tuned_comparison.py                           # all four (hours on a CPU)
    python scripts/tuned_comparison.py --quick                   # the pipeline on tiny budgets
    python scripts/tuned_comparison.py --tasks voc --measure-only # step 1 only: where λ's grid sits
    python scripts/tuned_comparison.py --tasks cola -- task.data_root=/data/CoLA
    python scripts/tuned_comparison.py --tasks cola_mpnet -- task.model_name_or_path=<dir>

Each comparison follows the fair protocol (``torch_clip.suite.protocol``; docs/evidence/protocol.md):

1. **Measure**: unclipped SGD at ``measure_lr`` on seed 0 (label ``measure_SGD``) records the
   gradient norm; the run must be stable (completed, finite norms, final training loss at most
   twice its first) or the comparison stops, saying so.
2. **Tune** every method on its lr grid × the grid of its own knob, on every tuning seed; each
   setting scores the median over the tuning seeds (a failed or diverged run worst; ties by the
   median validation loss, then grid order). A choice on an edge of either axis extends that axis
   by one step and the method is tuned again, for up to ``max_extensions`` rounds; edges that
   remain are flagged in the tables.
3. **Report** each chosen setting on the report seeds; ``<task>_protocol.md`` gives the count of
   settings, the choices and their edge flags, the mean, median and bootstrap 90% interval, and
   the paired difference to the best baseline with its interval, Wilcoxon and t p and "holds?".

A comparison ``<name>`` is its protocol ``conf/comparison/<name>.yaml``, whose runs are
``train.py experiment=<name>`` (``conf/experiment/<name>.yaml``: task, budget). The protocol's keys:

- ``metric`` (the validation metric compared; lower is better for loss-like names) and
  ``target`` (an absolute value of it, for steps-to-target and the performance profile);
- ``lr_grid``: every method's learning rates (half-decade: ``torch_clip.suite.protocol.half_decade_grid``);
  ``lr_grids``: named families of grids (``{sgd: [...], adamw: [...]}``) that a method picks with
  ``grid: <family>`` (or gives its own ``lr_grid``); ``measure_lr``: the lr of the measurement
  run, on SGD's grid (default: its smallest);
- ``lambda_quantiles``: the quantiles of the measured norm that make the λ grid of the
  fixed-threshold rules (``norm``, ``*_stoch_norm``, and ``layer_wise``/``coord_wise`` at the even
  share λ/√T, λ/√N, counted in the measurement run's model); an older ``lambda_quantile: q`` is
  read as ``[q]``;
- ``tune_seeds``, ``report_seeds``; ``max_extensions`` (default 2);
- ``baselines``: the methods the best of which every other is compared to (default: the
  reported methods that do not clip);
- ``methods``: name → a list of ``train.py`` overrides, or
  ``{overrides: [...], knob: {key, values, scale, bounds, step, override}}``: the knob's config
  ``key`` (read back from a run's config; ``step_rule.betas.1`` for β₂), its ``values``, the
  ``scale`` it is extended on (``log``, ``linear`` or ``log1m`` for values near 1 such as β₂ or a
  percentile), open ``bounds`` (default 0 to ∞), an optional extension ``step`` and an
  ``override`` template when the key is not the override (``'step_rule.betas=[0.9,{value}]'``).
  A fixed-threshold rule without a knob is tuned over λ (``knob: lambda``); ``fixed_level: true``
  keeps the λ of its overrides (the LM recipe's norm clipping at 1.0: no placement, no λ knob),
  tuned on its ``knob`` when it names one (the recipe's AdamW β₂);
  a method with no knob is tuned on the lr grid only, and its smaller count shows in the tables;
- ``report_methods`` (optional): the methods a variant reports.

``--tasks`` takes the README's task comparisons (the default: ``conf/evidence.yaml``), their
variants, or any other comparison of ``conf/comparison/`` (``--tasks lm``).

Runs go to ``results/tuned/<stage>/<task>/…`` (not committed; every run is labelled with its
method); the comparisons of one call run side by side, sharing ``--jobs`` processes.
``plot_comparison.py`` draws the report runs into ``results/readme/figures/``.

The four task comparisons are named by their task. Another comparison of a task (``cola_mpnet``:
CoLA with a larger encoder; ``cola_per_unit``: CoLA's protocol for the per-unit rules;
``reddit_agc``: the Reddit proxy's protocol for AGC at four clip factors) names it in
its ``task`` and keeps its runs, figures and tables in a folder of its own name
(``results/tuned/cola_mpnet/``, ``results/readme/figures/cola_mpnet/``), so that they never mix
with the task's own comparison. Its file inherits nothing, so it repeats the task's keys;
``report_methods`` may narrow what it reports.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from torch_clip.suite import protocol, registry
from torch_clip.suite.experiments import (
    local_runs,
    protocol_table,
    sweeps,
)
from torch_clip.suite.experiments.provenance import stamp
from torch_clip.suite.paths import ROOT
from torch_clip.suite.reports import plotting
from torch_clip.suite.run_reader import Run, discover_runs, read_runs

RESULTS = ROOT / "results" / "tuned"
OVERRIDES = OverridesParser.create()
_ABSENT = object()  # a key the run's config does not have
FIGURES = sweeps.FIGURES
#: grid-extension rounds per comparison unless ``comparison.max_extensions`` says otherwise
MAX_EXTENSIONS = 2
#: the knob of the fixed-threshold rules: λ at ``comparison.lambda_quantiles`` of the measured norm
LAMBDA = "lambda"
LAMBDA_KEY = "optimizer.clipping_level"
#: a λ grid on close quantiles of the norm grows by half decades beyond its edge
LAMBDA_STEP = 10**0.5
#: a run whose final training loss exceeds this multiple of its first diverged
DIVERGED = 2.0
#: the knob of a method that keeps the λ of its overrides (``fixed_level: true``): none
NO_KNOB = "none"
#: the label of λ's measurement run (SGD at ``comparison.measure_lr``, seed 0)
MEASURE = "measure_SGD"


def spec(name: str) -> dict[str, Any]:
    """The protocol ``conf/comparison/<name>.yaml``, with ``task`` filled in and its methods split
    into overrides (``methods``) and second knobs (``knobs``)."""
    c = registry.comparison(name)
    if "maps" in c:
        raise SystemExit(f"Invalid comparison for this driver: {name!r} is a regime map; run it "
                         "with scripts/regime_map.py")  # fmt: skip
    c.setdefault("task", name)
    return normalized(c)


def normalized(c: dict[str, Any]) -> dict[str, Any]:
    """``c`` with the defaults of the protocol's keys: ``lambda_quantiles`` (an older block's
    single ``lambda_quantile``), ``max_extensions``, and each method's overrides and knob apart
    (a method given as a list of overrides has no knob of its own)."""
    if "lambda_quantiles" not in c:
        c["lambda_quantiles"] = [c.pop("lambda_quantile", 0.5)]
    c.setdefault("max_extensions", MAX_EXTENSIONS)
    knobs, grids = c.setdefault("knobs", {}), c.setdefault("method_lr_grids", {})
    for name, entry in c["methods"].items():
        if isinstance(entry, dict):
            c["methods"][name] = list(entry.get("overrides", []))
            if entry.get("fixed_level"):  # its λ is in its overrides: not placed, not tuned
                c.setdefault("fixed_level", []).append(name)
            if entry.get("knob") is not None:  # with fixed_level: a knob other than λ
                knobs[name] = entry["knob"]
            elif entry.get("fixed_level"):
                knobs[name] = NO_KNOB
            if "lr_grid" in entry or "grid" in entry:
                grids[name] = list(entry.get("lr_grid") or lr_family(c, name, entry["grid"]))
    if "lr_grid" not in c:  # per-method grids only: the measurement run is on SGD's
        if "SGD" not in grids:
            raise SystemExit(f"[{c.get('task')}] Invalid comparison: no lr_grid; expected "
                             "comparison.lr_grid or an lr grid of the SGD method")  # fmt: skip
        c["lr_grid"] = grids["SGD"]
    lengths = {len(grids.get(n, c["lr_grid"])) for n in c["methods"]}
    if len(lengths) > 1:
        print(f"[{c.get('task')}] note: the lr grids differ in length {sorted(lengths)}; the "
              "tables count each method's settings")  # fmt: skip
    return c


def lr_family(c: dict[str, Any], name: str, family: str) -> list[float]:
    """The grid ``comparison.lr_grids.<family>`` a method names with ``grid: <family>``."""
    families = c.get("lr_grids") or {}
    if family not in families:
        raise SystemExit(f"[{c.get('task')}] Invalid grid of {name}: {family!r}; expected one "
                         f"of comparison.lr_grids: {', '.join(families) or '(none)'}")  # fmt: skip
    return families[family]


def lr_grid_of(c: dict[str, Any], name: str) -> list[float]:
    """Method ``name``'s learning rates: its own grid, else ``comparison.lr_grid``."""
    return c.get("method_lr_grids", {}).get(name, c["lr_grid"])


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
    lr, grid = c.get("measure_lr"), lr_grid_of(c, "SGD")
    if lr is None:
        return min(grid)
    if lr not in grid:
        raise SystemExit(f"[{task}] Invalid comparison.measure_lr: {lr}; expected one of "
                         f"comparison.lr_grid {grid}")  # fmt: skip
    return lr


def run_overrides(
    c: dict[str, Any],
    name: str,
    setting: tuple[float, ...],
    seed: int,
    extra: list[str],
    axes: list[protocol.Axis] | None = None,
    label: str | None = None,
) -> list[str]:
    """The ``train.py`` overrides of one run of method ``name`` at ``setting`` (its lr, then its
    knob's value when it has one), labelled with the method's name (or ``label``)."""
    over = [*c["methods"][name], f"step_rule.lr={setting[0]:g}", f"seed={seed}",
            f"label='{label or name}'"]  # fmt: skip
    knob = c["knobs"].get(name)
    template = knob.get("override") if isinstance(knob, dict) else None
    for axis, value in zip((axes or [])[1:], setting[1:]):
        over.append((template or "{key}={value}").format(key=axis.key, value=f"{value:.6g}"))
    return [*over, *extra]


def method_axes(
    c: dict[str, Any], name: str, levels: dict[str, list[float]]
) -> list[protocol.Axis]:
    """The tuned axes of method ``name``: the lr grid, then its knob: λ (``levels``: the method's
    λ at each of ``comparison.lambda_quantiles``) for a fixed-threshold rule unless it names
    another knob, the ``knob`` of its entry otherwise (none: the lr grid only)."""
    axes = [protocol.Axis("step_rule.lr", tuple(sorted(lr_grid_of(c, name))))]
    knob = c["knobs"].get(name, LAMBDA if name in levels else None)
    if knob == NO_KNOB:
        return axes
    if knob == LAMBDA:
        if name not in levels:
            raise SystemExit(f"[{c['task']}] Invalid knob of {name}: lambda; expected a "
                             "fixed-threshold clipping rule (norm, layer_wise, coord_wise, ...)")  # fmt: skip
        axes.append(protocol.Axis(LAMBDA_KEY, tuple(sorted(set(levels[name]))), step=LAMBDA_STEP))
    elif knob:
        bounds = tuple(knob.get("bounds", (0.0, math.inf)))
        axes.append(protocol.Axis(knob["key"], tuple(knob["values"]), knob.get("scale", "log"),
                                  bounds, knob.get("step")))  # fmt: skip
    return axes


def setting_of(run: Run, axes: list[protocol.Axis]) -> tuple[float, ...]:
    """The setting a run was made at, read from its config along ``axes`` (6 significant digits,
    as the overrides write them)."""
    values = []
    for axis in axes:
        held = OmegaConf.select(OmegaConf.create(run.config), axis.key, default=None)
        values.append(float(f"{float(held):.6g}") if held is not None else math.nan)
    return tuple(values)


# One job per run, not one multirun per method: the workers then stay busy to the end of a
# stage (a run's directory depends on its configuration only, so the split changes no path).
def tune_jobs(
    c: dict[str, Any], name: str, axes: list[protocol.Axis], extra: list[str]
) -> list[sweeps.Job]:
    """``name``'s tuning runs: every setting of its axes on every tuning seed."""
    return [(run_overrides(c, name, setting, seed, extra, axes),
             f"tune_{name}_{'_'.join(f'{v:g}' for v in setting)}_seed{seed}")
            for seed in c["tune_seeds"] for setting in protocol.settings(axes)]  # fmt: skip


def report_jobs(
    c: dict[str, Any], best: dict[str, Any], extra: list[str], axes: dict[str, list]
) -> list[sweeps.Job]:
    """Each method's chosen setting on the report seeds, seed-major: an interrupted stage
    already holds every method's first seeds."""
    return [(run_overrides(c, name, chosen["setting"], seed, extra, axes[name]),
             f"report_{name}_seed{seed}")
            for seed in c["report_seeds"] for name, chosen in best.items()]  # fmt: skip


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


def retire_superseded(
    root: Path,
    task: str,
    best: dict[str, Any],
    of,
    setting=lambda run: (run.lr, run.clipping_level),
) -> list[Path]:
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
        if chosen is not None and setting(run) == tuple(chosen["setting"]):
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
    if quick:  # one setting per method: no tuning, the pipeline from measurement to tables
        q = sorted(c["lambda_quantiles"])
        c["method_lr_grids"] = {n: g[:1] for n, g in c.get("method_lr_grids", {}).items()}
        c.update(lr_grid=c["lr_grid"][:1], measure_lr=None, tune_seeds=[0], report_seeds=[0],
                 lambda_quantiles=[q[len(q) // 2]],
                 knobs=dict.fromkeys(c.get("fixed_level", []), NO_KNOB))  # fmt: skip
        others = [n for n in c["methods"] if n != "SGD"]  # a norm-clipped method if it has one
        clipped = next((n for n in others if "optimizer=norm" in c["methods"][n]), others[0])
        c["methods"] = {n: c["methods"][n] for n in ("SGD", clipped)}
        if "report_methods" in c:
            c["report_methods"] = [n for n in c["report_methods"] if n in c["methods"]]
        return [*sweeps.quick_task_overrides(task, True), *extra]
    return [*sweeps.shared_data_overrides(task, quick, extra), *extra]


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


def clips(overrides: list[str]) -> bool:
    """Whether a method clips: a clipping type of clip_core, or a peer clipping method (AGC,
    ZClip, AutoClip: ``conf/optimizer/peer_*.yaml``, which have no clipping type)."""
    if clipping_type(overrides) not in (None, "none"):
        return True
    values = dict(o.split("=", 1) for o in overrides if "=" in o)
    preset = OmegaConf.load(ROOT / "conf" / "optimizer" / f"{values['optimizer']}.yaml")
    return preset.get("peer") is not None


def thresholds(c: dict[str, Any], measured: Run, quantile_levels: list[float]) -> tuple[dict, dict]:
    """λ of each fixed-threshold method at each measured quantile (``quantile_levels``, the
    global norm's at ``comparison.lambda_quantiles``) and how it was placed: shared evenly over
    tensors (layer_wise, λ/√T) or coordinates (coord_wise, λ/√N), counted in the measurement
    run's model; no λ for the other methods."""
    where = " ".join(f"q{q}={v:.4g}" for q, v in zip(c["lambda_quantiles"], quantile_levels))
    levels, placed = {}, {}
    for name, overrides in c["methods"].items():
        kind = clipping_type(overrides)
        if kind not in sweeps.threshold_units():
            continue
        count = sweeps.UNIT_COUNTS.get(sweeps.threshold_units()[kind])  # None: a global rule
        if count and count not in measured.summary:
            raise SystemExit(f"[{c['task']}] {measured.dir}: its summary has no {count}, which "
                             f"places {name}'s λ; rerun the measurement run with this code")  # fmt: skip
        share = sweeps.unit_share(kind, measured.summary)
        levels[name] = [float(f"{v * share:.4g}") for v in quantile_levels]
        split = f" ÷√{measured.summary[count]}" if count else ""
        placed[name] = f"{where}{split} (SGD lr {c['measure_lr']:g})"
    return levels, placed


def unstable(run: Run) -> str | None:
    """Why ``run`` cannot place λ (``None``: it can): λ sits on a stable run, one that completed
    with finite gradient norms and a finite final training loss at most ``DIVERGED`` times its
    first (a run that blows up, as SGD did where a λ grid was once placed, fails this)."""
    norms = run.grad_norms()
    _, losses = run.series("train_loss", "train")
    if not run.completed:
        return f"it did not complete ({run.status})"
    if norms is None or not np.all(np.isfinite(norms)):
        return "its gradient norms are missing or not all finite"
    if losses.size and not (np.isfinite(losses[-1]) and losses[-1] <= DIVERGED * losses[0]):
        return f"its training loss went from {losses[0]:.4g} to {losses[-1]:.4g}"
    return None


def measure_job(c: dict[str, Any], extra: list[str]) -> sweeps.Job:
    """λ's measurement run: SGD's overrides at ``measure_lr`` on seed 0, no knob, a label of its
    own (``MEASURE``), so that it is never one of SGD's tuning runs."""
    over = run_overrides(c, "SGD", (c["measure_lr"],), 0, extra, label=MEASURE)
    return over, f"measure_SGD_lr{c['measure_lr']:g}_seed0"


def measured_run(
    name: str, runs: list[Run], of, label: str, log: str, lr: float | None = None
) -> Run:
    """The measurement run (``label``, seed 0) among ``runs``, checked stable; in a run folder
    of the earlier layout (no measurement label), SGD's unlabelled run at ``measure_lr``."""
    found = [r for r in runs if of(r) == label and r.seed == 0]
    found = found or [r for r in runs if of(r) == "SGD" and not r.config.get("label")
                      and r.seed == 0 and r.lr == lr]  # fmt: skip
    if not found:
        raise SystemExit(f"[{name}] no measurement run on seed 0; see {log}")
    why = unstable(found[0])
    if why:
        raise SystemExit(f"[{name}] the measurement run {found[0].dir} cannot place λ: {why}; "
                         "set comparison.measure_lr to a smaller lr of the grid")  # fmt: skip
    return found[0]


def choose(c: dict[str, Any], runs: list[Run], of, axes: dict[str, list]) -> dict[str, Any]:
    """Each method's choice on the tuning seeds (``torch_clip.suite.protocol.select``: the median, failures
    worst, ties by the median validation loss, then grid order), with its edge flags."""
    best = {}
    lower = plotting.lower_is_better(c["metric"])
    for name, method_axes_ in axes.items():
        grid = protocol.settings(method_axes_)
        results = {g: {} for g in grid}
        losses = {g: {} for g in grid}
        for run in runs:
            if of(run) != name or run.seed not in c["tune_seeds"]:
                continue
            g = setting_of(run, method_axes_)
            if g in results:
                results[g][run.seed] = run.final(c["metric"])
                losses[g][run.seed] = run.final("loss")
        chosen = protocol.select(results, c["tune_seeds"], lower, losses)
        if chosen is None:
            raise SystemExit(f"[{c['task']}] {name}: no setting finished on every tuning seed; "
                             f"see the tune_{name}_*.log files")  # fmt: skip
        best[name] = {"setting": chosen.setting, "score": chosen.score, "tied": chosen.tied,
                      "rule": chosen.rule, "count": protocol.settings_count(method_axes_),
                      "edges": protocol.edge_flags(method_axes_, chosen.setting)}  # fmt: skip
    return best


def tune(c: dict[str, Any], axes: dict[str, list], stage, extra: list[str], of) -> tuple:
    """Tune every method, extending an axis beyond an edge choice and tuning again, for at most
    ``comparison.max_extensions`` rounds; returns the choices, the runs, the final axes and the
    edges no extension could leave (an axis at its bound)."""
    stuck: dict[str, dict[str, str]] = {}
    best: dict[str, Any] = {}
    for rounds in range(c["max_extensions"] + 1):
        jobs = [j for n, a in axes.items() for j in tune_jobs(c, n, a, extra)]
        runs = stage(f"tuning on seeds {c['tune_seeds']} (extension round {rounds})", jobs, "tune")
        best = choose(c, runs, of, axes)
        if rounds == c["max_extensions"]:
            break
        grown = False
        for name, chosen in best.items():
            wider, stuck[name] = protocol.extensions(axes[name], chosen["setting"])
            grown = grown or wider != axes[name]
            axes[name] = wider
        if not grown:
            break
    for name, chosen in best.items():  # the edges of the final choices no step could leave
        stuck[name] = protocol.extensions(axes[name], chosen["setting"])[1]
    return best, runs, axes, stuck


def run_task(
    name: str,
    args: argparse.Namespace,
    extra: list[str],
    slots: threading.Semaphore | None = None,
    measure_only: bool = False,
) -> dict[str, Any]:
    """Measure, tune and report comparison ``name``; its runs take ``slots`` shared with the
    comparisons running beside it. ``measure_only``: stop after the measurement run, with the
    λ grids it places (``levels``)."""
    c = spec(name)
    task = c["task"]
    root, out = folders(name, task, args.root, args.out)
    extra = as_run(c, args.quick, extra)
    of = method_of(c["methods"])
    c["measure_lr"] = measure_lr(c, task)

    def stage(title: str, jobs: list[sweeps.Job], stage_name: str) -> list[Run]:
        """Run ``jobs`` into ``<root>/<stage_name>/<task>/`` and read back what is there."""
        if not args.figures_only and jobs:
            print(f"[{name}] {title}", flush=True)
            jobs = [([f"experiment_name={stage_name}", *o], f"{name}_{log}") for o, log in jobs]
            sweeps.run_stage(jobs, root, args.jobs, name, slots=slots)
        return read_runs(root / stage_name / task)

    # a one-point grid (--quick) leaves nothing to choose: SGD's first report run measures
    one_point = all(len(lr_grid_of(c, n)) == 1 for n in c["methods"])
    if one_point:
        jobs, label, where = report_jobs(c, {"SGD": {"setting": (lr_grid_of(c, "SGD")[0],)}}, extra,
                                         {"SGD": None}), "SGD", "report"  # fmt: skip
    else:
        jobs, label, where = [measure_job(c, extra)], MEASURE, "tune"
    runs = stage("measuring the unclipped gradient norm", jobs, where)
    measured = measured_run(name, runs, of, label, f"{root}/logs/{name}_*SGD*.log", c["measure_lr"])
    levels, placed = thresholds(c, measured, sweeps.norm_quantiles(measured, c["lambda_quantiles"]))
    if measure_only:
        grids = "; ".join(f"{n} {v}" for n, v in levels.items()) or "no fixed-threshold method"
        print(f"[{name}] measured by {measured.dir}; λ grids: {grids}", flush=True)
        return {"task": name, "measured": measured, "levels": levels, "placed": placed}
    axes = {n: method_axes(c, n, levels) for n in c["methods"]}
    if one_point:
        best = {n: {"setting": protocol.settings(a)[0], "count": 1, "tied": 1, "rule": "one setting",
                    "edges": {x.key: "only" for x in a}} for n, a in axes.items()}  # fmt: skip
        stuck = {}
    else:
        best, runs, axes, stuck = tune(c, axes, stage, extra, of)
    for moved in retire_superseded(
        root, task, best, of, lambda r: setting_of(r, axes[of(r)]) if of(r) in axes else ()
    ):
        print(f"[{name}] report runs of a choice no longer made, kept out of the figures: {moved}")
    shown = reported(c, best)
    reports = report_jobs(
        c, {n: b for n, b in shown.items() if not (one_point and n == "SGD")}, extra, axes
    )
    report = stage("reporting on seeds " + ",".join(map(str, c["report_seeds"])), reports, "report")
    return {"task": name, "placed": placed, "best": best, "spec": c, "axes": axes, "stuck": stuck,
            "grid": tuning_grid(runs, of, c, axes), "tune": [] if one_point else runs,
            "report": report, "of": of, "shown": list(shown),
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


def choice_row(r: dict[str, Any], method: str, chosen: dict[str, Any], made_by: str) -> dict:
    """One method's row of the choices table: its count of settings, its choice on each axis
    with the edge flag, its grids, where λ was placed and how ties were broken."""
    axes = r.get("axes", {}).get(method) or [
        protocol.Axis("step_rule.lr", tuple(r["spec"]["lr_grid"]))
    ]
    setting = chosen["setting"]
    edges = chosen.get("edges") or protocol.edge_flags(axes, setting[: len(axes)])
    stuck = r.get("stuck", {}).get(method, {})
    flag = lambda a: edges.get(a.key, "") + (" (at its bound)" if a.key in stuck else "")  # noqa: E731
    knob = axes[1] if len(axes) > 1 else None
    return {"task": r["task"], "method": method,
            "settings": chosen.get("count", protocol.settings_count(axes)),
            "lr": f"{setting[0]:g}", "lr_edge": flag(axes[0]),
            "knob": knob.key if knob else "", "knob_value": f"{setting[1]:.4g}" if knob else "",
            "knob_edge": flag(knob) if knob else "",
            "lr_grid": " ".join(f"{x:g}" for x in axes[0].values),
            "knob_grid": " ".join(f"{x:.4g}" for x in knob.values) if knob else "",
            "measured_norm_quantile": r["placed"].get(method, ""),
            "tie": f"{chosen.get('tied', 1)} tied: {chosen.get('rule', '')}",
            "tune_seeds": " ".join(map(str, r["spec"]["tune_seeds"])),
            "report_seeds": " ".join(map(str, r["spec"]["report_seeds"])),
            "made_by": made_by}  # fmt: skip


def write_choices(results: list[dict[str, Any]], out: Path, command: str) -> None:
    """Each method's count of settings, its chosen lr and knob with their edge flags, and the
    grids: the tuned table's hyper-parameter columns."""
    made_by = stamp(command)
    rows = [choice_row(r, m, chosen, made_by) for r in results for m, chosen in r["best"].items()]
    if not rows:
        return
    rows = merge_task_rows(out / "tuned_choices.csv", rows)
    sweeps.write_csv(out / "tuned_choices.csv", rows)
    lines = ["# Tuned settings: each method's choice on the tuning seeds (median; see "
             "docs/evidence/protocol.md)", "", "edge: the choice is the lowest (low) or highest "
             "(high) value of its axis after the grid-extension rounds; only: the axis has one value.",
             "", "| task | method | settings | lr | lr edge | knob | value | knob edge | lr grid "
             "| knob grid | λ placed at | ties | tuning seeds | report seeds |",
             "| --- | --- | ---: | ---: | --- | --- | ---: | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    cols = ("task", "method", "settings", "lr", "lr_edge", "knob", "knob_value", "knob_edge",
            "lr_grid", "knob_grid", "measured_norm_quantile", "tie", "tune_seeds", "report_seeds")  # fmt: skip
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in cols) + " |" for r in rows]
    lines += ["", *(f"- {line}" for line in stamps_by_task(rows)), ""]
    (out / "tuned_choices.md").write_text("\n".join(lines))


def tuning_grid(runs: list, of, c: dict[str, Any], axes: dict[str, list]) -> list[dict[str, Any]]:
    """Every tuning run of a method: its setting, seed, final metric and validation loss."""
    return [{"method": of(r), "lr": r.lr, "knob": knob_text(axes[of(r)], setting_of(r, axes[of(r)])),
             "seed": r.seed, "value": r.final(c["metric"]), "val_loss": r.final("loss")}
            for r in runs if r.seed in c["tune_seeds"] and of(r) in axes]  # fmt: skip


def knob_text(axes: list, setting: tuple) -> str:
    """``key=value`` of a setting's knob (empty without one)."""
    return " ".join(f"{a.name}={v:.4g}" for a, v in zip(axes[1:], setting[1:]))


def write_grid(results: list[dict[str, Any]], out: Path, command: str) -> None:
    """Every tuning run's final metric: what each method's choice was made from."""
    made_by = stamp(command)
    rows = [{"task": r["task"], "metric": r["spec"]["metric"], "method": g["method"],
             "lr": f"{g['lr']:g}", "knob": g.get("knob", ""), "seed": g["seed"],
             "value": f"{g['value']:.4f}",
             "val_loss": f"{g['val_loss']:.4f}", "made_by": made_by}
            for r in results for g in sorted(r["grid"], key=lambda g: (g["method"], g["lr"], g.get("knob", ""), g["seed"]))]  # fmt: skip
    if not rows:
        return
    rows = merge_task_rows(out / "tuning_grid.csv", rows)
    sweeps.write_csv(out / "tuning_grid.csv", rows)
    lines = ["# The tuning grid: final validation metric of every tuning run", ""]
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        metric = mine[0]["metric"]
        lines += [f"## {task} (val_{metric}; val_loss)", "",
                  f"| method | lr | knob | seed | {metric} | val_loss |", "| --- | ---: | --- | ---: | ---: | ---: |"]  # fmt: skip
        lines += [f"| {r['method']} | {r['lr']} | {r.get('knob', '')} | {r['seed']} | {r['value']} | {r['val_loss']} |" for r in mine]  # fmt: skip
        lines += ["", mine[0]["made_by"], ""]
    (out / "tuning_grid.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = sweeps.sweep_parser(__doc__, "run directory (default results/tuned)", jobs=1)
    parser.add_argument("--tasks", nargs="+", default=list(registry.evidence_tasks()),
                        help="the README's task comparisons (default, conf/evidence.yaml) or any "
                             "comparison of conf/comparison/")  # fmt: skip
    parser.add_argument("--measure-only", action="store_true",
                        help="only the measurement runs (unclipped SGD, the λ grids' base): "
                             "print each λ grid and stop")  # fmt: skip
    args = sweeps.parse_sweep_args(parser, argv)
    known = [n for n in registry.comparisons() if "maps" not in registry.comparison(n)]
    for name in args.tasks:
        if name not in known:
            parser.error(f"Invalid --tasks: {name!r}; expected one of {', '.join(known)} "
                         "(conf/comparison/<name>.yaml)")  # fmt: skip
    args.root = args.root or (RESULTS.with_name("tuned_quick") if args.quick else RESULTS)
    for name in args.tasks:  # a comparison's config error now, not after the others' runs
        c = spec(name)
        reported(c, dict.fromkeys(c["methods"]))
        for overrides in c["methods"].values():
            clipping_type(overrides)
    # the comparisons side by side, sharing --jobs processes: none waits for another's last run
    slots = threading.BoundedSemaphore(args.jobs)
    with ThreadPoolExecutor(max_workers=len(args.tasks)) as pool:
        try:
            results = list(pool.map(
                lambda n: run_task(n, args, list(args.overrides), slots, args.measure_only),
                args.tasks,
            ))  # fmt: skip
        except KeyboardInterrupt:  # the stage threads stop after their runs in flight
            local_runs.interrupt()
            raise
    if args.measure_only:
        return 0
    command = "python scripts/tuned_comparison.py " + " ".join(
        (["--quick"] if args.quick else []) + ["--tasks", *args.tasks]
    )
    code = 0
    # the task comparisons share one folder of figures (and the profile); a variant has its own
    for out in dict.fromkeys(r["out"] for r in results):
        mine = [r for r in results if r["out"] == out]
        write_choices(mine, out, command)
        write_grid(mine, out, command)
        for r in mine:
            if (path := protocol_table.write_protocol_table(r, command, clips)) is not None:
                print(path.read_text())
        if (path := protocol_table.write_aggregate(out, command)) is not None:
            print(path.read_text())
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
            f"--metric={task}={c['metric']}", f"--target={task}={c['target']}", "--no-profile"]  # fmt: skip


def plot_command(report: Path, out: Path, tasks: list[str]) -> list[str]:
    """The figures of this call's tasks only: runs of other tasks under ``report`` may be of
    another machine or code than their committed figures, which the profile reads instead."""
    return ["scripts/plot_comparison.py", str(report), "--out", str(out),
            f"--tasks={','.join(tasks)}", *figure_flags(report, tasks)]  # fmt: skip


def figure_flags(report: Path, tasks: list[str]) -> list[str]:
    """``--metric`` and ``--target`` of every task the figures show: those of this call and the
    README's already under ``report``, each as its protocol holds them now (the runs' configs do
    not carry the protocol, which has its own config group)."""
    shown = [t for t in registry.evidence_tasks() if t in tasks or (report / t).is_dir()]
    flags = []
    for task in [*shown, *(t for t in tasks if t not in shown)]:
        c = spec(task)
        flags.append(f"--metric={task}={c['metric']}")
        flags += [f"--target={task}={c['target']}"] if c.get("target") is not None else []
    return flags


if __name__ == "__main__":
    sys.exit(main())
