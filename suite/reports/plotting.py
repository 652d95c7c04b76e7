"""Shared helpers of ``plot_comparison.py`` and ``plot_heavy_tail.py``: filtering runs,
aggregating curves over seeds, machine-free texts and a common figure style.

Runs are read with ``torch_clip.suite.run_reader`` (the one reader of the record ``train.py`` writes). A
noise-probe directory (``scripts/noise_probe.py``) holds ``noise_probe.npz`` and
``noise_probe.json``.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # file output only; never needs a display

import numpy as np

from torch_clip.suite.experiments.provenance import scrub_paths
from torch_clip.suite.run_reader import Run

#: metric names for which smaller is better (everything else, e.g. accuracy, r2, mcc, miou: larger)
LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error", "err", "perplexity", "ppl", "nll")
DPI = 150


def matches(value: str, patterns: Sequence[str] | None) -> bool:
    """``value`` equals one of the comma-separated ``patterns`` (all values when none given)."""
    if not patterns:
        return True
    wanted = {p.strip() for item in patterns for p in item.split(",") if p.strip()}
    return value in wanted


def status_note(run: Run) -> str:
    """One line naming a skipped run and why."""
    error = run.summary.get("error")
    detail = f": {shorten(str(error), 70)}" if error else ""
    return f"{run.name} [{run.status}{detail}]"


# ---------------------------------------------------------------------------- statistics


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """``(mean, std, n)`` of the finite values; std is the sample std (ddof=1), NaN for n < 2."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, 0
    std = float(np.std(x, ddof=1)) if x.size > 1 else math.nan
    return float(np.mean(x)), std, int(x.size)


