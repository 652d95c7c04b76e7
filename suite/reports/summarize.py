"""List the completed, failed, interrupted and missing runs of a sweep.

    python scripts/summarize.py results/<experiment_name>

"Missing" runs are the jobs of the sweep's ``multirun.yaml`` (the last ``-m`` launched into that
directory) that have no run directory yet. Exits 1 when anything failed, is interrupted or missing.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from torch_clip.suite.run_reader import discover_runs


def expected_jobs(sweep_dir: Path) -> list[frozenset[str]]:
    """The override sets of every job the sweep's multirun.yaml asked for."""
    path = sweep_dir / "multirun.yaml"
    if not path.exists():
        return []
    from hydra.core.override_parser.overrides_parser import OverridesParser

    config = yaml.safe_load(path.read_text())
    hydra_cfg = config.get("hydra", {})
    params = hydra_cfg.get("sweeper", {}).get("params") or {}
    cli = hydra_cfg.get("overrides", {}).get("task") or []
    parser = OverridesParser.create()
    by_key = {f"{k}={v}".split("=", 1)[0]: f"{k}={v}" for k, v in params.items()}
    for item in cli:  # command-line overrides win over the sweeper's params, as in Hydra
        by_key[item.split("=", 1)[0]] = item
    choices = []
    for override in parser.parse_overrides(list(by_key.values())):
        key = override.get_key_element()
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        choices.append([f"{key}={v}" for v in values])
    return [frozenset(combo) for combo in itertools.product(*choices)]


def collect(sweep_dir: Path) -> tuple[list[dict], list[frozenset[str]]]:
    """Every run directory of the sweep with its status, and the jobs that have none yet."""
    runs = []
    for run in discover_runs([sweep_dir]):
        if not run.summary and not (run.dir / "config.yaml").exists():
            continue  # not a run of train.py: it writes one of the two first
        status = run.summary.get("status", "running")
        runs.append(
            {
                "dir": run.dir.relative_to(sweep_dir),
                "status": "interrupted" if status in ("running", "preempted") else status,
                "error": run.summary.get("error"),
                "steps": run.summary.get("steps"),
                "overrides": frozenset(run.overrides),
            }
        )
    runs.sort(key=lambda r: r["dir"])
    found = {r["overrides"] for r in runs}
    missing = [job for job in expected_jobs(sweep_dir) if job not in found]
    return runs, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dir", type=Path, help="results/<experiment_name>")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"no such sweep directory: {args.sweep_dir}")
    runs, missing = collect(args.sweep_dir)
    groups: dict[Path, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for run in runs:
        groups[run["dir"].parent][run["status"]] += 1
    print(f"{'task/method':<60} {'completed':>9} {'failed':>7} {'interrupted':>11}")
    for method, counts in sorted(groups.items()):
        print(
            f"{method!s:<60} {counts['completed']:>9} {counts['failed']:>7} {counts['interrupted']:>11}"
        )
    for run in runs:
        if run["status"] == "failed":
            print(f"FAILED      {run['dir']}: {run['error']}")
        elif run["status"] == "interrupted":
            print(f"INTERRUPTED {run['dir']} (rerun the same command to resume)")
    for job in missing:
        print(f"MISSING     {' '.join(sorted(job))}")
    total = len(runs)
    completed = sum(r["status"] == "completed" for r in runs)
    failed = sum(r["status"] == "failed" for r in runs)
    print(f"{completed}/{total} runs completed, {failed} failed, {len(missing)} missing")
    return 0 if completed == total and not missing else 1


if __name__ == "__main__":
    sys.exit(main())
