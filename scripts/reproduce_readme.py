"""Run the CPU-scale README comparisons and regenerate every README figure and table.

    python scripts/reproduce_readme.py                 # all four tasks, then the figures
    python scripts/reproduce_readme.py --tasks reddit  # one sweep
    python scripts/reproduce_readme.py --figures-only  # re-plot what is there

Resumable: rerunning skips completed runs (train.py sees their summary.json) and resumes
interrupted ones from their checkpoints, so a half-finished reproduction is never started over.
Sweeps write to ``results/readme/<task>/<method>/seed<N>/`` (not committed); figures and tables go
to ``results/readme/figures/`` (committed and shown in the README).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "results" / "readme"
FIGURES = SWEEP / "figures"
TASKS = ("reddit", "imagenet", "voc", "cola")
# A real CoLA copy for benchmarking on this project's machines; the suite never requires it.
SHARED_COLA = ROOT.parent / "shared" / "data" / "cola"


def run(cmd: list[str], log: Path | None = None) -> int:
    print("$", " ".join(cmd), flush=True)
    if log is None:
        return subprocess.call(cmd, cwd=ROOT)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        return subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)


def sweep(task: str, args: argparse.Namespace) -> None:
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        f"experiment={task}",
        "trainer.progress=false",
        "trainer.checkpoint_every=20",
        f"trainer.num_threads={args.threads}",
    ]
    if task == "cola" and (SHARED_COLA / "train.tsv").exists() and not args.embedded_cola:
        cmd.append(f"task.data_root={SHARED_COLA}")
    cmd += args.overrides
    started = time.time()
    code = run(cmd, SWEEP / "logs" / f"{task}.log")
    print(
        f"  {task}: exit {code} after {time.time() - started:.0f} s (log: results/readme/logs/{task}.log)"
    )


def figures(args: argparse.Namespace) -> None:
    py = sys.executable
    run([py, "scripts/summarize.py", str(SWEEP)])
    run([py, "scripts/plot_comparison.py", str(SWEEP), "--out", str(FIGURES)])
    runs = [
        str(SWEEP / t / "sgd" / "seed0") for t in TASKS if (SWEEP / t / "sgd" / "seed0").exists()
    ]
    if runs:
        run([py, "scripts/plot_heavy_tail.py", *runs, "--out", str(FIGURES / "heavy_tail.png")])
    probes = sorted(FIGURES.parent.glob("noise/*/noise_probe.npz"))
    if probes:
        run(
            [
                py,
                "scripts/plot_heavy_tail.py",
                *[str(p.parent) for p in probes],
                "--out",
                str(FIGURES / "noise_heavy_tail.png"),
            ]
        )


def noise_probes(args: argparse.Namespace) -> None:
    for task in args.tasks:
        overrides = [f"task={task}"]
        if task == "cola" and (SHARED_COLA / "train.tsv").exists() and not args.embedded_cola:
            overrides.append(f"task.data_root={SHARED_COLA}")
        out = SWEEP / "noise" / task
        if (out / "noise_probe.npz").exists():
            continue
        run(
            [
                sys.executable,
                "scripts/noise_probe.py",
                "--overrides",
                *overrides,
                "--at",
                "start",
                "--batches",
                str(args.probe_batches),
                "--reference-batches",
                "16",
                "--out",
                str(out),
            ],
            SWEEP / "logs" / f"noise_{task}.log",
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--figures-only", action="store_true", help="only re-plot existing results")
    parser.add_argument(
        "--noise-probe", action="store_true", help="also measure gradient noise at init"
    )
    parser.add_argument("--probe-batches", type=int, default=100)
    parser.add_argument(
        "--embedded-cola", action="store_true", help="ignore the shared real CoLA copy"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per run")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides, e.g. seed=0")
    args = parser.parse_args()
    if not args.figures_only:
        for task in args.tasks:
            sweep(task, args)
        if args.noise_probe:
            noise_probes(args)
    figures(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
