"""The figures of the language-model experiment: the noise probe (Zhang et al.'s Fig. 1 in
small), validation bits per byte over steps, and final validation loss against learning rate."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from torch_clip.suite.experiments.provenance import stamp
from torch_clip.suite.experiments.sweeps import interval90
from torch_clip.suite.reports.plotting import method_colors, savefig, style_axes

STEP_MARKERS = {0: "o", 1: "s", 2: "^"}
#: one marker and line style per method of a panel: lines that coincide (SGD and SGD + auto,
#: which clips little, at every lr but the largest) stay visible under each other
LINE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<")
LINE_STYLES = ("-", "--", ":", "-.")


def _norm_histograms(axes, found: list[dict], series: list[str]) -> None:
    """Top row: the noise norms ‖g_i − ḡ‖ of seed 0 at each probed step, over their median."""
    for ax, name in zip(axes, series):
        mine = [p for p in found if p["series"] == name and p["seed"] == 0]
        for p in mine:
            norms = p["norms"] / np.median(p["norms"])
            ax.hist(norms, bins=30, histtype="step", density=True, lw=1.4,
                    label=f"step {p['meta']['step']}")  # fmt: skip
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("noise norm / its median (seed 0)")
        if ax.get_legend_handles_labels()[0]:  # a family --quick does not run: no legend
            ax.legend(fontsize=7)
        style_axes(ax)
    axes[0].set_ylabel("density")


def _indices(ax, found: list[dict], series: list[str], key: str, label: str) -> None:
    """An index against the step, one colour per series, seeds side by side, 90% intervals."""
    colors = method_colors(series)
    for index, name in enumerate(series):
        for p in (p for p in found if p["series"] == name):
            m = p["meta"]
            value, ci = m[key], m.get(f"{key}_ci90")
            last = max(q["meta"]["step"] for q in found if q["series"] == name) or 1
            x = m["step"] / last  # a series probed at initialisation only stays at 0
            x = x + 0.08 * (index - (len(series) - 1) / 2) + 0.02 * (p["seed"] - 1)
            err = None if ci is None else [[value - ci[0]], [ci[1] - value]]
            ax.errorbar(x, value, yerr=err, fmt=STEP_MARKERS.get(p["seed"], "o"), ms=4,
                        color=colors[name], capsize=2,
                        label=name if p["seed"] == 0 and m["step"] == 0 else None)  # fmt: skip
    ax.set_xlabel("fraction of the run's steps (0: initialisation)")
    ax.set_ylabel(label)
    style_axes(ax)


def noise_figure(found: list[dict], path: Path) -> Path:
    series = list(dict.fromkeys(p["series"] for p in found))
    width = 2 * len(series)  # the top row in len(series) panels, the bottom row in two
    fig = plt.figure(figsize=(4 * len(series), 7.2))
    grid = fig.add_gridspec(2, width)
    top = [fig.add_subplot(grid[0, 2 * i : 2 * i + 2]) for i in range(len(series))]
    _norm_histograms(top, found, series)
    stable = fig.add_subplot(grid[1, : width // 2])
    hill = fig.add_subplot(grid[1, width // 2 :])
    _indices(stable, found, series, "noise_coords_stable_alpha", "α-stable index (2: Gaussian)")
    stable.axhline(2.0, color="0.6", lw=0.8, ls="--")
    _indices(hill, found, series, "noise_coords_hill_alpha", "Hill index of coordinates")
    stable.legend(fontsize=8)
    fig.suptitle("Gradient noise of task=lm beside the ImageNet proxy (markers: seeds 0/1/2; "
                 "bars: 90% bootstrap intervals)", fontsize=10)  # fmt: skip
    fig.tight_layout()
    return savefig(fig, path, made_by=stamp("python scripts/lm_noise_probe.py"))


def comparison_figure(
    reports: dict[str, list[Any]], path: Path, key: str, title: str | None = None
) -> Path:
    """Validation bits per byte over steps: mean over the report seeds, 90% t-interval band."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    colors = method_colors(list(reports))
    for name, runs in reports.items():
        ax = axes[0] if name.startswith(("SGD", "clipped")) else axes[1]
        curves = [r.series(key, "val") for r in runs]
        steps = sorted(set.intersection(*(set(s.tolist()) for s, _ in curves)))
        if not steps:
            continue
        table = np.array([[dict(zip(s.tolist(), v))[t] for t in steps] for s, v in curves])
        bands = np.array([interval90(list(col)) for col in table.T])
        ax.plot(steps, bands[:, 0], color=colors[name], label=f"{name} (n={len(runs)})")
        ax.fill_between(steps, bands[:, 1], bands[:, 2], color=colors[name], alpha=0.2)
    for ax, family in zip(axes, ("SGD family", "AdamW family")):
        ax.set_title(family, fontsize=10)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:  # a family --quick does not run: no legend
            ax.legend(fontsize=7)
        style_axes(ax)
    axes[0].set_ylabel("validation bits per byte")
    title = title or ("task=lm (experiment=lm, bytes): each method at its tuned setting on the "
                      "report seeds; band: 90% t-interval of the mean")  # fmt: skip
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return savefig(fig, path, made_by=stamp("python scripts/lm_comparison.py"))


def lr_stability_figure(tuning: list[dict], path: Path, ceiling: float) -> Path:
    """Final validation loss against the learning rate per method; diverged runs (non-finite,
    or no better than the byte-unigram loss ``ceiling``) drawn as crosses at the ceiling."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    methods = list(dict.fromkeys(t["method"] for t in tuning))
    colors = method_colors(methods)
    by = defaultdict(list)
    for t in tuning:
        by[(t["method"], t["lr"])].append(t["val_loss"])
    for k, name in enumerate(methods):
        ax = axes[0] if name.startswith(("SGD", "clipped")) else axes[1]
        lrs = sorted({lr for m, lr in by if m == name})
        nudge = 1 + 0.03 * (k % 6)  # crosses of methods diverging at one lr side by side
        means = [np.mean(by[(name, lr)]) if np.all(np.isfinite(by[(name, lr)])) else np.nan
                 for lr in lrs]  # fmt: skip
        ax.plot(lrs, np.minimum(means, ceiling), ls=LINE_STYLES[k % len(LINE_STYLES)],
                marker=LINE_MARKERS[k % len(LINE_MARKERS)], ms=6 - (k % 3), mfc="none",
                color=colors[name], label=name)  # fmt: skip
        for lr in lrs:
            bad = [v for v in by[(name, lr)] if not np.isfinite(v) or v >= ceiling]
            if bad:
                ax.plot(
                    [lr * nudge] * len(bad), [ceiling] * len(bad), "x", color=colors[name], ms=8
                )
    for ax, title in zip(axes, ("SGD family", "AdamW family")):
        ax.set_xscale("log")
        ax.axhline(ceiling, color="0.5", lw=0.8, ls="--")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("learning rate")
        if ax.get_legend_handles_labels()[0]:  # a family --quick does not run: no legend
            ax.legend(fontsize=7)
        style_axes(ax)
    axes[0].set_ylabel("final validation loss (nats per byte), tuning seeds")
    fig.suptitle("Which learning rates train? Crosses: a diverged seed (non-finite, or at or above "
                 "the byte-unigram loss, dashed)", fontsize=10)  # fmt: skip
    fig.tight_layout()
    return savefig(fig, path, made_by=stamp("python scripts/lm_comparison.py"))
