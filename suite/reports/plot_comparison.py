"""Compare the methods of a sweep: per task a figure, a clipping figure and a table; a profile.

    python scripts/plot_comparison.py results/<experiment_name>
    python scripts/plot_comparison.py results/readme --out results/readme/figures --band std
    python scripts/plot_comparison.py results/exp --target cola=0.45 --target reddit=0.9

Reads every run directory under the sweep (``<task>/<method>/seed<N>/``, written by
``train.py``) with ``torch_clip.suite.run_reader``: a run's method is the name its ``summary.json`` gives
(``method``), else its method directory's name. Only runs whose ``summary.json`` says
``completed`` are used, the others are listed on the console and in a footnote of the figure.

Per task (files in ``--out``, default ``<sweep>/figures``):

* ``<task>_comparison.png``: training loss against iteration (large left panel), the training
  metric (top right; the clipped fraction or the gradient norm when the task logs no training
  metric) and the validation metric (bottom right, dashed). One colour per method; with several
  seeds the mean and a band (a bootstrap 90% interval of the mean, the protocol's; min–max with
  ``--band minmax``, ± std with ``--band std``). The title names the data and
  the model the runs actually used, and flags embedded proxy data.
* ``<task>_clipping.png``: the clipped fraction ``clip_fraction`` and the clipping threshold
  ``clip_threshold`` over training, mean over seeds with the same band. A method that does not clip
  (``optimizer.clipping_type: none``, the torch baselines) or logs no threshold (the peers, the
  adaptive rules before their history fills) is listed as absent, never drawn as zero.
* ``<task>_table.md`` / ``<task>_table.csv``: per method its optimizer description, learning rate
  (``step_rule.lr``) and clipping level λ (``optimizer.clipping_level``) from the runs'
  ``config.yaml``; the final and best validation metric and the final training loss (mean ± sample
  std over seeds); the steps and the wall seconds to reach the target (mean over the seeds that
  reach it). Wall seconds are the ``wall_time`` of the first evaluation at the target: seconds of
  training and evaluation since the run started, set-up excluded, summed over resumed segments.

Across tasks: ``performance_profile.png`` (+ ``.csv``), in the style of AlgoPerf, in steps (left)
and in wall seconds (right): for each method the fraction of tasks on which it reaches the task's
target within τ times the steps (seconds) of the fastest method, against τ. **The denominator is
every task of the profile** (every task with a target): a method that did not run on a task, or
whose seeds do not reach the target there, counts as not reaching it, so a method run on fewer
tasks cannot look better by being run less. A method reaches a target when at least ``--quorum`` of
its seeds do; its steps (seconds) are the mean over those seeds. Curves are labelled by the method
name only; the hyper-parameters a method used on each task are in that task's table.

**Targets are absolute values.** A task's target is, in this order: ``--target TASK=VALUE``,
``--target VALUE`` (every task), the runs' ``comparison.target`` (with ``comparison.metric``: runs
made while the protocol sat in their experiment file carry it in their ``config.yaml``; the
pipeline passes ``conf/comparison/<task>.yaml``'s ``target`` as ``--target``), or — only when asked
for with ``--target-frac F`` — ``F`` of the best validation value any method reached, which is
refused when that best is 0. A task without a target is marked so in its table and left out of
the profile with a printed note. A task's metric is, likewise, ``--metric TASK=NAME``,
``--metric NAME``, the runs' ``comparison.metric``, or the primary metric of their summaries.

Every figure's footnote and every table's last line record the command and the commit that made
it (``suite/experiments/provenance.py``); absolute paths of the machine are removed from every text written
(``provenance.scrub_paths``).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from torch_clip.suite import protocol
from torch_clip.suite.experiments import provenance
from torch_clip.suite.experiments.provenance import stamp
from torch_clip.suite.reports import plotting
from torch_clip.suite.reports.plotting import BAND_TEXT
from torch_clip.suite.run_reader import Run, as_float, discover_runs

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
AUX_KEYS = {
    "clip_fraction": ("clip_fraction", "clipped fraction of ‖g‖"),
    "grad_norm": ("grad_norm", "gradient norm ‖g‖"),
    "clip_threshold": ("clip_threshold", "clipping threshold λ"),
}


# --------------------------------------------------------------------------------- metrics


def primary_metric(runs: Sequence[Run]) -> str:
    """The task's primary metric: the most common ``primary_metric`` of the summaries."""
    names = Counter(
        str(r.summary["primary_metric"]) for r in runs if r.summary.get("primary_metric")
    )
    if names:
        return names.most_common(1)[0][0]
    for run in runs:  # an older summary: guess from the first val_ key logged
        for row in run.rows:
            for key in row:
                if row.get("split") == "val" and key.startswith("val_"):
                    return key.removeprefix("val_")
    raise ValueError("cannot tell the metric of these runs; pass --metric")


def final_value(run: Run, metric: str) -> float:
    """Final validation value: the summary's ``final``, else the last logged one."""
    value = run.final(metric)
    if math.isfinite(value):
        return value
    _, values = run.series(f"val_{metric}", "val")
    return float(values[-1]) if values.size else math.nan


def best_value(run: Run, metric: str, lower: bool) -> float:
    """Best validation value over the run's evaluations (the summary's ``best`` if it is that metric)."""
    best = run.summary.get("best") or {}
    if best.get("metric") == metric and not lower:
        value = as_float(best.get("value"))
        if math.isfinite(value):
            return value
    _, values = run.series(f"val_{metric}", "val")
    if not values.size:
        return math.nan
    return float(values.min() if lower else values.max())


def final_train_loss(run: Run) -> float:
    value = as_float(run.summary.get("final_train_loss"))
    if math.isfinite(value):
        return value
    _, values = run.series("train_loss", "train")
    return float(values[-1]) if values.size else math.nan


def reached(value: float, target: float, lower: bool) -> bool:
    return value <= target if lower else value >= target


def first_reach(run: Run, metric: str, target: float, lower: bool) -> tuple[float, float]:
    """``(step, wall seconds)`` of the first evaluation whose ``val_<metric>`` reaches ``target``.

    NaN for both when no evaluation does; NaN seconds when the row has no ``wall_time``.
    """
    steps, values = run.series(f"val_{metric}", "val")
    walls = dict(zip(*run.series("wall_time", "val")))
    for step, value in zip(steps, values):
        if reached(float(value), target, lower):
            return float(step), float(walls.get(step, math.nan))
    return math.nan, math.nan


