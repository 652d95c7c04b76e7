"""``scripts/reproduce_readme.py --quick``: the whole evidence pipeline on tiny budgets.

Every README figure and table is written, and the tables hold the expected series (methods ×
noise laws for the regime map, methods × tasks for the tuned comparisons).
"""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from tests.suite_helpers import ROOT, train_env
from torch_clip.suite import registry

pytestmark = pytest.mark.slow

TASKS = registry.evidence_tasks()  # conf/evidence.yaml


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_quick_pipeline_writes_every_figure_and_table(tmp_path):
    out = tmp_path / "figures"
    proc = subprocess.run(
        [sys.executable, "scripts/reproduce_readme.py", "--quick", "--jobs", "2",
         "--root", str(tmp_path / "runs"), "--out", str(out)],
        cwd=ROOT, env=train_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = ["regime_map/gradient_map.png", "regime_map/labels_map.png",
               "regime_map/gradient_profile.png", "performance_profile.png",
               "heavy_tail.png", "noise_heavy_tail.png", "tail_over_training.png"]  # fmt: skip
    figures += [f"{t}_{kind}.png" for t in TASKS for kind in ("comparison", "clipping")]
    missing = [f for f in figures if not (out / f).is_file() or (out / f).stat().st_size < 1000]
    assert not missing, f"figures not written: {missing}"

    from torch_clip.suite.experiments import regime_map

    spec = regime_map.load_spec(quick=True)
    for name, m in spec["maps"].items():
        cells = {
            (float(r["alpha"]), r["method"])
            for r in _rows(out / "regime_map" / f"{name}_results.csv")
        }
        assert cells == {(a, x) for a in m["alphas"] for x in m["methods"]}, name
        text = (out / "regime_map" / f"{name}_results.md").read_text()
        assert "made by `python scripts/regime_map.py --quick`" in text

    choices = _rows(out / "tuned_choices.csv")
    assert {r["task"] for r in choices} == set(TASKS)
    for task in TASKS:
        methods = {r["method"] for r in choices if r["task"] == task}
        assert "SGD" in methods and len(methods) == 2, (task, methods)
        table = _rows(out / f"{task}_table.csv")
        assert {r["method"] for r in table} == methods, task
        text = (out / f"{task}_table.md").read_text()
        assert "made by" in text and "/tmp/" not in text and str(tmp_path) not in text
    # CoLA's comparison of the per-unit rules, in its own folder: SGD and its first rule
    per_unit = {r["method"] for r in _rows(out / "cola_per_unit" / "cola_table.csv")}
    assert per_unit == {"SGD", "coord_wise"}
    assert (out / "cola_per_unit" / "cola_comparison.png").stat().st_size > 1000
    # the Reddit proxy's comparison of AGC's clip factors: SGD and its first factor
    factors = {r["method"] for r in _rows(out / "reddit_agc" / "reddit_table.csv")}
    assert factors == {"SGD", "AGC_0.001"}

    # the tail index over training: reddit's quick run, probed at its start, middle and end
    over = (out / "tail_over_training.md").read_text()
    assert [line.split("|")[2].strip() for line in over.splitlines() if line.startswith("| reddit")] == [
        "0", "4", "8"
    ]  # fmt: skip
    assert "made by" in over and str(tmp_path) not in over


def test_the_mpnet_comparison_runs_only_when_its_model_directory_is_given(tmp_path, monkeypatch):
    from torch_clip.suite.experiments import reproduce_readme as rr
    from torch_clip.suite.experiments import sweeps

    calls = []
    monkeypatch.setattr(sweeps, "call", lambda script: calls.append(script) or 0)
    common = ["--parts", "tuned", "--figures-only", "--root", str(tmp_path), "--out", str(tmp_path)]
    assert rr.main(common) == 0
    evidence = registry.evidence()  # the README's tasks, then the variants run with them
    assert [c[c.index("--tasks") + 1 :][: len(TASKS) + 2] for c in calls] == [
        [*TASKS, *evidence["variants"]]
    ]
    calls.clear()
    assert rr.main([*common, "--mpnet", str(tmp_path / "mpnet")]) == 0
    variant = [c for c in calls if "cola_mpnet" in c]
    assert len(variant) == 1 and variant[0][-2:] == [
        "--",
        f"task.model_name_or_path={tmp_path / 'mpnet'}",
    ]
    assert "--figures-only" in variant[0] and variant[0][variant[0].index("--root") + 1] == str(
        tmp_path / "tuned"
    )
    calls.clear()
    assert rr.main([*common, "--mpnet", str(tmp_path / "mpnet"), "--tasks", "voc"]) == 0
    assert not any("cola_mpnet" in c for c in calls)  # a call without CoLA leaves it out


def test_overrides_after_the_double_dash_reach_every_part_that_trains(tmp_path, monkeypatch):
    from torch_clip.suite.experiments import reproduce_readme as rr
    from torch_clip.suite.experiments import sweeps

    calls = []
    monkeypatch.setattr(sweeps, "call", lambda script: calls.append(script) or 0)
    launcher = ["hydra/launcher=slurm", "hydra.launcher.partition=cpu"]
    common = ["--figures-only", "--root", str(tmp_path), "--out", str(tmp_path)]
    assert rr.main([*common, "--mpnet", str(tmp_path / "m"), "--", *launcher]) == 0
    training = [c for c in calls if c[0] != "scripts/plot_heavy_tail.py"
                and c[0] != "scripts/noise_probe.py"]  # fmt: skip
    assert {c[0] for c in training} == {
        "scripts/regime_map.py", "scripts/tuned_comparison.py", "scripts/tail_over_training.py"
    }  # fmt: skip
    for call in training:
        assert call[-len(launcher) :] == launcher and "--" in call, call


def test_a_sweep_through_a_submitit_launcher_makes_every_run_as_a_job(tmp_path):
    """``-- hydra/launcher=submitit_local``: each run of the tuned comparison is a submitit job
    (its result file next to the sweep), and the tables are written as without a launcher."""
    out = tmp_path / "figures"
    proc = subprocess.run(
        [sys.executable, "scripts/tuned_comparison.py", "--quick", "--tasks", "reddit",
         "--root", str(tmp_path / "runs"), "--out", str(out), "--", "hydra/launcher=submitit_local"],
        cwd=ROOT, env=train_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summaries = list((tmp_path / "runs").rglob("summary.json"))
    jobs = list((tmp_path / "runs").rglob(".submitit/*/*_result.pkl"))
    assert len(summaries) == 2 and len(jobs) == len(summaries)
    methods = {r["method"] for r in _rows(out / "reddit_table.csv")}
    assert methods == {"SGD", "norm"}
