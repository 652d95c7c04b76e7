"""``scripts/bench_step.py``'s report header: what a committed benchmark table records."""

from __future__ import annotations

import torch

from torch_clip.suite.bench import bench_step


def test_the_header_records_the_command_without_this_machines_paths(tmp_path):
    # the committed results/bench/step.md once named the scratch directory it was written to
    argv = ["--quick", "--threads", "1", "--out", str(tmp_path / "step")]
    meta = bench_step.run_meta(bench_step.parse_args(argv), argv, torch.device("cpu"))
    assert (
        meta["command"]
        == f"python scripts/bench_step.py --quick --threads 1 --out {tmp_path.name}/step"
    )