def frac_target(best: float, frac: float, lower: bool) -> float:
    """``frac`` of ``best``: ``best ∓ (1 − frac)·|best|`` (the right direction for negatives too)."""
    slack = (1.0 - frac) * abs(best)
    return best + slack if lower else best - slack


def comparison_config(task: str, runs: Sequence[Run]) -> dict[str, Any]:
    """The ``comparison`` node (``metric``, ``target``) the runs' configs carry; ``{}`` if none.

    The runs of one task must agree: a sweep mixing two targets has no single target.
    """
    nodes: dict[tuple[Any, Any], list[str]] = defaultdict(list)
    for run in runs:
        node = run.config.get("comparison") or {}
        if node.get("target") is not None or node.get("metric") is not None:
            nodes[(node.get("metric"), node.get("target"))].append(run.name)
    if len(nodes) > 1:
        found = "; ".join(
            f"metric={m}, target={t} in {names[0]}" for (m, t), names in nodes.items()
        )
        raise ValueError(
            f"Invalid comparison for task {task}: {found}; expected one comparison.metric and "
            "comparison.target for all runs of a task"
        )
    if not nodes:
        return {}
    (metric, target), _ = next(iter(nodes.items()))
    if target is not None and not (isinstance(target, int | float) and math.isfinite(target)):
        raise ValueError(
            f"Invalid comparison.target for task {task}: {target!r}; expected a finite number"
        )
    return {"metric": metric, "target": None if target is None else float(target)}


def config_path_hint(task: str) -> str:
    return f"pass --target {task}=VALUE, as the pipeline does with the comparison.target of conf/comparison/{task}.yaml"


def resolve_target(
    task: str,
    runs: Sequence[Run],
    metric: str,
    lower: bool,
    given: float | None,
    configured: dict[str, Any],
    target_frac: float | None,
) -> tuple[float | None, str]:
    """``(target or None, how it was set)``: given, else configured, else the opt-in fraction."""
    sign = "≤" if lower else "≥"
    if given is not None:
        return given, f"val {metric} {sign} {given:.4g} (--target)"
    if configured.get("target") is not None and configured.get("metric") in (None, metric):
        target = float(configured["target"])
        return target, f"val {metric} {sign} {target:.4g} (comparison.target of the runs' config)"
    if target_frac is None:
        return None, f"no target known for {task} ({config_path_hint(task)})"
    bests = [b for b in (best_value(r, metric, lower) for r in runs) if math.isfinite(b)]
    if not bests:
        raise ValueError(f"task {task}: no run logged val_{metric}")
    best = min(bests) if lower else max(bests)
    if best == 0:
        raise ValueError(
            f"Invalid --target-frac: {target_frac:g}; the best val {metric} of any method on "
            f"{task} is 0, so a fraction of it is no target; expected an absolute target "
            f"({config_path_hint(task)})"
        )
    target = frac_target(best, target_frac, lower)
    return target, (
        f"{target_frac:g} of the best val {metric} of any method ({best:.4g}): {sign} {target:.4g}"
    )


def hyper_parameter(runs: Sequence[Run], group: str, key: str) -> str:
    """The distinct values of ``config[group][key]`` over ``runs`` ("—" when none sets it)."""
    values = [(r.config.get(group) or {}).get(key) for r in runs]
    shown = [f"{v:g}" if isinstance(v, int | float) else str(v) for v in values if v is not None]
    return " / ".join(dict.fromkeys(shown)) or "—"


@dataclass
class MethodRow:
    """One row of a task's table."""

    method: str
    description: str
    lr: str
    level: str
    seeds: list[int | None]
    final_val: tuple[float, float, int]
    best_val: tuple[float, float, int]
    train_loss: tuple[float, float, int]
    removed: tuple[float, float, int]  # share of ‖g‖ clipping removed; n = 0 for no clipping
    steps: list[float] = field(default_factory=list)  # per seed; NaN = never reached / no target
    walls: list[float] = field(
        default_factory=list
    )  # per seed, wall seconds at the same evaluation
    finals: list[float] = field(default_factory=list)  # per seed, the final validation value

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def n_reached(self) -> int:
        return sum(math.isfinite(s) for s in self.steps)

    @property
    def mean_steps(self) -> float:
        hit = [s for s in self.steps if math.isfinite(s)]
        return float(np.mean(hit)) if hit else math.nan

    @property
    def mean_wall(self) -> float:
        """Mean wall seconds over the seeds that reach the target (NaN if one of them lacks it)."""
        hit = [w for s, w in zip(self.steps, self.walls) if math.isfinite(s)]
        return float(np.mean(hit)) if hit else math.nan

    def solves(self, quorum: float) -> bool:
        """Whether at least ``quorum`` of the seeds reach the target (and at least one does)."""
        return self.n_reached > 0 and self.n_reached >= quorum * self.n_seeds


@dataclass
class TaskResult:
    task: str
    metric: str
    lower: bool
    target: float | None  # None: no target known (the table says so, the profile skips the task)
    target_note: str
    rows: list[MethodRow]
    runs: dict[str, list[Run]]  # completed runs per method
    skipped: list[Run]


def group_by_method(runs: Sequence[Run], key: str = "label") -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.method if key == "label" else run.optimizer].append(run)
    return dict(sorted(groups.items()))


def describe(runs: Sequence[Run]) -> str:
    """A method's ``optimizer_description`` over its runs (all distinct ones)."""
    return " / ".join(dict.fromkeys(r.description for r in runs))


