"""Compare the methods of a sweep: one figure and one table per task, and a performance profile.

    python scripts/plot_comparison.py results/<experiment_name>
    python scripts/plot_comparison.py results/readme --out results/readme/figures --band std
    python scripts/plot_comparison.py results/exp --target cola=0.45 --target reddit=0.9

Reads every run directory under the sweep (``<task>/<method label>/seed<N>/``, written by
``train.py``); only runs whose ``summary.json`` says ``completed`` are used, the others are listed
on the console and in a footnote of the figure.

Per task (files in ``--out``, default ``<sweep>/figures``):

* ``<task>_comparison.png``: training loss against iteration (large left panel), the training
  metric (top right; the clipped fraction or the gradient norm when the task logs no training
  metric) and the validation metric (bottom right, dashed). One colour per method; with several
  seeds the mean and a band (min–max, or ± std with ``--band std``). The title names the data and
  the model the runs actually used, and flags embedded proxy data.
* ``<task>_table.md`` / ``<task>_table.csv``: per method the final and best validation metric and
  the final training loss (mean ± sample std over seeds), the number of seeds and the steps to
  reach the target (mean over the seeds that reach it).

Across tasks: ``performance_profile.png`` (+ ``.csv``), in the style of AlgoPerf: for each method
the fraction of tasks on which it reaches the task's target within τ times the steps of the
fastest method, against τ. A method counts as reaching the target on a task when at least
``--quorum`` of its seeds do; its steps are the mean over those seeds.

The target of a task is ``--target`` (``VALUE`` for every task or ``TASK=VALUE``), else
``--target-frac`` (0.9) of the best validation value any method reached: ``best − 0.1·|best|``
for higher-is-better metrics (the primary metric of every task is), ``best + 0.1·|best|`` for
lower-is-better ones (``--metric mse``, ``loss``, ...).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import plotting
from plotting import BAND_TEXT, Run

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
    value = plotting.as_float((run.summary.get("final") or {}).get(f"val_{metric}"))
    if math.isfinite(value):
        return value
    _, values = run.series(f"val_{metric}", "val")
    return float(values[-1]) if values.size else math.nan


def best_value(run: Run, metric: str, lower: bool) -> float:
    """Best validation value over the run's evaluations (the summary's ``best`` if it is that metric)."""
    best = run.summary.get("best") or {}
    if best.get("metric") == metric and not lower:
        value = plotting.as_float(best.get("value"))
        if math.isfinite(value):
            return value
    _, values = run.series(f"val_{metric}", "val")
    if not values.size:
        return math.nan
    return float(values.min() if lower else values.max())


def final_train_loss(run: Run) -> float:
    value = plotting.as_float(run.summary.get("final_train_loss"))
    if math.isfinite(value):
        return value
    _, values = run.series("train_loss", "train")
    return float(values[-1]) if values.size else math.nan


def reached(value: float, target: float, lower: bool) -> bool:
    return value <= target if lower else value >= target


def steps_to_target(run: Run, metric: str, target: float, lower: bool) -> float:
    """First evaluation step whose validation metric reaches ``target``; NaN if none does."""
    steps, values = run.series(f"val_{metric}", "val")
    for step, value in zip(steps, values):
        if reached(float(value), target, lower):
            return float(step)
    return math.nan


def frac_target(best: float, frac: float, lower: bool) -> float:
    """``frac`` of ``best``: ``best ∓ (1 − frac)·|best|`` (the right direction for negatives too)."""
    slack = (1.0 - frac) * abs(best)
    return best + slack if lower else best - slack


@dataclass
class MethodRow:
    """One row of a task's table."""

    method: str
    description: str
    seeds: list[int | None]
    final_val: tuple[float, float, int]
    best_val: tuple[float, float, int]
    train_loss: tuple[float, float, int]
    steps: list[float] = field(default_factory=list)  # per seed; NaN = never reached

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

    def solves(self, quorum: float) -> bool:
        """Whether at least ``quorum`` of the seeds reach the target (and at least one does)."""
        return self.n_reached > 0 and self.n_reached >= quorum * self.n_seeds


@dataclass
class TaskResult:
    task: str
    metric: str
    lower: bool
    target: float
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
    """Legend text of a method: its summaries' ``optimizer_description`` (all distinct ones)."""
    return " / ".join(dict.fromkeys(r.description for r in runs))


