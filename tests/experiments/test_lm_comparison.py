"""The LM comparison's pipeline end to end (``scripts/lm_comparison.py --quick``): the protocol
table and the LM tables are written from the runs, and their cells agree with the runs' own
records, read here independently of the report code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from torch_clip.suite.experiments import lm_comparison

pytestmark = pytest.mark.slow


def _rows(path: Path) -> dict[str, list[str]]:
    """The body rows of a Markdown table, by their first cell."""
    rows = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and not set(cells[0]) <= set("-") and cells[0] != "method":
            rows[cells[0]] = cells
    return rows


def _spikes(losses: list[float], factor: float = 1.5, window: int = 50) -> int:
    # the stated definition, written out: above factor × the median of the window before it
    return sum(
        1
        for i in range(window, len(losses))
        if not np.isfinite(losses[i]) or losses[i] > factor * np.median(losses[i - window : i])
    )


def test_quick_lm_comparison_writes_tables_that_match_its_runs(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "out"
    assert lm_comparison.main(["--quick", "--root", str(root), "--out", str(out)]) == 0
    for name in ("lm_protocol.md", "lm_table.md", "lm_tuning.md", "lm_lr_range.md", "lm_cost.md",
                 "lm_comparison.png", "lm_lr_stability.png"):  # fmt: skip
        assert (out / name).exists(), name
    protocol, table = _rows(out / "lm_protocol.md"), _rows(out / "lm_table.md")
    assert set(protocol) == set(table) == {"SGD", "SGD + norm"}  # --quick: two methods
    for method, cells in table.items():
        (summary,) = (root / "lm" / "report" / "lm").glob(f"{method}-*/seed0/summary.json")
        record = json.loads(summary.read_text())
        bits = f"{record['final']['val_bits_per_byte']:.3f}"
        assert cells[3] == f"{bits} [{bits}, {bits}]"  # one seed: its interval is itself
        losses = [json.loads(line).get("train_loss") for line in
                  (summary.parent / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
        losses = [float(x) for x in losses if x is not None]
        assert int(cells[4]) == _spikes(losses)
        assert protocol[method][1] == "1"  # one setting per method under --quick