def analyse_task(
    task: str,
    runs: Sequence[Run],
    *,
    metric: str | None = None,
    target: float | None = None,
    target_frac: float | None = None,
    method_key: str = "label",
) -> TaskResult:
    """Table rows and target of one task from its runs (completed ones used, others skipped).

    ``target``: an absolute target given on the command line; else the runs' ``comparison``
    config; else, only with ``target_frac``, that fraction of the best value (refused at 0).
    """
    completed = [r for r in runs if r.completed]
    skipped = [r for r in runs if not r.completed]
    if not completed:
        raise ValueError(f"task {task}: no completed run")
    configured = comparison_config(task, completed)
    metric = metric or configured.get("metric") or primary_metric(completed)
    lower = plotting.lower_is_better(metric)
    target, note = resolve_target(task, completed, metric, lower, target, configured, target_frac)
    groups = group_by_method(completed, method_key)
    rows = []
    for method, group in groups.items():
        reach = [
            first_reach(r, metric, target, lower) if target is not None else (math.nan, math.nan)
            for r in group
        ]
        rows.append(
            MethodRow(
                method=method,
                description=describe(group),
                lr=hyper_parameter(group, "step_rule", "lr"),
                level=hyper_parameter(group, "optimizer", "clipping_level"),
                seeds=[r.seed for r in group],
                final_val=plotting.mean_std([final_value(r, metric) for r in group]),
                best_val=plotting.mean_std([best_value(r, metric, lower) for r in group]),
                train_loss=plotting.mean_std([final_train_loss(r) for r in group]),
                removed=plotting.mean_std(
                    [plotting.removed_fraction(r) for r in group if clips(r)]
                ),
                steps=[step for step, _ in reach],
                walls=[wall for _, wall in reach],
                finals=[final_value(r, metric) for r in group],
            )
        )
    return TaskResult(task, metric, lower, target, note, rows, groups, skipped)


# ---------------------------------------------------------------------------------- tables


def fmt_pm(stat: tuple[float, float, int], digits: int = 4) -> str:
    mean, std, n = stat
    if n == 0 or not math.isfinite(mean):
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def fmt_interval(values: Sequence[float], digits: int = 4) -> str:
    """``mean [low, high] (median m)`` over seeds, the failures counted (the protocol's cell)."""
    if not values:
        return "—"
    s = protocol.summarize(values)
    if not math.isfinite(s.mean):
        return f"— ({s.failed}/{s.n} failed)"
    return s.cell(digits) + f" (median {s.median:.{digits}f})"


def fmt_reach(result: TaskResult, row: MethodRow, wall: bool = False) -> str:
    if result.target is None:
        return "no target"
    if row.n_reached == 0:
        return "—"
    if wall:
        return f"{row.mean_wall:.4g}" if math.isfinite(row.mean_wall) else "not logged"
    return f"{row.mean_steps:.0f} ({row.n_reached}/{row.n_seeds} seeds)"


WALL_NOTE = (
    "wall seconds: `wall_time` of that evaluation (training and evaluation since the run "
    "started, set-up excluded; compare within one table, the machine may be shared)"
)