def analyse_task(
    task: str,
    runs: Sequence[Run],
    *,
    metric: str | None = None,
    target: float | None = None,
    target_frac: float = 0.9,
    method_key: str = "label",
) -> TaskResult:
    """Table rows and target of one task from its runs (completed ones used, others skipped)."""
    completed = [r for r in runs if r.completed]
    skipped = [r for r in runs if not r.completed]
    if not completed:
        raise ValueError(f"task {task}: no completed run")
    metric = metric or primary_metric(completed)
    lower = plotting.lower_is_better(metric)
    groups = group_by_method(completed, method_key)
    if target is None:
        bests = [best_value(r, metric, lower) for r in completed]
        bests = [b for b in bests if math.isfinite(b)]
        if not bests:
            raise ValueError(f"task {task}: no run logged val_{metric}")
        best = min(bests) if lower else max(bests)
        target = frac_target(best, target_frac, lower)
        note = (
            f"{target_frac:g} of the best val {metric} of any method "
            f"({best:.4g}): {'≤' if lower else '≥'} {target:.4g}"
        )
    else:
        note = f"val {metric} {'≤' if lower else '≥'} {target:.4g} (given)"
    rows = []
    for method, group in groups.items():
        rows.append(
            MethodRow(
                method=method,
                description=describe(group),
                seeds=[r.seed for r in group],
                final_val=plotting.mean_std([final_value(r, metric) for r in group]),
                best_val=plotting.mean_std([best_value(r, metric, lower) for r in group]),
                train_loss=plotting.mean_std([final_train_loss(r) for r in group]),
                steps=[steps_to_target(r, metric, target, lower) for r in group],
            )
        )
    return TaskResult(task, metric, lower, target, note, rows, groups, skipped)


# ---------------------------------------------------------------------------------- tables


def fmt_pm(stat: tuple[float, float, int], digits: int = 4) -> str:
    mean, std, n = stat
    if n == 0 or not math.isfinite(mean):
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def fmt_steps(row: MethodRow) -> str:
    if row.n_reached == 0:
        return "—"
    return f"{row.mean_steps:.0f} ({row.n_reached}/{row.n_seeds} seeds)"


