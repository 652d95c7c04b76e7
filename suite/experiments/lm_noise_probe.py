"""Is the gradient noise of ``task=lm`` heavy-tailed? Zhang et al.'s Fig. 1 in small.

    python scripts/lm_noise_probe.py                 # probe (resumable), then table and figure
    python scripts/lm_noise_probe.py --figures-only  # table and figure from the probes made

Three series, each on seeds 0-2, probed by ``scripts/noise_probe.py`` (unchanged) at
initialisation, mid-run and at the end of its run, through ``scripts/tail_over_training.py``'s
``run_task`` (train to half the budget keeping the checkpoint, probe start and mid, extend the
run to the whole budget, probe the end; a finished step is skipped):

* ``lm bytes``: the model of ``experiment=lm`` (the comparison's), its recipe (AdamW, norm
  clipping at 1.0), 1,000 steps;
* ``lm WordPiece``: the same with ``task.tokenizer=minilm`` (30,522 tokens, tied embeddings);
* ``ImageNet proxy``: ``task=imagenet``'s own recipe, the near-Gaussian reference of Zhang et al.

Runs go to ``--root`` (default ``outputs/lm_probe``, gitignored; never committed), the table to
``results/lm/noise_probe.md`` (and ``.csv``), the figure to ``results/lm/lm_noise_probe.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from torch_clip.suite.experiments import (
    sweeps,
    tail_over_training,
)
from torch_clip.suite.paths import ROOT

OUT = ROOT / "results" / "lm"
#: log every 10 steps: the probe's runs need no per-step losses
LM = ["experiment=lm", "trainer.log_every=10"]
#: series name -> (task, folder, train.py overrides)
SERIES = {
    "lm bytes": ("lm", "bytes", LM),
    "lm WordPiece": ("lm", "wordpiece", [*LM, "task.tokenizer=minilm"]),
    "ImageNet proxy": ("imagenet", "imagenet", []),
}
SEEDS = (0, 1, 2)


def default_root() -> Path:
    return ROOT / "outputs" / "lm_probe"


def probes(root: Path) -> list[dict]:
    """Every probe made under ``root``: its series, seed, step, estimates and noise norms."""
    found = []
    for name, (task, folder, _) in SERIES.items():
        for path in sorted((root / folder / task).glob("*/seed*/noise_probe_*/noise_probe.json")):
            meta = json.loads(path.read_text())
            norms = np.load(path.with_name("noise_probe.npz"))["noise_norms"]
            seed = int(path.parent.parent.name.removeprefix("seed"))
            found.append({"series": name, "seed": seed, "meta": meta, "norms": norms})
    return sorted(found, key=lambda p: (p["series"], p["seed"], p["meta"]["step"]))


def fmt(value: float, ci: list[float] | None) -> str:
    if ci is None:
        return f"{value:.2f}"
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def write_table(found: list[dict], out: Path, command: str) -> None:
    from torch_clip.suite.experiments.provenance import stamp

    rows = []
    for p in found:
        m = p["meta"]
        rows.append({
            "series": p["series"], "seed": p["seed"], "step": m["step"],
            "stable_alpha": f"{m['noise_coords_stable_alpha']:.3f}",
            "stable_ci90": m["noise_coords_stable_alpha_ci90"],
            "hill_coords": f"{m['noise_coords_hill_alpha']:.3f}",
            "hill_coords_ci90": m["noise_coords_hill_alpha_ci90"],
            "hill_norms": f"{m['noise_norm_summary']['hill_alpha']:.3f}"
            if "hill_alpha" in m["noise_norm_summary"] else "",
            "hill_norms_ci90": m.get("noise_norm_hill_alpha_ci90"),
            "batches": m["batches"], "data": m["data_source"],
        })  # fmt: skip
    sweeps.write_csv(out / "noise_probe.csv", rows)
    lines = [
        "| series | seed | step | α-stable index [90% CI] | Hill index, coordinates [90% CI] "
        "| Hill index, noise norms [90% CI] |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p, r in zip(found, rows):
        m = p["meta"]
        norm_hill = m["noise_norm_summary"].get("hill_alpha")
        lines.append(
            f"| {r['series']} | {r['seed']} | {r['step']} "
            f"| {fmt(m['noise_coords_stable_alpha'], m['noise_coords_stable_alpha_ci90'])} "
            f"| {fmt(m['noise_coords_hill_alpha'], m['noise_coords_hill_alpha_ci90'])} "
            f"| {fmt(norm_hill, m.get('noise_norm_hill_alpha_ci90')) if norm_hill else ''} |"
        )
    lines += ["", f"- {stamp(command)}", ""]
    (out / "noise_probe.md").write_text("\n".join(lines))


def write_throughput(root: Path, out: Path, command: str) -> None:
    """Training throughput of each series' probed runs (the median over their evaluations of the
    tokens per second since the evaluation before) and the probes' own seconds."""
    from torch_clip.suite.experiments.provenance import stamp

    lines = ["| series | runs | training tokens per second (median) | seconds per probe (median) |",
             "| --- | ---: | ---: | ---: |"]  # fmt: skip
    found = probes(root)
    for name, (task, folder, _) in SERIES.items():
        speeds, runs = [], 0
        for path in sorted((root / folder / task).glob("*/seed*/metrics.jsonl")):
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            speeds += [r["val_tokens_per_second"] for r in rows if "val_tokens_per_second" in r]
            runs += 1
        seconds = [p["meta"]["seconds"] for p in found if p["series"] == name]
        speed = f"{np.median(speeds):,.0f}" if speeds else "—"
        spent = f"{np.median(seconds):,.0f}" if seconds else "—"
        lines.append(f"| {name} | {runs} | {speed} | {spent} |")
    lines += ["", "- measured on a 2-core CPU shared with other work (load average above 20), so "
              "ratios between series made at the same time mean more than the values",
              f"- {stamp(command)}", ""]  # fmt: skip
    (out / "noise_probe_cost.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="where the probed runs go")
    parser.add_argument("--out", type=Path, default=OUT, help="table and figure folder")
    parser.add_argument("--series", nargs="+", default=list(SERIES), choices=list(SERIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--figures-only", action="store_true")
    args = parser.parse_args(argv)
    root = args.root or default_root()
    code = 0
    if not args.figures_only:
        for name in args.series:
            task, folder, extra = SERIES[name]
            for seed in args.seeds:
                print(f"[{name}, seed {seed}] noise over training", flush=True)
                code |= tail_over_training.run_task(task, seed, root / folder, False, extra)
    found = probes(root)
    if found:
        from torch_clip.suite.reports import lm_plots

        args.out.mkdir(parents=True, exist_ok=True)
        write_table(found, args.out, "python scripts/lm_noise_probe.py")
        write_throughput(root, args.out, "python scripts/lm_noise_probe.py")
        lm_plots.noise_figure(found, args.out / "lm_noise_probe.png")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
