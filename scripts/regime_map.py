"""The heavy-tail regime map: which method wins as the gradient noise gets heavier.

    python scripts/regime_map.py               # ~1 h on 2 CPU cores; resumable
    python scripts/regime_map.py --quick       # the whole pipeline on tiny budgets (CI)
    python scripts/regime_map.py --figures-only

The task is ``experiment=regime_map``: an MLP regression whose label noise is symmetric α-stable
with a chosen index α (and Gaussian), so the tail of the gradient noise is known. For each noise
law the script

1. **measures** the unclipped gradient norm (``torch.optim.SGD`` at the smallest learning rate of
   the grid, seed 0) and places the λ grid of the fixed-threshold rules on its quantiles
   (``LAMBDA_QUANTILES``); per-tensor and per-coordinate rules get the same quantile split evenly
   over tensors (λ/√T) or coordinates (λ/√N);
2. **tunes** every method on the shared learning-rate grid (× the λ grid) on seeds 0 and 1, by
   final validation MSE (a run that diverges counts as +inf);
3. **reports** each method's best setting on five fresh seeds (2–6), so the reported numbers are
   not the ones the choice was made on.

Runs go to ``results/regime_map/`` (not committed; ``train.py`` skips completed runs, so an
interrupted map resumes). The figures ``regime_map.png`` and ``lr_sensitivity.png`` and the table
``regime_map_table.md``/``.csv`` go to ``results/readme/figures/`` with the commit and command.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import plotting  # noqa: E402
from provenance import stamp  # noqa: E402

ALPHAS = (1.1, 1.3, 1.5, 1.7, 1.9)
GAUSSIAN = "gaussian"
LRS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
LAMBDA_QUANTILES = (0.1, 0.25, 0.5, 0.9)
TUNE_SEEDS = (0, 1)
REPORT_SEEDS = (2, 3, 4, 5, 6)
#: method label -> train.py overrides. Every method reads step_rule.lr; "fixed" ones sweep λ.
METHODS: dict[str, tuple[str, ...]] = {
    "SGD": ("optimizer=torch_sgd",),
    "Adam": ("optimizer=torch_adamw", "step_rule.weight_decay=0"),
    "norm": ("optimizer=norm",),
    "linear_stoch_norm": ("optimizer=linear_stoch_norm",),
    "quadratic_stoch_norm": ("optimizer=quadratic_stoch_norm",),
    "layer_wise": ("optimizer=layer_wise",),
    "coord_wise": ("optimizer=coord_wise",),
    "auto": ("optimizer=auto",),
    "linear_stoch_auto": ("optimizer=linear_stoch_auto",),
    "quadratic_stoch_auto": ("optimizer=quadratic_stoch_auto",),
    "AutoClip": ("optimizer=peer_autoclip",),
    "ZClip": ("optimizer=peer_zclip",),
    "AGC": ("optimizer=peer_agc",),
}
PEER_METHODS = ("AutoClip", "ZClip", "AGC")
#: the run's optimizer preset -> method (the run directory is the preset and the swept values)
BY_PRESET = {over[0].split("=")[1]: method for method, over in METHODS.items()}
#: how a fixed-threshold rule's λ relates to the global-norm quantile q (T tensors, N coordinates)
FIXED = {"norm": "global", "linear_stoch_norm": "global", "quadratic_stoch_norm": "global",
         "layer_wise": "tensor", "coord_wise": "coordinate"}  # fmt: skip
SWEEP = ROOT / "results" / "regime_map"
FIGURES = ROOT / "results" / "readme" / "figures"


@dataclass(frozen=True)
class Budget:
    steps: int
    lrs: tuple[float, ...]
    alphas: tuple[float, ...]
    tune_seeds: tuple[int, ...]
    report_seeds: tuple[int, ...]
    methods: tuple[str, ...]


FULL = Budget(500, LRS, ALPHAS, TUNE_SEEDS, REPORT_SEEDS, tuple(METHODS))
QUICK = Budget(20, (0.003, 0.03), (1.1,), (0,), (1, 2), ("SGD", "Adam", "norm", "auto", "ZClip"))


def noise_overrides(noise: str | float) -> list[str]:
    if noise == GAUSSIAN:
        return ["task.noise=gaussian"]
    return ["task.noise=stable", f"task.noise_alpha={noise}"]


def noise_key(noise: str | float) -> str:
    return GAUSSIAN if noise == GAUSSIAN else f"alpha={noise}"


def train(overrides: list[str], root: Path, log: Path, threads: int = 1) -> int:
    cmd = [sys.executable, "train.py", "-m", "experiment=regime_map", f"results_root={root}",
           f"trainer.num_threads={threads}", *overrides]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        return subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)


# ----------------------------------------------------------------------------- reading runs


@dataclass
class Result:
    noise: str
    method: str
    lr: float
    level: float | None
    seed: int
    val_mse: float
    grad_norms: Path


def read_results(root: Path) -> list[Result]:
    """Every completed run under ``root``, identified from its own config (not its dir name)."""
    out = []
    for summary_path in sorted(root.rglob("summary.json")):
        run = summary_path.parent
        summary = plotting.read_json(summary_path)
        if summary is None or summary.get("status") != "completed":
            continue
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        task = cfg["task"]
        noise = GAUSSIAN if task["noise"] == "gaussian" else f"alpha={task['noise_alpha']}"
        mse = plotting.as_float((summary.get("final") or {}).get("val_mse"))
        out.append(
            Result(
                noise=noise,
                method=BY_PRESET.get(cfg["optimizer"]["name"], cfg["optimizer"]["name"]),
                lr=float(cfg["step_rule"]["lr"]),
                level=cfg["optimizer"].get("clipping_level"),
                seed=int(cfg["seed"]),
                val_mse=mse if math.isfinite(mse) else math.inf,
                grad_norms=run / "grad_norms.npy",
            )
        )
    return out


# ----------------------------------------------------------------------------- the stages


def lambda_grid(results: list[Result], noise: str, budget: Budget, shapes: dict[str, int]):
    """λ per fixed-threshold method, from the measured run's gradient-norm quantiles."""
    measured = [r for r in results if r.noise == noise and r.method == "SGD" and r.seed == 0
                and r.lr == min(budget.lrs)]  # fmt: skip
    if not measured:
        raise RuntimeError(f"no measurement run for {noise}")
    norms = np.load(measured[0].grad_norms)
    norms = norms[np.isfinite(norms)]
    q = np.quantile(norms, LAMBDA_QUANTILES)
    split = {
        "global": 1.0,
        "tensor": shapes["tensors"] ** -0.5,
        "coordinate": shapes["params"] ** -0.5,
    }
    return {m: [float(f"{v * split[g]:.4g}") for v in q] for m, g in FIXED.items()}, q


