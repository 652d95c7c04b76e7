"""Is the gradient noise heavy-tailed? Histograms and log-log tails of gradient norms.

    python scripts/plot_heavy_tail.py results/exp/toy/sgd/seed0 --out heavy_tail.png
    python scripts/plot_heavy_tail.py results/exp --task cola,reddit --method sgd --group task
    python scripts/plot_heavy_tail.py results/noise/cola results/noise/reddit --out noise.png
    python scripts/plot_heavy_tail.py results/exp --over-training --out tail_over_training.png

Inputs (any mix):

* run directories of ``train.py`` (or sweep/task/method directories holding them): the global
  gradient norm of every training step, ``grad_norms.npy`` — measured along the trajectory, so
  it mixes the noise with the changing full gradient;
* noise-probe directories of ``scripts/noise_probe.py`` (``noise_probe.npz`` + a ``.json`` with
  ``task``, ``data_source``, ``model_source``, ``checkpoint``) or the ``.npz`` itself: the norms
  of mini-batch gradient minus a large-batch reference gradient, ``‖g_i − ḡ‖``, at one set of
  weights — the more faithful measurement of the noise. With ``noise_coords`` (noise at sampled
  coordinates over the probe's batches) the α-stable index of Şimşekli et al. (2019) is reported
  too, of the coordinates standardised one by one (``noise_probe.py`` explains why).

``--over-training`` draws instead the tail index of the gradient noise against the training step
of each probe (``noise_probe.py`` at the start, mid-run and end of runs), one line per task, with
the probes' 90% bootstrap intervals: the α-stable index and the Hill index of the standardised
noise coordinates.

Each panel shows on top the density histogram with the maximum-likelihood Gaussian for contrast
and the Hill tail index α̂ (``clip_core.heavy_tail``) in the legend; below, the empirical
complementary CDF on log-log axes, where a power-law tail is a straight line of slope −α̂ (the
Hill fit is drawn over the k largest values it uses). One panel per run, or per task with
``--group task`` (the selected runs of a task pooled; filter with ``--method`` to pool only the
seeds of one method). A table of ``tail_summary`` per panel is printed.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clip_core.heavy_tail import (
    TailSummary,
    alpha_stable_index,
    empirical_ccdf,
    gaussian_fit,
    standardize_columns,
    tail_summary,
)
from torch_clip.suite.experiments.provenance import scrub_paths, stamp
from torch_clip.suite.records import read_json
from torch_clip.suite.reports import plotting
from torch_clip.suite.run_reader import Run, as_float, discover_runs, is_run_dir, load_run

PROBE_FILE = "noise_probe.npz"
RUN_WHAT = "per-step gradient norms along training (grad_norms.npy)"
RUN_XLABEL = "gradient norm ‖g‖"


@dataclass
class Source:
    """One measured sample: a run's gradient norms or a noise probe's noise norms."""

    kind: str  # "run" | "probe"
    name: str
    task: str
    method: str | None
    values: np.ndarray
    coords: np.ndarray | None = None  # signed noise coordinates, (batches, coords) (probes)
    meta: dict[str, Any] = field(default_factory=dict)
    what: str = RUN_WHAT
    xlabel: str = RUN_XLABEL


@dataclass
class Panel:
    """What one panel shows: one source, or several of a task pooled."""

    title: str
    sources: list[Source]
    values: np.ndarray
    summary: TailSummary
    stable_alpha: float | None  # α-stable index of the standardised noise coordinates, if any

    @property
    def what(self) -> str:
        return self.sources[0].what

    @property
    def xlabel(self) -> str:
        return self.sources[0].xlabel


# ----------------------------------------------------------------------------- sources


def task_from_target(target: str) -> str:
    """``torch_clip.tasks.toy.ToyRegressionTask`` -> ``toy`` (task modules are named like their
    configs); older records name the task ``tasks.toy.ToyRegressionTask``."""
    parts = str(target).split(".")
    if "tasks" in parts[:-2]:
        return parts[parts.index("tasks") + 1]
    return str(target)


def load_probe(path: Path, array: str = "noise_norms") -> Source:
    """A noise-probe directory (or its ``.npz``)."""
    path = Path(path)
    npz_path = path if path.suffix == ".npz" else path / PROBE_FILE
    folder = npz_path.parent
    meta = read_json(folder / "noise_probe.json") or {}
    if not meta:
        for candidate in sorted(folder.glob("*.json")):
            meta = read_json(candidate) or {}
            if meta:
                break
    with np.load(npz_path) as data:
        if array not in data:
            raise ValueError(f"{npz_path}: no array {array!r} (has {sorted(data.files)})")
        values = np.asarray(data[array], dtype=np.float64).reshape(-1)
        coords = (
            np.asarray(data["noise_coords"], dtype=np.float64) if "noise_coords" in data else None
        )
    # A probe inside a run directory (noise_probe.py RUN_DIR) belongs to that run.
    run = load_run(folder.parent) if is_run_dir(folder.parent) else None
    task = (
        task_from_target(meta["task"]) if meta.get("task") else (run.task if run else folder.name)
    )
    if run is not None:
        for key in ("data_source", "model_source", "embedded_data"):
            meta.setdefault(key, run.summary.get(key))
    at = meta.get("checkpoint") or "unknown weights"
    batches = meta.get("batches")
    count = f"{batches} mini-batches" if batches else f"n={values.size}"
    if array == "noise_norms":
        what, xlabel = (
            f"gradient noise ‖g_i − ḡ‖ at {at} (noise probe, {count})",
            "noise norm ‖g_i − ḡ‖",
        )
    else:
        what, xlabel = f"mini-batch gradient norms at {at} (noise probe, {count})", RUN_XLABEL
    return Source(
        kind="probe",
        name=str(folder.name),
        task=task,
        method=run.method if run else None,
        values=values,
        coords=coords,
        meta=meta,
        what=what,
        xlabel=xlabel,
    )


def run_source(run: Run) -> Source | None:
    norms = run.grad_norms()
    if norms is None or norms.size == 0:
        return None
    return Source(
        kind="run",
        name=run.name,
        task=run.task,
        method=run.method,
        values=np.asarray(norms, dtype=np.float64),
        meta=dict(run.summary) | {"lr": run.lr},
    )


def discover_sources(
    paths: Sequence[Path],
    *,
    tasks: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    probe_array: str = "noise_norms",
    include_incomplete: bool = False,
) -> tuple[list[Source], list[str]]:
    """``(sources, notes on what was skipped)`` for the given paths, filtered."""
    sources: list[Source] = []
    notes: list[str] = []
    seen: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        probes = (
            [path]
            if path.suffix == ".npz" or (path / PROBE_FILE).exists()
            else sorted(p.parent for p in path.rglob(PROBE_FILE))
        )
        for probe in probes:
            key = (probe if probe.suffix == ".npz" else probe / PROBE_FILE).resolve()
            if key not in seen:
                seen.add(key)
                sources.append(load_probe(probe, probe_array))
        if path.suffix == ".npz" or (path / PROBE_FILE).exists():
            continue
        for run in discover_runs([path]):
            if run.dir.resolve() in seen:
                continue
            seen.add(run.dir.resolve())
            if not (include_incomplete or run.completed):
                notes.append(f"skipped {plotting.status_note(run)}")
                continue
            source = run_source(run)
            if source is None:
                notes.append(f"skipped {run.name}: no grad_norms.npy")
                continue
            if not run.completed:
                source.what += f" — run {run.status}"
            sources.append(source)
    kept = [
        s
        for s in sources
        if plotting.matches(s.task, tasks)
        and (not methods or plotting.matches(s.method or "", methods))
    ]
    return kept, notes


def make_panels(
    sources: Sequence[Source], group: str = "auto", max_run_panels: int = 6
) -> list[Panel]:
    """One panel per source (``run``) or per (task, kind) with the values pooled (``task``)."""
    if group == "auto":
        group = "run" if len(sources) <= max_run_panels else "task"
    groups: dict[tuple[str, ...], list[Source]] = {}
    for s in sources:
        key = (s.kind, s.task, s.name) if group == "run" else (s.kind, s.task)
        groups.setdefault(key, []).append(s)
    panels = []
    for members in groups.values():
        values = np.concatenate([s.values for s in members])
        finite = values[np.isfinite(values) & (values > 0)]
        first = members[0]
        if len(members) == 1:
            title = (
                first.name if first.kind == "run" else f"{first.task} — noise probe {first.name}"
            )
        else:
            names = sorted({s.method or s.name for s in members})
            title = f"{first.task}: {len(members)} {first.kind}s pooled ({', '.join(names)})"
        coords = [s.coords for s in members if s.coords is not None and s.coords.ndim == 2]
        stable = None
        if coords:
            rows = min(c.shape[0] for c in coords)  # pooled probes: their common batches
            try:
                z, _ = standardize_columns(np.hstack([c[:rows] for c in coords]))
                stable = alpha_stable_index(z, mode="columns")
            except ValueError:
                stable = None
        panels.append(
            Panel(
                title=title,
                sources=list(members),
                values=finite,
                summary=tail_summary(finite, noise=False),
                stable_alpha=stable,
            )
        )
    return panels


# ---------------------------------------------------------------------------------- plot


def _hill_line(values: np.ndarray, summary: TailSummary) -> tuple[np.ndarray, np.ndarray]:
    """The Hill power law over the k largest values: P(X ≥ x) = (k/n)·(x / X_(k+1))^(−α)."""
    xs = np.sort(values)
    n, k = xs.size, summary.hill_k
    threshold = xs[n - k - 1]
    x = np.geomspace(threshold, xs[-1], 50)
    return x, (k / n) * (x / threshold) ** (-summary.hill_alpha)


def draw_panel(ax_hist: Any, ax_ccdf: Any, panel: Panel) -> None:
    fit = gaussian_fit(panel.values)
    draw_histogram(ax_hist, panel, fit)
    draw_ccdf(ax_ccdf, panel, fit)
    for ax in (ax_hist, ax_ccdf):
        plotting.style_axes(ax)


def draw_histogram(ax: Any, panel: Panel, fit: Any) -> None:
    """The density histogram with the Gaussian fit, and the tail indices in the legend."""
    from matplotlib.lines import Line2D

    x, s = panel.values, panel.summary
    # The histogram stops at the 99.5th percentile (or μ + 4σ of the fit, if larger), so the
    # tail does not squash the body; the density is still normalised over the whole sample.
    upper = max(float(np.quantile(x, 0.995)), fit.mean + 4 * fit.std)
    upper = min(upper, float(x.max()))
    edges = np.linspace(0.0, upper, 61)
    counts, _ = np.histogram(x, bins=edges)
    ax.stairs(counts / (x.size * np.diff(edges)), edges, fill=True, alpha=0.45, color="tab:blue",
              label=f"empirical density (n={x.size})")  # fmt: skip
    grid = np.linspace(0.0, upper, 400)
    ax.plot(grid, fit.pdf(grid), color="tab:red", lw=1.8,
            label=f"Gaussian fit N({fit.mean:.3g}, {fit.std:.3g}²)")  # fmt: skip
    texts = [f"Hill tail index α̂ = {s.hill_alpha:.2f} (k={s.hill_k})"]
    if panel.stable_alpha is not None:
        texts.append(f"α-stable index of standardised noise coords = {panel.stable_alpha:.2f}")
    beyond = int(np.count_nonzero(x > upper))
    if beyond:
        texts.append(f"{beyond} value(s) > {upper:.3g} not shown")
    handles, _ = ax.get_legend_handles_labels()
    extra = [Line2D([], [], ls="none", label=text) for text in texts]
    ax.legend(handles=handles + extra, fontsize=7.5, loc="upper right", framealpha=0.85)
    ax.set_xlim(0.0, upper)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel("density")


def draw_ccdf(ax: Any, panel: Panel, fit: Any) -> None:
    """The empirical P(X ≥ x) on log-log axes, the Gaussian fit's and the Hill power law."""
    x, s = panel.values, panel.summary
    xs, p = empirical_ccdf(x)
    if xs.size > 3000:  # thin evenly in log-probability: the tail keeps every point
        keep = np.unique(np.round(xs.size - np.geomspace(1, xs.size, 3000)).astype(np.int64))
        xs, p = xs[keep], p[keep]
    ax.loglog(xs, p, ".", ms=2.5, color="tab:blue", label="empirical")
    gx = np.geomspace(xs[0], xs[-1], 300)
    gauss_tail = 0.5 * np.vectorize(math.erfc)((gx - fit.mean) / (fit.std * math.sqrt(2)))
    shown = gauss_tail >= 0.1 / x.size
    ax.loglog(gx[shown], gauss_tail[shown], color="tab:red", lw=1.5, label="Gaussian fit")
    if math.isfinite(s.hill_alpha) and s.hill_k < x.size - 1:
        hx, hp = _hill_line(x, s)
        ax.loglog(hx, hp, "k--", lw=1.3, label=f"power law, slope −{s.hill_alpha:.2f} (Hill)")
    ax.set_ylim(0.3 / x.size, 1.5)
    ax.set_xlabel(f"{panel.xlabel} (log scale)")
    ax.set_ylabel("P(X ≥ x), log scale")
    ax.legend(fontsize=7.5, loc="lower left", framealpha=0.85)
    for axis in (ax.xaxis, ax.yaxis):
        plotting.log_ticks(axis)