def removed_fraction(run: Run) -> float:
    """The share of the gradient norm the method removed, averaged over the run's logged steps
    (``clip_fraction``, ``1 − ‖clipped g‖/‖g‖``; NaN when the run logged none)."""
    values = run.series("clip_fraction", "train")[1]
    return float(values.mean()) if values.size else math.nan


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (the first points average what exists)."""
    if window <= 1 or values.size == 0:
        return values
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


@dataclass
class Band:
    """Mean curve over seeds with a lower/upper band (``lo``/``hi`` equal the mean for 1 seed)."""

    steps: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    count: np.ndarray  # seeds contributing at each step
    min: np.ndarray  # smallest seed at each step (floor of a ± std band on a log axis)


def aggregate(curves: Sequence[tuple[np.ndarray, np.ndarray]], band: str = "minmax") -> Band | None:
    """Mean over seeds of curves logged at possibly different steps.

    The grid is the union of the logged steps; each curve is linearly interpolated inside its own
    range and left out beyond it. ``band="bootstrap"``: a bootstrap 90% interval of the mean over
    seeds (``scipy.stats.bootstrap``, percentile, at every step where every seed contributes; the
    protocol's interval, docs/evidence/protocol.md); ``"minmax"``: min-max over seeds; ``"std"``:
    mean ± sample std (ddof=1) where at least two seeds contribute.
    """
    curves = [(s, v) for s, v in curves if s.size]
    if not curves:
        return None
    grid = np.unique(np.concatenate([s for s, _ in curves]))
    stack = np.full((len(curves), grid.size), np.nan)
    for i, (s, v) in enumerate(curves):
        inside = (grid >= s[0]) & (grid <= s[-1])
        stack[i, inside] = np.interp(grid[inside], s, v)
    count = np.isfinite(stack).sum(axis=0)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(stack, axis=0)
        smallest = np.nanmin(stack, axis=0)
        if band == "minmax":
            lo, hi = smallest, np.nanmax(stack, axis=0)
        elif band == "bootstrap":
            lo, hi = bootstrap_band(stack, mean)
        elif band == "std":
            dev = np.zeros(grid.size)
            several = count > 1
            dev[several] = np.nanstd(stack[:, several], axis=0, ddof=1)
            lo, hi = mean - dev, mean + dev
        else:
            raise ValueError(f"band must be one of {', '.join(BAND_TEXT)}, got {band!r}")
    return Band(grid, mean, lo, hi, count, smallest)


BAND_TEXT = {"bootstrap": "shaded: bootstrap 90% interval of the mean over seeds",
             "minmax": "shaded: min–max over seeds", "std": "shaded: mean ± 1 std over seeds"}  # fmt: skip
#: resamples of a curve's band (one interval per logged step; the tables use 9,999)
CURVE_RESAMPLES = 999


def bootstrap_band(stack: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``stack`` (seeds × steps) a bootstrap 90% percentile interval of the mean,
    vectorised over the columns every seed covers; the mean itself elsewhere (no band)."""
    import warnings

    from scipy import stats

    lo, hi = mean.copy(), mean.copy()
    full = np.all(np.isfinite(stack), axis=0)
    if stack.shape[0] < 2 or not full.any():
        return lo, hi
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant column: a zero-width interval
        res = stats.bootstrap((stack[:, full],), np.mean, axis=0, confidence_level=0.9,
                              n_resamples=CURVE_RESAMPLES, method="percentile",
                              rng=np.random.default_rng(0))  # fmt: skip
    lo[full] = np.where(
        np.isfinite(res.confidence_interval.low), res.confidence_interval.low, mean[full]
    )
    hi[full] = np.where(
        np.isfinite(res.confidence_interval.high), res.confidence_interval.high, mean[full]
    )
    return lo, hi


def sensitivity_limits(
    values: Iterable[float], lower_is_better: bool, span: float = 100.0
) -> tuple[float, float]:
    """Y-limits of a metric-against-lr plot (log axis) showing the band that matters: from a bit
    beyond the best finite value to ``span`` times it (the other way for higher-is-better), so one
    diverged setting (1e32) does not squash the rest; :func:`mark_off_scale` marks what is beyond."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v) and v > 0], dtype=float)
    if x.size == 0:
        raise ValueError("sensitivity_limits: no finite positive value to place the axis on")
    best = x.min() if lower_is_better else x.max()
    if lower_is_better:
        return best / 1.5, min(x.max() * 1.5, best * span)
    return max(x.min() / 1.5, best / span), best * 1.5


def mark_off_scale(ax: Any, xs: Sequence[float], ys: Sequence[float], color: Any) -> int:
    """Mark every point of a curve that diverged (non-finite) or lies above the axis' top with an
    ``x`` at the top edge (below the bottom for those under it); returns how many were marked.
    Call after the limits are set."""
    low, high = ax.get_ylim()
    marked = 0
    for x, y in zip(xs, ys):
        if y is None or not math.isfinite(y) or y > high:
            ax.plot([x], [high], marker="x", ms=7, mew=2, color=color, clip_on=False, zorder=4)
            marked += 1
        elif y < low:
            ax.plot([x], [low], marker="v", ms=6, color=color, clip_on=False, zorder=4)
            marked += 1
    return marked


def draw_lr_sensitivity(
    ax: Any, lrs: Sequence[float], curves: dict[str, Sequence[float]], colors: dict[str, Any],
    lower_is_better: bool, styles: dict[str, str] | None = None, span: float = 100.0,
) -> int:  # fmt: skip
    """A metric against the learning rate, one curve per method, on log axes clipped to the band
    that matters (:func:`sensitivity_limits` over every finite value), each diverged or off-axis
    point marked with an ``x`` at the top (:func:`mark_off_scale`); returns how many were marked.
    Add :func:`off_scale_handle` to the legend when it is not 0."""
    values = [v for ys in curves.values() for v in ys]
    ax.set_xscale("log")
    ax.set_yscale("log")
    low, high = sensitivity_limits(values, lower_is_better, span)
    for method, ys in curves.items():
        y = np.array([v if v is not None and math.isfinite(v) and low <= v <= high else np.nan
                      for v in ys], dtype=float)  # fmt: skip
        ax.plot(lrs, y, marker="o", ms=3, ls=(styles or {}).get(method, "-"),
                color=colors[method], label=method)  # fmt: skip
    ax.set_ylim(low, high)
    return sum(mark_off_scale(ax, lrs, ys, colors[m]) for m, ys in curves.items())


def off_scale_handle() -> Any:
    """The legend entry of :func:`mark_off_scale`'s marks."""
    from matplotlib.lines import Line2D

    return Line2D([], [], color="0.3", marker="x", ls="none", mew=2,
                  label="× at the top: diverged or beyond the axis")  # fmt: skip


def lower_is_better(metric: str) -> bool:
    name = metric.lower().removeprefix("val_").removeprefix("train_")
    return any(
        name == word or name.endswith("_" + word) or name.startswith(word)
        for word in LOWER_IS_BETTER
    )


# ----------------------------------------------------------------------------------- style


def method_colors(methods: Iterable[str]) -> dict[str, Any]:
    """One stable colour per method (tab10, then tab20 for more than ten methods)."""
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(methods))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def shorten(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width=width, break_long_words=False)) or text