def run_stage(jobs: list[tuple[list[str], str]], root: Path, workers: int) -> None:
    def one(job):
        overrides, name = job
        started = time.time()
        code = train(overrides, root, root / "logs" / f"{name}.log")
        print(f"  {name}: exit {code} after {time.time() - started:.0f} s", flush=True)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, jobs))


def tuning_jobs(noise, budget: Budget, grid: dict[str, list[float]]) -> list[tuple[list[str], str]]:
    """One ``train.py -m`` per group of methods that share their overrides (fewer start-ups)."""
    lrs = "step_rule.lr=" + ",".join(map(str, budget.lrs))
    seeds = "seed=" + ",".join(map(str, budget.tune_seeds))
    groups: dict[tuple, list[str]] = defaultdict(list)
    for method in budget.methods:
        extra = tuple(METHODS[method][1:])
        level = tuple(grid[method]) if method in FIXED else ()
        groups[(extra, level)].append(method)
    jobs = []
    for (extra, level), methods in groups.items():
        presets = ",".join(METHODS[m][0].split("=")[1] for m in methods)
        over = [*noise_overrides(noise), f"optimizer={presets}", *extra, lrs, seeds,
                f"trainer.max_steps={budget.steps}"]  # fmt: skip
        if level:
            over.append("optimizer.clipping_level=" + ",".join(map(str, level)))
        jobs.append((over, f"tune_{noise_key(noise)}_{'+'.join(methods)}"))
    return jobs