def panel_heading(panel: Panel, width: int) -> str:
    """Panel title: what was measured, on which data and model."""
    lines = [panel.title, panel.what, plotting.provenance([s.meta for s in panel.sources])]
    return "\n".join(plotting.wrap(line, width) for line in lines)


def plot_panels(
    panels: Sequence[Panel], out: Path, *, ncols: int = 3, dpi: int = plotting.DPI
) -> Path:
    import matplotlib.pyplot as plt

    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    col_w = 6.2
    heading_chars = 82
    headings = [panel_heading(p, heading_chars) for p in panels]
    head_lines = max(h.count("\n") + 1 for h in headings)
    head_h = 0.15 * head_lines + 0.12
    hist_h, ccdf_h, gap = 3.0, 2.7, 0.6
    block_h = head_h + hist_h + gap + ccdf_h + gap
    title_h = 0.5
    height = title_h + nrows * block_h
    fig = plt.figure(figsize=(col_w * ncols, height))
    kinds = {p.sources[0].kind for p in panels}
    measured = " and ".join(
        {"run": "gradient norms along training", "probe": "gradient-noise norms (noise probe)"}[k]
        for k in sorted(kinds, reverse=True)
    )
    fig.suptitle(f"Heavy-tail check: {measured}", y=1 - 0.12 / height, va="top", fontsize=12.5)
    for i, (panel, heading) in enumerate(zip(panels, headings)):
        row, col = divmod(i, ncols)
        left = (col + 0.14) / ncols
        w = 0.8 / ncols
        top = height - title_h - row * block_h - head_h
        ax_hist = fig.add_axes((left, (top - hist_h) / height, w, hist_h / height))
        ccdf_top = top - hist_h - gap
        ax_ccdf = fig.add_axes((left, (ccdf_top - ccdf_h) / height, w, ccdf_h / height))
        draw_panel(ax_hist, ax_ccdf, panel)
        ax_hist.set_title(heading, fontsize=8.5, loc="left")
    return plotting.savefig(fig, out, dpi, made_by=MADE_BY)


