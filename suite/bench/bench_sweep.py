"""Per-run overhead of a local sweep: persistent workers against one ``train.py`` per run.

    python scripts/bench_sweep.py                 # 40 toy runs of 20 steps each way; sweep.md
    python scripts/bench_sweep.py --runs 10 --out /tmp/sweep.md

A sweep of ``--runs`` toy runs (``task=toy trainer.max_steps=20``, one seed each, one thread)
is made twice, one run at a time: in one persistent worker
(``torch_clip.suite.experiments.local_runs``, the pool started inside the timing) and as one
``python train.py`` process per run (the path the drivers took before). A run's overhead is the
sweep's wall time over ``--runs`` minus the mean in-run time its summary records
(``wall_seconds``): imports, process start, config composition and run-directory bookkeeping.
The load average is printed with the numbers, since on a busy machine wall time is mostly
waiting for a core.

    python scripts/bench_sweep.py --reproduce-quick   # also the wall time of the --quick pipeline

``--reproduce-quick`` adds a second table: the wall time of ``python scripts/reproduce_readme.py
--quick`` (every part of the README's pipeline on tiny budgets, into a scratch ``--root`` and
``--out``), with the commit it ran at and the load average around it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from torch_clip.suite.bench.tables import publish
from torch_clip.suite.experiments import local_runs
from torch_clip.suite.experiments.provenance import commit
from torch_clip.suite.paths import repo_root

ROOT = repo_root()
OUT = ROOT / "results" / "bench" / "sweep.md"
RUN_ARGS = ("task=toy", "trainer.max_steps=20", "trainer.progress=false", "trainer.num_threads=1")


def run_overrides(root: Path, seed: int) -> list[str]:
    return [*RUN_ARGS, f"results_root={root}", f"seed={seed}"]


def in_run_seconds(root: Path) -> list[float]:
    """The in-run time every completed run under ``root`` records."""
    found = [json.loads(p.read_text()) for p in root.rglob("summary.json")]
    return [s["wall_seconds"] for s in found if s.get("status") == "completed"]


def workers_sweep(root: Path, runs: int) -> float:
    log = root / "logs" / "sweep.log"
    specs = [local_runs.RunSpec(tuple(run_overrides(root, s)), log) for s in range(runs)]
    started = time.perf_counter()
    results = local_runs.run_local(specs, workers=1)
    wall = time.perf_counter() - started
    failed = [r for r in results if r["status"] != "completed"]
    if failed:
        raise RuntimeError(f"{len(failed)} worker run(s) failed; see {log}")
    return wall


def subprocess_sweep(root: Path, runs: int) -> float:
    started = time.perf_counter()
    for seed in range(runs):
        cmd = [sys.executable, str(ROOT / "train.py"), *run_overrides(root, seed)]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def measure(runs: int, scratch: Path) -> list[tuple[str, float, float]]:
    """(path, sweep wall s, mean in-run s) of each path."""
    rows = []
    for name, sweep in (("persistent workers (local_runs)", workers_sweep),
                        ("one train.py process per run", subprocess_sweep)):  # fmt: skip
        root = scratch / name.split()[0]
        wall = sweep(root, runs)
        inner = in_run_seconds(root)
        if len(inner) != runs:
            raise RuntimeError(f"{name}: {len(inner)} of {runs} runs completed under {root}")
        rows.append((name, wall, statistics.fmean(inner)))
    return rows


def table(rows, runs: int, load: tuple[float, ...], after: tuple[float, ...]) -> str:
    lines = [
        f"{runs} toy runs of 20 steps, one at a time, {os.cpu_count()} cores; load average "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min) before, "
        f"{after[0]:.2f} / {after[1]:.2f} / {after[2]:.2f} after; "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. Made by "
        f"`python scripts/bench_sweep.py --runs {runs}` at commit {commit()}.",
        "",
        "| path | sweep wall s | wall s per run | in-run s per run | overhead s per run |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, wall, inner in rows:
        per = wall / runs
        lines.append(f"| {name} | {wall:.1f} | {per:.2f} | {inner:.3f} | {per - inner:.2f} |")
    return "\n".join(lines) + "\n"


def loads(load: tuple[float, ...]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def reproduce_quick(scratch: Path) -> str:
    """Run ``reproduce_readme.py --quick`` into ``scratch``; its table (wall time, exit status,
    load average before and after, commit)."""
    args = ["--quick", "--root", str(scratch / "rq"), "--out", str(scratch / "rq_out")]
    load, started = os.getloadavg(), time.perf_counter()
    code = subprocess.run([sys.executable, "scripts/reproduce_readme.py", *args], cwd=ROOT,
                          stdout=subprocess.DEVNULL).returncode  # fmt: skip
    wall, after = time.perf_counter() - started, os.getloadavg()
    return "\n".join([
        f"`python scripts/reproduce_readme.py --quick` (default --jobs, scratch --root and --out) "
        f"at commit {commit()}, {os.cpu_count()} cores; "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. Made by "
        "`python scripts/bench_sweep.py --reproduce-quick`.",
        "",
        "| pipeline | wall s | exit status | load average before (1 / 5 / 15 min) | after |",
        "|---|---:|---:|---|---|",
        f"| reproduce_readme.py --quick | {wall:.0f} | {code} | {loads(load)} | {loads(after)} |",
    ]) + "\n"  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=40, help="runs per sweep (40)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"Markdown table ({OUT.name})")
    parser.add_argument("--reproduce-quick", action="store_true",
                        help="also time reproduce_readme.py --quick (a second table)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be an integer >= 1, got {args.runs}")
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as scratch:
        rows = measure(args.runs, Path(scratch))
        text = table(rows, args.runs, load, os.getloadavg())
        if args.reproduce_quick:
            text += "\n" + reproduce_quick(Path(scratch))
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
