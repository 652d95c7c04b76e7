"""The one reader of the run record (``suite/records.py`` writes it): finding run directories and
reading what a run was and what it measured.

A run is identified by its own files, never by where it lies: the method is the summary's
``method`` (the display name, e.g. ``norm,step_rule.lr=0.01`` or a label such as ``SGD``), the
task and seed are the summary's; only a run that lacks them (an older record, or one still
starting) falls back to its path ``<task>/<method directory>/seed<N>``. The hyper-parameters come
from its ``config.yaml``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from torch_clip.suite.naming import method_of_dir
from torch_clip.suite.records import read_json, read_jsonl

#: directories under a sweep that never hold runs
IGNORED_DIRS = {"figures", ".hydra", "checkpoints", "__pycache__"}
SEED_DIR = re.compile(r"^seed(-?\d+)$")


def as_float(value: Any) -> float:
    """``value`` as a float; NaN for ``None``/non-numbers (records write ±inf as strings)."""
    if isinstance(value, bool):
        return math.nan
    if isinstance(value, int | float):
        return float(value)
    if value in ("inf", "-inf"):
        return float(value)
    return math.nan


def _safe_load(text: str) -> Any:
    """``yaml.safe_load`` through libyaml when PyYAML has it: about 8 times faster, which matters
    when a sweep's reader parses thousands of run configs at every stage."""
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in the YAML file ``path``; empty when missing or unreadable."""
    import yaml

    try:
        value = _safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class Run:
    """One run directory of ``train.py``."""

    dir: Path
    task: str
    method: str  # display name: the summary's ``method``, else the method directory's name
    seed: int | None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.summary.get("status") or "no summary.json")

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def name(self) -> str:
        seed = "?" if self.seed is None else self.seed
        return f"{self.task}/{self.method}/seed{seed}"

    @property
    def optimizer(self) -> str:
        return str(self.summary.get("optimizer") or self.method)

    @property
    def description(self) -> str:
        return str(self.summary.get("optimizer_description") or self.optimizer)

    # ------------------------------------------------------------------ the configuration

    @cached_property
    def config(self) -> dict[str, Any]:
        """The resolved ``config.yaml`` (empty when missing or unreadable)."""
        return read_yaml(self.dir / "config.yaml")

    @cached_property
    def overrides(self) -> list[str]:
        """The command-line overrides Hydra recorded for the run (``.hydra/overrides.yaml``)."""
        path = self.dir / ".hydra" / "overrides.yaml"
        if not path.exists():
            return []
        return list(_safe_load(path.read_text()) or [])

    @property
    def lr(self) -> float:
        return float(self.config["step_rule"]["lr"])

    @property
    def clipping_level(self) -> float | None:
        return self.config["optimizer"].get("clipping_level")

    @property
    def preset(self) -> str:
        """The optimizer preset (``conf/optimizer/<preset>.yaml``) the run was composed with."""
        return str(self.config["optimizer"]["name"])

    # ------------------------------------------------------------------ the measurements

    def final(self, metric: str) -> float:
        """The summary's final validation ``metric``; NaN when missing or not finite (diverged)."""
        value = as_float((self.summary.get("final") or {}).get(f"val_{metric}"))
        return value if math.isfinite(value) else math.nan

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        return read_jsonl(self.dir / "metrics.jsonl")

    def series(self, key: str, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of ``key`` in the ``split`` rows, sorted by step, finite values only.

        A step logged twice (a resumed run) keeps its last row.
        """
        by_step: dict[int, float] = {}
        for row in self.rows:
            if row.get("split") != split or "step" not in row:
                continue
            value = as_float(row.get(key))
            if math.isfinite(value):
                by_step[int(row["step"])] = value
        steps = np.array(sorted(by_step), dtype=np.int64)
        return steps, np.array([by_step[int(s)] for s in steps], dtype=np.float64)

    def has_key(self, key: str, split: str) -> bool:
        return self.series(key, split)[0].size > 0

    def grad_norms(self) -> np.ndarray | None:
        """The gradient norm of every step, as stored (float32); ``None`` when not written."""
        path = self.dir / "grad_norms.npy"
        if not path.exists():
            return None
        return np.load(path).reshape(-1)


def is_run_dir(path: Path) -> bool:
    return (
        path.is_dir()
        and any((path / name).exists() for name in ("summary.json", "metrics.jsonl", "config.yaml"))
        and not (path / "multirun.yaml").exists()
    )


def load_run(path: Path) -> Run:
    """Read one run directory; method, task and seed from the summary, else from the path."""
    path = Path(path)
    summary = read_json(path / "summary.json") or {}
    match = SEED_DIR.match(path.name)
    seed = summary.get("seed")
    if not isinstance(seed, int):
        seed = int(match.group(1)) if match else None
    method_dir = path.parent if match else path
    method = summary.get("method") or method_of_dir(method_dir.name)
    task = summary.get("task") or (method_dir.parent.name if match else "unknown")
    return Run(dir=path, task=str(task), method=str(method), seed=seed, summary=summary)


def _walk(path: Path) -> Iterable[Path]:
    if path.name in IGNORED_DIRS or path.name.startswith("noise_probe"):
        return
    if is_run_dir(path):
        yield path
        return
    try:
        children = sorted(p for p in path.iterdir() if p.is_dir())
    except OSError:
        return
    for child in children:
        yield from _walk(child)


def discover_runs(paths: Sequence[Path]) -> list[Run]:
    """Every run directory at or under ``paths`` (sweep, task, method or run directories),
    sorted by task, method and seed."""
    seen: set[Path] = set()
    runs: list[Run] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        for run_dir in _walk(path):
            key = run_dir.resolve()
            if key not in seen:
                seen.add(key)
                runs.append(load_run(run_dir))
    runs.sort(key=lambda r: (r.task, r.method, -1 if r.seed is None else r.seed))
    return runs


def read_runs(root: Path) -> list[Run]:
    """Every completed run with a ``config.yaml`` under ``root`` (none when it does not exist),
    in the order of their directories."""
    if not Path(root).exists():
        return []
    runs = [r for r in discover_runs([root]) if r.completed and (r.dir / "config.yaml").exists()]
    # directory order, not discovery's (task, method, seed): sweeps average in this order
    return sorted(runs, key=lambda r: r.dir)