# ----------------------------------------------------------------------------------- table


def format_table(panels: Sequence[Panel]) -> str:
    header = (
        f"{'panel':<40} {'n':>7} {'mean':>9} {'median':>9} {'p99/med':>8} {'kurt':>8} "
        f"{'Hill α':>7} {'k':>5} {'stable α':>8}"
    )
    lines = [header, "-" * len(header)]
    for p in panels:
        s = p.summary
        stable = "—" if p.stable_alpha is None else f"{p.stable_alpha:.2f}"
        lines.append(
            f"{plotting.shorten(p.title, 40):<40} {s.n:>7} {s.mean:>9.4g} {s.median:>9.4g} "
            f"{s.p99_over_median:>8.2f} {s.excess_kurtosis:>8.2f} {s.hill_alpha:>7.2f} "
            f"{s.hill_k:>5} {stable:>8}"
        )
    return "\n".join(lines)


def _interval(meta: dict[str, Any], key: str, value: float | None) -> str:
    """``value [low, high]`` of a probe estimate and its ``<key>_ci90``; "—" when absent."""
    if value is None:
        return "—"
    ci = meta.get(f"{key}_ci90")
    return f"{value:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def probe_markdown(sources: Sequence[Source]) -> str:
    """The probes' estimates as a Markdown table (the figure's companion), one row per probe,
    read from each probe's ``noise_probe.json``: never retyped."""
    lines = ["| task | data | model | weights | probe batches | p99/median of ‖g_i − ḡ‖ "
             "| excess kurtosis | Hill α of ‖g_i − ḡ‖ [90%] | Hill α of coordinates [90%] "
             "| α-stable index of coordinates [90%] | per-tensor α-stable, min–max (tensors) |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for src in (s for s in sources if s.kind == "probe"):
        m, norms = src.meta, src.meta.get("noise_norm_summary") or {}
        spread, tensors = m.get("tensor_stable_alpha_spread") or {}, m.get("tensors")
        count = len(tensors) if isinstance(tensors, list | dict) else tensors
        per_tensor = f"{spread['min']:.2f}–{spread['max']:.2f}" if spread else "—"
        lines.append(
            f"| {src.task} | {m.get('data_source', '—')} | {m.get('model_source', '—')} "
            f"| {m.get('checkpoint', '—')} | {m.get('batches', '—')} "
            f"| {norms.get('p99_over_median', float('nan')):.2f} "
            f"| {norms.get('excess_kurtosis', float('nan')):.2f} "
            f"| {_interval(m, 'noise_norm_hill_alpha', norms.get('hill_alpha'))} "
            f"| {_interval(m, 'noise_coords_hill_alpha', m.get('noise_coords_hill_alpha'))} "
            f"| **{_interval(m, 'noise_coords_stable_alpha', m.get('noise_coords_stable_alpha'))}** "
            f"| {per_tensor}" + (f" ({count})" if count else "") + " |"
        )
    return "\n".join([*lines, "", MADE_BY, ""])


def runs_markdown(panels: Sequence[Panel]) -> str:
    """The training runs' gradient norms as a Markdown table (the figure's companion), one row per
    run: the panel's statistics, and the trend along the run that a histogram hides (the median
    norm over the first and the last tenth of the steps, and where the largest norm is)."""
    lines = ["| task | run | optimizer | lr | steps | median ‖g‖ | p99/median | Hill α (k) "
             "| median ‖g‖, first 10% of steps | median ‖g‖, last 10% | step of the largest ‖g‖ |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for panel in panels:
        for src in (s for s in panel.sources if s.kind == "run"):
            norms = src.values[np.isfinite(src.values)]
            summary = tail_summary(norms, noise=False)
            tenth = max(1, norms.size // 10)
            lines.append(
                f"| {src.task} | {src.name} | {src.meta.get('optimizer', '—')} "
                f"| {src.meta.get('lr') or '—'} | {norms.size} "
                f"| {summary.median:.4g} | {summary.p99_over_median:.2f} "
                f"| {summary.hill_alpha:.2f} ({summary.hill_k}) "
                f"| {np.median(norms[:tenth]):.4g} | {np.median(norms[-tenth:]):.4g} "
                f"| {int(np.argmax(norms))} |"
            )
    return "\n".join([*lines, "", MADE_BY, ""])


# --------------------------------------------------------------------- over training

#: the probe's estimates drawn by --over-training: JSON key (with ``<key>_ci90``) and axis label
TRAINING_INDICES = (
    ("noise_coords_stable_alpha", "α-stable index (2 = Gaussian)"),
    ("noise_coords_hill_alpha", "Hill index (median over coordinates)"),
)


@dataclass
class TailSeries:
    """One task's (or run's) probes in step order: each index with its 90% interval."""

    label: str
    steps: np.ndarray
    values: dict[str, np.ndarray]
    low: dict[str, np.ndarray]
    high: dict[str, np.ndarray]
    meta: list[dict[str, Any]]
    #: the series' colour and legend entry: runs that differ only by their seed share one group
    group: str = ""
    #: the position of this run's seed within its group (0 for a single run)
    seed_index: int = 0
    group_seeds: tuple[int | None, ...] = ()


#: (task, run without its seed — or data source —, seed) -> [(step, probe metadata)]
ProbeGroups = dict[tuple[str, str, int | None], list[tuple[int, dict[str, Any]]]]


def tail_series(
    paths: Sequence[Path],
    *,
    tasks: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
) -> tuple[list[TailSeries], list[str]]:
    """The probes under ``paths`` grouped by run (a probe outside a run: by task and data
    source), and ``(series, notes on what was skipped)``.

    Runs that differ only by their seed form one group, labelled by task — or by run / data
    source where a task has several groups — with `` seed <k>`` added when it has several seeds.
    """
    groups, notes = probe_groups(paths, tasks, methods)
    by_group: dict[tuple[str, str], list[int | None]] = {}
    for task, name, seed in groups:
        by_group.setdefault((task, name), []).append(seed)
    per_task: dict[str, int] = {}
    for task, _ in by_group:
        per_task[task] = per_task.get(task, 0) + 1
    series = []
    for (task, name, seed), probes in sorted(groups.items(), key=_group_order):
        probes.sort(key=lambda item: item[0])
        metas = [m for _, m in probes]
        keys = [k for k, _ in TRAINING_INDICES]
        seeds = tuple(sorted(by_group[(task, name)], key=_seed_order))
        group = task if per_task[task] == 1 else name
        series.append(
            TailSeries(
                label=group if len(seeds) == 1 else f"{group} seed {seed}",
                steps=np.array([step for step, _ in probes]),
                values={k: np.array([as_float(m.get(k)) for m in metas]) for k in keys},
                low={k: _ci90_bound(metas, k, 0) for k in keys},
                high={k: _ci90_bound(metas, k, 1) for k in keys},
                meta=metas,
                group=group,
                seed_index=seeds.index(seed),
                group_seeds=seeds,
            )
        )
    return series, notes


def _seed_order(seed: int | None) -> tuple[bool, int]:
    return (seed is None, seed or 0)


def _group_order(item: tuple[tuple[str, str, int | None], Any]) -> tuple[str, str, bool, int]:
    task, name, seed = item[0]
    return (task, name, *_seed_order(seed))


def _ci90_bound(metas: list[dict[str, Any]], key: str, side: int) -> np.ndarray:
    """The lower (``side`` 0) or upper (1) end of each probe's 90% interval of ``key``."""
    return np.array([as_float((m.get(f"{key}_ci90") or [math.nan] * 2)[side]) for m in metas])


def probe_groups(
    paths: Sequence[Path], tasks: Sequence[str] | None, methods: Sequence[str] | None
) -> tuple[ProbeGroups, list[str]]:
    """``{(task, run or data source, seed): [(step, probe metadata)]}`` of the selected probes
    with per-coordinate estimates, and notes on the probes without them."""
    groups: ProbeGroups = {}
    notes: list[str] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        found = (
            [path] if path.name == "noise_probe.json" else sorted(path.rglob("noise_probe.json"))
        )
        for file in found:
            meta = read_json(file) or {}
            if TRAINING_INDICES[0][0] not in meta or "step" not in meta:
                notes.append(f"skipped {file.parent}: a probe without per-coordinate estimates")
                continue
            run = load_run(file.parent.parent) if is_run_dir(file.parent.parent) else None
            task = task_from_target(meta.get("task", "")) if meta.get("task") else "unknown"
            if not plotting.matches(task, tasks) or (
                methods and not plotting.matches(run.method if run else "", methods)
            ):
                continue
            # outside a run, probes of one task differ by their data (e.g. the toy noise law)
            key = (
                (task, f"{run.task}/{run.method}", run.seed)
                if run
                else (task, f"{task} — {meta.get('data_source', '')}", None)
            )
            groups.setdefault(key, []).append((int(meta["step"]), meta))
    return groups, notes


def draw_tail_over_training(axes: Sequence[Any], series: Sequence[TailSeries]) -> None:
    """One axis per index of :data:`TRAINING_INDICES`; one line with error bars per series.

    The seeds of a group share its colour, each with its own marker, nudged apart along the step
    axis so that their bars stay readable; the legend names the group once with its seeds.
    """
    colors = plotting.method_colors(list(dict.fromkeys(s.group or s.label for s in series)))
    span = max((float(s.steps.max()) for s in series if s.steps.size), default=0.0)
    for ax, (key, ylabel) in zip(axes, TRAINING_INDICES):
        for s in series:
            v = s.values[key]
            # a probe without intervals (--bootstrap 0) draws its point without a bar
            below = np.nan_to_num(v - s.low[key], nan=0.0)
            above = np.nan_to_num(s.high[key] - v, nan=0.0)
            n = max(len(s.group_seeds), 1)
            ax.errorbar(
                s.steps + (s.seed_index - (n - 1) / 2) * 0.012 * span,
                v,
                yerr=np.vstack([below, above]),
                marker=SEED_MARKERS[s.seed_index % len(SEED_MARKERS)],
                capsize=3,
                color=colors[s.group or s.label],
                label=_legend_label(s),
            )
        if key == "noise_coords_stable_alpha":
            ax.axhline(2.0, color="0.5", ls=":", lw=1)
        ax.set_xlabel("training step of the probed weights")
        ax.set_ylabel(ylabel)
        plotting.style_axes(ax)


SEED_MARKERS = ("o", "s", "^", "D", "v")


def _legend_label(s: TailSeries) -> str:
    """The group with its seeds on its first seed's line; the other seeds stay out of the legend."""
    if len(s.group_seeds) <= 1:
        return s.label
    if s.seed_index:
        return "_" + s.label  # matplotlib leaves labels starting with "_" out of the legend
    return f"{s.group} (seeds {', '.join(map(str, s.group_seeds))})"


def plot_tail_over_training(
    series: Sequence[TailSeries], out: Path, *, dpi: int = plotting.DPI
) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(TRAINING_INDICES), figsize=(12, 4.6 + 0.2 * len(series)), layout="constrained"
    )
    draw_tail_over_training(axes, series)
    # inside the last panel: a legend below the axes would sit on the provenance footnote
    axes[-1].legend(fontsize=8, loc="best", framealpha=0.85)
    metas = [m for s in series for m in s.meta]
    batches = sorted({m.get("batches") for m in metas if m.get("batches")})
    fig.suptitle(
        "Tail index of the gradient noise over training (noise probe: standardised noise "
        f"coordinates over {', '.join(map(str, batches))} mini-batches; bars: 90% bootstrap "
        "intervals of one probe, which cover its resampling, not the run;\nmarkers: seeds)\n"
        + plotting.wrap(plotting.provenance(metas), 150),
        fontsize=9.5,
    )
    return plotting.savefig(fig, out, dpi, made_by=MADE_BY)


def probe_cells(s: TailSeries, i: int) -> list[str]:
    """Each index of probe ``i`` of ``s`` with its interval, as the tables print it."""
    return [
        f"{s.values[k][i]:.2f} [{s.low[k][i]:.2f}, {s.high[k][i]:.2f}]" for k, _ in TRAINING_INDICES
    ]


def format_training_table(series: Sequence[TailSeries]) -> str:
    header = f"{'series':<56} {'step':>7} {'α-stable [90% CI]':>22} {'Hill [90% CI]':>22}"
    lines = [header, "-" * len(header)]
    for s in series:
        for i, step in enumerate(s.steps):
            cells = probe_cells(s, i)
            lines.append(
                f"{plotting.shorten(s.label, 56):<56} {step:>7} {cells[0]:>22} {cells[1]:>22}"
            )
    return "\n".join(lines)


def training_markdown(series: Sequence[TailSeries]) -> str:
    """The figure's numbers as a Markdown table (one row per probe), with what made them."""
    rows = [
        "# Tail index of the gradient noise over training",
        "",
        "| series | step | α-stable index [90% CI] | Hill index [90% CI] | data |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for s in series:
        for i, step in enumerate(s.steps):
            cells = probe_cells(s, i)
            data = s.meta[i].get("data_source", "")
            rows.append(f"| {s.label} | {step} | {cells[0]} | {cells[1]} | {data} |")
    rows += [
        "",
        "The intervals are 90% bootstrap intervals of one probe: they cover the resampling of its "
        "mini-batches, not the run; compare the seeds of a series for that.",
        "",
        scrub_paths(MADE_BY),
        "",
    ]
    return "\n".join(rows)


# ------------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "paths",
        type=Path,
        nargs="+",
        help="run, sweep or noise-probe directories (or noise_probe.npz files)",
    )
    parser.add_argument(
        "--out", type=Path, help="output PNG (default: <first path>/figures/heavy_tail.png)"
    )
    parser.add_argument("--task", action="append", help="only these tasks (comma-separated)")
    parser.add_argument(
        "--method", action="append", help="only these methods (comma-separated names)"
    )
    parser.add_argument(
        "--group",
        choices=("auto", "run", "task"),
        default="auto",
        help="one panel per run, or per task with the runs pooled "
        "(auto: per run up to 6 runs, else per task)",
    )
    parser.add_argument(
        "--probe-array",
        choices=("noise_norms", "grad_norms"),
        default="noise_norms",
        help="which norms of a noise probe to plot",
    )
    parser.add_argument(
        "--include-incomplete",
        action="store_true",
        help="also use runs that are not completed (marked in the title)",
    )
    parser.add_argument(
        "--over-training",
        action="store_true",
        help="plot the probes' tail indices against their training step, one line per task",
    )
    parser.add_argument("--ncols", type=int, default=3, help="panels per row (3)")
    parser.add_argument("--dpi", type=int, default=plotting.DPI)
    return parser


#: the footnote of every figure this run writes: the command and the commit
MADE_BY = ""


def main(argv: Sequence[str] | None = None) -> int:
    global MADE_BY
    parser = build_parser()
    args = parser.parse_args(argv)
    words = sys.argv[1:] if argv is None else list(argv)
    MADE_BY = stamp("python scripts/plot_heavy_tail.py " + " ".join(map(str, words)))
    if args.ncols < 1:
        parser.error(f"--ncols must be >= 1, got {args.ncols}")
    if args.over_training:
        return over_training_main(parser, args)
    try:
        sources, notes = discover_sources(
            args.paths,
            tasks=args.task,
            methods=args.method,
            probe_array=args.probe_array,
            include_incomplete=args.include_incomplete,
        )
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    for note in notes:
        print(note)
    if not sources:
        print(
            "plot_heavy_tail: nothing to plot (no grad_norms.npy / noise_probe.npz matched)",
            file=sys.stderr,
        )
        return 1
    try:
        panels = make_panels(sources, args.group)
    except ValueError as exc:
        print(f"plot_heavy_tail: {exc}", file=sys.stderr)
        return 1
    out = args.out or default_out(args.paths[0], "heavy_tail.png")
    plot_panels(panels, out, ncols=args.ncols, dpi=args.dpi)
    print(format_table(panels))
    kinds = {src.kind for src in sources}
    if len(kinds) == 1:  # one kind of source: its numbers as a table beside the figure
        table = out.with_suffix(".md")
        text = probe_markdown(sources) if kinds == {"probe"} else runs_markdown(panels)
        table.write_text(scrub_paths(text), encoding="utf-8")
        print(f"wrote {table}")
    print(f"wrote {out}")
    return 0


def default_out(first: Path, name: str) -> Path:
    """``<first path>/figures/<name>`` (beside the file when the first path is a file)."""
    return (first if first.is_dir() else first.parent) / "figures" / name


def over_training_main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        series, notes = tail_series(args.paths, tasks=args.task, methods=args.method)
    except FileNotFoundError as exc:
        parser.error(str(exc))
    for note in notes:
        print(note)
    if not series:
        print("plot_heavy_tail: no noise probe with per-coordinate estimates", file=sys.stderr)
        return 1
    out = args.out or default_out(args.paths[0], "tail_over_training.png")
    plot_tail_over_training(series, out, dpi=args.dpi)
    table = out.with_suffix(".md")
    table.write_text(training_markdown(series), encoding="utf-8")
    print(format_training_table(series))
    print(f"wrote {out} and {table.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
