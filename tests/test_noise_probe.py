"""The gradient-noise probe measures ‖g_i − ḡ‖ for mini-batch gradients g_i of a task."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.suite_helpers import ROOT, run_train

pytestmark = pytest.mark.slow


def test_noise_probe_at_the_end_of_a_run(tmp_path, monkeypatch):
    assert (
        run_train(
            tmp_path,
            "task=toy",
            "optimizer=norm",
            "trainer.max_steps=20",
            "trainer.checkpoint_every=10",
        ).returncode
        == 0
    )
    run_dir = tmp_path / "default" / "toy" / "norm" / "seed0"
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import noise_probe

    assert (
        noise_probe.main(
            [
                str(run_dir),
                "--at",
                "end",
                "--batches",
                "30",
                "--reference-batches",
                "8",
                "--coords",
                "50",
            ]
        )
        == 0
    )
    out = run_dir / "noise_probe_end"
    data = np.load(out / "noise_probe.npz")
    meta = json.loads((out / "noise_probe.json").read_text())
    assert data["noise_norms"].shape == (30,) and data["noise_coords"].shape == (30, 50)
    assert "step 20" in meta["checkpoint"] and meta["batches"] == 30
    # Independent check: ‖g_i − ḡ‖ ≤ ‖g_i‖ + ‖ḡ‖ and, over many batches, the mean noise norm is
    # at least | mean ‖g_i‖ − ‖ḡ‖ | (triangle inequality) — a wrong reference breaks these.
    g, n, ref = data["grad_norms"], data["noise_norms"], meta["reference_grad_norm"]
    assert np.all(n <= g + ref + 1e-5)
    assert np.all(n >= np.abs(g - ref) - 1e-5)
    assert np.isfinite(meta["noise_norm_summary"]["hill_alpha"])


def test_noise_probe_rejects_a_directory_that_is_not_a_run(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import noise_probe

    with pytest.raises(SystemExit):
        noise_probe.main([str(tmp_path), "--at", "start"])
    assert f"{tmp_path / 'config.yaml'} not found" in capsys.readouterr().err
    assert torch.get_num_threads() >= 1