def best_settings(results: list[Result], noise: str, seeds: tuple[int, ...]) -> dict[str, dict]:
    """Per method: the (lr, λ) with the lowest mean final validation MSE over ``seeds``."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in results:
        if r.noise == noise and r.seed in seeds:
            groups[(r.method, r.lr, r.level)].append(r.val_mse)
    best: dict[str, dict] = {}
    for (method, lr, level), values in groups.items():
        if len(values) < len(seeds):
            continue
        score = float(np.mean(values))
        if method not in best or score < best[method]["tune_mse"]:
            best[method] = {"lr": lr, "level": level, "tune_mse": score}
    return best


def report_jobs(noise, budget: Budget, best: dict[str, dict]) -> list[tuple[list[str], str]]:
    seeds = "seed=" + ",".join(map(str, budget.report_seeds))
    jobs = []
    for method, setting in best.items():
        over = [*noise_overrides(noise), *METHODS[method],
                f"step_rule.lr={setting['lr']}", seeds, f"trainer.max_steps={budget.steps}"]  # fmt: skip
        if setting["level"] is not None:
            over.append(f"optimizer.clipping_level={setting['level']}")
        jobs.append((over, f"report_{noise_key(noise)}_{method}"))
    return jobs


# ----------------------------------------------------------------------------- outputs


def interval90(values: list[float]) -> tuple[float, float, float]:
    """Mean and a 90% Student-t interval over seeds (inf when any seed diverged)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(v)):
        return math.inf, math.inf, math.inf
    mean = float(v.mean())
    if len(v) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.95, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def summarise(results, noises, budget, bests) -> list[dict[str, Any]]:
    rows = []
    for noise in noises:
        key = noise_key(noise)
        for method, setting in bests[key].items():
            values = [r.val_mse for r in results if r.noise == key and r.method == method
                      and r.seed in budget.report_seeds and r.lr == setting["lr"]
                      and r.level == setting["level"]]  # fmt: skip
            mean, lo, hi = interval90(values)
            rows.append({"noise": key, "method": method, "lr": setting["lr"],
                         "clipping_level": setting["level"], "seeds": len(values),
                         "val_mse_mean": mean, "ci90_low": lo, "ci90_high": hi,
                         "diverged_seeds": sum(not math.isfinite(v) for v in values)})  # fmt: skip
    return rows


def write_table(rows: list[dict[str, Any]], grids: dict[str, Any], out: Path, note: str) -> None:
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    noises = list(dict.fromkeys(r["noise"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["noise"], r["method"]): r for r in rows}
    lines = [
        "# Regime map: final validation MSE of each method's best setting (mean [90% CI] over "
        "the report seeds)",
        "",
        "| method | " + " | ".join(noises) + " |",
        "| --- |" + " ---: |" * len(noises),
    ]
    for method in methods:
        cells = []
        for noise in noises:
            r = cell.get((noise, method))
            if r is None:
                cells.append("—")
            elif not math.isfinite(r["val_mse_mean"]):
                cells.append(f"diverged ({r['diverged_seeds']}/{r['seeds']})")
            else:
                lam = "" if r["clipping_level"] is None else f", λ={r['clipping_level']:g}"
                cells.append(f"{r['val_mse_mean']:.3f} [{r['ci90_low']:.3f}, {r['ci90_high']:.3f}] "
                             f"(lr={r['lr']:g}{lam})")  # fmt: skip
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "λ grids (from the quantiles " + ", ".join(map(str, LAMBDA_QUANTILES))
              + " of the unclipped gradient norm):", ""]  # fmt: skip
    for noise, grid in grids.items():
        lines.append(f"* {noise}: global-norm quantiles " + ", ".join(f"{v:.3g}" for v in grid))
    lines += ["", note, ""]
    out.with_suffix(".md").write_text("\n".join(lines))


def _x(noise: str) -> float:
    return 2.0 if noise == GAUSSIAN else float(noise.split("=")[1])


def plot_map(rows: list[dict[str, Any]], out: Path, note: str) -> None:
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    colors = plotting.method_colors(methods)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    ceiling = max((r["val_mse_mean"] for r in rows if math.isfinite(r["val_mse_mean"])), default=1)
    for i, method in enumerate(methods):
        pts = sorted((r for r in rows if r["method"] == method), key=lambda r: _x(r["noise"]))
        x = np.array([_x(r["noise"]) for r in pts]) + (i - len(methods) / 2) * 0.006
        y = np.array([r["val_mse_mean"] for r in pts])
        lo = np.array([r["ci90_low"] for r in pts])
        hi = np.array([r["ci90_high"] for r in pts])
        finite = np.isfinite(y)
        style = "--" if method in ("SGD", "Adam") else (":" if method in PEER_METHODS else "-")
        ax.errorbar(x[finite], y[finite], yerr=[y[finite] - lo[finite], hi[finite] - y[finite]],
                    color=colors[method], ls=style, marker="o", ms=4, capsize=2, label=method)  # fmt: skip
        ax.scatter(x[~finite], np.full((~finite).sum(), ceiling * 2), marker="x",
                   color=colors[method])  # fmt: skip
    ax.set_yscale("log")
    ticks = sorted({_x(r["noise"]) for r in rows})
    ax.set_xticks(ticks, [("Gaussian" if t == 2.0 else f"{t:g}") for t in ticks])
    ax.set_xlabel("tail index α of the label noise (symmetric α-stable; smaller = heavier)")
    ax.set_ylabel("final validation MSE, best lr (and λ) per method")
    ax.set_title("Regime map: MLP regression with α-stable label noise\n"
                 "mean and 90% CI over fresh seeds; × = diverged on some seed", fontsize=10)  # fmt: skip
    plotting.style_axes(ax)
    ax.legend(fontsize=7.5, ncol=2, loc="upper right", frameon=False)
    fig.text(0.01, 0.005, note, fontsize=7, color="0.3")
    plotting.savefig(fig, out)