def provenance(summaries: Iterable[dict[str, Any]]) -> str:
    """'data: …; model: …' from the summaries, flagging embedded proxy data in capitals."""
    data, models, embedded = [], [], False
    for s in summaries:
        if s.get("data_source"):
            data.append(str(s["data_source"]))
        if s.get("model_source"):
            models.append(str(s["model_source"]))
        # noise-probe metadata may lack the flag; the tasks' proxy sources say "embedded: ..."
        embedded = (
            embedded
            or bool(s.get("embedded_data"))
            or str(s.get("data_source", "")).lower().startswith("embedded")
        )
    data, models = list(dict.fromkeys(data)), list(dict.fromkeys(models))
    text = f"data: {' | '.join(data) or 'unknown'}; model: {' | '.join(models) or 'unknown'}"
    if embedded:
        text += " — EMBEDDED PROXY DATA, not the real benchmark"
    return text


def style_axes(ax: Any) -> None:
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def log_ticks(axis: Any) -> None:
    """Readable ticks on a log axis: 1-2-5 labels in plain numbers, unlabelled minor ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def savefig(fig: Any, path: Path, dpi: int = DPI, made_by: str | None = None) -> Path:
    """Save and close ``fig``; every text in it is scrubbed of absolute paths first.

    ``made_by`` (a :func:`provenance.stamp`) goes below the figure as its footnote.
    """
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    if made_by:
        # wrapped to the figure's width (7 pt: about 17 characters an inch), or the tight
        # bounding box would widen the saved image to the length of the command
        width = max(60, int(fig.get_figwidth() * 17))
        fig.text(0.01, 0.0, wrap(made_by, width), fontsize=7, color="0.3", va="top", ha="left")
    for text in fig.findobj(Text):
        text.set_text(scrub_paths(text.get_text()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.15)  # never cut a long legend
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ layout


LEGEND_ROW_IN = 0.21  # height of one legend row at fontsize 9, inches
NOTE_LINE_IN = 0.16  # height of one footnote line at fontsize 7.5, inches


def legend_height(entries: int, ncol: int, title: bool = True) -> float:
    """Inches a legend below the axes needs."""
    return 0.15 + (0.25 if title else 0.0) + LEGEND_ROW_IN * math.ceil(entries / max(ncol, 1))


def legend_rows(labels: Sequence[str], ncol: int) -> int:
    """Text lines a legend of ``labels`` in ``ncol`` columns needs: matplotlib fills the columns
    first, and a row is as tall as its tallest (wrapped) label."""
    per_column = math.ceil(len(labels) / max(ncol, 1))
    rows = [labels[r::per_column] for r in range(per_column)] if per_column else []
    return sum(max(label.count("\n") + 1 for label in row) for row in rows)


def note_height(note: str) -> float:
    return NOTE_LINE_IN * (note.count("\n") + 1) + 0.12 if note else 0.0


def legend_block(
    fig: Any,
    handles: Sequence[Any],
    *,
    height: float,
    legend_h: float,
    note_h: float,
    ncol: int,
    title: str | None = None,
    note: str = "",
    note_color: str = "0.3",
) -> None:
    """A legend and a footnote in the strip of ``legend_h + note_h`` inches reserved at the bottom
    of a figure ``height`` inches tall, so that neither covers the axes."""
    fig.legend(
        handles=handles,
        loc="upper center",
        ncol=ncol,
        frameon=False,
        fontsize=9,
        bbox_to_anchor=(0.5, (legend_h + note_h) / height),
        title=title,
        title_fontsize=9,
    )
    if note:
        fig.text(0.01, 0.06 / height, note, fontsize=7.5, color=note_color, va="bottom", ha="left")
