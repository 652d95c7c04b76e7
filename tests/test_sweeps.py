"""The tuning protocol of ``scripts/sweeps.py``: best-of-grid selection and the report interval."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import yaml
from scipy import stats

from suite.run_reader import read_runs
from tests.suite_helpers import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import sweeps


def make_run(root, name, seed, lr, level, value, metric="mse", norms=None, status="completed"):
    run = root / name / f"seed{seed}"
    run.mkdir(parents=True)
    optimizer = {"name": name.split(",")[0]}
    if level is not None:
        optimizer["clipping_level"] = level
    cfg = {"seed": seed, "step_rule": {"lr": lr}, "optimizer": optimizer}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    summary = {"status": status, "final": {f"val_{metric}": value}}
    (run / "summary.json").write_text(json.dumps(summary))
    if norms is not None:
        np.save(run / "grad_norms.npy", np.asarray(norms))


def test_best_setting_is_the_best_mean_and_a_diverged_seed_disqualifies(tmp_path):
    grid = {  # (lr, λ) -> per-seed final MSE
        (0.1, 1.0): [0.50, 0.70],  # mean 0.60
        (0.1, 2.0): [0.40, 0.45],  # mean 0.425: the best finite one
        (0.3, 1.0): [0.10, math.inf],  # best seed, but diverged on the other
        (0.3, 2.0): [0.41],  # seed 1 missing: not eligible
    }
    for (lr, level), values in grid.items():
        for seed, value in enumerate(values):
            make_run(tmp_path, f"norm,lr={lr},l={level}", seed, lr, level, value)
    make_run(tmp_path, "norm,failed", 0, 0.01, 1.0, 0.01, status="failed")
    runs = read_runs(tmp_path)
    assert len(runs) == 7  # the failed run is not read
    best = sweeps.best_settings(runs, lambda r: "norm", [0, 1], "mse", lower_is_better=True)
    assert best["norm"]["setting"] == (0.1, 2.0)
    assert best["norm"]["score"] == pytest.approx(np.mean([0.40, 0.45]))
    # higher-is-better metrics choose the largest mean
    best = sweeps.best_settings(runs, lambda r: "norm", [0, 1], "mse", lower_is_better=False)
    assert best["norm"]["setting"] == (0.1, 1.0)


def test_interval90_matches_scipy_t_interval():
    values = [0.31, 0.29, 0.35, 0.40, 0.33]
    mean, low, high = sweeps.interval90(values)
    ref = stats.t.interval(0.90, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx(ref)
    assert all(math.isnan(v) for v in sweeps.interval90([0.3, math.inf]))


def test_norm_quantiles_read_the_measured_run(tmp_path):
    norms = np.random.default_rng(0).pareto(1.5, 400) + 1
    norms[7] = np.nan  # a skipped step
    make_run(tmp_path, "torch_sgd", 0, 0.001, None, 1.0, norms=norms)
    (run,) = read_runs(tmp_path)
    got = sweeps.norm_quantiles(run, [0.1, 0.5, 0.9])
    want = np.quantile(norms[np.isfinite(norms)], [0.1, 0.5, 0.9])
    np.testing.assert_allclose(got, want, rtol=1e-3)
