"""Tests of scripts/plot_comparison.py and scripts/plot_heavy_tail.py on fake run directories.

The run directories are written here in the exact layout ``train.py`` produces (config.yaml,
metrics.jsonl, grad_norms.npy, grad_norm_hist.jsonl, summary.json) with hand-chosen values, so
every table entry, steps-to-target and performance-profile value can be checked by hand.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.suite_helpers import ROOT
from torch_clip.suite.experiments import provenance
from torch_clip.suite.reports import plot_comparison as pc
from torch_clip.suite.reports import plot_heavy_tail as ph
from torch_clip.suite.reports import plotting
from torch_clip.suite.run_reader import discover_runs

FAST = ("--dpi", "40")  # figures not under test are drawn small
DESCRIPTIONS = {
    "norm": "clipped SGD norm, λ=1, lr=0.01, m=0.9, wd=0",
    "adam": "Adam (lr=0.001, eps=1e-08, wd=0)",
    "sgd": "SGD (lr=0.01, m=0.9, wd=0)",
}


BASELINES = {"sgd", "adam"}  # methods without clipping in the fake sweeps (torch optimizers)
LRS = {"norm": 0.002, "adam": 0.001, "sgd": 0.01}


def make_run(
    sweep: Path,
    task: str,
    method: str,
    seed: int,
    *,
    val: list[float],
    val_steps: list[int] | None = None,
    train_loss: list[float] | None = None,
    status: str = "completed",
    metric: str = "accuracy",
    train_metric: bool = False,
    grad_norms: np.ndarray | None = None,
    embedded: bool = True,
    data_source: str | None = None,
    comparison: dict | None = None,
    seconds_per_step: float = 0.1,
    clip_fraction: list[float] | None = None,
    clip_threshold: list[float] | None = None,
) -> Path:
    """Write one run directory as ``train.py`` does; the val metric takes the values ``val`` at
    ``val_steps``, ``wall_time`` is ``seconds_per_step × step``, and the clipping telemetry of the
    train rows (logged every 10 steps) is ``clip_fraction``/``clip_threshold`` (a constant 0.1
    and 1.0 by default; the baselines of ``BASELINES`` log 0 and null, as the trainer does)."""
    run = sweep / task / method / f"seed{seed}"
    run.mkdir(parents=True)
    val_steps = val_steps or [50 * (i + 1) for i in range(len(val))]
    max_steps = val_steps[-1]
    log_steps = list(range(10, max_steps + 1, 10))
    train_loss = train_loss or [2.0 / (1 + 0.05 * s) for s in log_steps]
    baseline = method in BASELINES
    optimizer = (
        f"optimizer:\n  name: torch_{method}\n  torch_optimizer: {method}\n"
        if baseline
        else f"optimizer:\n  name: {method}\n  clipping_type: norm\n  clipping_level: 1.0\n"
    )
    config = (
        f"seed: {seed}\nexperiment_name: fake\nlabel: null\ntask:\n  _target_: tasks.{task}.Task\n"
        f"{optimizer}step_rule:\n  name: sgd\n  _target_: clip_core.ClippedSGD\n"
        f"  lr: {LRS.get(method, 0.01)}\n  momentum: 0.9\ntrainer:\n  max_steps: {max_steps}\n"
    )
    if comparison is not None:
        config += "comparison:\n" + "".join(f"  {k}: {v}\n" for k, v in comparison.items())
    (run / "config.yaml").write_text(config)
    rows = []
    for i, step in enumerate(log_steps):
        fraction = 0.0 if baseline else (clip_fraction[i] if clip_fraction else 0.1)
        threshold = None if baseline else (clip_threshold[i] if clip_threshold else 1.0)
        row = {
            "step": step, "epoch": 0, "split": "train",
            "train_loss": train_loss[min(i, len(train_loss) - 1)], "lr": 0.01,
            "grad_norm": 1.0 + 0.01 * i, "clip_threshold": threshold, "clip_fraction": fraction,
            "wall_time": seconds_per_step * step, "skipped_steps": 0,
        }  # fmt: skip
        if train_metric:
            row[f"train_{metric}"] = 0.5 + 0.001 * step
        rows.append(row)
    for step, value in zip(val_steps, val):
        rows.append({"step": step, "epoch": 0, "split": "val", f"val_{metric}": value,
                     "val_loss": 1.0 - value, "wall_time": seconds_per_step * step})  # fmt: skip
    rows.sort(key=lambda r: (r["step"], r["split"] == "val"))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    norms = grad_norms if grad_norms is not None else np.linspace(1.0, 2.0, max_steps)
    np.save(run / "grad_norms.npy", np.asarray(norms, dtype=np.float32))
    edges = np.geomspace(0.5, 5.0, 11)
    counts, _ = np.histogram(norms, bins=edges)
    hist = {"epoch": 0, "step": max_steps, "edges": edges.tolist(), "counts": counts.tolist()}
    (run / "grad_norm_hist.jsonl").write_text(json.dumps(hist) + "\n")
    best_i = int(np.argmax(val))
    if data_source is None:
        data_source = "embedded: fake corpus" if embedded else "real fake data, 100 / 20 rows"
    summary = {
        "status": status, "task": task, "optimizer": method, "step_rule": "sgd",
        "optimizer_description": DESCRIPTIONS.get(method, method), "seed": seed,
        "clips": not baseline,
        "best": {"metric": metric, "value": val[best_i], "step": val_steps[best_i]},
        "final": {f"val_{metric}": val[-1], "val_loss": 1.0 - val[-1]},
        "final_train_loss": train_loss[-1], "primary_metric": metric,
        "data_source": data_source, "model_source": "tiny MLP", "embedded_data": embedded,
        "wall_seconds": 1.0,
    }  # fmt: skip
    if status != "failed":
        summary["steps"] = max_steps
    else:
        summary["error"] = "RuntimeError: boom"
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    return run


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {row["method"]: row for row in csv.DictReader(f)}


# ----------------------------------------------------------------------------- comparison


def git_short_head() -> str:
    root = ROOT
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def test_table_mean_std_over_seeds_matches_numpy(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "fake"
    vals = {  # method -> per seed val sequence at steps 50, 100, 150
        "norm": [[0.5, 0.7, 0.65], [0.4, 0.6, 0.8], [0.55, 0.75, 0.7]],
        "adam": [[0.3, 0.5, 0.6], [0.35, 0.45, 0.5]],
    }
    losses = {"norm": [1.2, 0.9, 1.05], "adam": [1.5, 1.7]}
    # the clipped share of ‖g‖ at each of the 15 logged steps of each norm seed
    removed = np.random.default_rng(0).uniform(size=(3, 15))
    for method, seeds in vals.items():
        for seed, val in enumerate(seeds):
            fraction = list(removed[seed]) if method == "norm" else None
            make_run(sweep, "cola", method, seed, val=val, train_loss=[3.0, losses[method][seed]],
                     clip_fraction=fraction)  # fmt: skip
    out = tmp_path / "figs"
    assert pc.main([str(sweep), "--out", str(out), "--no-profile", *FAST]) == 0
    table = read_csv(out / "cola_table.csv")
    for method, seeds in vals.items():
        v = np.array(seeds)
        row = table[method]
        assert int(row["n_seeds"]) == len(seeds)
        assert float(row["final_val_mean"]) == pytest.approx(np.mean(v[:, -1]))
        assert float(row["final_val_std"]) == pytest.approx(np.std(v[:, -1], ddof=1))
        assert float(row["best_val_mean"]) == pytest.approx(np.mean(v.max(axis=1)))
        assert float(row["best_val_std"]) == pytest.approx(np.std(v.max(axis=1), ddof=1))
        loss = np.array(losses[method])
        assert float(row["final_train_loss_mean"]) == pytest.approx(loss.mean())
        assert float(row["final_train_loss_std"]) == pytest.approx(loss.std(ddof=1))
        assert row["description"] == DESCRIPTIONS[method]
        assert float(row["lr"]) == LRS[method]  # step_rule.lr of the runs' config.yaml
    assert table["norm"]["clipping_level"] == "1" and table["adam"]["clipping_level"] == "—"
    # the removed share: per run over its logged steps, then over seeds; none for a baseline
    assert float(table["norm"]["norm_removed_mean"]) == pytest.approx(removed.mean(axis=1).mean())
    assert math.isnan(float(table["adam"]["norm_removed_mean"]))
    md = (out / "cola_table.md").read_text()
    final_norm = np.array(vals["norm"])[:, -1]
    from scipy import stats

    ci = stats.bootstrap((final_norm,), np.mean, confidence_level=0.9, n_resamples=9999,
                         method="BCa", rng=np.random.default_rng(0)).confidence_interval  # fmt: skip
    assert (f"{final_norm.mean():.4f} [{ci.low:.4f}, {ci.high:.4f}] "
            f"(median {np.median(final_norm):.4f})") in md  # fmt: skip
    assert f"| norm | {DESCRIPTIONS['norm']} | 0.002 | 1 | 3 |" in md
    assert f"| adam | {DESCRIPTIONS['adam']} | 0.001 | — | 2 |" in md
    per_run = removed.mean(axis=1)
    assert f"| {per_run.mean():.2f} ± {per_run.std(ddof=1):.2f} |" in md
    assert md.count("| — | no target | no target |") == 1  # adam's removed share
    # No target was given or configured: the table says so instead of inventing one.
    assert "no target known for cola" in md and "comparison.target" in md
    assert md.count("| no target | no target |") == 2


def test_steps_and_wall_seconds_to_target(tmp_path: Path) -> None:
    sweep = tmp_path / "fake"
    steps = [10, 20, 30, 40]
    # target 0.6: seed0 first reaches it at step 30 (0.6 == target counts), seed1 at step 40.
    make_run(sweep, "t", "norm", 0, val=[0.2, 0.5, 0.6, 0.9], val_steps=steps, seconds_per_step=0.5)
    make_run(sweep, "t", "norm", 1, val=[0.1, 0.3, 0.5, 0.7], val_steps=steps, seconds_per_step=2.0)
    make_run(sweep, "t", "adam", 0, val=[0.1, 0.2, 0.3, 0.4], val_steps=steps)  # never
    out = tmp_path / "figs"
    assert pc.main([str(sweep), "--out", str(out), "--target", "0.6", "--no-profile", *FAST]) == 0
    table = read_csv(out / "t_table.csv")
    assert float(table["norm"]["steps_to_target_mean"]) == pytest.approx((30 + 40) / 2)
    # wall_time of the reaching evaluations: 0.5 s/step × 30 and 2 s/step × 40
    assert float(table["norm"]["wall_seconds_to_target_mean"]) == pytest.approx((15 + 80) / 2)
    assert int(table["norm"]["seeds_reached"]) == 2
    assert math.isnan(float(table["adam"]["steps_to_target_mean"]))
    assert math.isnan(float(table["adam"]["wall_seconds_to_target_mean"]))
    assert int(table["adam"]["seeds_reached"]) == 0
    md = (out / "t_table.md").read_text()
    assert "| 35 (2/2 seeds) | 47.5 |" in md
    adam_line = next(line for line in md.splitlines() if line.startswith("| adam |"))
    assert adam_line.endswith("| — | — |")  # adam never reaches it

    # --target-frac is an explicit opt-in: 0.9 × the best value of any method (0.9) = 0.81.
    runs = discover_runs([sweep])
    assert pc.analyse_task("t", runs).target is None
    result = pc.analyse_task("t", runs, target_frac=0.9)
    assert result.target == pytest.approx(0.81)
    row = {r.method: r for r in result.rows}["norm"]
    assert row.steps[0] == 40.0 and math.isnan(row.steps[1])
    assert row.walls[0] == pytest.approx(20.0) and row.n_reached == 1 and row.mean_steps == 40.0
    # Lower-is-better metric: the target is best + 10 % and "reaching" means going below it.
    result = pc.analyse_task("t", runs, metric="loss", target_frac=0.9)
    assert result.lower and result.target == pytest.approx(0.1 * 1.1)  # best val_loss 0.1
    assert {r.method: r.steps for r in result.rows}["norm"][0] == 40.0


def test_target_frac_refuses_a_best_of_zero(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "fake"
    for method in ("norm", "sgd"):
        make_run(sweep, "cola", method, 0, val=[0.0, 0.0, 0.0], metric="mcc")
    with pytest.raises(ValueError, match=r"Invalid --target-frac: 0.9; the best val mcc .* is 0"):
        pc.analyse_task("cola", discover_runs([sweep]), target_frac=0.9)
    with pytest.raises(SystemExit) as exc:
        pc.main([str(sweep), "--out", str(tmp_path / "o"), "--target-frac", "0.9", *FAST])
    assert exc.value.code == 2
    assert "conf/comparison/cola.yaml" in capsys.readouterr().err
    assert not (tmp_path / "o" / "cola_table.md").exists()
    # An absolute target of 0 is what the user asked for, and is kept.
    assert pc.analyse_task("cola", discover_runs([sweep]), target=0.0).target == 0.0


def test_targets_from_the_runs_config_and_tasks_without_one(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "fake"
    steps = [10, 20, 30]
    # Task x configures comparison: {metric: accuracy, target: 0.5}; task y configures nothing.
    conf = {"metric": "accuracy", "target": 0.5}
    make_run(sweep, "x", "A", 0, val=[0.2, 0.5, 0.7], val_steps=steps, comparison=conf)
    make_run(sweep, "x", "B", 0, val=[0.6, 0.7, 0.8], val_steps=steps, comparison=conf)
    make_run(sweep, "y", "A", 0, val=[0.2, 0.5, 0.7], val_steps=steps)
    out = tmp_path / "figs"
    assert pc.main([str(sweep), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "performance profile: leaving out y, no target known" in printed
    x = read_csv(out / "x_table.csv")
    assert float(x["A"]["target"]) == 0.5
    assert (
        float(x["A"]["steps_to_target_mean"]) == 20 and float(x["B"]["steps_to_target_mean"]) == 10
    )
    assert "comparison.target of the runs' config" in (out / "x_table.md").read_text()
    assert "no target known for y" in (out / "y_table.md").read_text()
    with open(out / "performance_profile.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {k for k in rows[0] if k not in ("measure", "method", "made_by")} == {"x"}  # y left out
    by_steps = {r["method"]: float(r["x"]) for r in rows if r["measure"] == "steps"}
    assert by_steps == {"A": 2.0, "B": 1.0}
    # --target overrides the configured value; a config for another metric does not apply.
    runs = discover_runs([sweep / "x"])
    assert pc.analyse_task("x", runs, target=0.75).target == 0.75
    assert pc.analyse_task("x", runs, metric="loss").target is None
    # Runs of one task that disagree on the target are refused.
    make_run(sweep, "x", "C", 0, val=[0.1, 0.2, 0.3], val_steps=steps,
             comparison={"metric": "accuracy", "target": 0.6})  # fmt: skip
    with pytest.raises(ValueError, match="Invalid comparison for task x"):
        pc.analyse_task("x", discover_runs([sweep / "x"]))
    make_run(sweep, "z", "A", 0, val=[0.1], comparison={"target": "high"})
    with pytest.raises(ValueError, match=r"Invalid comparison\.target for task z: 'high'"):
        pc.analyse_task("z", discover_runs([sweep / "z"]))


def test_each_task_is_compared_on_the_metric_named_for_it(tmp_path: Path) -> None:
    """Runs that carry no ``comparison`` node (the protocol has its own config group) are
    compared on the metric the pipeline names per task, not on the summaries' primary metric."""
    sweep, out = tmp_path / "fake", tmp_path / "figs"
    for task in ("x", "y"):
        make_run(sweep, task, "A", 0, val=[0.2, 0.4], val_steps=[10, 20])
    flags = ["--metric=x=loss", "--target=x=0.7", "--target=y=0.3", "--no-profile"]
    assert pc.main([str(sweep), "--out", str(out), *flags, *FAST]) == 0
    x, y = read_csv(out / "x_table.csv")["A"], read_csv(out / "y_table.csv")["A"]
    assert x["metric"] == "loss" and y["metric"] == "accuracy"
    assert float(x["final_val_mean"]) == pytest.approx(1 - 0.4)  # make_run's val_loss: 1 - val
    assert float(y["final_val_mean"]) == pytest.approx(0.4)


