"""What one ``python train.py task=toy trainer.max_steps=1`` costs to start, beside torch's floor.

    python scripts/bench_startup.py                  # 5 repeats; writes results/bench/startup.md
    python scripts/bench_startup.py --repeats 3 --out /tmp/startup.md

Measures, each the median over ``--repeats`` fresh processes: the wall and CPU time of a bare
``python -c "import torch"`` (the floor no change here can lower), of importing ``clip_core``
and of importing the modules ``train.py`` imports, and of the one-step toy run itself; and,
inside one process each, the import time of ``clip_core`` and of ``train.py``'s modules on top
of an already imported torch. The machine's load average is printed with them, since on a busy
machine the wall time is mostly waiting for a core. Standard library only.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from torch_clip.suite.bench.tables import publish
from torch_clip.suite.paths import repo_root

ROOT = repo_root()
TRAIN = ROOT / "train.py"
OUT = ROOT / "results" / "bench" / "startup.md"
# the run's outputs go to a scratch folder; progress bars would only add noise to the timing
RUN_ARGS = ("task=toy", "trainer.max_steps=1", "trainer.progress=false")


def train_imports() -> list[str]:
    """The modules ``train.py`` imports at its top, read from its source (``from a import b``
    imports ``a``)."""
    tree = ast.parse(TRAIN.read_text())
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__":
            names.append(node.module)
    return list(dict.fromkeys(names))


def timed(command: list[str]) -> tuple[float, float, str]:
    """``(wall seconds, CPU seconds, stdout)`` of one run of ``command`` from the repository."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=_env())
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"bench_startup: {shlex.join(command)} failed:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def _env() -> dict[str, str]:
    # no network for the hub or wandb
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def in_process_import(before: list[str], modules: list[str]) -> str:
    """A ``python -c`` program printing the seconds ``import modules`` takes after ``before``."""
    setup = "".join(f"import {m}\n" for m in before)
    body = "".join(f"import {m}\n" for m in modules)
    return f"import time\n{setup}t = time.perf_counter()\n{body}print(time.perf_counter() - t)\n"


def median_runs(command: list[str], repeats: int) -> tuple[float, float, float | None]:
    """Median wall and CPU seconds of ``command``, and of the number it prints (if any)."""
    walls, cpus, printed = [], [], []
    for _ in range(repeats):
        wall, cpu, out = timed(command)
        walls.append(wall)
        cpus.append(cpu)
        if out.strip():  # the import programs print their seconds; the floor prints nothing
            printed.append(float(out))
    inner = statistics.median(printed) if printed else None
    return statistics.median(walls), statistics.median(cpus), inner


def measurements(repeats: int, scratch: Path) -> list[tuple[str, tuple]]:
    """``(what, (wall, cpu, in-process import))`` rows, the floor first."""
    py = sys.executable
    modules = train_imports()
    cases = [
        ("bare torch (the floor)", [py, "-c", "import torch"]),
        ("import clip_core", [py, "-c", in_process_import(["torch"], ["clip_core"])]),
        ("import train.py's modules", [py, "-c", in_process_import(["torch"], modules)]),
    ]
    rows = [(what, median_runs(cmd, repeats)) for what, cmd in cases]
    runs = []
    for i in range(repeats):  # a fresh run directory each time: a completed run would be skipped
        args = [*RUN_ARGS, f"results_root={scratch}", f"hydra.run.dir={scratch}/run{i}"]
        runs.append(timed([py, str(TRAIN), *args]))
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    rows.append(("train.py " + " ".join(RUN_ARGS[:2]), (wall, cpu, None)))
    return rows


def table(rows: list[tuple[str, tuple]], repeats: int, load: tuple[float, ...]) -> str:
    floor_wall, floor_cpu = rows[0][1][0], rows[0][1][1]
    lines = [
        f"Median of {repeats} processes; load average {load[0]:.2f} / {load[1]:.2f} / "
        f"{load[2]:.2f} (1 / 5 / 15 min) before, on {os.cpu_count()} cores, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. Made by "
        f"`python scripts/bench_startup.py --repeats {repeats}`.",
        "",
        "| what | wall s | CPU s | CPU s over the floor | import s after torch |",
        "|---|---:|---:|---:|---:|",
    ]
    for what, (wall, cpu, inner) in rows:
        over = "" if what.startswith("bare") else f"{cpu - floor_cpu:+.2f}"
        imp = "" if inner is None else f"{inner:.3f}"
        lines.append(f"| {what} | {wall:.2f} | {cpu:.2f} | {over} | {imp} |")
    lines += [
        "",
        f'The floor: `python -c "import torch"`, {floor_wall:.2f} s wall, {floor_cpu:.2f} s CPU.',
        f"train.py's modules: {', '.join(train_imports())}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="processes per measurement (5)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"Markdown table ({OUT.name})")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be an integer >= 1, got {args.repeats}")
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as scratch:
        rows = measurements(args.repeats, Path(scratch))
    text = table(rows, args.repeats, load)
    after = os.getloadavg()
    publish(text, args.out)
    print(f"load average after: {after[0]:.2f} / {after[1]:.2f} / {after[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
