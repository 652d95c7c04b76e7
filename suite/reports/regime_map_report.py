"""The regime maps' tables and figures, from the runs ``regime_map.py`` made (``write_all``).

Per map: ``<map>_results.md``/``.csv`` (per cell and method: median with a bootstrap 90%
interval of the median, mean with one of the mean, failed seeds), ``<map>_choices.md`` (the
chosen setting, the settings count and every edge flag), ``<map>_paired.md`` (each method minus
the cell's best baseline over the report seeds: the interval of the mean difference, the paired
t and Wilcoxon p, whether it holds), ``<map>_stochastic.md`` (the randomized rule against its
deterministic one: spread over seeds and the paired difference), ``<map>_aggregate.md`` and
``<map>_profile.png`` (rliable: interquartile mean and performance profiles of scores normalised
per cell), and ``<map>_map.png``. The gradient map also gets ``gradient_probe.md``: the noise
probe's reading of each cell's gradient noise beside the injected index.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from torch_clip.suite import protocol
from torch_clip.suite.experiments import sweeps
from torch_clip.suite.experiments.provenance import stamp
from torch_clip.suite.reports import plotting

#: the probe's budget per cell: batches of its noise sample and of its reference gradient
PROBE = {"batches": 1000, "reference_batches": 64, "coords": 64}
QUICK_PROBE = {"batches": 40, "reference_batches": 8, "coords": 8}
#: performance-profile thresholds on the normalised score (0: SGD's median, 1: the cell's best)
TAUS = np.linspace(-1.0, 1.0, 81)


def report_values(m, cell, name: str, axes, chosen) -> dict[int, float]:
    """seed → final metric of the chosen setting on the report seeds (non-finite kept)."""
    if chosen is None:
        return {}
    res = m.results(cell, name, axes, m.spec["report_seeds"])
    return dict(res.get(tuple(chosen["setting"]), {}))


def median_interval(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return math.nan, math.nan
    lo, hi, _ = protocol.bootstrap_interval(finite, statistic=np.median)
    return lo, hi


def rows_of(m, axes, best) -> list[dict[str, Any]]:
    """One row per (cell, method): the report statistics of its choice."""
    rows = []
    for (cell, name), chosen in best.items():
        by_seed = report_values(m, cell, name, axes[cell, name], chosen)
        s = protocol.summarize(list(by_seed.values()))
        mlo, mhi = median_interval(list(by_seed.values()))
        setting = chosen["setting"] if chosen else ()
        rows.append({"map": cell.map, "problem": cell.problem, "alpha": cell.alpha,
                     "method": name, "seeds": s.n, "failed": s.failed, "median": s.median,
                     "median_low": mlo, "median_high": mhi, "mean": s.mean, "mean_low": s.low,
                     "mean_high": s.high, "interval": s.interval,
                     "lr": setting[0] if setting else math.nan,
                     "knob": setting[1] if len(setting) > 1 else math.nan,
                     "knob_key": axes[cell, name][1].key if len(axes[cell, name]) > 1 else "",
                     "settings": chosen["count"] if chosen else 0,
                     "edges": edge_text(chosen), "by_seed": by_seed})  # fmt: skip
    return rows


def edge_text(chosen) -> str:
    if not chosen:
        return ""
    # the key without its group: "lr", "momentum", "betas.1" (β₂), "clipping_level"
    return " ".join(f"{k.split('.', 1)[-1]}:{v}" for k, v in chosen["edges"].items() if v)


def alpha_label(alpha: float) -> str:
    return "α=2 (Gaussian)" if alpha == 2.0 else f"α={alpha:g}"


def fmt(x: float, digits: int = 3) -> str:
    return "—" if not math.isfinite(x) else f"{x:.{digits}g}"


def results_table(rows, title: str, note: str) -> list[str]:
    """Per problem: methods × alphas, each cell the median [its 90% interval], the mean."""
    lines = [f"# {title}", ""]
    for problem in dict.fromkeys(r["problem"] for r in rows):
        sub = [r for r in rows if r["problem"] == problem]
        alphas = sorted({r["alpha"] for r in sub})
        lines += [f"## {problem}: final validation MSE on the report seeds", "",
                  "median [90% bootstrap interval of the median]; mean; failed seeds", "",
                  "| method | " + " | ".join(map(alpha_label, alphas)) + " |",
                  "| --- |" + " ---: |" * len(alphas)]  # fmt: skip
        for name in dict.fromkeys(r["method"] for r in sub):
            cells = []
            for a in alphas:
                r = next((x for x in sub if x["method"] == name and x["alpha"] == a), None)
                if r is None:
                    cells.append("—")
                    continue
                fail = f"; {r['failed']}/{r['seeds']} failed" if r["failed"] else ""
                cells.append(f"{fmt(r['median'])} [{fmt(r['median_low'])}, "
                             f"{fmt(r['median_high'])}]; {fmt(r['mean'])}{fail}")  # fmt: skip
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return [*lines, note, ""]


def choices_table(rows, note: str) -> list[str]:
    lines = ["# The chosen settings (median over the tuning seeds)", "",
             "| problem | α | method | settings tuned | lr | knob | value | on an edge |",
             "| --- | ---: | --- | ---: | ---: | --- | ---: | --- |"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['problem']} | {r['alpha']:g} | {r['method']} | {r['settings']} | "
                     f"{fmt(r['lr'])} | {r['knob_key'] or '—'} | {fmt(r['knob'], 4)} | "
                     f"{r['edges'] or 'no'} |")  # fmt: skip
    return [*lines, "", "An edge that stays after the grid extensions is flagged (low/high): "
            "the best value may lie beyond it.", "", note, ""]  # fmt: skip


def paired_rows(rows, baselines: list[str]) -> list[dict[str, Any]]:
    """Each method minus its cell's best baseline (fewest failures, then best median)."""
    out = []
    for key in dict.fromkeys((r["problem"], r["alpha"]) for r in rows):
        cell = {r["method"]: r for r in rows if (r["problem"], r["alpha"]) == key}
        summaries = {n: protocol.summarize(list(r["by_seed"].values())) for n, r in cell.items()
                     if n in baselines and r["by_seed"]}  # fmt: skip
        base = protocol.best_baseline(summaries, list(summaries), lower_is_better=True)
        if base is None:
            continue
        for name, r in cell.items():
            if name == base:
                continue
            p = protocol.paired_difference(r["by_seed"], cell[base]["by_seed"], True)
            out.append({"problem": key[0], "alpha": key[1], "method": name, "baseline": base,
                        "paired": p})  # fmt: skip
    return out