def plot_lr_sensitivity(results, noises: list[str], budget: Budget, out: Path, note: str) -> None:
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r.method for r in results))
    colors = plotting.method_colors(methods)
    fig, axes = plt.subplots(1, len(noises), figsize=(6 * len(noises), 5), squeeze=False)
    for ax, noise in zip(axes[0], noises):
        for method in methods:
            per_lr = []
            for lr in budget.lrs:
                by_level: dict[Any, list[float]] = defaultdict(list)
                for r in results:
                    if (
                        r.noise == noise
                        and r.method == method
                        and r.lr == lr
                        and r.seed in budget.tune_seeds
                    ):
                        by_level[r.level].append(r.val_mse)
                scores = [np.mean(v) for v in by_level.values() if len(v) == len(budget.tune_seeds)]
                per_lr.append(min(scores) if scores else np.nan)
            y = np.array(per_lr, dtype=float)
            y[~np.isfinite(y)] = np.nan
            style = "--" if method in ("SGD", "Adam") else (":" if method in PEER_METHODS else "-")
            ax.plot(budget.lrs, y, marker="o", ms=3, ls=style, color=colors[method], label=method)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate (step_rule.lr)")
        ax.set_ylabel("final validation MSE (mean over tuning seeds; best λ)")
        ax.set_title(f"{noise}: gaps = diverged", fontsize=10)
        plotting.style_axes(ax)
    axes[0][-1].legend(fontsize=7.5, ncol=2, frameon=False)
    fig.text(0.01, 0.005, note, fontsize=7, color="0.3")
    plotting.savefig(fig, out)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny budgets: the pipeline in ~1 min")
    parser.add_argument(
        "--figures-only", action="store_true", help="only redraw from finished runs"
    )
    parser.add_argument("--jobs", type=int, default=2, help="train.py processes at once")
    parser.add_argument("--root", type=Path, help="run directory (default results/regime_map)")
    parser.add_argument("--out", type=Path, default=FIGURES, help="figure and table directory")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"Invalid --jobs: {args.jobs}; expected an integer >= 1")
    budget = QUICK if args.quick else FULL
    root = args.root or (SWEEP.with_name("regime_map_quick") if args.quick else SWEEP)
    noises: list[Any] = [*budget.alphas, GAUSSIAN]
    shapes = {"tensors": 4, "params": 16 * 32 + 32 + 32 + 1}  # conf/task/toy.yaml's MLP 16-32-1
    if not args.figures_only:
        print(f"[regime map] measuring the unclipped gradient norm ({len(noises)} noise laws)")
        run_stage([([*noise_overrides(n), *METHODS["SGD"], f"step_rule.lr={min(budget.lrs)}",
                     "seed=0", f"trainer.max_steps={budget.steps}"], f"measure_{noise_key(n)}")
                   for n in noises], root, args.jobs)  # fmt: skip
    results = read_results(root)
    grids, quantiles = {}, {}
    for n in noises:
        grids[noise_key(n)], quantiles[noise_key(n)] = lambda_grid(
            results, noise_key(n), budget, shapes
        )
    if not args.figures_only:
        print("[regime map] tuning")
        run_stage(
            [j for n in noises for j in tuning_jobs(n, budget, grids[noise_key(n)])],
            root,
            args.jobs,
        )
        results = read_results(root)
    bests = {noise_key(n): best_settings(results, noise_key(n), budget.tune_seeds) for n in noises}
    if not args.figures_only:
        print("[regime map] reporting on fresh seeds")
        run_stage(
            [j for n in noises for j in report_jobs(n, budget, bests[noise_key(n)])],
            root,
            args.jobs,
        )
        results = read_results(root)
    rows = summarise(results, noises, budget, bests)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/regime_map.py" + (" --quick" if args.quick else "")
    note = stamp(command, f"{budget.steps} steps, lr grid {list(budget.lrs)}, tuned on seeds "
                 f"{list(budget.tune_seeds)}, reported on seeds {list(budget.report_seeds)}")  # fmt: skip
    write_table(
        rows, {k: v.tolist() for k, v in quantiles.items()}, args.out / "regime_map_table", note
    )
    plot_map(rows, args.out / "regime_map.png", note)
    heavy = noise_key(budget.alphas[0])
    plot_lr_sensitivity(results, [heavy, GAUSSIAN], budget, args.out / "lr_sensitivity.png", note)
    (args.out / "regime_map_best.json").write_text(json.dumps(bests, indent=1, default=str))
    print(f"[regime map] wrote {args.out}/regime_map.png, lr_sensitivity.png, regime_map_table.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
