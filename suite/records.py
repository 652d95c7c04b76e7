"""The local record every run writes (the contract that plots and checks read).

``<run_dir>/config.yaml``     the resolved config
``<run_dir>/metrics.jsonl``   one JSON object per logged step and per evaluation
``<run_dir>/grad_norms.npy``  the global gradient norm of every step
``<run_dir>/grad_norm_hist.jsonl``  a histogram of the norms per epoch
``<run_dir>/summary.json``    final/best metrics, provenance, status (running/completed/failed/preempted)
``<run_dir>/.hydra/``         Hydra's config, hydra config and overrides (written with config.yaml)

Every file except the append-only ``metrics.jsonl`` and ``grad_norm_hist.jsonl`` is written to a
temporary file and renamed, so a crash never leaves a half-written ``summary.json``. A resumed run
first rolls the record back to its checkpoint (:meth:`RunRecord.rollback`); a line that is not JSON
with rows after it is an error naming it (:class:`TornRecordError`), never a silent truncation.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

STATUSES = ("running", "completed", "failed", "preempted")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` when missing or unreadable (a run still starting)."""
    try:
        value = json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


class TornRecordError(ValueError):
    """A line that is not JSON in the middle of a record file: damage, not a killed write."""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of ``path``, one a line. A torn last line (a run killed while writing it)
    is left out; an unreadable line with rows after it raises :class:`TornRecordError` naming it."""
    try:
        lines = Path(path).read_bytes().splitlines()
    except FileNotFoundError:
        return []
    numbered = [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]
    rows: list[dict[str, Any]] = []
    for position, (number, line) in enumerate(numbered):
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if position == len(numbered) - 1:
                break
            raise TornRecordError(
                f"{path} line {number} is not a JSON row ({exc.__class__.__name__}: {exc}), and "
                f"{len(numbered) - position - 1} rows follow it; repair or delete that line "
                "(or the run directory) and rerun"
            ) from None
        if isinstance(row, dict):
            rows.append(row)
    return rows


class RunRecord:
    """Writes one run's files. Only rank 0 holds a real record; others get ``enabled=False``."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.dir = Path(run_dir)
        self.enabled = enabled
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
        self._metrics = None

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.dir / "summary.json"

    @property
    def histogram_path(self) -> Path:
        return self.dir / "grad_norm_hist.jsonl"

    @property
    def grad_norms_path(self) -> Path:
        return self.dir / "grad_norms.npy"

    def write_config(self, yaml_text: str, hydra_files: dict[str, str] | None = None) -> None:
        """``config.yaml`` and Hydra's ``.hydra/<name>`` files (Hydra is told not to write them
        itself, so a run refused before this point leaves its directory as it was)."""
        if self.enabled:
            atomic_write_bytes(self.dir / "config.yaml", yaml_text.encode())
            for name, text in (hydra_files or {}).items():
                atomic_write_bytes(self.dir / ".hydra" / name, text.encode())

    def reset(self) -> None:
        """A fresh start in an existing directory: drop everything the previous run recorded
        (its summary too: it describes a run that is no longer on disk)."""
        if self.enabled:
            for path in (
                self.metrics_path,
                self.histogram_path,
                self.grad_norms_path,
                self.summary_path,
            ):
                path.unlink(missing_ok=True)

    def rollback(self, step: int, epochs: int) -> None:
        """On resume from a checkpoint at ``step``, after ``epochs`` whole epochs: drop what was
        recorded after it, in every file, so the resumed run continues the record seamlessly.

        Metrics rows are kept up to ``step``; histogram rows for the ``epochs`` finished epochs
        only (a row for a later epoch was written after the checkpoint: at an epoch end past it,
        or for the partial epoch a run ends in). ``grad_norms.npy``, written whole when a run
        stops, is removed until this one stops. ``summary.json`` stays until then.
        """
        if not self.enabled:
            return
        # both files are read (and a damaged one refused) before either is rewritten
        kept = {
            self.metrics_path: self._kept_rows(
                self.metrics_path, lambda r: r.get("step", 0) <= step
            ),
            self.histogram_path: self._kept_rows(
                self.histogram_path, lambda r: r["epoch"] < epochs
            ),
        }
        for path, rows in kept.items():
            if rows is not None:
                atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
        self.grad_norms_path.unlink(missing_ok=True)

    @staticmethod
    def _kept_rows(
        path: Path, keep: Callable[[dict[str, Any]], bool]
    ) -> list[dict[str, Any]] | None:
        return [r for r in read_jsonl(path) if keep(r)] if path.exists() else None

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._metrics is None:
            self._metrics = open(self.metrics_path, "a")  # noqa: SIM115 - kept open for the run
        self._metrics.write(json.dumps(_jsonable(row)) + "\n")
        self._metrics.flush()

    def log_histogram(self, epoch: int, step: int, norms: np.ndarray, bins: int = 50) -> None:
        if not self.enabled or norms.size == 0:
            return
        finite = norms[np.isfinite(norms) & (norms > 0)]
        if finite.size == 0:
            return
        edges = np.geomspace(finite.min(), finite.max() * (1 + 1e-9), bins + 1)
        counts, _ = np.histogram(finite, bins=edges)
        row = {"epoch": epoch, "step": step, "edges": edges.tolist(), "counts": counts.tolist()}
        with open(self.histogram_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def save_grad_norms(self, norms: list[float]) -> None:
        if self.enabled:
            import io

            buffer = io.BytesIO()
            np.save(buffer, np.asarray(norms, dtype=np.float32))
            atomic_write_bytes(self.grad_norms_path, buffer.getvalue())

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.enabled:
            assert summary.get("status") in STATUSES, summary.get("status")
            atomic_write_json(self.summary_path, summary)

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