def paired_table(paired, note: str) -> list[str]:
    lines = ["# Paired differences to the best baseline of each cell", "",
             "method − baseline in final validation MSE over the common report seeds (negative: "
             "the method is better); mean [90% bootstrap interval], paired t p, Wilcoxon p; "
             "*holds* needs the interval to exclude 0 and p_t < 0.10.", "",
             "| problem | α | method | baseline | mean difference | p (t) | p (Wilcoxon) | verdict |",
             "| --- | ---: | --- | --- | ---: | ---: | ---: | --- |"]  # fmt: skip
    for x in paired:
        p = x["paired"]
        lines.append(f"| {x['problem']} | {x['alpha']:g} | {x['method']} | {x['baseline']} | "
                     f"{fmt(p.mean)} [{fmt(p.low)}, {fmt(p.high)}] | {fmt(p.p_t, 2)} | "
                     f"{fmt(p.p_wilcoxon, 2)} | {protocol.verdict(p)} |")  # fmt: skip
    return [*lines, "", note, ""]


def stochastic_table(rows, randomized: dict[str, str], note: str) -> list[str]:
    """What each randomized rule is for, if anything: its spread over the report seeds (the IQR
    and the standard deviation) beside the deterministic rule's (``randomized``: the protocol's
    pairs), and the paired difference."""
    lines = ["# Randomized against deterministic clipping", "",
             "Spread of the final validation MSE over the report seeds (IQR; standard deviation) "
             "and the paired difference randomized − deterministic (mean [90% interval], p (t)).",
             "", "| problem | α | rule | IQR | std | difference | p (t) | verdict |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for stoch, det in randomized.items():
        for r in (x for x in rows if x["method"] == stoch):
            d = next((x for x in rows if x["method"] == det and x["problem"] == r["problem"]
                      and x["alpha"] == r["alpha"]), None)  # fmt: skip
            if d is None or not r["by_seed"] or not d["by_seed"]:
                continue
            p = protocol.paired_difference(r["by_seed"], d["by_seed"], True)
            for x, diff in ((d, "—"), (r, f"{fmt(p.mean)} [{fmt(p.low)}, {fmt(p.high)}]")):
                v = np.array([y for y in x["by_seed"].values() if math.isfinite(y)])
                iqr = float(np.subtract(*np.percentile(v, [75, 25]))) if v.size else math.nan
                std = float(v.std(ddof=1)) if v.size > 1 else math.nan
                tail = f"{fmt(p.p_t, 2)} | {protocol.verdict(p)}" if x is r else "— | —"
                lines.append(f"| {r['problem']} | {r['alpha']:g} | {x['method']} | {fmt(iqr)} | "
                             f"{fmt(std)} | {diff} | {tail} |")  # fmt: skip
    return [*lines, "", note, ""]


def normalised_scores(rows, methods: list[str]) -> dict[str, np.ndarray]:
    """(report seeds × cells) scores per method: 0 at SGD's median, 1 at the cell's best median
    (a failed seed scores −inf, below every threshold)."""
    cells = list(dict.fromkeys((r["problem"], r["alpha"]) for r in rows))
    n = max([len(r["by_seed"]) for r in rows] + [1])
    out = {name: np.full((n, len(cells)), -np.inf) for name in methods}
    for j, key in enumerate(cells):
        cell = {r["method"]: r for r in rows if (r["problem"], r["alpha"]) == key}
        medians = [r["median"] for r in cell.values() if math.isfinite(r["median"])]
        low = cell.get("SGD", {}).get("median", math.nan)
        if not medians or not math.isfinite(low) or min(medians) == low:
            continue
        for name in methods:
            v = np.array(list(cell[name]["by_seed"].values()) if name in cell else [], float)
            v = np.where(np.isfinite(v), v, np.inf)
            out[name][: v.size, j] = protocol.normalized(v, low, min(medians))
    return out


def aggregate(rows, methods: list[str], out: Path, title: str, note: str) -> list[str]:
    """rliable's IQM across the map's cells and the performance-profile figure."""
    scores = normalised_scores(rows, methods)
    if not any(np.isfinite(v).any() for v in scores.values()):
        return ["# Aggregate across the map's cells (rliable)", "", "No cell has report runs of "
                "SGD and of a better method yet.", "", note, ""]  # fmt: skip
    clipped = {k: np.clip(v, -10.0, 10.0) for k, v in scores.items()}  # IQM needs finite values
    iqm = protocol.aggregate_iqm(clipped)
    profiles = protocol.score_profiles(clipped, TAUS)
    plot_profiles(profiles, out, title, note)
    lines = ["# Aggregate across the map's cells (rliable)", "",
             "Scores normalised per cell: 0 = SGD's median, 1 = the best median of any method in "
             "that cell (a failed seed: −10). Interquartile mean over the report seeds × cells, "
             "with a stratified-bootstrap 90% interval.", "",
             "| method | IQM | 90% interval |", "| --- | ---: | ---: |"]  # fmt: skip
    for name, (v, lo, hi) in sorted(iqm.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"| {name} | {v:.3f} | [{lo:.3f}, {hi:.3f}] |")
    return [*lines, "", note, ""]


def plot_profiles(profiles, out: Path, title: str, note: str) -> None:
    import matplotlib.pyplot as plt

    colors = plotting.method_colors(profiles)
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, (p, lo, hi) in profiles.items():
        ax.plot(TAUS, p, color=colors[name], label=name)
        ax.fill_between(TAUS, lo, hi, color=colors[name], alpha=0.15, lw=0)
    ax.set_xlabel("normalised score τ (0: SGD's median, 1: the cell's best median)")
    ax.set_ylabel("share of report runs × cells with score > τ")
    ax.set_title(f"Performance profiles: {title}\n90% stratified-bootstrap bands", fontsize=10)
    plotting.style_axes(ax)
    ax.legend(fontsize=7.5, frameon=False, loc="lower left")
    plotting.savefig(fig, out, made_by=note)


def plot_map(rows, probe: dict, out: Path, title: str, note: str) -> None:
    """One panel per problem: median final MSE against α with the median's 90% interval."""
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(r["problem"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colors = plotting.method_colors(methods)
    fig, axes = plt.subplots(1, len(problems), figsize=(7 * len(problems), 5.5), squeeze=False)
    for ax, problem in zip(axes[0], problems):
        sub = [r for r in rows if r["problem"] == problem]
        alphas = sorted({r["alpha"] for r in sub})
        for i, name in enumerate(methods):
            pts = sorted((r for r in sub if r["method"] == name), key=lambda r: r["alpha"])
            x = np.array([r["alpha"] for r in pts]) + (i - len(methods) / 2) * 0.008
            y, lo, hi = (
                np.array([r[k] for r in pts]) for k in ("median", "median_low", "median_high")
            )
            ok = np.isfinite(y) & np.isfinite(lo)
            style = "--" if name in ("SGD", "Adam", "SSTM") else "-"
            ax.errorbar(x[ok], y[ok], yerr=[y[ok] - lo[ok], hi[ok] - y[ok]], color=colors[name],
                        ls=style, marker="o", ms=3.5, capsize=2, label=name)  # fmt: skip
        ax.set_xticks(alphas, [tick(a, probe.get((problem, a))) for a in alphas])
        ax.set_yscale("log")
        ax.set_xlabel("tail index α of the injected noise (smaller = heavier)")
        ax.set_ylabel("final validation MSE (median over report seeds)")
        ax.set_title(problem, fontsize=10)
        plotting.style_axes(ax)
    axes[0][-1].legend(fontsize=7, ncol=2, frameon=False)
    fig.suptitle(f"Regime map: {title}\nmedian and its 90% bootstrap interval; best setting per "
                 "method and cell (fair protocol)", fontsize=10)  # fmt: skip
    fig.tight_layout(rect=(0, 0.02, 1, 0.9))  # the ticks' probe line stays above the footnote
    plotting.savefig(fig, out, made_by=note)


def lr_curve(m, cell, name: str, axes) -> tuple[list[float], list[float]]:
    """The best median over the knob at each lr of the final grid, on the tuning seeds."""
    seeds = m.spec["tune_seeds"]
    res = m.results(cell, name, axes, seeds)
    lrs = list(axes[0].values)
    best = [min((protocol.robust_score([v.get(s, math.nan) for s in seeds], True)
                 for k, v in res.items() if k[0] == lr and set(seeds) <= set(v)),
                default=math.inf) for lr in lrs]  # fmt: skip
    return lrs, best


def plot_lr_sensitivity(m, axes, name: str, out: Path, note: str) -> None:
    """Median final MSE on the tuning seeds against the lr (best knob value at each lr), per
    cell; the y-axis spans the band that matters (the best value to 30 times it) and a setting
    above it or diverged is drawn on the top edge."""
    import matplotlib.pyplot as plt

    cells = [c for c in m.cells if c.map == name]
    problems = list(dict.fromkeys(c.problem for c in cells))
    alphas = sorted({c.alpha for c in cells})
    methods = m.spec["maps"][name]["methods"]
    colors = plotting.method_colors(methods)
    fig, grid = plt.subplots(len(problems), len(alphas), figsize=(3.6 * len(alphas),
                             3.2 * len(problems)), squeeze=False)  # fmt: skip
    for cell in cells:
        ax = grid[problems.index(cell.problem)][alphas.index(cell.alpha)]
        curves = {n: lr_curve(m, cell, n, axes[cell, n]) for n in methods}
        finite = [v for _, ys in curves.values() for v in ys if math.isfinite(v)]
        low = min(finite, default=1.0)
        top = 30 * low
        for n, (lrs, ys) in curves.items():
            y = np.minimum(np.where(np.isfinite(ys), ys, top), top)
            ax.plot(lrs, y, marker="o", ms=2.5, lw=1, color=colors[n], label=n)
        ax.set(xscale="log", yscale="log", ylim=(low / 1.2, top * 1.05))
        ax.set_title(f"{cell.problem}, {alpha_label(cell.alpha)}", fontsize=8)
        ax.tick_params(labelsize=7)
        plotting.style_axes(ax)
    grid[-1][0].set_xlabel("learning rate")
    grid[0][0].set_ylabel("median final val MSE (tuning seeds)")
    grid[0][-1].legend(fontsize=6, frameon=False)
    fig.suptitle("Learning-rate sensitivity (best knob value at each lr; top edge: ≥ 30× the "
                 "cell's best, or diverged)", fontsize=9)  # fmt: skip
    fig.tight_layout(rect=(0, 0.02, 1, 0.94))
    plotting.savefig(fig, out, made_by=note)


def tick(alpha: float, reading: dict | None) -> str:
    base = "2\n(Gaussian)" if alpha == 2.0 else f"{alpha:g}"
    return base if reading is None else f"{base}\nprobe {reading['alpha']:.2f}"


#: the probe's readings made in this process (the tables are rewritten after every problem)
_READINGS: dict[Any, dict[str, Any]] = {}


def probe_cell(cell, quick: bool) -> dict[str, Any]:
    """The noise probe's α-stable index of the cell's gradient noise at initialisation."""
    if (cell, quick) not in _READINGS:
        _READINGS[cell, quick] = _probe(cell, quick)
    return _READINGS[cell, quick]


def _probe(cell, quick: bool) -> dict[str, Any]:
    from torch_clip.suite.experiments import noise_probe

    budget = QUICK_PROBE if quick else PROBE
    cfg = noise_probe._compose(["experiment=regime_map", *cell.overrides,
                                f"task.noise_alpha={cell.alpha:g}"])  # fmt: skip
    _, tensors, arrays = noise_probe.probe(cfg, None, seed=0, **budget)
    est = noise_probe.tail_estimates(arrays["noise_coords"].astype(np.float64),
                                     arrays["coord_tensor"], arrays["noise_norms"], tensors,
                                     resamples=0)  # fmt: skip
    low, high = est["noise_coords_stable_alpha_ci90"]
    return {"alpha": est["noise_coords_stable_alpha"], "low": low, "high": high, **budget}


def probe_table(readings: dict, note: str) -> list[str]:
    lines = ["# The noise probe's reading of the injected gradient noise", "",
             "`scripts/noise_probe.py` at initialisation (seed 0): the α-stable index of the "
             "stochastic-gradient noise, with its 90% interval.", "",
             "| problem | injected α | probe reading | 90% interval | batches |",
             "| --- | ---: | ---: | --- | ---: |"]  # fmt: skip
    for (problem, alpha), r in readings.items():
        lines.append(f"| {problem} | {alpha:g} | {r['alpha']:.3f} | [{r['low']:.3f}, "
                     f"{r['high']:.3f}] | {r['batches']} |")  # fmt: skip
    return [*lines, "", note, ""]


def write_probe(cells, out: Path, command: str, quick: bool) -> dict:
    """``gradient_probe.md``: the probe's reading of every gradient-map cell at initialisation."""
    out.mkdir(parents=True, exist_ok=True)
    readings = {(c.problem, c.alpha): probe_cell(c, quick) for c in cells if c.map == "gradient"}
    (out / "gradient_probe.md").write_text("\n".join(probe_table(readings, stamp(command))))
    return readings


def write_all(m, axes, best, placed, out: Path, command: str, no_probe: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    spec = m.spec
    detail = (f"{spec['steps']} steps, tuned on seeds {spec['tune_seeds']}, reported on seeds "
              f"{spec['report_seeds']}")  # fmt: skip
    note = stamp(command, detail)
    all_rows = rows_of(m, axes, best)
    for name, mp in spec["maps"].items():
        rows = [r for r in all_rows if r["map"] == name]
        if not rows:
            continue
        readings = {}
        if name == "gradient" and not no_probe:
            readings = write_probe(m.cells, out, command, m.args.quick)
        sweeps.write_csv(out / f"{name}_results.csv",
                         [{k: v for k, v in r.items() if k != "by_seed"} for r in rows])  # fmt: skip
        write = {"results": results_table(rows, f"Regime map: {mp['title']}", note),
                 "choices": choices_table(rows, note),
                 "paired": paired_table(paired_rows(rows, spec["baselines"]), note),
                 "stochastic": stochastic_table(rows, spec.get("randomized", {}), note),
                 "aggregate": aggregate(rows, mp["methods"], out / f"{name}_profile.png",
                                        mp["title"], note),
                 "lambda": lambda_table(placed, name, note)}  # fmt: skip
        for kind, lines in write.items():
            (out / f"{name}_{kind}.md").write_text("\n".join(lines))
        plot_map(rows, readings, out / f"{name}_map.png", mp["title"], note)
        plot_lr_sensitivity(m, axes, name, out / f"{name}_lr_sensitivity.png", note)


def lambda_table(placed: dict, name: str, note: str) -> list[str]:
    lines = ["# Where λ sits: the measured gradient norm", "",
             "SGD's measurement run (seed 0) per cell, checked stable; λ of the fixed thresholds "
             "at these quantiles of its gradient norm.", "",
             "| problem | α | SGD lr | λ grid |", "| --- | ---: | ---: | --- |"]  # fmt: skip
    for cell, p in placed.items():
        if cell.map == name:
            lines.append(
                f"| {cell.problem} | {cell.alpha:g} | {p['lr']:g} | "
                + ", ".join(f"{v:.4g}" for v in p["lambdas"])
                + " |"
            )
    return [*lines, "", note, ""]