def write_tables(result: TaskResult, md_path: Path, csv_path: Path) -> None:
    """The task's table as Markdown (formatted) and CSV (raw numbers)."""
    m = result.metric
    lines = [
        f"### {result.task}: val {m} ({'lower' if result.lower else 'higher'} is better)",
        "",
        f"mean ± sample std (ddof=1) over seeds; target: {result.target_note}; "
        "steps to target: mean over the seeds that reach it.",
        "",
        f"| method | hyper-parameters | seeds | final val {m} | best val {m} | final train loss "
        f"| steps to {m} {'≤' if result.lower else '≥'} {result.target:.4g} |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in result.rows:
        lines.append(
            f"| {row.method} | {row.description} | {row.n_seeds} | {fmt_pm(row.final_val)} "
            f"| {fmt_pm(row.best_val)} | {fmt_pm(row.train_loss)} | {fmt_steps(row)} |"
        )
    if result.skipped:
        lines += [
            "",
            "Skipped (not completed): " + "; ".join(map(plotting.status_note, result.skipped)),
        ]
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text("\n".join(lines) + "\n")

    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([
            "task", "method", "description", "n_seeds", "metric",
            "final_val_mean", "final_val_std", "best_val_mean", "best_val_std",
            "final_train_loss_mean", "final_train_loss_std",
            "target", "steps_to_target_mean", "seeds_reached",
        ])  # fmt: skip
        for row in result.rows:
            writer.writerow([
                result.task, row.method, row.description, row.n_seeds, m,
                *row.final_val[:2], *row.best_val[:2], *row.train_loss[:2],
                result.target, row.mean_steps, row.n_reached,
            ])  # fmt: skip


# ----------------------------------------------------------------------- performance profile


def profile_ratios(
    results: Sequence[TaskResult], quorum: float = 0.5
) -> dict[str, dict[str, float]]:
    """``ratios[method][task]``: steps to target over the fastest method's; inf if not reached.

    Every method appearing in any task gets an entry for every task (absent = not reached).
    """
    methods = sorted({row.method for res in results for row in res.rows})
    ratios: dict[str, dict[str, float]] = {m: {} for m in methods}
    for res in results:
        steps = {row.method: row.mean_steps for row in res.rows if row.solves(quorum)}
        best = min(steps.values(), default=math.nan)
        for m in methods:
            ratios[m][res.task] = steps[m] / best if m in steps else math.inf
    return ratios


def profile_curve(task_ratios: dict[str, float], taus: np.ndarray) -> np.ndarray:
    """ρ(τ): the fraction of tasks with ratio ≤ τ."""
    r = np.array(list(task_ratios.values()), dtype=np.float64)
    if r.size == 0:
        return np.zeros_like(taus)
    return (r[None, :] <= taus[:, None] * (1 + 1e-12)).mean(axis=1)


def plot_profile(
    results: Sequence[TaskResult],
    out: Path,
    colors: dict[str, Any],
    *,
    tau_max: float = 10.0,
    quorum: float = 0.5,
    dpi: int = plotting.DPI,
) -> dict[str, dict[str, float]]:
    import matplotlib.pyplot as plt

    ratios = profile_ratios(results, quorum)
    taus = np.geomspace(1.0, tau_max, 400)
    descriptions = {row.method: row.description for res in results for row in res.rows}
    n_methods = len(ratios)
    ncol = 1 if n_methods > 4 else 2
    targets = "; ".join(f"{res.task}: {res.target_note}" for res in results)
    note = plotting.wrap(
        f"A method reaches a task's target when ≥ {quorum:g} of its seeds do (its steps: the mean "
        f"over those seeds). Identical profiles are drawn slightly offset. Targets — {targets}.",
        150,
    )
    width, title_h, axes_h, gap_h = 9.5, 0.5, 4.2, 0.65
    legend_h = plotting.legend_height(n_methods, ncol, title=False)
    note_h = plotting.note_height(note)
    height = title_h + axes_h + gap_h + legend_h + note_h
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0.09, (gap_h + legend_h + note_h) / height, 0.88, axes_h / height))
    handles = []
    for i, (method, task_ratios) in enumerate(ratios.items()):
        rho = profile_curve(task_ratios, taus)
        offset = (i - (n_methods - 1) / 2) * 0.006
        (line,) = ax.step(
            taus,
            rho + offset,
            where="post",
            lw=2,
            color=colors.get(method),
            label=plotting.shorten(f"{method}: {descriptions.get(method, method)}", 100),
        )
        handles.append(line)
    ax.set_xscale("log")
    ax.set_xlim(1.0, tau_max)
    ax.set_ylim(-0.03, 1.05)
    ticks = [t for t in (1, 1.5, 2, 3, 5, 10, 20, 50, 100) if t <= tau_max]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("τ (steps to target ÷ steps of the fastest method on that task)")
    ax.set_ylabel("fraction of tasks with target\nreached within τ × fastest")
    tasks = ", ".join(res.task for res in results)
    ax.set_title(
        plotting.wrap(f"Performance profile over {len(results)} task(s): {tasks}", 90), fontsize=11
    )
    plotting.style_axes(ax)
    plotting.legend_block(
        fig, handles, height=height, legend_h=legend_h, note_h=note_h, ncol=ncol, note=note
    )
    plotting.savefig(fig, out, dpi)

    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", *[res.task for res in results]])
        for method, task_ratios in ratios.items():
            writer.writerow([method, *[task_ratios[res.task] for res in results]])
    return ratios


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


