"""Tests of scripts/plot_comparison.py and scripts/plot_heavy_tail.py on fake run directories.

The run directories are written here in the exact layout ``train.py`` produces (config.yaml,
metrics.jsonl, grad_norms.npy, grad_norm_hist.jsonl, summary.json) with hand-chosen values, so
every table entry, steps-to-target and performance-profile value can be checked by hand.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import plot_comparison as pc  # noqa: E402
import plot_heavy_tail as ph  # noqa: E402
import plotting  # noqa: E402

FAST = ("--dpi", "40")  # figures not under test are drawn small
DESCRIPTIONS = {
    "norm": "clipped SGD norm, λ=1, lr=0.01, m=0.9, wd=0",
    "adam": "Adam (lr=0.001, eps=1e-08, wd=0)",
    "sgd": "SGD (lr=0.01, m=0.9, wd=0)",
}


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
) -> Path:
    """Write one run directory; the val metric takes the values ``val`` at ``val_steps``."""
    run = sweep / task / method / f"seed{seed}"
    run.mkdir(parents=True)
    val_steps = val_steps or [50 * (i + 1) for i in range(len(val))]
    max_steps = val_steps[-1]
    log_steps = list(range(10, max_steps + 1, 10))
    train_loss = train_loss or [2.0 / (1 + 0.05 * s) for s in log_steps]
    (run / "config.yaml").write_text(
        f"seed: {seed}\nexperiment_name: fake\nlabel: null\ntask:\n  _target_: tasks.{task}.Task\n"
        f"optimizer:\n  name: {method}\n  clipping_type: norm\n  clipping_level: 1.0\n"
        f"step_rule:\n  name: sgd\n  _target_: clip_core.ClippedSGD\n  lr: 0.01\n  momentum: 0.9\n"
        f"trainer:\n  max_steps: {max_steps}\n"
    )
    rows = []
    for i, step in enumerate(log_steps):
        row = {
            "step": step, "epoch": 0, "split": "train",
            "train_loss": train_loss[min(i, len(train_loss) - 1)], "lr": 0.01,
            "grad_norm": 1.0 + 0.01 * i, "clip_threshold": 1.0,
            "clip_fraction": 0.1 if method != "sgd" else 0.0,
            "wall_time": 0.1 * step, "skipped_steps": 0,
        }  # fmt: skip
        if train_metric:
            row[f"train_{metric}"] = 0.5 + 0.001 * step
        rows.append(row)
    for step, value in zip(val_steps, val):
        rows.append({"step": step, "epoch": 0, "split": "val", f"val_{metric}": value,
                     "val_loss": 1.0 - value, "wall_time": 0.1 * step})  # fmt: skip
    rows.sort(key=lambda r: (r["step"], r["split"] == "val"))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    norms = grad_norms if grad_norms is not None else np.linspace(1.0, 2.0, max_steps)
    np.save(run / "grad_norms.npy", np.asarray(norms, dtype=np.float32))
    edges = np.geomspace(0.5, 5.0, 11)
    counts, _ = np.histogram(norms, bins=edges)
    hist = {"epoch": 0, "step": max_steps, "edges": edges.tolist(), "counts": counts.tolist()}
    (run / "grad_norm_hist.jsonl").write_text(json.dumps(hist) + "\n")
    best_i = int(np.argmax(val))
    summary = {
        "status": status, "task": task, "optimizer": method, "step_rule": "sgd",
        "optimizer_description": DESCRIPTIONS.get(method, method), "seed": seed,
        "best": {"metric": metric, "value": val[best_i], "step": val_steps[best_i]},
        "final": {f"val_{metric}": val[-1], "val_loss": 1.0 - val[-1]},
        "final_train_loss": train_loss[-1], "primary_metric": metric,
        "data_source": "embedded: fake corpus" if embedded else "real data at /data",
        "model_source": "tiny MLP", "embedded_data": embedded, "wall_seconds": 1.0,
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


def test_table_mean_std_over_seeds_matches_numpy(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "fake"
    vals = {  # method -> per seed val sequence at steps 50, 100, 150
        "norm": [[0.5, 0.7, 0.65], [0.4, 0.6, 0.8], [0.55, 0.75, 0.7]],
        "adam": [[0.3, 0.5, 0.6], [0.35, 0.45, 0.5]],
    }
    losses = {"norm": [1.2, 0.9, 1.05], "adam": [1.5, 1.7]}
    for method, seeds in vals.items():
        for seed, val in enumerate(seeds):
            make_run(sweep, "cola", method, seed, val=val, train_loss=[3.0, losses[method][seed]])
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
    md = (out / "cola_table.md").read_text()
    final_norm = np.array(vals["norm"])[:, -1]
    assert f"{final_norm.mean():.4f} ± {final_norm.std(ddof=1):.4f}" in md
    assert DESCRIPTIONS["adam"] in md


def test_steps_to_target_is_first_eval_reaching_it(tmp_path: Path) -> None:
    sweep = tmp_path / "fake"
    steps = [10, 20, 30, 40]
    # target 0.6: seed0 first reaches it at step 30 (0.6 == target counts), seed1 at step 40.
    make_run(sweep, "t", "norm", 0, val=[0.2, 0.5, 0.6, 0.9], val_steps=steps)
    make_run(sweep, "t", "norm", 1, val=[0.1, 0.3, 0.5, 0.7], val_steps=steps)
    make_run(sweep, "t", "adam", 0, val=[0.1, 0.2, 0.3, 0.4], val_steps=steps)  # never
    out = tmp_path / "figs"
    assert pc.main([str(sweep), "--out", str(out), "--target", "0.6", "--no-profile", *FAST]) == 0
    table = read_csv(out / "t_table.csv")
    assert float(table["norm"]["steps_to_target_mean"]) == pytest.approx((30 + 40) / 2)
    assert int(table["norm"]["seeds_reached"]) == 2
    assert math.isnan(float(table["adam"]["steps_to_target_mean"]))
    assert int(table["adam"]["seeds_reached"]) == 0
    md = (out / "t_table.md").read_text()
    assert "| 35 (2/2 seeds) |" in md
    adam_line = next(line for line in md.splitlines() if line.startswith("| adam |"))
    assert adam_line.endswith("| — |")  # adam never reaches it

    # Default target: 0.9 × the best value of any method (0.9) = 0.81 -> only norm seed0, step 40.
    runs = plotting.discover_runs([sweep])
    result = pc.analyse_task("t", runs)
    assert result.target == pytest.approx(0.81)
    row = {r.method: r for r in result.rows}["norm"]
    assert row.steps[0] == 40.0 and math.isnan(row.steps[1])
    assert row.n_reached == 1 and row.mean_steps == 40.0
    # Lower-is-better metric: the target is best + 10 % and "reaching" means going below it.
    result = pc.analyse_task("t", runs, metric="loss")
    assert result.lower and result.target == pytest.approx(0.1 * 1.1)  # best val_loss 0.1
    assert {r.method: r.steps for r in result.rows}["norm"][0] == 40.0


def test_performance_profile_hand_example(tmp_path: Path) -> None:
    sweep = tmp_path / "fake"
    steps = [50, 100, 150, 200, 250, 300]
    # Task x: A reaches 0.5 at step 100, B at 200.  Task y: A at 300, B at 150.
    make_run(sweep, "x", "A", 0, val=[0.1, 0.5, 0.5, 0.6, 0.6, 0.6], val_steps=steps)
    make_run(sweep, "x", "B", 0, val=[0.1, 0.2, 0.3, 0.5, 0.6, 0.6], val_steps=steps)
    make_run(sweep, "y", "A", 0, val=[0.1, 0.1, 0.2, 0.2, 0.3, 0.5], val_steps=steps)
    make_run(sweep, "y", "B", 0, val=[0.1, 0.2, 0.7, 0.7, 0.7, 0.7], val_steps=steps)
    out = tmp_path / "figs"
    assert pc.main([str(sweep), "--out", str(out), "--target", "0.5", *FAST]) == 0
    ratios = {
        m: {k: float(v) for k, v in row.items() if k != "method"}
        for m, row in read_csv(out / "performance_profile.csv").items()
    }
    assert ratios == {"A": {"x": 1.0, "y": 2.0}, "B": {"x": 2.0, "y": 1.0}}
    taus = np.array([1.0, 1.5, 1.99, 2.0, 10.0])
    for method in ("A", "B"):
        rho = pc.profile_curve(ratios[method], taus)
        np.testing.assert_allclose(rho, [0.5, 0.5, 0.5, 1.0, 1.0])
    assert (out / "performance_profile.png").exists()

    # Task-specific targets; B never reaches 0.8 on x, so its ratio there is inf.
    results = [
        pc.analyse_task("x", plotting.discover_runs([sweep / "x"]), target=0.6),
        pc.analyse_task("y", plotting.discover_runs([sweep / "y"]), target=0.5),
    ]
    ratios = pc.profile_ratios(results)
    # x: A at 200, B at 250 -> 1, 1.25;  y: A at 300, B at 150 -> 2, 1.
    assert ratios["A"] == {"x": 1.0, "y": 2.0}
    assert ratios["B"] == {"x": pytest.approx(1.25), "y": 1.0}
    results[0] = pc.analyse_task("x", plotting.discover_runs([sweep / "x"]), target=0.8)
    ratios = pc.profile_ratios(results)
    assert ratios["A"]["x"] == math.inf and ratios["B"]["x"] == math.inf
    np.testing.assert_allclose(pc.profile_curve(ratios["B"], taus), [0.5] * 5)
    np.testing.assert_allclose(pc.profile_curve(ratios["A"], taus), [0, 0, 0, 0.5, 0.5])


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
    result = pc.analyse_task("cola", plotting.discover_runs([sweep]))
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
    assert pc.main([str(sweep), "--band", "std", "--smooth", "3", "--dpi", "100"]) == 0
    figures = sweep / "figures"
    for name in ("cola_comparison.png", "reddit_comparison.png", "performance_profile.png"):
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
    runs = {t: plotting.discover_runs([sweep / t]) for t in "abc"}
    assert pc.choose_aux(runs["a"], "accuracy", "auto")[0] == "train_accuracy"
    assert pc.choose_aux(runs["b"], "accuracy", "auto")[0] == "clip_fraction"
    key, _, title = pc.choose_aux(runs["c"], "accuracy", "auto")  # sgd never clips
    assert key == "grad_norm" and "no training accuracy logged" in title
    assert "EMBEDDED PROXY DATA" in plotting.provenance([r.summary for r in runs["a"]])
    text = plotting.provenance([r.summary for r in runs["b"]])
    assert "EMBEDDED" not in text and "real data at /data" in text and "tiny MLP" in text


def test_targets_and_output_paths() -> None:
    assert pc.parse_targets(["0.5", "cola=0.3"]) == (0.5, {"cola": 0.3})
    with pytest.raises(ValueError):
        pc.parse_targets(["cola=high"])
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
        noise_coords=rng.normal(size=(200, 100)),
    )
    (probe / "noise_probe.json").write_text(json.dumps({
        "task": "tasks.toy.ToyRegressionTask", "data_source": "generated: toy",
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