def write_tables(result: TaskResult, md_path: Path, csv_path: Path, made_by: str) -> None:
    """The task's table as Markdown (formatted) and CSV (raw numbers), each ending with
    ``made_by`` (the provenance stamp); absolute paths are scrubbed from every cell."""
    m, sign = result.metric, "≤" if result.lower else "≥"
    goal = "target" if result.target is None else f"{m} {sign} {result.target:.4g}"
    summaries = [r.summary for group in result.runs.values() for r in group]
    lines = [
        f"### {result.task}: val {m} ({'lower' if result.lower else 'higher'} is better)",
        "",
        plotting.provenance(summaries),
        "",
        "final val: mean [bootstrap 90% interval of the mean] and median over seeds "
        "(suite.protocol.summarize; docs/evidence/protocol.md); the other columns: "
        f"mean ± sample std (ddof=1) over seeds; target: {result.target_note}; steps and wall "
        f"seconds to target: mean over the seeds whose evaluations reach it; {WALL_NOTE}. "
        "lr: `step_rule.lr`, λ: `optimizer.clipping_level` of the runs' config; ‖g‖ removed: "
        "the share of the gradient norm clipping removed (`clip_fraction`, 1 − ‖clipped g‖/‖g‖), "
        "averaged over a run's logged steps, then over seeds (— for no clipping).",
        "",
        f"| method | optimizer | lr | λ | seeds | final val {m} | best val {m} | final train loss "
        f"| ‖g‖ removed | steps to {goal} | wall s to {goal} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result.rows:
        lines.append(
            f"| {row.method} | {row.description} | {row.lr} | {row.level} | {row.n_seeds} "
            f"| {fmt_interval(row.finals)} | {fmt_pm(row.best_val)} | {fmt_pm(row.train_loss)} "
            f"| {fmt_pm(row.removed, 2)} | {fmt_reach(result, row)} | {fmt_reach(result, row, wall=True)} |"
        )
    if result.skipped:
        lines += [
            "",
            "Skipped (not completed): " + "; ".join(map(plotting.status_note, result.skipped)),
        ]
    lines += ["", made_by]
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(provenance.scrub_paths("\n".join(lines)) + "\n")

    target = "" if result.target is None else result.target
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([
            "task", "method", "description", "lr", "clipping_level", "n_seeds", "metric",
            "final_val_mean", "final_val_std", "best_val_mean", "best_val_std",
            "final_train_loss_mean", "final_train_loss_std", "norm_removed_mean", "target",
            "steps_to_target_mean", "wall_seconds_to_target_mean", "seeds_reached", "made_by",
        ])  # fmt: skip
        for row in result.rows:
            cells = [
                result.task, row.method, row.description, row.lr, row.level, row.n_seeds, m,
                *row.final_val[:2], *row.best_val[:2], *row.train_loss[:2], row.removed[0], target,
                row.mean_steps, row.mean_wall, row.n_reached, made_by,
            ]  # fmt: skip
            writer.writerow([provenance.scrub_paths(c) if isinstance(c, str) else c for c in cells])


# ----------------------------------------------------------------------- performance profile

MEASURES = {"steps": "steps", "wall": "wall seconds"}


def profile_ratios(
    results: Sequence[TaskResult], quorum: float = 0.5, measure: str = "steps"
) -> dict[str, dict[str, float]]:
    """``ratios[method][task]``: steps (``measure="wall"``: wall seconds) to target over the
    fastest method's on that task; ``inf`` if the method did not reach it or did not run there.

    Every method of any task gets an entry for every task of ``results`` (all must have a
    target), so a profile's denominator is the number of tasks, the same for every method.
    """
    if measure not in MEASURES:
        raise ValueError(f"Invalid measure: {measure!r}; expected one of {', '.join(MEASURES)}")
    if any(res.target is None for res in results):
        raise ValueError("profile_ratios: every task needs a target; leave the others out")
    methods = sorted({row.method for res in results for row in res.rows})
    ratios: dict[str, dict[str, float]] = {m: {} for m in methods}
    for res in results:
        cost = {
            row.method: row.mean_steps if measure == "steps" else row.mean_wall
            for row in res.rows
            if row.solves(quorum)
        }
        best = min((c for c in cost.values() if math.isfinite(c)), default=math.nan)
        for m in methods:
            ratios[m][res.task] = cost[m] / best if m in cost else math.inf
    return ratios


def profile_curve(task_ratios: dict[str, float], taus: np.ndarray) -> np.ndarray:
    """ρ(τ): the fraction of all tasks in ``task_ratios`` with ratio ≤ τ (NaN never counts)."""
    r = np.array(list(task_ratios.values()), dtype=np.float64)
    if r.size == 0:
        return np.zeros_like(taus)
    return (r[None, :] <= taus[:, None] * (1 + 1e-12)).mean(axis=1)


def profile_caption(results: Sequence[TaskResult], quorum: float, left_out: Sequence[str]) -> str:
    """What the profile counts: its denominator, coverage of each method, targets, left-out tasks."""
    tasks = [res.task for res in results]
    methods = sorted({row.method for res in results for row in res.rows})
    ran = {m: [res.task for res in results if m in res.runs] for m in methods}
    partial = [f"{m} ran on {', '.join(t)} only" for m, t in ran.items() if len(t) < len(tasks)]
    text = (
        f"Denominator: all {len(tasks)} task(s) of the profile, for every method; a method that "
        "did not run on a task, or does not reach its target there, counts as not reaching it. "
        + (f"Not run everywhere: {'; '.join(partial)}. " if partial else "")
        + f"A method reaches a task's target when ≥ {quorum:g} of its seeds do (its cost: the mean "
        "over those seeds). Labels are method names; each method's lr and λ per task are in the "
        "task tables. Identical profiles are drawn slightly offset. Targets — "
        + "; ".join(f"{res.task}: {res.target_note}" for res in results)
        + "."
    )
    if left_out:
        text += " Left out (no target): " + ", ".join(left_out) + "."
    return text


def plot_profile(
    results: Sequence[TaskResult],
    out: Path,
    colors: dict[str, Any],
    *,
    made_by: str,
    left_out: Sequence[str] = (),
    tau_max: float = 10.0,
    quorum: float = 0.5,
    dpi: int = plotting.DPI,
) -> dict[str, dict[str, dict[str, float]]]:
    """The profile in steps (left) and wall seconds (right); returns ``{measure: ratios}``."""
    import matplotlib.pyplot as plt

    ratios = {measure: profile_ratios(results, quorum, measure) for measure in MEASURES}
    methods = list(ratios["steps"])
    # as many legend columns as the longest name leaves room for (~150 characters per row)
    ncol = max(1, min(len(methods), 4, 150 // (max(map(len, methods)) + 8)))
    note = plotting.wrap(profile_caption(results, quorum, left_out), 170) + "\n" + made_by
    title_h, axes_h, gap_h = 0.6, 4.2, 0.65
    legend_h = plotting.legend_height(len(methods), ncol, title=False)
    note_h = plotting.note_height(note)
    height = title_h + axes_h + gap_h + legend_h + note_h
    fig = plt.figure(figsize=(13.0, height))
    bottom = (gap_h + legend_h + note_h) / height
    handles = []
    for k, (measure, unit) in enumerate(MEASURES.items()):
        ax = fig.add_axes((0.06 + 0.49 * k, bottom, 0.42, axes_h / height))
        lines = draw_profile(ax, ratios[measure], colors, tau_max, unit)
        handles = handles or lines  # one legend: the left panel's lines
    tasks = ", ".join(res.task for res in results)
    fig.suptitle(plotting.wrap(f"Performance profile over {len(results)} task(s): {tasks}", 120),
                 y=1 - 0.1 / height, va="top", fontsize=12)  # fmt: skip
    plotting.legend_block(
        fig, handles, height=height, legend_h=legend_h, note_h=note_h, ncol=ncol, note=note
    )
    plotting.savefig(fig, out, dpi)
    write_profile_csv(out.with_suffix(".csv"), ratios, results, made_by)
    return ratios


def draw_profile(
    ax: Any, ratios: dict[str, dict[str, float]], colors: dict[str, Any], tau_max: float, unit: str
) -> list[Any]:
    """ρ(τ) of every method in one measure; returns the lines (identical ones slightly offset)."""
    taus = np.geomspace(1.0, tau_max, 400)
    lines = []
    for i, (method, task_ratios) in enumerate(ratios.items()):
        offset = (i - (len(ratios) - 1) / 2) * 0.006
        (line,) = ax.step(taus, profile_curve(task_ratios, taus) + offset, where="post", lw=2,
                          color=colors.get(method), label=method)  # fmt: skip
        lines.append(line)
    ticks = [t for t in (1, 1.5, 2, 3, 5, 10, 20, 50, 100) if t <= tau_max]
    ax.set_xscale("log")
    ax.set_xlim(1.0, tau_max)
    ax.set_ylim(-0.03, 1.05)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(f"τ ({unit} to target ÷ {unit} of the fastest method on that task)")
    ax.set_ylabel("fraction of all tasks with target\nreached within τ × fastest")
    ax.set_title(f"in {unit}", fontsize=10.5)
    plotting.style_axes(ax)
    return lines


def write_profile_csv(
    path: Path, ratios: dict[str, dict[str, dict[str, float]]], results: Sequence[TaskResult],
    made_by: str,
) -> None:  # fmt: skip
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["measure", "method", *[res.task for res in results], "made_by"])
        for measure, by_method in ratios.items():
            for method, task_ratios in by_method.items():
                row = [measure, method, *[task_ratios[res.task] for res in results]]
                writer.writerow([*row, provenance.scrub_paths(made_by)])


# ------------------------------------------------------------------------------ task figure


def choose_aux(runs: Sequence[Run], metric: str, aux: str) -> tuple[str, str, str]:
    """``(key, split, panel title)`` of the top-right panel."""
    if aux == "auto" and any(r.has_key(f"train_{metric}", "train") for r in runs):
        return f"train_{metric}", "train", f"training {metric}"
    if aux == "auto":
        clipped = any(np.any(r.series("clip_fraction", "train")[1] > 0) for r in runs)
        aux = "clip_fraction" if clipped else "grad_norm"
    if aux == "train_metric":
        return f"train_{metric}", "train", f"training {metric}"
    key, label = AUX_KEYS[aux]
    return key, "train", f"{label} (no training {metric} logged)"


def _band(
    ax: Any, band: plotting.Band | None, color: Any, alpha: float = 0.15, **line: Any
) -> None:
    """The mean line above every band, the band behind every line.

    On a log axis a ± std band is cut at the smallest seed's value (it would go below zero).
    """
    if band is None:
        return
    ax.plot(band.steps, band.mean, color=color, zorder=3, **line)
    if np.any(band.count > 1):
        lo = np.maximum(band.lo, band.min) if ax.get_yscale() == "log" else band.lo
        ax.fill_between(band.steps, lo, band.hi, color=color, alpha=alpha, lw=0, zorder=1)


def spans_decades(values: Sequence[np.ndarray], decades: float = 1.5) -> bool:
    """Whether positive ``values`` span at least ``decades`` orders of magnitude (use a log axis)."""
    x = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    return bool(x.size and np.all(x > 0) and math.log10(x.max() / x.min()) >= decades)


@dataclass
class TaskCurves:
    """Per method the bands of the three panels, and every seed's raw values (for the axes)."""

    loss: dict[str, plotting.Band | None] = field(default_factory=dict)
    aux: dict[str, plotting.Band | None] = field(default_factory=dict)
    val: dict[str, plotting.Band | None] = field(default_factory=dict)
    loss_values: list[np.ndarray] = field(default_factory=list)
    aux_values: list[np.ndarray] = field(default_factory=list)


def task_curves(
    result: TaskResult, aux_key: str, aux_split: str, band: str, smooth_window: int
) -> TaskCurves:
    """Training loss (smoothed), the top-right quantity and the validation metric over seeds."""
    curves = TaskCurves()
    # a method that does not clip has no clipping telemetry: absent, not a line at zero
    telemetry = aux_key in ("clip_fraction", "clip_threshold")
    for method, group in result.runs.items():
        loss = []
        for run in group:
            steps, values = run.series("train_loss", "train")
            loss.append((steps, plotting.smooth(values, smooth_window)))
            curves.loss_values.append(values)
        curves.loss[method] = plotting.aggregate(loss, band)
        aux_runs = [run for run in group if clips(run)] if telemetry else group
        aux = [run.series(aux_key, aux_split) for run in aux_runs]
        curves.aux_values += [v for _, v in aux]
        curves.aux[method] = plotting.aggregate(aux, band)
        val = [run.series(f"val_{result.metric}", "val") for run in group]
        curves.val[method] = plotting.aggregate(val, band)
    return curves


def mark_target(ax: Any, target: float) -> None:
    ax.axhline(target, color="0.35", lw=0.9, ls=":")
    ax.annotate(f"target {target:.3g}", xy=(0.0, target), xycoords=("axes fraction", "data"),
                xytext=(3, 3), textcoords="offset points", fontsize=7.5, color="0.35")  # fmt: skip


#: characters per line of a task figure's legend entry (two columns across a 14-inch figure)
LEGEND_WIDTH = 95


def task_handles(result: TaskResult, colors: dict[str, Any]) -> list[Any]:
    """A legend entry per method (name, hyper-parameters, seeds; wrapped, never cut) and the two
    line styles."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=colors[row.method], lw=2.5, label=plotting.wrap(
            f"{row.method}: {row.description}  [{row.n_seeds} seed(s)]", LEGEND_WIDTH))
        for row in result.rows
    ]  # fmt: skip
    return [
        *handles,
        Line2D([], [], color="0.3", lw=1.5, label="solid: training (left, top right)"),
        Line2D([], [], color="0.3", lw=1.5, ls="--", marker="o", ms=3.5,
               label="dashed: validation (bottom right)"),
    ]  # fmt: skip


def plot_task(
    result: TaskResult,
    out: Path,
    colors: dict[str, Any],
    *,
    made_by: str,
    band: str = "bootstrap",
    aux: str = "auto",
    smooth_window: int = 1,
    dpi: int = plotting.DPI,
) -> Path:
    """The three-panel comparison figure of one task; ``made_by`` goes in its footnote."""
    runs = [r for group in result.runs.values() for r in group]
    aux_key, aux_split, aux_title = choose_aux(runs, result.metric, aux)
    n_methods = len(result.runs)
    handles = task_handles(result, colors)
    ncol = 2 if n_methods > 1 else 1
    rows = plotting.legend_rows([h.get_label() for h in handles], ncol)
    fig, legend_kw, frame = task_figure(result, made_by, what="", width=14.0, axes_h=5.2,
                                        legend_entries=rows * ncol, ncol=ncol)  # fmt: skip
    grid = fig.add_gridspec(2, 2, width_ratios=[1.55, 1], wspace=0.2, hspace=0.42, **frame)
    ax_loss = fig.add_subplot(grid[:, 0])
    ax_aux = fig.add_subplot(grid[0, 1])
    ax_val = fig.add_subplot(grid[1, 1])
    curves = task_curves(result, aux_key, aux_split, band, smooth_window)
    if spans_decades(curves.loss_values):
        ax_loss.set_yscale("log")
        plotting.log_ticks(ax_loss.yaxis)
    if aux_key != "clip_fraction" and spans_decades(curves.aux_values):
        ax_aux.set_yscale("log")
        plotting.log_ticks(ax_aux.yaxis)
    for method in result.runs:
        color = colors[method]
        _band(ax_loss, curves.loss[method], color, alpha=0.1, lw=1.6)
        _band(ax_aux, curves.aux[method], color, lw=1.3)
        _band(ax_val, curves.val[method], color, lw=1.6, ls="--", marker="o", ms=3.5)
    if result.target is not None:
        mark_target(ax_val, result.target)
    smooth_note = (
        f", moving average over {smooth_window} logged points" if smooth_window > 1 else ""
    )
    titles = [
        (ax_loss, f"training loss (mean over each logging window{smooth_note})", "training loss"),
        (ax_aux, aux_title, aux_title.split(" (")[0]),
        (ax_val, f"validation {result.metric} (dashed)", f"validation {result.metric}"),
    ]
    for ax, title, ylabel in titles:
        ax.set_title(title, fontsize=10.5)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("iteration")
        plotting.style_axes(ax)
    band_text = BAND_TEXT[band] if any(row.n_seeds > 1 for row in result.rows) else "one seed each"
    plotting.legend_block(fig, handles,
                          title=f"method: hyper-parameters — lines: mean over seeds, {band_text}",
                          **legend_kw)  # fmt: skip
    return plotting.savefig(fig, out, dpi)


def task_figure(
    result: TaskResult,
    made_by: str,
    *,
    what: str,
    width: float,
    axes_h: float,
    legend_entries: int,
    ncol: int,
) -> tuple[Any, dict[str, Any], dict[str, float]]:
    """A titled task figure laid out in inches: title, panels, x-label gap, legend, footnote.

    Returns the figure, the keywords of ``plotting.legend_block`` (footnote included) and the
    panels' frame (``left``/``right``/``top``/``bottom`` for a gridspec).
    """
    import matplotlib.pyplot as plt

    note, note_color = footnote(result, made_by)
    title = figure_title(result, what)
    title_h, gap_h = 0.45 + 0.24 * (title.count("\n") + 1), 0.7
    legend_h = plotting.legend_height(legend_entries, ncol)
    note_h = plotting.note_height(note)
    height = title_h + axes_h + gap_h + legend_h + note_h
    fig = plt.figure(figsize=(width, height))
    legend_kw = dict(height=height, legend_h=legend_h, note_h=note_h, ncol=ncol, note=note,
                     note_color=note_color)  # fmt: skip
    frame = dict(left=0.06, right=0.985, top=1 - title_h / height,
                 bottom=(gap_h + legend_h + note_h) / height)  # fmt: skip
    fig.suptitle(title, y=1 - 0.12 / height, va="top", fontsize=12)
    return fig, legend_kw, frame


def footnote(result: TaskResult, made_by: str) -> tuple[str, str]:
    """``(text, colour)`` of a task figure's footnote: skipped runs (in red) and the stamp."""
    skipped = [plotting.status_note(r) for r in result.skipped]
    if not skipped:
        return made_by, "0.3"
    return plotting.wrap("Skipped (not completed): " + "; ".join(skipped), 220) + "\n" + made_by, (
        "firebrick"
    )


def figure_title(result: TaskResult, what: str) -> str:
    """``<task>: <what>, N method(s), k seed(s) each`` and the data and model the runs used."""
    summaries = [r.summary for group in result.runs.values() for r in group]
    seeds = "/".join(map(str, sorted({row.n_seeds for row in result.rows})))
    return (
        f"{result.task}: {what}{len(result.runs)} method(s), {seeds} seed(s) each\n"
        + plotting.wrap(plotting.provenance(summaries), 150)
    )


# -------------------------------------------------------------------------- clipping figure


def clips(run: Run) -> bool:
    """Whether the run's optimizer clips, so that its ``clip_fraction`` is a measurement.

    The trainer logs ``clip_fraction`` 0 for optimizers without clipping telemetry (the torch
    baselines); the summary's ``clips`` (from the built optimizer) tells them apart.
    """
    if "clips" in run.summary:  # written by the trainer from the built optimizer
        return bool(run.summary["clips"])
    optimizer = run.config.get("optimizer") or {}  # an older record: read its config
    if "clipping_type" in optimizer:
        return optimizer["clipping_type"] not in (None, "none")
    return run.has_key("clip_threshold", "train")


def clipping_bands(
    result: TaskResult, band: str = "bootstrap"
) -> dict[str, tuple[plotting.Band | None, plotting.Band | None]]:
    """Per method ``(clip fraction, clip threshold)`` over seeds; ``None`` where not logged.

    A method that does not clip has neither; a threshold is absent when no run logged a finite
    one (peers report the removed fraction but no threshold).
    """
    bands = {}
    for method, group in result.runs.items():
        clipping = [r for r in group if clips(r)]
        fraction = plotting.aggregate([r.series("clip_fraction", "train") for r in clipping], band)
        threshold = plotting.aggregate(
            [r.series("clip_threshold", "train") for r in clipping], band
        )
        bands[method] = (fraction, threshold)
    return bands


def plot_clipping(
    result: TaskResult,
    out: Path,
    colors: dict[str, Any],
    *,
    made_by: str,
    band: str = "bootstrap",
    dpi: int = plotting.DPI,
) -> Path:
    """Clipped fraction (left) and clipping threshold (right) over training, mean over seeds."""
    from matplotlib.lines import Line2D

    bands = clipping_bands(result, band)
    fig, legend_kw, frame = task_figure(result, made_by, what="clipping over training, ",
                                        width=13.0, axes_h=4.0, legend_entries=len(bands), ncol=2)  # fmt: skip
    grid = fig.add_gridspec(1, 2, wspace=0.18, **frame)
    ax_frac, ax_thr = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    thresholds = [b.mean for _, b in bands.values() if b is not None]
    if spans_decades(thresholds):
        ax_thr.set_yscale("log")
        plotting.log_ticks(ax_thr.yaxis)
    handles = []
    for method, (fraction, threshold) in bands.items():
        color = colors[method]
        _band(ax_frac, fraction, color, lw=1.5)
        _band(ax_thr, threshold, color, lw=1.5)
        absent = (
            "  [no clipping: not drawn]"
            if fraction is None
            else ("  [no threshold logged]" if threshold is None else "")
        )
        handles.append(Line2D([], [], color=color, lw=2.5, alpha=0.35 if absent else 1.0,
                              ls=":" if absent else "-", label=method + absent))  # fmt: skip
    ax_frac.set_title("clipped fraction of ‖g‖ (clip_fraction)", fontsize=10.5)
    ax_frac.set_ylabel("clip fraction")
    ax_thr.set_title("clipping threshold λ (clip_threshold; per-tensor rules: mean)", fontsize=10.5)
    ax_thr.set_ylabel("threshold")
    for ax in (ax_frac, ax_thr):
        ax.set_xlabel("iteration")
        plotting.style_axes(ax)
    plural = any(row.n_seeds > 1 for row in result.rows)
    plotting.legend_block(
        fig,
        handles,
        title="lines: mean over seeds of each logging window"
        + (f", {BAND_TEXT[band]}" if plural else ""),
        **legend_kw,
    )
    return plotting.savefig(fig, out, dpi)


# ------------------------------------------------------------------------------------ main


def parse_per_task(items: Sequence[str] | None, option: str, convert: Callable[[str], Any]):
    """``option``'s values: ``VALUE`` (every task) and/or ``TASK=VALUE``, each ``convert``ed (a
    ``ValueError`` for a value it refuses)."""
    default, per_task = None, {}
    for item in items or []:
        name, sep, value = item.rpartition("=")
        try:
            converted = convert(value)
        except ValueError:
            raise ValueError(f"{option} {item!r}: expected VALUE or TASK=VALUE") from None
        if sep:
            per_task[name] = converted
        else:
            default = converted
    return default, per_task


def parse_targets(items: Sequence[str] | None) -> tuple[float | None, dict[str, float]]:
    """``--target`` values: ``VALUE`` (every task) and/or ``TASK=VALUE``."""
    return parse_per_task(items, "--target", float)


def _metric_name(value: str) -> str:
    if not value:
        raise ValueError(value)
    return value


def parse_metrics(items: Sequence[str] | None) -> tuple[str | None, dict[str, str]]:
    """``--metric`` values: ``NAME`` (every task) and/or ``TASK=NAME``: the pipeline names each
    task's metric, which its runs' configs no longer carry."""
    return parse_per_task(items, "--metric", _metric_name)


def output_paths(
    out: Path | None, sweep: Path, tasks: Sequence[str]
) -> tuple[Path, dict[str, Path]]:
    """``(directory for tables and profile, figure path per task)`` from ``--out``.

    ``--out`` is a directory, or a figure file (``.png``/``.pdf``/``.svg``): then with several
    tasks each figure gets ``_<task>`` inserted before the suffix.
    """
    if out is None:
        out = sweep / "figures"
    if out.suffix.lower() in FIGURE_SUFFIXES:
        if len(tasks) == 1:
            return out.parent, {tasks[0]: out}
        return out.parent, {t: out.with_name(f"{out.stem}_{t}{out.suffix}") for t in tasks}
    return out, {t: out / f"{t}_comparison.png" for t in tasks}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Outputs per task: <task>_comparison.png, <task>_clipping.png, <task>_table.md, "
        "<task>_table.csv; across tasks: performance_profile.png/.csv.",
    )
    parser.add_argument("sweep", type=Path, help="sweep directory <results_root>/<experiment_name>")
    parser.add_argument(
        "--out",
        type=Path,
        help="output directory, or figure path for one task "
        "(default: <sweep>/figures/<task>_comparison.png)",
    )
    parser.add_argument("--tasks", action="append", help="only these tasks (comma-separated)")
    parser.add_argument(
        "--methods", action="append", help="only these methods (comma-separated names)"
    )
    parser.add_argument(
        "--method-key",
        choices=("label", "optimizer"),
        default="label",
        help="method identity: the method name or the optimizer name",
    )
    add_target_options(parser)
    add_figure_options(parser)
    return parser


def add_target_options(parser: argparse.ArgumentParser) -> None:
    """The metric, the targets and the performance profile built on them."""
    parser.add_argument(
        "--metric",
        action="append",
        metavar="[TASK=]NAME",
        help="validation metric (repeatable; default: the runs' comparison.metric, else the "
        "task's primary metric)",
    )
    parser.add_argument(
        "--target",
        action="append",
        metavar="[TASK=]VALUE",
        help="validation target for steps-to-target and the profile (repeatable)",
    )
    parser.add_argument(
        "--target-frac",
        type=float,
        metavar="F",
        help="opt-in target for tasks without one: F of the best value of any method "
        "(refused when that best is 0)",
    )
    parser.add_argument(
        "--quorum",
        type=float,
        default=0.5,
        help="profile: share of a method's seeds that must reach the target (0.5)",
    )
    parser.add_argument("--tau-max", type=float, default=10.0, help="profile: largest τ (10)")
    parser.add_argument("--no-profile", action="store_true", help="skip the performance profile")


def add_figure_options(parser: argparse.ArgumentParser) -> None:
    """How the task figures draw their curves."""
    parser.add_argument(
        "--band",
        choices=tuple(BAND_TEXT),
        default="bootstrap",
        help="shaded band over seeds: a bootstrap 90%% interval of the mean (default), min–max "
        "or mean ± std",
    )
    parser.add_argument(
        "--aux",
        choices=("auto", "train_metric", *AUX_KEYS),
        default="auto",
        help="top-right panel (auto: training metric if logged, else the clipped "
        "fraction if any method clips, else the gradient norm)",
    )
    parser.add_argument(
        "--smooth",
        type=int,
        default=1,
        help="moving average of the training loss over this many logged points",
    )
    parser.add_argument("--dpi", type=int, default=plotting.DPI)


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.target_frac is not None and not 0 < args.target_frac <= 1:
        parser.error(f"Invalid --target-frac: {args.target_frac}; expected a number in (0, 1]")
    if args.smooth < 1:
        parser.error(f"Invalid --smooth: {args.smooth}; expected an integer >= 1")
    if args.tau_max <= 1:
        parser.error(f"Invalid --tau-max: {args.tau_max}; expected a number > 1")


def analyse_tasks(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    runs: Sequence[Run],
    targets: tuple[float | None, dict[str, float]],
) -> list[TaskResult]:
    """Every task's result; a task without a completed run is skipped with a note, a refused
    target stops everything (never plot a wrong one)."""
    default_target, task_targets = targets
    default_metric, task_metrics = parse_metrics(args.metric)
    by_task: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_task[run.task].append(run)
    results: list[TaskResult] = []
    for task, task_runs in sorted(by_task.items()):
        try:
            results.append(analyse_task(task, task_runs, metric=task_metrics.get(task, default_metric),
                                        target=task_targets.get(task, default_target),
                                        target_frac=args.target_frac, method_key=args.method_key))  # fmt: skip
        except ValueError as exc:
            if str(exc).startswith("Invalid"):
                parser.error(str(exc))
            print(f"skipping task {task}: {exc}")
    return results


def write_task_outputs(
    res: TaskResult, args: argparse.Namespace, command: str, out_dir: Path, figure: Path,
    colors: dict[str, Any],
) -> None:  # fmt: skip
    """A task's comparison and clipping figures and its tables."""
    n_runs = sum(len(group) for group in res.runs.values())
    made_by = stamp(command, f"{n_runs} completed run(s) of {res.task}")
    fig_path = plot_task(res, figure, colors, made_by=made_by, band=args.band, aux=args.aux,
                         smooth_window=args.smooth, dpi=args.dpi)  # fmt: skip
    clip_path = plot_clipping(res, out_dir / f"{res.task}_clipping.png", colors,
                              made_by=made_by, band=args.band, dpi=args.dpi)  # fmt: skip
    md, csv_path = out_dir / f"{res.task}_table.md", out_dir / f"{res.task}_table.csv"
    write_tables(res, md, csv_path, made_by)
    print(md.read_text())
    print(f"wrote {fig_path}, {clip_path}, {md}, {csv_path}\n")


def _cell(text: str) -> float:
    """A number of a table's CSV (``nan``/``inf`` as written; empty: NaN)."""
    return float(text) if text.strip() else math.nan


def result_from_table(csv_path: Path) -> TaskResult | None:
    """A task's profile entry rebuilt from its ``<task>_table.csv`` (``None`` without a target).

    Per method the table keeps what the profile uses: the seeds, how many reached the target and
    the mean steps and wall seconds over those; the rebuilt rows give back exactly these.
    """
    with open(csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    if not table or not table[0].get("target"):
        return None
    task, metric, target = table[0]["task"], table[0]["metric"], float(table[0]["target"])
    rows = []
    for r in table:
        n, hit = int(r["n_seeds"]), int(r["seeds_reached"])
        steps, wall = (
            _cell(r["steps_to_target_mean"]),
            _cell(r["wall_seconds_to_target_mean"]),
        )
        rows.append(MethodRow(method=r["method"], description=r["description"], lr=r["lr"],
                              level=r["clipping_level"], seeds=[None] * n,
                              final_val=(_cell(r["final_val_mean"]), _cell(r["final_val_std"]), n),
                              best_val=(_cell(r["best_val_mean"]), _cell(r["best_val_std"]), n),
                              train_loss=(math.nan, math.nan, 0),
                              removed=(math.nan, math.nan, 0),
                              steps=[steps] * hit + [math.nan] * (n - hit),
                              walls=[wall] * hit + [math.nan] * (n - hit)))  # fmt: skip
    lower = plotting.lower_is_better(metric)
    note = f"val {metric} {'≤' if lower else '≥'} {target:.4g} (from {csv_path.name}, its runs not read)"
    return TaskResult(task, metric, lower, target, note, rows, {r.method: [] for r in rows}, [])


def tables_of_other_tasks(out_dir: Path, results: Sequence[TaskResult]) -> list[TaskResult]:
    """The tasks whose table is in ``out_dir`` but whose runs are not part of this call.

    Tasks are often compared one invocation at a time; the profile covers every task with a table
    (a table written earlier counts with the numbers it holds; its own line says what made it).
    """
    have = {res.task for res in results}
    others = []
    for path in sorted(out_dir.glob("*_table.csv")):
        task = path.name.removesuffix("_table.csv")
        if task not in have and (res := result_from_table(path)) is not None:
            others.append(res)
    return others


def write_profile(
    results: list[TaskResult], args: argparse.Namespace, command: str, out_dir: Path,
    colors: dict[str, Any],
) -> None:  # fmt: skip
    """The performance profile over the tasks that have a target (the others are named)."""
    with_target = [res for res in results if res.target is not None]
    left_out = [res.task for res in results if res.target is None]
    for task in left_out:
        print(
            f"performance profile: leaving out {task}, no target known ({config_path_hint(task)})"
        )
    if not with_target:
        print("performance profile: not drawn, no task has a target")
        return
    profile = out_dir / "performance_profile.png"
    tasks = ", ".join(res.task for res in with_target)
    plot_profile(with_target, profile, colors, made_by=stamp(command, f"tasks {tasks}"),
                 left_out=left_out, tau_max=args.tau_max, quorum=args.quorum, dpi=args.dpi)  # fmt: skip
    print(f"wrote {profile} and {profile.with_suffix('.csv')}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        targets = parse_targets(args.target)
        parse_metrics(args.metric)  # a malformed --metric now, before reading any run
        runs = discover_runs([args.sweep])
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    runs = [r for r in runs
            if plotting.matches(r.task, args.tasks) and plotting.matches(r.method, args.methods)]  # fmt: skip
    if not runs:
        print(f"plot_comparison: no run directories under {args.sweep}", file=sys.stderr)
        return 1
    for run in runs:
        if not run.completed:
            print(f"skipping {plotting.status_note(run)}  ({run.dir})")
    results = analyse_tasks(parser, args, runs, targets)
    if not results:
        print("plot_comparison: no task has a completed run", file=sys.stderr)
        return 1
    command = provenance.command_line("scripts/plot_comparison.py", argv)
    out_dir, figures = output_paths(args.out, args.sweep, [res.task for res in results])
    others = [] if args.no_profile else tables_of_other_tasks(out_dir, results)
    every = sorted([*results, *others], key=lambda res: res.task)
    colors = plotting.method_colors(sorted({row.method for res in every for row in res.rows}))
    for res in results:
        write_task_outputs(res, args, command, out_dir, figures[res.task], colors)
    if not args.no_profile:
        write_profile(every, args, command, out_dir, colors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