def plot_task(
    result: TaskResult,
    out: Path,
    colors: dict[str, Any],
    *,
    band: str = "minmax",
    aux: str = "auto",
    smooth_window: int = 1,
    dpi: int = plotting.DPI,
) -> Path:
    """The three-panel comparison figure of one task."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    runs = [r for group in result.runs.values() for r in group]
    aux_key, aux_split, aux_title = choose_aux(runs, result.metric, aux)
    n_methods = len(result.runs)
    legend_cols = 2 if n_methods > 1 else 1
    skipped = [plotting.status_note(r) for r in result.skipped]
    note = plotting.wrap("Skipped (not completed): " + "; ".join(skipped), 220) if skipped else ""

    # Layout in inches: title, the panels, x-label gap, legend, footnote.
    width, title_h, axes_h, gap_h = 14.0, 1.0, 5.2, 0.7
    legend_h = plotting.legend_height(n_methods + 2, legend_cols)
    note_h = plotting.note_height(note)
    height = title_h + axes_h + gap_h + legend_h + note_h
    fig = plt.figure(figsize=(width, height))
    grid = fig.add_gridspec(
        2,
        2,
        width_ratios=[1.55, 1],
        left=0.06,
        right=0.985,
        top=1 - title_h / height,
        bottom=(gap_h + legend_h + note_h) / height,
        wspace=0.2,
        hspace=0.42,
    )
    ax_loss = fig.add_subplot(grid[:, 0])
    ax_aux = fig.add_subplot(grid[0, 1])
    ax_val = fig.add_subplot(grid[1, 1])

    loss, aux_bands, val = {}, {}, {}
    loss_values, aux_values = [], []
    for method, group in result.runs.items():
        curves = []
        for run in group:
            steps, values = run.series("train_loss", "train")
            curves.append((steps, plotting.smooth(values, smooth_window)))
            loss_values.append(values)
        loss[method] = plotting.aggregate(curves, band)
        aux_curves = [run.series(aux_key, aux_split) for run in group]
        aux_values += [v for _, v in aux_curves]
        aux_bands[method] = plotting.aggregate(aux_curves, band)
        val_curves = [run.series(f"val_{result.metric}", "val") for run in group]
        val[method] = plotting.aggregate(val_curves, band)
    if spans_decades(loss_values):
        ax_loss.set_yscale("log")
        plotting.log_ticks(ax_loss.yaxis)
    if aux_key != "clip_fraction" and spans_decades(aux_values):
        ax_aux.set_yscale("log")
        plotting.log_ticks(ax_aux.yaxis)
    for method in result.runs:
        color = colors[method]
        _band(ax_loss, loss[method], color, alpha=0.1, lw=1.6)
        _band(ax_aux, aux_bands[method], color, lw=1.3)
        _band(ax_val, val[method], color, lw=1.6, ls="--", marker="o", ms=3.5)

    ax_val.axhline(result.target, color="0.35", lw=0.9, ls=":")
    ax_val.annotate(
        f"target {result.target:.3g}",
        xy=(0.0, result.target),
        xycoords=("axes fraction", "data"),
        xytext=(3, 3),
        textcoords="offset points",
        fontsize=7.5,
        color="0.35",
    )

    smooth_note = (
        f", moving average over {smooth_window} logged points" if smooth_window > 1 else ""
    )
    ax_loss.set_title(f"training loss (mean over each logging window{smooth_note})", fontsize=10.5)
    ax_loss.set_ylabel("training loss")
    ax_aux.set_title(aux_title, fontsize=10.5)
    ax_aux.set_ylabel(aux_title.split(" (")[0])
    ax_val.set_title(f"validation {result.metric} (dashed)", fontsize=10.5)
    ax_val.set_ylabel(f"validation {result.metric}")
    for ax in (ax_loss, ax_aux, ax_val):
        ax.set_xlabel("iteration")
        plotting.style_axes(ax)

    summaries = [r.summary for r in runs]
    n_seeds = sorted({row.n_seeds for row in result.rows})
    seeds_text = "/".join(map(str, n_seeds))
    fig.suptitle(
        f"{result.task}: {n_methods} method(s), {seeds_text} seed(s) each\n"
        + plotting.wrap(plotting.provenance(summaries), 150),
        y=1 - 0.12 / height,
        va="top",
        fontsize=12,
    )

    handles = [
        Line2D(
            [],
            [],
            color=colors[row.method],
            lw=2.5,
            label=plotting.shorten(
                f"{row.method}: {row.description}  [{row.n_seeds} seed(s)]", 105
            ),
        )
        for row in result.rows
    ]
    handles += [
        Line2D([], [], color="0.3", lw=1.5, label="solid: training (left, top right)"),
        Line2D(
            [],
            [],
            color="0.3",
            lw=1.5,
            ls="--",
            marker="o",
            ms=3.5,
            label="dashed: validation (bottom right)",
        ),
    ]
    band_text = BAND_TEXT[band] if any(row.n_seeds > 1 for row in result.rows) else "one seed each"
    plotting.legend_block(
        fig,
        handles,
        height=height,
        legend_h=legend_h,
        note_h=note_h,
        ncol=legend_cols,
        title=f"method: hyper-parameters — lines: mean over seeds, {band_text}",
        note=note,
        note_color="firebrick",
    )
    return plotting.savefig(fig, out, dpi)


# ------------------------------------------------------------------------------------ main


def parse_targets(items: Sequence[str] | None) -> tuple[float | None, dict[str, float]]:
    """``--target`` values: ``VALUE`` (every task) and/or ``TASK=VALUE``."""
    default, per_task = None, {}
    for item in items or []:
        name, sep, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"--target {item!r}: expected VALUE or TASK=VALUE") from None
        if sep:
            per_task[name] = number
        else:
            default = number
    return default, per_task


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
        epilog="Outputs per task: <task>_comparison.png, <task>_table.md, <task>_table.csv; "
        "across tasks: performance_profile.png/.csv.",
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
        "--methods", action="append", help="only these method labels (comma-separated)"
    )
    parser.add_argument("--metric", help="validation metric (default: the task's primary metric)")
    parser.add_argument(
        "--target",
        action="append",
        metavar="[TASK=]VALUE",
        help="validation target for steps-to-target and the profile (repeatable)",
    )
    parser.add_argument(
        "--target-frac",
        type=float,
        default=0.9,
        help="default target: this fraction of the best value of any method (0.9)",
    )
    parser.add_argument(
        "--band",
        choices=("minmax", "std"),
        default="minmax",
        help="shaded band over seeds: min–max (default) or mean ± std",
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
    parser.add_argument(
        "--method-key",
        choices=("label", "optimizer"),
        default="label",
        help="method identity: the label directory name or the optimizer name",
    )
    parser.add_argument(
        "--quorum",
        type=float,
        default=0.5,
        help="profile: share of a method's seeds that must reach the target (0.5)",
    )
    parser.add_argument("--tau-max", type=float, default=10.0, help="profile: largest τ (10)")
    parser.add_argument("--no-profile", action="store_true", help="skip the performance profile")
    parser.add_argument("--dpi", type=int, default=plotting.DPI)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.target_frac <= 1:
        parser.error(f"--target-frac must be in (0, 1], got {args.target_frac}")
    if args.smooth < 1:
        parser.error(f"--smooth must be >= 1, got {args.smooth}")
    if args.tau_max <= 1:
        parser.error(f"--tau-max must be > 1, got {args.tau_max}")
    try:
        default_target, task_targets = parse_targets(args.target)
        runs = plotting.discover_runs([args.sweep])
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    runs = [
        r
        for r in runs
        if plotting.matches(r.task, args.tasks) and plotting.matches(r.method, args.methods)
    ]
    if not runs:
        print(f"plot_comparison: no run directories under {args.sweep}", file=sys.stderr)
        return 1

    by_task: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_task[run.task].append(run)
    for run in runs:
        if not run.completed:
            print(f"skipping {plotting.status_note(run)}  ({run.dir})")

    results: list[TaskResult] = []
    for task, task_runs in sorted(by_task.items()):
        try:
            results.append(
                analyse_task(
                    task,
                    task_runs,
                    metric=args.metric,
                    target=task_targets.get(task, default_target),
                    target_frac=args.target_frac,
                    method_key=args.method_key,
                )
            )
        except ValueError as exc:
            print(f"skipping task {task}: {exc}")
    if not results:
        print("plot_comparison: no task has a completed run", file=sys.stderr)
        return 1

    out_dir, figures = output_paths(args.out, args.sweep, [res.task for res in results])
    colors = plotting.method_colors(sorted({row.method for res in results for row in res.rows}))
    for res in results:
        fig_path = plot_task(
            res,
            figures[res.task],
            colors,
            band=args.band,
            aux=args.aux,
            smooth_window=args.smooth,
            dpi=args.dpi,
        )
        md, csv_path = out_dir / f"{res.task}_table.md", out_dir / f"{res.task}_table.csv"
        write_tables(res, md, csv_path)
        print(md.read_text())
        print(f"wrote {fig_path}, {md}, {csv_path}\n")
    if not args.no_profile:
        profile = out_dir / "performance_profile.png"
        plot_profile(
            results, profile, colors, tau_max=args.tau_max, quorum=args.quorum, dpi=args.dpi
        )
        print(f"wrote {profile} and {profile.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
