"""The protocol table of a tuned comparison: report statistics and paired verdicts per method.

``tuned_comparison.py`` writes ``<task>_protocol.md``/``.csv`` beside the task's figures. Per
method: its count of tuned settings, its choice with the edge flags of both axes, the report
seeds' mean, median and bootstrap 90% interval, and its paired difference to the best baseline
over the same seeds (mean [90% interval], median, Wilcoxon and paired-t p, the t p adjusted by
Benjamini–Hochberg over the table's rows, and whether the difference holds). The statistics are
``torch_clip.suite.protocol``'s; docs/evidence/protocol.md states them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from torch_clip.suite import protocol
from torch_clip.suite.experiments import provenance, sweeps
from torch_clip.suite.experiments.provenance import stamp
from torch_clip.suite.reports import plotting
from torch_clip.suite.run_reader import Run

COLUMNS = ("method", "settings", "lr", "lr_edge", "knob", "knob_edge", "n", "failed", "mean",
           "median", "low", "high", "baseline", "diff_mean", "diff_low", "diff_high", "diff_median",
           "p_wilcoxon", "p_t", "p_t_bh", "holds", "values")  # fmt: skip


def finals(runs: list[Run], of, metric: str) -> dict[str, dict[int, float]]:
    """Per method, seed → final validation metric of its completed report runs (a failed run
    counts as NaN, so the statistics count it)."""
    out: dict[str, dict[int, float]] = {}
    for run in runs:
        value = run.final(metric) if run.completed else math.nan
        out.setdefault(of(run), {})[run.seed] = value
    return out


def baselines_of(c: dict[str, Any], shown: list[str], clips) -> list[str]:
    """``comparison.baselines``, or every reported method that does not clip (``clips``: a
    method's overrides → whether it clips)."""
    named = c.get("baselines")
    if named is not None:
        return [b for b in named if b in shown]
    return [m for m in shown if not clips(c["methods"][m])]


def protocol_rows(result: dict[str, Any], clips) -> list[dict[str, Any]]:
    """The table's rows (``COLUMNS``) from a comparison's result (``tuned_comparison.run_task``)."""
    c, shown = result["spec"], result["shown"]
    lower = plotting.lower_is_better(c["metric"])
    values = finals(
        [r for r in result["report"] if result["of"](r) in shown], result["of"], c["metric"]
    )
    summaries = {m: protocol.summarize(list(values.get(m, {}).values())) for m in shown}
    base = protocol.best_baseline(summaries, baselines_of(c, shown, clips), lower)
    rows = []
    for m in shown:
        s, chosen = summaries[m], result["best"][m]
        axes = result["axes"][m]
        knob = axes[1] if len(axes) > 1 else None
        row = {"method": m, "settings": chosen.get("count", protocol.settings_count(axes)),
               "lr": f"{chosen['setting'][0]:g}", "lr_edge": chosen["edges"].get(axes[0].key, ""),
               "knob": f"{knob.name}={chosen['setting'][1]:.4g}" if knob else "—",
               "knob_edge": chosen["edges"].get(knob.key, "") if knob else "",
               "n": s.n, "failed": s.failed, "mean": s.mean, "median": s.median, "low": s.low,
               "high": s.high, "baseline": base or "",
               "values": " ".join(f"{seed}:{v:.6g}" for seed, v in sorted(values.get(m, {}).items()))}  # fmt: skip
        if base and m != base:
            p = protocol.paired_difference(values.get(m, {}), values.get(base, {}), lower)
            row.update(diff_mean=p.mean, diff_low=p.low, diff_high=p.high, diff_median=p.median,
                       p_wilcoxon=p.p_wilcoxon, p_t=p.p_t, holds=p.verdict)  # fmt: skip
        rows.append(row)
    adjusted = protocol.adjusted_p([r.get("p_t", math.nan) for r in rows])
    for row, q in zip(rows, adjusted):
        row["p_t_bh"] = q
    return [{k: row.get(k, "") for k in COLUMNS} | {"metric": c["metric"]} for row in rows]


def _num(v: Any, digits: int = 4) -> str:
    """A table cell: a finite number to ``digits`` decimals, "—" for none or NaN."""
    if isinstance(v, float | int) and math.isfinite(v):
        return f"{v:.{digits}f}"
    return "—"


def markdown(result: dict[str, Any], rows: list[dict[str, Any]], made_by: str) -> str:
    """The table as Markdown, with what its columns mean."""
    c = result["spec"]
    lower = plotting.lower_is_better(c["metric"])
    base = rows[0]["baseline"] if rows else ""
    lines = [f"### {result['task']}: val {c['metric']} ({'lower' if lower else 'higher'} is better), "
             "the fair protocol", "",
             f"Tuned on seeds {c['tune_seeds']} (median), reported on seeds {c['report_seeds']}. "
             "mean, median and a bootstrap 90% interval of the mean (BCa) over the report seeds; "
             f"Δ: the method − the best baseline ({base or 'none reported'}) on the same seeds, mean "
             "[bootstrap 90% interval] and median; p: Wilcoxon signed-rank and paired t (two-sided), "
             "t adjusted by Benjamini–Hochberg over the rows; holds: the interval excludes 0 and "
             "paired t p < 0.10 with every pair finite. edge: the choice is its axis' lowest (low) "
             "or highest (high) value after the extension rounds; only: one value.", "",
             "| method | settings | lr | lr edge | knob | knob edge | seeds | mean | median "
             "| 90% interval | Δ mean [90%] | Δ median | p Wilcoxon | p t | p t (BH) | holds? |",
             "|---|---:|---:|---|---|---|---:|---:|---:|---|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        seeds = f"{r['n']}" + (f" ({r['failed']} failed)" if r["failed"] else "")
        interval = f"[{_num(r['low'])}, {_num(r['high'])}]"
        diff = "—" if r["diff_mean"] == "" else f"{_num(r['diff_mean'])} [{_num(r['diff_low'])}, {_num(r['diff_high'])}]"  # fmt: skip
        diff = "baseline" if r["method"] == base else diff
        lines.append(f"| {r['method']} | {r['settings']} | {r['lr']} | {r['lr_edge']} | {r['knob']} "
                     f"| {r['knob_edge']} | {seeds} | {_num(r['mean'])} | {_num(r['median'])} | {interval} "
                     f"| {diff} | {_num(r['diff_median'])} "
                     f"| {_num(r['p_wilcoxon'], 3)} | {_num(r['p_t'], 3)} | {_num(r['p_t_bh'], 3)} "
                     f"| {r['holds'] or '—'} |")  # fmt: skip
    return provenance.scrub_paths("\n".join([*lines, "", made_by, ""]))


def write_protocol_table(result: dict[str, Any], command: str, clips) -> Path | None:
    """``<out>/<task>_protocol.md`` and ``.csv`` of one comparison (nothing without reports)."""
    rows = protocol_rows(result, clips)
    if not any(r["n"] for r in rows):
        return None
    task = result["spec"]["task"]
    made_by = stamp(command, f"{sum(r['n'] for r in rows)} report run(s) of {task}")
    out = Path(result["out"])
    out.mkdir(parents=True, exist_ok=True)
    sweeps.write_csv(out / f"{task}_protocol.csv", [{**r, "made_by": made_by} for r in rows])
    path = out / f"{task}_protocol.md"
    path.write_text(markdown(result, rows, made_by))
    return path


def read_values(path: Path) -> tuple[str, bool, dict[str, dict[int, float]]]:
    """``(best baseline, lower is better, {method: {seed: value}})`` of a ``<task>_protocol.csv``."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    values = {r["method"]: {int(k): float(v) for k, v in (p.split(":") for p in r.get("values", "").split())}
              for r in rows}  # fmt: skip
    lower = bool(rows) and plotting.lower_is_better(rows[0].get("metric", ""))
    return (rows[0]["baseline"] if rows else ""), lower, values


def aggregate_scores(tables: dict[str, Path]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Per method a (seeds × tasks) array of normalised report values over the tasks of
    ``tables`` (task → its protocol CSV): per task the best baseline's median maps to 0 and the
    best method's median to 1 (``torch_clip.suite.protocol.normalized``), for the methods of every task, on
    as many seeds as each of them has everywhere. Returns the scores and the tasks used."""
    per_task = {task: read_values(path) for task, path in tables.items()}
    sets = [set(m for m, v in values.items() if v) for _, _, values in per_task.values()]
    methods = sorted(set.intersection(*sets)) if sets else []
    columns: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    used = []
    for task, (base, lower, values) in per_task.items():
        medians = {m: float(np.median(list(values[m].values()))) for m in methods}
        best = (min if lower else max)(medians.values()) if medians else math.nan
        if base not in medians or best == medians[base]:
            continue  # no baseline among the shared methods, or nothing beats it: no scale
        for m in methods:
            seeds = sorted(values[m])
            columns[m].append(
                protocol.normalized(np.array([values[m][s] for s in seeds]), medians[base], best)
            )
        used.append(task)
    if not used:
        return {}, []
    k = min(len(c) for cols in columns.values() for c in cols)
    return {m: np.stack([c[:k] for c in cols], axis=1) for m, cols in columns.items()}, used


def write_aggregate(out: Path, command: str) -> Path | None:
    """``aggregate_iqm.md``: rliable's IQM of the normalised report values over the tasks whose
    protocol tables are in ``out`` (at least two), with stratified-bootstrap 90% intervals."""
    tables = {p.name.removesuffix("_protocol.csv"): p for p in sorted(out.glob("*_protocol.csv"))}
    scores, tasks = aggregate_scores(tables) if len(tables) > 1 else ({}, [])
    if len(tasks) < 2:
        return None
    iqm = protocol.aggregate_iqm(scores)
    lines = [f"### Aggregate over {len(tasks)} tasks: {', '.join(tasks)}", "",
             "Per task the best baseline's median report value is 0 and the best method's 1; "
             "IQM: the interquartile mean over seeds × tasks (rliable), with a stratified-bootstrap "
             "90% percentile interval (seeds resampled within each task).", "",
             "| method | IQM | 90% interval |", "|---|---:|---|"]  # fmt: skip
    for m, (point, lo, hi) in sorted(iqm.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"| {m} | {point:.3f} | [{lo:.3f}, {hi:.3f}] |")
    path = out / "aggregate_iqm.md"
    path.write_text("\n".join([*lines, "", stamp(command, f"tasks {', '.join(tasks)}"), ""]))
    return path