def read_profile(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{measure: {method: {task: ratio}}}`` from ``performance_profile.csv``."""
    ratios: dict[str, dict[str, dict[str, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            tasks = {
                k: float(v) for k, v in row.items() if k not in ("measure", "method", "made_by")
            }
            ratios.setdefault(row["measure"], {})[row["method"]] = tasks
    return ratios


def test_performance_profile_hand_example(tmp_path: Path) -> None:
    sweep = tmp_path / "fake"
    steps = [50, 100, 150, 200, 250, 300]
    # Task x: A reaches 0.5 at step 100, B at 200.  Task y: A at 300, B at 150.
    # Wall clock: A takes 1 s/step everywhere, B 0.25 s/step on x and 3 s/step on y.
    make_run(sweep, "x", "A", 0, val=[0.1, 0.5, 0.5, 0.6, 0.6, 0.6], val_steps=steps,
             seconds_per_step=1.0)  # fmt: skip
    make_run(sweep, "x", "B", 0, val=[0.1, 0.2, 0.3, 0.5, 0.6, 0.6], val_steps=steps,
             seconds_per_step=0.25)  # fmt: skip
    make_run(sweep, "y", "A", 0, val=[0.1, 0.1, 0.2, 0.2, 0.3, 0.5], val_steps=steps,
             seconds_per_step=1.0)  # fmt: skip
    make_run(sweep, "y", "B", 0, val=[0.1, 0.2, 0.7, 0.7, 0.7, 0.7], val_steps=steps,
             seconds_per_step=3.0)  # fmt: skip
    out = tmp_path / "figs"
    assert pc.main([str(sweep), "--out", str(out), "--target", "0.5", *FAST]) == 0
    ratios = read_profile(out / "performance_profile.csv")
    assert ratios["steps"] == {"A": {"x": 1.0, "y": 2.0}, "B": {"x": 2.0, "y": 1.0}}
    # seconds: x: A 100 s, B 50 s -> 2, 1;  y: A 300 s, B 450 s -> 1, 1.5
    assert ratios["wall"] == {"A": {"x": 2.0, "y": 1.0}, "B": {"x": 1.0, "y": 1.5}}
    taus = np.array([1.0, 1.5, 1.99, 2.0, 10.0])
    for method in ("A", "B"):
        rho = pc.profile_curve(ratios["steps"][method], taus)
        np.testing.assert_allclose(rho, [0.5, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(pc.profile_curve(ratios["wall"]["B"], taus), [0.5, 1, 1, 1, 1])
    assert (out / "performance_profile.png").exists()

    # Task-specific targets; B never reaches 0.8 on x, so its ratio there is inf.
    results = [
        pc.analyse_task("x", discover_runs([sweep / "x"]), target=0.6),
        pc.analyse_task("y", discover_runs([sweep / "y"]), target=0.5),
    ]
    ratios = pc.profile_ratios(results)
    # x: A at 200, B at 250 -> 1, 1.25;  y: A at 300, B at 150 -> 2, 1.
    assert ratios["A"] == {"x": 1.0, "y": 2.0}
    assert ratios["B"] == {"x": pytest.approx(1.25), "y": 1.0}
    results[0] = pc.analyse_task("x", discover_runs([sweep / "x"]), target=0.8)
    ratios = pc.profile_ratios(results)
    assert ratios["A"]["x"] == math.inf and ratios["B"]["x"] == math.inf
    np.testing.assert_allclose(pc.profile_curve(ratios["B"], taus), [0.5] * 5)
    np.testing.assert_allclose(pc.profile_curve(ratios["A"], taus), [0, 0, 0, 0.5, 0.5])


def test_profile_covers_the_tasks_of_earlier_calls_from_their_tables(tmp_path: Path) -> None:
    # the hand example of the test above, one task per call into the same folder: the second
    # call's profile holds both tasks, with the same ratios as when both are read from runs
    sweep, steps = tmp_path / "fake", [50, 100, 150, 200, 250, 300]
    make_run(sweep, "x", "A", 0, val=[0.1, 0.5, 0.5, 0.6, 0.6, 0.6], val_steps=steps,
             seconds_per_step=1.0)  # fmt: skip
    make_run(sweep, "x", "B", 0, val=[0.1, 0.2, 0.3, 0.5, 0.6, 0.6], val_steps=steps,
             seconds_per_step=0.25)  # fmt: skip
    make_run(sweep, "x", "B", 1, val=[0.1, 0.2, 0.3, 0.3, 0.3, 0.3], val_steps=steps)
    make_run(sweep, "y", "A", 0, val=[0.1, 0.1, 0.2, 0.2, 0.3, 0.5], val_steps=steps,
             seconds_per_step=1.0)  # fmt: skip
    make_run(sweep, "y", "B", 0, val=[0.1, 0.2, 0.7, 0.7, 0.7, 0.7], val_steps=steps,
             seconds_per_step=3.0)  # fmt: skip
    out = tmp_path / "figs"
    for task in ("x", "y"):
        assert (
            pc.main([str(sweep), "--out", str(out), "--target", "0.5", "--tasks", task, *FAST]) == 0
        )
    ratios = read_profile(out / "performance_profile.csv")
    # B reaches x's target on 1 of its 2 seeds: the 0.5 quorum keeps it, at step 200
    assert ratios["steps"] == {"A": {"x": 1.0, "y": 2.0}, "B": {"x": 2.0, "y": 1.0}}
    assert ratios["wall"] == {"A": {"x": 2.0, "y": 1.0}, "B": {"x": 1.0, "y": 1.5}}
    # with a quorum above one half B no longer reaches x, read from the table as from the runs
    assert pc.main([str(sweep), "--out", str(out), "--target", "0.5", "--tasks", "y",
                    "--quorum", "0.6", *FAST]) == 0  # fmt: skip
    assert read_profile(out / "performance_profile.csv")["steps"]["B"]["x"] == math.inf


def test_profile_denominator_is_every_task_and_labels_are_method_names(
    tmp_path: Path, monkeypatch
) -> None:
    sweep = tmp_path / "fake"
    steps = [10, 20, 30, 40]
    # Three tasks. A runs on all three, C only on x, where it is the fastest.
    for task, a_val in (("x", [0, 0, 1, 1]), ("y", [0, 1, 1, 1]), ("z", [1, 1, 1, 1])):
        make_run(sweep, task, "A", 0, val=a_val, val_steps=steps)
    make_run(sweep, "x", "C", 0, val=[1, 1, 1, 1], val_steps=steps)
    texts = capture_figure_texts(monkeypatch)
    out = tmp_path / "figs"
    assert pc.main([str(sweep), "--out", str(out), "--target", "1", *FAST]) == 0
    ratios = read_profile(out / "performance_profile.csv")["steps"]
    assert ratios["A"] == {"x": 3.0, "y": 1.0, "z": 1.0}
    assert ratios["C"] == {"x": 1.0, "y": math.inf, "z": math.inf}
    taus = np.array([1.0, 2.9, 3.0])
    # Independent count: tasks with ratio <= tau, over all 3 tasks (never over the tasks run).
    for method in ("A", "C"):
        expected = [sum(r <= t for r in ratios[method].values()) / 3 for t in taus]
        np.testing.assert_allclose(pc.profile_curve(ratios[method], taus), expected)
    np.testing.assert_allclose(pc.profile_curve(ratios["C"], taus), [1 / 3] * 3)  # not 1.0
    profile = texts["performance_profile.png"]
    legend = [t for t in profile if t in ("A", "C")]
    assert sorted(legend) == ["A", "C"]  # one label per method: its name only
    caption = " ".join(profile)
    assert "Denominator: all 3 task(s) of the profile" in caption
    assert "C ran on x only" in caption


def capture_figure_texts(monkeypatch) -> dict[str, list[str]]:
    """Record every text of every figure as it is written to disk, keyed by file name."""
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    texts: dict[str, list[str]] = {}
    save = Figure.savefig

    def spy(fig, path, *args, **kwargs):
        texts[Path(path).name] = [t.get_text() for t in fig.findobj(Text) if t.get_text()]
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return texts


def test_clipping_figure_means_over_seeds_and_absent_methods(tmp_path: Path, monkeypatch) -> None:
    sweep = tmp_path / "fake"
    steps = [50, 100]  # train rows at 10, 20, ..., 100
    rng = np.random.default_rng(3)
    fractions = rng.uniform(0, 1, (2, 10))
    thresholds = rng.uniform(0.5, 2.0, (2, 10))
    for seed in range(2):
        make_run(sweep, "t", "norm", seed, val=[0.5, 0.6], val_steps=steps,
                 clip_fraction=list(fractions[seed]), clip_threshold=list(thresholds[seed]))  # fmt: skip
    make_run(sweep, "t", "sgd", 0, val=[0.5, 0.6], val_steps=steps)  # no clipping
    # A peer: measured fraction, no threshold (null in every row).
    make_run(sweep, "t", "peer", 0, val=[0.5, 0.6], val_steps=steps,
             clip_fraction=[0.2] * 10, clip_threshold=[None] * 10)  # fmt: skip
    config = sweep / "t" / "peer" / "seed0" / "config.yaml"
    config.write_text(config.read_text().replace("clipping_type: norm", "peer: zclip"))
    texts = capture_figure_texts(monkeypatch)
    out = tmp_path / "figs"
    assert pc.main([str(sweep), "--out", str(out), "--no-profile", *FAST]) == 0
    assert (out / "t_clipping.png").stat().st_size > 5_000

    result = pc.analyse_task("t", discover_runs([sweep]))
    bands = pc.clipping_bands(result)
    fraction, threshold = bands["norm"]
    np.testing.assert_array_equal(fraction.steps, np.arange(10, 101, 10))
    np.testing.assert_allclose(fraction.mean, fractions.mean(axis=0))
    np.testing.assert_allclose(threshold.mean, thresholds.mean(axis=0))
    np.testing.assert_allclose(fraction.lo, fractions.min(axis=0))
    assert bands["sgd"] == (None, None)  # its logged zeros are no measurement
    assert bands["peer"][1] is None
    np.testing.assert_allclose(bands["peer"][0].mean, [0.2] * 10)
    labels = texts["t_clipping.png"]
    assert "sgd  [no clipping: not drawn]" in labels and "peer  [no threshold logged]" in labels
    assert "norm" in labels


def test_provenance_stamp_and_no_absolute_path_in_outputs(tmp_path: Path, monkeypatch) -> None:
    sweep = tmp_path / "fake"
    secret = "/home/alice/private/shared/data/cola"
    source = f"CoLA TSV at {secret}"  # a user task's source may name where its data sits
    for method in ("norm", "sgd"):
        make_run(sweep, "cola", method, 0, val=[0.2, 0.4], embedded=False, data_source=source)
    make_run(sweep, "cola", "adam", 0, val=[0.1, 0.1], status="failed", data_source=source)
    (sweep / "cola" / "adam" / "seed0" / "summary.json").write_text(
        (sweep / "cola" / "adam" / "seed0" / "summary.json")
        .read_text()
        .replace("RuntimeError: boom", f"FileNotFoundError: {secret}/train.tsv")
    )
    texts = capture_figure_texts(monkeypatch)
    out = tmp_path / "figs"
    argv = [str(sweep), "--out", str(out), "--target", "cola=0.3", *FAST]
    assert pc.main(argv) == 0
    head = git_short_head()
    written = {p.name: p.read_text() for p in out.iterdir() if p.suffix in (".md", ".csv")}
    assert set(texts) == {"cola_comparison.png", "cola_clipping.png", "performance_profile.png"}
    assert set(written) == {"cola_table.md", "cola_table.csv", "performance_profile.csv"}
    outputs = {**{k: "\n".join(v) for k, v in texts.items()}, **written}
    for name, text in outputs.items():
        assert "/home/alice" not in text and "alice" not in text, name
        assert str(tmp_path) not in text, name
        assert f"at commit {head}" in text, name
        assert "made by `python scripts/plot_comparison.py " in text, name
    md = written["cola_table.md"].rstrip("\n").splitlines()
    assert md[-1].startswith("made by `python scripts/plot_comparison.py ")
    assert "--target cola=0.3" in md[-1] and md[-1].endswith("; 2 completed run(s) of cola")
    assert "data/cola" in written["cola_table.md"]  # the data is still named
    title = next(t for t in texts["cola_comparison.png"] if t.startswith("cola: "))
    assert "CoLA TSV at data/cola" in title


def test_scrub_paths_keeps_ratios_and_names_paths_by_their_tail() -> None:
    root = ROOT
    kept = ["8551 train / 516 dev", "λ/‖g‖", "(a+b)/2", "nyu-mll/glue (train/validation)",
            "~25 min", "https://gluebenchmark.com/tasks"]  # fmt: skip
    for text in kept:
        assert provenance.scrub_paths(text) == text
    assert provenance.scrub_paths("CoLA TSV at /home/a/shared/data/cola, 8551/516") == (
        "CoLA TSV at data/cola, 8551/516"
    )
    assert provenance.scrub_paths(f"--out={root}/results/readme/figures") == (
        "--out=results/readme/figures"
    )
    assert (
        provenance.scrub_paths("~/data/cola/train.tsv; C:\\Users\\b\\cola")
        == "cola/train.tsv; b/cola"
    )
    cmd = provenance.command_line("scripts/plot_comparison.py", [f"{root}/results/readme", "-x"])
    assert cmd == "python scripts/plot_comparison.py results/readme -x"


def test_failed_runs_are_skipped_and_reported(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "fake"
    make_run(sweep, "cola", "norm", 0, val=[0.5, 0.6])
    make_run(sweep, "cola", "norm", 1, val=[0.4, 0.7])
    make_run(sweep, "cola", "norm", 2, val=[0.0, 0.0], status="failed")
    make_run(sweep, "cola", "adam", 0, val=[0.3, 0.4], status="running")
    make_run(sweep, "cola", "sgd", 0, val=[0.3, 0.5])
    out = tmp_path / "figs"
    assert pc.main([str(sweep), "--out", str(out), "--no-profile", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "skipping cola/norm/seed2 [failed: RuntimeError: boom]" in printed
    assert "skipping cola/adam/seed0 [running]" in printed
    table = read_csv(out / "cola_table.csv")
    assert set(table) == {"norm", "sgd"}  # adam has no completed run
    assert int(table["norm"]["n_seeds"]) == 2
    assert float(table["norm"]["final_val_mean"]) == pytest.approx(0.65)
    md = (out / "cola_table.md").read_text()
    assert "Skipped (not completed): cola/adam/seed0 [running]; cola/norm/seed2 [failed" in md
    result = pc.analyse_task("cola", discover_runs([sweep]))
    assert sorted(r.name for r in result.skipped) == ["cola/adam/seed0", "cola/norm/seed2"]


def test_pngs_are_written_and_non_trivial(tmp_path: Path) -> None:
    sweep = tmp_path / "fake"
    rng = np.random.default_rng(0)
    for task, train_metric in (("cola", True), ("reddit", False)):
        for method in ("norm", "adam", "sgd"):
            for seed in range(2):
                loss = list(np.exp(-np.linspace(0, 4, 30)) * 10 + rng.uniform(0, 0.1, 30))
                make_run(
                    sweep,
                    task,
                    method,
                    seed,
                    val=list(rng.uniform(0.3, 0.9, 4)),
                    train_loss=loss,
                    train_metric=train_metric,
                )
    make_run(sweep, "cola", "norm", 7, val=[0.1, 0.1], status="failed")
    argv = [str(sweep), "--band", "std", "--smooth", "3", "--dpi", "100", "--target", "0.5"]
    assert pc.main(argv) == 0
    figures = sweep / "figures"
    names = ("cola_comparison.png", "reddit_comparison.png", "cola_clipping.png")
    for name in (*names, "performance_profile.png"):
        path = figures / name
        assert path.stat().st_size > 20_000, name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --out as a figure path: one task keeps the name, tables go next to it.
    single = tmp_path / "one" / "cola.png"
    assert (
        pc.main([str(sweep), "--tasks", "cola", "--out", str(single), "--no-profile", *FAST]) == 0
    )
    assert single.exists() and (single.parent / "cola_table.md").exists()


def test_top_right_panel_choice_and_provenance(tmp_path: Path) -> None:
    sweep = tmp_path / "fake"
    make_run(sweep, "a", "norm", 0, val=[0.5, 0.6], train_metric=True)
    make_run(sweep, "b", "norm", 0, val=[0.5, 0.6], embedded=False)
    make_run(sweep, "c", "sgd", 0, val=[0.5, 0.6])
    runs = {t: discover_runs([sweep / t]) for t in "abc"}
    assert pc.choose_aux(runs["a"], "accuracy", "auto")[0] == "train_accuracy"
    assert pc.choose_aux(runs["b"], "accuracy", "auto")[0] == "clip_fraction"
    key, _, title = pc.choose_aux(runs["c"], "accuracy", "auto")  # sgd never clips
    assert key == "grad_norm" and "no training accuracy logged" in title
    assert "EMBEDDED PROXY DATA" in plotting.provenance([r.summary for r in runs["a"]])
    text = plotting.provenance([r.summary for r in runs["b"]])
    assert "EMBEDDED" not in text and "real fake data, 100 / 20 rows" in text and "tiny MLP" in text


def test_targets_and_output_paths() -> None:
    assert pc.parse_targets(["0.5", "cola=0.3"]) == (0.5, {"cola": 0.3})
    with pytest.raises(ValueError):
        pc.parse_targets(["cola=high"])
    assert pc.parse_metrics(["accuracy", "voc=miou"]) == ("accuracy", {"voc": "miou"})
    with pytest.raises(ValueError, match="--metric 'voc='"):
        pc.parse_metrics(["voc="])
    out_dir, figs = pc.output_paths(None, Path("sw"), ["a", "b"])
    assert out_dir == Path("sw/figures") and figs["b"] == Path("sw/figures/b_comparison.png")
    out_dir, figs = pc.output_paths(Path("o/f.png"), Path("sw"), ["a", "b"])
    assert out_dir == Path("o") and figs == {"a": Path("o/f_a.png"), "b": Path("o/f_b.png")}
    assert pc.frac_target(-2.0, 0.9, lower=False) == pytest.approx(-2.2)
    assert pc.frac_target(0.5, 0.9, lower=True) == pytest.approx(0.55)


def test_aggregate_over_seeds() -> None:
    a = (np.array([0, 10, 20]), np.array([1.0, 2.0, 3.0]))
    b = (np.array([0, 10, 20]), np.array([3.0, 4.0, 7.0]))
    band = plotting.aggregate([a, b], "minmax")
    np.testing.assert_allclose(band.mean, [2, 3, 5])
    np.testing.assert_allclose(band.lo, [1, 2, 3])
    np.testing.assert_allclose(band.hi, [3, 4, 7])
    band = plotting.aggregate([a, b], "std")
    sd = np.std([[1, 2, 3], [3, 4, 7]], axis=0, ddof=1)
    np.testing.assert_allclose(band.hi - band.mean, sd)


# ----------------------------------------------------------------------------- heavy tail


def test_heavy_tail_hill_alpha_of_pareto_norms(tmp_path: Path, capsys) -> None:
    alpha = 1.5
    rng = np.random.default_rng(1234)
    norms = rng.pareto(alpha, size=100_000) + 1.0  # Pareto(x_m=1): P(X > x) = x^-α exactly
    sweep = tmp_path / "fake"
    run = make_run(sweep, "toy", "sgd", 0, val=[0.5, 0.6], grad_norms=norms)
    make_run(sweep, "toy", "norm", 0, val=[0.5, 0.6], status="failed")
    # A noise probe: Pareto noise norms and Gaussian coordinates (α-stable index 2).
    probe = tmp_path / "noise" / "toy"
    probe.mkdir(parents=True)
    np.savez(
        probe / "noise_probe.npz",
        noise_norms=rng.pareto(3.0, 20_000) + 1.0,
        grad_norms=rng.uniform(1, 2, 20_000),
        # Gaussian coordinates of unequal scales (log-scale spread 1, as across layers)
        noise_coords=rng.normal(size=(200, 100)) * np.exp(rng.normal(size=100)),
    )
    (probe / "noise_probe.json").write_text(json.dumps({
        "task": "torch_clip.tasks.toy.ToyRegressionTask", "data_source": "generated: toy",
        "model_source": "MLP 16-32-1", "checkpoint": "initialisation", "batches": 200,
    }))  # fmt: skip

    out = tmp_path / "ht.png"
    assert ph.main([str(sweep), str(probe), "--out", str(out), "--dpi", "100"]) == 0
    printed = capsys.readouterr().out
    assert "skipped toy/norm/seed0 [failed" in printed
    assert "toy/sgd/seed0" in printed and "noise probe" in printed
    assert out.stat().st_size > 20_000

    sources, _ = ph.discover_sources([run.parent.parent, probe])
    panels = {p.sources[0].kind: p for p in ph.make_panels(sources, "run")}
    run_panel, probe_panel = panels["run"], panels["probe"]
    k = run_panel.summary.hill_k
    assert k == math.ceil(math.sqrt(100_000))
    assert run_panel.summary.hill_alpha == pytest.approx(alpha, abs=4 * alpha / math.sqrt(k))
    assert probe_panel.summary.hill_alpha == pytest.approx(3.0, abs=4 * 3.0 / math.sqrt(142))
    assert probe_panel.stable_alpha == pytest.approx(2.0, abs=0.15)  # Gaussian coordinates
    assert probe_panel.sources[0].task == "toy"
    assert "‖g_i − ḡ‖" in probe_panel.what and "initialisation" in probe_panel.what
    # The printed Hill α of the run panel is the estimate.
    line = next(ln for ln in printed.splitlines() if ln.startswith("toy/sgd/seed0"))
    assert float(line.split()[-3]) == pytest.approx(run_panel.summary.hill_alpha, abs=0.005)

    # Filters and grouping: --method keeps only the sgd run; per-task pooling of two seeds.
    make_run(sweep, "toy", "sgd", 1, val=[0.5, 0.6], grad_norms=norms[:500])
    sources, _ = ph.discover_sources([sweep], methods=["sgd"])
    assert sorted(s.name for s in sources) == ["toy/sgd/seed0", "toy/sgd/seed1"]
    (pooled,) = ph.make_panels(sources, "task")
    assert pooled.summary.n == 100_500 and "2 runs pooled" in pooled.title


def test_probes_alone_get_their_estimates_as_a_table_beside_the_figure(tmp_path: Path) -> None:
    """The table of the probes at initialisation is written from each probe's JSON (it was
    transcribed by hand once, and went stale)."""
    rng = np.random.default_rng(7)
    folders = []
    for task, stable, hill in (("voc", 1.97, 4.8), ("reddit", 2.0, 5.0)):
        probe = tmp_path / "noise" / task
        probe.mkdir(parents=True)
        np.savez(probe / "noise_probe.npz", noise_norms=rng.pareto(3.0, 400) + 1.0,
                 noise_coords=rng.normal(size=(200, 10)))  # fmt: skip
        (probe / "noise_probe.json").write_text(json.dumps({
            "task": f"torch_clip.tasks.{task}.Task", "data_source": f"embedded: {task} proxy",
            "model_source": "net", "checkpoint": "initialisation", "batches": 200,
            "noise_norm_summary": {"p99_over_median": 1.234, "excess_kurtosis": -0.16,
                                   "hill_alpha": 24.89},
            "noise_norm_hill_alpha_ci90": [11.96, 37.81],
            "noise_coords_hill_alpha": hill, "noise_coords_hill_alpha_ci90": [hill - 0.1, hill + 0.1],
            "noise_coords_stable_alpha": stable,
            "noise_coords_stable_alpha_ci90": [stable - 0.02, 2.0],
            "tensor_stable_alpha_spread": {"min": 1.67, "max": 2.0, "median": 1.9},
            "tensors": 92,
        }))  # fmt: skip
        folders.append(str(probe))
    out = tmp_path / "figs" / "noise_heavy_tail.png"
    assert ph.main([*folders, "--out", str(out), "--dpi", "60"]) == 0
    rows = [ln for ln in out.with_suffix(".md").read_text().splitlines() if ln.startswith("| voc")]
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[:5] == ["voc", "embedded: voc proxy", "net", "initialisation", "200"]
    assert cells[5:] == ["1.23", "-0.16", "24.89 [11.96, 37.81]", "4.80 [4.70, 4.90]",
                         "**1.97 [1.95, 2.00]**", "1.67–2.00 (92)"]  # fmt: skip


def test_run_norms_alone_get_their_trend_as_a_table_beside_the_figure(tmp_path: Path) -> None:
    """heavy_tail.png's table: per run the median norm over the first and the last tenth of its
    steps and the step of its largest norm (what a histogram of the norms hides), and the Hill
    index of the panel, checked against NumPy on norms that decay with a spike at step 3."""
    rng = np.random.default_rng(3)
    norms = np.exp(-np.linspace(0.0, 5.0, 400)) * rng.uniform(0.9, 1.1, 400)
    norms[3] = 50.0
    sweep = tmp_path / "sweep"
    make_run(sweep, "voc", "SGD", 0, val=[0.2, 0.3], grad_norms=norms)
    make_run(sweep, "cola", "SGD", 0, val=[0.1, 0.2], grad_norms=np.linspace(1.0, 2.0, 50))
    out = tmp_path / "figs" / "heavy_tail.png"
    assert ph.main([str(sweep), "--out", str(out), "--dpi", "60"]) == 0
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.strip("|").split("|")]
            for ln in out.with_suffix(".md").read_text().splitlines() if ln.startswith("| ")}  # fmt: skip
    voc, kept = rows["voc"], norms.astype(np.float32).astype(np.float64)
    assert voc[3] == "0.01" and voc[4] == "400" and voc[10] == "3"  # the run config's lr
    assert float(voc[5]) == pytest.approx(np.median(kept), rel=1e-3)
    assert float(voc[8]) == pytest.approx(np.median(kept[:40]), rel=1e-3)
    assert float(voc[9]) == pytest.approx(np.median(kept[-40:]), rel=1e-3)
    sources, _ = ph.discover_sources([sweep / "voc"])
    (panel,) = ph.make_panels(sources, "run")
    assert voc[7] == f"{panel.summary.hill_alpha:.2f} ({panel.summary.hill_k})"
    assert rows["cola"][10] == "49"  # rising norms: the largest is the last


def _probe_json(folder: Path, task: str, step: int, stable: float, hill: float, ci=True) -> None:
    folder.mkdir(parents=True)
    meta = {
        "task": f"tasks.{task}.Task", "data_source": f"generated: {task}", "model_source": "m",
        "checkpoint": f"step {step}", "step": step, "batches": 400,
        "noise_coords_stable_alpha": stable, "noise_coords_hill_alpha": hill,
        "noise_coords_stable_alpha_ci90": [stable - 0.1, stable + 0.05] if ci else None,
        "noise_coords_hill_alpha_ci90": [hill - 0.5, hill + 0.25] if ci else None,
    }  # fmt: skip
    (folder / "noise_probe.json").write_text(json.dumps(meta))


def test_tail_index_over_training(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sweep"
    run = make_run(sweep, "toy", "sgd", 0, val=[0.5, 0.6])
    # probes written out of step order, inside the run; one task's probes outside any run
    for step, stable, hill in ((100, 1.4, 1.5), (0, 1.9, 4.0), (50, 1.6, 2.0)):
        name = "noise_probe_start" if step == 0 else f"noise_probe_step{step}"
        _probe_json(run / name, "toy", step, stable, hill)
    _probe_json(tmp_path / "noise" / "cola" / "a", "cola", 0, 1.3, 1.2)
    _probe_json(tmp_path / "noise" / "cola" / "b", "cola", 200, 1.2, 1.1, ci=False)
    old = tmp_path / "noise" / "old"
    old.mkdir()
    (old / "noise_probe.json").write_text(json.dumps({"task": "torch_clip.tasks.toy.Task"}))

    out = tmp_path / "over.png"
    paths = [str(sweep), str(tmp_path / "noise")]
    assert ph.main([*paths, "--over-training", "--out", str(out), "--dpi", "80"]) == 0
    printed = capsys.readouterr().out
    assert out.stat().st_size > 10_000
    assert f"skipped {old}" in printed
    assert "1.40 [1.30, 1.45]" in printed  # toy at step 100: α-stable with its interval
    table = (tmp_path / "over.md").read_text()  # the figure's numbers, with what made them
    assert "| toy | 100 | 1.40 [1.30, 1.45] | 1.50 [1.00, 1.75] | generated: toy |" in table
    assert "made by `python scripts/plot_heavy_tail.py" in table and str(tmp_path) not in table

    series, _ = ph.tail_series([sweep, tmp_path / "noise"])
    by_label = {s.label: s for s in series}
    assert sorted(by_label) == ["cola", "toy"]
    toy = by_label["toy"]
    np.testing.assert_array_equal(toy.steps, [0, 50, 100])
    np.testing.assert_allclose(toy.values["noise_coords_stable_alpha"], [1.9, 1.6, 1.4])
    np.testing.assert_allclose(toy.low["noise_coords_hill_alpha"], [3.5, 1.5, 1.0])
    cola = by_label["cola"]
    np.testing.assert_array_equal(cola.steps, [0, 200])
    assert np.isnan(cola.high["noise_coords_stable_alpha"][1])  # no interval: no bar

    # The drawn series: one error-bar line per task and index, with the probes' values.
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2)
    ph.draw_tail_over_training(axes, series)
    for ax, key in zip(axes, ("noise_coords_stable_alpha", "noise_coords_hill_alpha")):
        drawn = {c.get_label(): c.lines[0].get_xydata() for c in ax.containers}
        assert sorted(drawn) == ["cola", "toy"]
        for label, xy in drawn.items():
            np.testing.assert_allclose(xy[:, 0], by_label[label].steps)
            np.testing.assert_allclose(xy[:, 1], by_label[label].values[key])
    plt.close(fig)

    # Several runs of a task: one line per run, labelled by method.
    other = make_run(sweep, "toy", "norm", 0, val=[0.5, 0.6])
    _probe_json(other / "noise_probe_start", "toy", 0, 1.8, 3.0)
    series, _ = ph.tail_series([sweep], tasks=["toy"])
    assert sorted(s.label for s in series) == ["toy/norm", "toy/sgd"]
    assert [s.label for s in ph.tail_series([sweep], methods=["norm"])[0]] == ["toy"]
    # Seeds of one recipe: one line each, one colour and one legend entry for the group.
    seeded = tmp_path / "seeded"
    for seed, stable in ((2, 1.2), (0, 1.6), (1, 1.4)):
        _probe_json(make_run(seeded, "toy", "sgd", seed, val=[0.5]) / "noise_probe_start",
                    "toy", 0, stable, 3.0)  # fmt: skip
    series, _ = ph.tail_series([seeded])
    assert [s.label for s in series] == ["toy seed 0", "toy seed 1", "toy seed 2"]
    assert [float(s.values["noise_coords_stable_alpha"][0]) for s in series] == [1.6, 1.4, 1.2]
    assert {s.group for s in series} == {"toy"} and [s.seed_index for s in series] == [0, 1, 2]
    fig, axes = plt.subplots(1, 2)
    ph.draw_tail_over_training(axes, series)
    _, labels = axes[0].get_legend_handles_labels()
    assert labels == ["toy (seeds 0, 1, 2)"]
    colors = {tuple(c.lines[0].get_color()) if not isinstance(c.lines[0].get_color(), str)
              else c.lines[0].get_color() for c in axes[0].containers}  # fmt: skip
    assert len(colors) == 1 and len(axes[0].containers) == 3
    plt.close(fig)
    # Probes outside runs: one line per data source of a task (e.g. the toy noise laws).
    _probe_json(tmp_path / "noise" / "cola" / "c", "cola", 0, 1.9, 5.0)
    meta = json.loads((tmp_path / "noise" / "cola" / "c" / "noise_probe.json").read_text())
    meta["data_source"] = "real CoLA"
    (tmp_path / "noise" / "cola" / "c" / "noise_probe.json").write_text(json.dumps(meta))
    series, _ = ph.tail_series([tmp_path / "noise"])
    labels = {s.label: list(s.steps) for s in series}
    assert labels == {"cola — generated: cola": [0, 200], "cola — real CoLA": [0]}


def test_the_table_names_a_method_by_its_summary_not_by_its_hashed_directory(tmp_path):
    """Run directories carry a config hash (``<method>-<hash>``); the summary's ``method`` is the
    name the table and the legend show, and seeds in two directories of one name are one row."""
    sweep = tmp_path / "sweep"
    for seed, value in ((0, 0.6), (1, 0.8)):
        run = make_run(sweep, "t", "sgd", seed, val=[0.4, value])
        hashed = sweep / "t" / f"sgd-{seed}bcdef12" / f"seed{seed}"
        hashed.parent.mkdir(parents=True)
        run.rename(hashed)
        summary = json.loads((hashed / "summary.json").read_text())
        (hashed / "summary.json").write_text(json.dumps({**summary, "method": "SGD"}))
    out = tmp_path / "figs"
    assert pc.main([str(sweep), "--out", str(out), "--no-profile", *FAST]) == 0
    (row,) = read_csv(out / "t_table.csv").values()
    assert (row["method"], row["n_seeds"]) == ("SGD", "2")
    assert float(row["final_val_mean"]) == pytest.approx(0.7)


def test_the_bootstrap_band_is_scipys_interval_of_the_mean_at_every_step():
    from scipy import stats

    rng = np.random.default_rng(1)
    steps = np.arange(0, 50, 10)
    curves = [(steps, rng.normal(1.0, 0.2, steps.size)) for _ in range(5)]
    band = plotting.aggregate(curves, band="bootstrap")
    stack = np.stack([v for _, v in curves])
    ref = stats.bootstrap((stack,), np.mean, axis=0, confidence_level=0.9, n_resamples=999,
                          method="percentile", rng=np.random.default_rng(0)).confidence_interval  # fmt: skip
    np.testing.assert_allclose(band.mean, stack.mean(axis=0))
    np.testing.assert_allclose(band.lo, ref.low)
    np.testing.assert_allclose(band.hi, ref.high)
    # narrower than the min-max band it replaces
    minmax = plotting.aggregate(curves, band="minmax")
    assert np.all(band.lo >= minmax.lo) and np.all(band.hi <= minmax.hi)


def test_an_lr_sensitivity_axis_shows_the_band_that_matters_and_marks_diverged_runs():
    import matplotlib.pyplot as plt

    mse = [9.1, 0.9, 0.35, 0.4, 4.5e5, math.inf, 1e32]
    low, high = plotting.sensitivity_limits(mse, lower_is_better=True)
    assert low < 0.35 and high == pytest.approx(35.0)  # 100 × the best, not 1e32
    fig, ax = plt.subplots()
    lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    ax.set_yscale("log")
    ax.set_ylim(low, high)
    assert plotting.mark_off_scale(ax, lrs, mse, "C0") == 3  # 4.5e5, inf and 1e32
    assert ax.get_ylim() == pytest.approx((low, high))  # the marks do not move the axis
    plt.close(fig)
    acc = [0.1, 0.8, 0.85]
    assert plotting.sensitivity_limits(acc, lower_is_better=False)[1] == pytest.approx(0.85 * 1.5)
    with pytest.raises(ValueError, match="no finite positive value"):
        plotting.sensitivity_limits([math.nan], lower_is_better=True)


def test_no_legend_entry_is_cut_and_the_legend_gets_the_height_its_lines_need():
    long = "ClippedSGD [coordinate: FixedThreshold(level=0.005772) Always()] " * 3
    labels = ["a", plotting.wrap(long, 40), "b", "c"]
    # two columns, filled column-first: rows (a, b) and (long, c); the long label has its lines
    assert plotting.legend_rows(labels, 2) == 1 + labels[1].count("\n") + 1
    assert plotting.legend_rows(["x", "y", "z"], 1) == 3
    row = pc.MethodRow("coord_wise", long, "0.1", "0.005772", [1, 2], (0.8, 0.01, 2),
                       (0.8, 0.01, 2), (1.0, 0.1, 2), (0.4, 0.0, 2))  # fmt: skip
    res = pc.TaskResult("reddit", "accuracy", False, None, "", [row], {"coord_wise": []}, [])
    (label, *_) = [h.get_label() for h in pc.task_handles(res, {"coord_wise": "C0"})]
    assert " ".join(label.split()) == " ".join(f"coord_wise: {long}  [2 seed(s)]".split())
    assert "…" not in label


def test_draw_lr_sensitivity_keeps_every_curve_in_view_and_marks_the_diverged_settings():
    import matplotlib.pyplot as plt

    lrs = [1e-4, 1e-3, 1e-2, 1e-1]
    curves = {"SGD": [9.1, 0.5, 4.5e5, math.nan], "norm": [1.0, 0.35, 0.4, 0.6]}
    fig, ax = plt.subplots()
    marked = plotting.draw_lr_sensitivity(ax, lrs, curves, {"SGD": "C0", "norm": "C1"}, True)
    low, high = ax.get_ylim()
    assert marked == 2 and high == pytest.approx(35.0) and low < 0.35  # 1e32 squashes nothing
    sgd = ax.get_lines()[0].get_ydata()
    assert list(np.isnan(sgd)) == [False, False, True, True]  # off-axis points are marks, not lines
    plt.close(fig)
