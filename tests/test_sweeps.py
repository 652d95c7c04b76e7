"""The tuning protocol of ``scripts/sweeps.py``: best-of-grid selection and the report interval."""

from __future__ import annotations

import csv
import json
import math
import sys

import numpy as np
import pytest
import yaml
from scipy import stats

from suite.run_reader import Run, read_runs
from tests.suite_helpers import ROOT, train_env

sys.path.insert(0, str(ROOT / "scripts"))
import sweeps


def make_run(
    root, name, seed, lr, level, value, metric="mse", norms=None, status="completed", loss=None,
    fractions=None, extra=None,
):  # fmt: skip
    """A run directory: config (the optimizer preset is the name's first part; ``extra`` adds
    config sections), summary, and optionally gradient norms and the ``clip_fraction`` of logged
    training steps."""
    run = root / name / f"seed{seed}"
    run.mkdir(parents=True)
    optimizer = {"name": name.split(",")[0]}
    if level is not None:
        optimizer["clipping_level"] = level
    cfg = {"seed": seed, "step_rule": {"lr": lr}, "optimizer": optimizer} | (extra or {})
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    final = {f"val_{metric}": value} | ({} if loss is None else {"val_loss": loss})
    summary = {"status": status, "final": final}
    (run / "summary.json").write_text(json.dumps(summary))
    if norms is not None:
        np.save(run / "grad_norms.npy", np.asarray(norms))
    if fractions is not None:
        rows = [{"split": "train", "step": 5 * (i + 1), "clip_fraction": f}
                for i, f in enumerate(fractions)]  # fmt: skip
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


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


def test_equal_metrics_are_told_apart_by_the_validation_loss(tmp_path):
    # MCC 0 on every setting (a majority-class plateau): the lowest mean val_loss wins, wherever
    # it stands in the grid; a setting with a diverged loss on one seed loses the tie.
    losses = {0.001: [0.64, 0.62], 0.01: [0.60, 0.61], 0.1: [0.30, math.inf], 1.0: [0.66, 0.70]}
    for lr, values in losses.items():
        for seed, loss in enumerate(values):
            make_run(tmp_path, f"sgd,lr={lr}", seed, lr, None, 0.0, metric="mcc", loss=loss)
    runs = read_runs(tmp_path)
    best = sweeps.best_settings(runs, lambda r: "SGD", [0, 1], "mcc", lower_is_better=False)
    assert best["SGD"]["setting"] == (0.01, None)
    assert best["SGD"]["tie"] == pytest.approx(0.605)
    # a better metric still beats a better loss
    make_run(tmp_path, "sgd,lr=3", 0, 3.0, None, 0.2, metric="mcc", loss=0.9)
    make_run(tmp_path, "sgd,lr=3", 1, 3.0, None, 0.1, metric="mcc", loss=0.9)
    best = sweeps.best_settings(read_runs(tmp_path), lambda r: "SGD", [0, 1], "mcc", False)
    assert best["SGD"]["setting"] == (3.0, None)


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


def test_tuned_tables_keep_the_other_tasks_rows(tmp_path):
    # tasks are tuned one invocation at a time: a second task adds its rows, a rerun replaces
    import tuned_comparison as tc

    def result(task, lr):
        spec = {"metric": "mcc", "lr_grid": [1e-4, 1e-3], "measure_lr": 1e-4, "lambda_quantiles": [0.5],
                "tune_seeds": [0], "report_seeds": [1, 2]}  # fmt: skip
        grid = [{"method": "SGD", "lr": lr, "seed": 0, "value": 0.25, "val_loss": 0.5}]
        return {"task": task, "placed": {}, "best": {"SGD": {"setting": (lr,)}},
                "spec": spec, "grid": grid}  # fmt: skip

    for task, lr in (("cola", 1e-4), ("voc", 1e-3), ("cola", 1e-3)):
        tc.write_choices([result(task, lr)], tmp_path, f"run {task}")
        tc.write_grid([result(task, lr)], tmp_path, f"run {task}")
    for name in ("tuned_choices.csv", "tuning_grid.csv"):
        with open(tmp_path / name) as f:
            rows = list(csv.DictReader(f))
        assert [(r["task"], float(r["lr"])) for r in rows] == [("voc", 1e-3), ("cola", 1e-3)]
        assert "`run voc`" in rows[0]["made_by"] and "`run cola`" in rows[1]["made_by"]
    grid = (tmp_path / "tuning_grid.md").read_text()
    assert (
        grid.index("## voc") < grid.index("## cola") and "| SGD | 0.001 |  | 0 | 0.2500 |" in grid
    )
    choices = (tmp_path / "tuned_choices.md").read_text()
    assert "| cola | SGD | 2 | 0.001 | high |" in choices  # 2 settings, lr on the grid's upper edge
    assert "cola: made by `run cola`" in (tmp_path / "tuned_choices.md").read_text()


def test_per_tensor_and_per_coordinate_rules_get_an_even_share_of_the_measured_lambda():
    import tuned_comparison as tc

    methods = {"SGD": ["optimizer=torch_sgd"], "norm": ["optimizer=norm"],
               "AdamW+norm": ["optimizer=norm", "step_rule=adamw"], "auto": ["optimizer=auto"],
               "layer_wise": ["optimizer=layer_wise"], "coord_wise": ["optimizer=coord_wise"],
               "AGC": ["optimizer=peer_agc"]}  # fmt: skip
    c = {
        "task": "imagenet",
        "methods": methods,
        "lambda_quantiles": [0.1, 0.5],
        "measure_lr": 0.001,
    }
    summary = {"num_parameter_tensors": 62, "num_parameters": 11_181_642}
    measured = Run(dir=ROOT, task="imagenet", method="SGD", seed=0, summary=summary)
    levels, placed = tc.thresholds(c, measured, [0.5, 0.7735])
    # the global rules at each quantile; layer_wise at q/sqrt(62), coord_wise /sqrt(N)
    for name, share in (("norm", 1), ("AdamW+norm", 1), ("layer_wise", 62**-0.5),
                        ("coord_wise", 11_181_642**-0.5)):  # fmt: skip
        assert levels[name] == pytest.approx([0.5 * share, 0.7735 * share], rel=1e-3)
    assert placed["layer_wise"] == "q0.1=0.5 q0.5=0.7735 ÷√62 (SGD lr 0.001)"
    assert placed["norm"] == "q0.1=0.5 q0.5=0.7735 (SGD lr 0.001)" and "SGD" not in placed
    # an older measurement run cannot place a per-tensor λ: say so, never guess T
    older = Run(dir=ROOT, task="imagenet", method="SGD", seed=0, summary={})
    with pytest.raises(SystemExit, match="no num_parameter_tensors, which places layer_wise"):
        tc.thresholds(c, older, [0.5, 0.7735])
    # a method whose preset does not exist is named, with the presets there are
    c["methods"] = {"typo": ["optimizer=layerwise"]}
    with pytest.raises(
        SystemExit, match=r"'layerwise' .*expected one of .*layer_wise, linear_stoch_auto"
    ):
        tc.thresholds(c, measured, [0.5, 0.7735])


def test_every_method_gets_the_lr_grid_times_its_own_knob_and_runs_say_their_setting(tmp_path):
    import tuned_comparison as tc

    c = tc.spec("reddit")
    levels = {"norm": [0.3, 0.4, 0.5], "layer_wise": [0.1, 0.2, 0.3], "coord_wise": [1, 2, 3]}
    counts = {n: tc.protocol.settings_count(tc.method_axes(c, n, levels)) for n in c["methods"]}
    assert set(counts.values()) == {len(c["lr_grid"]) * 3}  # equal for every method
    adam = tc.method_axes(c, "Adam", levels)
    assert adam[1].key == "step_rule.betas.1" and adam[1].values == (0.99, 0.999, 0.9999)
    over = tc.run_overrides(c, "Adam", (0.003, 0.9999), 6, ["x=1"], adam)
    assert over[-2:] == ["step_rule.betas=[0.9,0.9999]", "x=1"] and "label='Adam'" in over
    norm = tc.method_axes(c, "norm", levels)
    assert norm[1].key == "optimizer.clipping_level" and norm[1].values == (0.3, 0.4, 0.5)
    # a run's config gives back the setting its overrides made
    make_run(tmp_path, "Adam", 6, 0.003, None, 0.8)
    (run,) = read_runs(tmp_path)
    run.config["step_rule"]["betas"] = [0.9, 0.9999]
    assert tc.setting_of(run, adam) == (0.003, 0.9999)
    with pytest.raises(SystemExit, match="Invalid knob of SGD: lambda"):
        tc.method_axes({**c, "knobs": {"SGD": "lambda"}}, "SGD", levels)
    # an older block: a single quantile, methods as lists
    old = tc.normalized({"lambda_quantile": 0.5, "methods": {"SGD": ["optimizer=torch_sgd"]}})
    assert old["lambda_quantiles"] == [0.5] and old["knobs"] == {} and old["max_extensions"] == 2


def test_the_measurement_run_must_be_stable(tmp_path):
    import tuned_comparison as tc

    make_run(tmp_path, "ok", 0, 0.003, None, 0.8, norms=[1.0, 2.0])
    make_run(tmp_path, "nan", 0, 0.003, None, 0.8, norms=[1.0, math.nan])
    runs = {r.dir.parent.name: r for r in read_runs(tmp_path)}
    assert tc.unstable(runs["ok"]) is None
    assert "not all finite" in tc.unstable(runs["nan"])
    with pytest.raises(SystemExit, match="cannot place λ: its gradient norms"):
        tc.measured_run("reddit", [runs["nan"]], lambda r: "measure_SGD", "measure_SGD", "log")


def test_measure_lr_defaults_to_the_grids_smallest_and_must_be_on_the_grid():
    import tuned_comparison as tc

    assert tc.measure_lr({"lr_grid": [0.1, 1e-3, 0.01]}, "voc") == 1e-3
    assert tc.measure_lr({"lr_grid": [1e-4, 1e-3], "measure_lr": 1e-3}, "voc") == 1e-3
    with pytest.raises(SystemExit, match=r"Invalid comparison.measure_lr: 0.002; expected one of"):
        tc.measure_lr({"lr_grid": [1e-4, 1e-3], "measure_lr": 0.002}, "voc")


def test_tail_over_training_takes_extra_overrides_and_halves_their_budget():
    import tail_over_training as tot

    over = tot.task_overrides("toy", False, ["trainer.max_steps=40", "trainer.log_every=6"])
    assert over[0] == "task=toy" and over[-2:] == ["trainer.max_steps=40", "trainer.log_every=6"]
    # mid-run probe at half the budget, rounded down to a logging window: 20 -> 18
    assert tot.budget(over, quick=False) == (18, 40)


def test_tail_over_training_finds_each_seeds_run_and_refuses_two_recipes(tmp_path):
    import tail_over_training as tot

    assert tot.run_dir_of(tmp_path, "voc", 1) is None  # before the first stage
    for seed in (0, 1):
        (tmp_path / "voc" / "norm-1a2b" / f"seed{seed}").mkdir(parents=True)
    assert tot.run_dir_of(tmp_path, "voc", 1) == tmp_path / "voc" / "norm-1a2b" / "seed1"
    (tmp_path / "voc" / "sgd-3c4d" / "seed1").mkdir(parents=True)  # a second recipe, same root
    assert tot.run_dir_of(tmp_path, "voc", 0) == tmp_path / "voc" / "norm-1a2b" / "seed0"
    with pytest.raises(SystemExit, match=r"holds 2 runs of seed 1; expected one"):
        tot.run_dir_of(tmp_path, "voc", 1)


def test_report_runs_of_a_choice_no_longer_made_are_moved_out_of_the_figures(tmp_path):
    import tuned_comparison as tc

    report = tmp_path / "report" / "reddit"
    for seed in (1, 2):  # the current choices of norm and SGD, and norm's earlier one
        make_run(report, "norm-aaaa", seed, 0.03, 0.4261, 0.81, metric="accuracy")
        make_run(report, "norm-bbbb", seed, 0.1, 0.4261, 0.80, metric="accuracy")
        make_run(report, "SGD-cccc", seed, 0.1, None, 0.80, metric="accuracy")
    make_run(report, "auto-dddd", 1, 0.1, None, 0.8, metric="accuracy", status="interrupted")
    best = {"norm": {"setting": (0.03, 0.4261)}, "SGD": {"setting": (0.1, None)},
            "auto": {"setting": (0.03, None)}}  # fmt: skip

    def of(run):
        return run.dir.parent.name.split("-")[0]

    moved = tc.retire_superseded(tmp_path, "reddit", best, of)
    superseded = tmp_path / "superseded" / "reddit"
    assert sorted(moved) == [superseded / "auto-dddd", superseded / "norm-bbbb"]
    assert sorted(p.name for p in report.iterdir()) == ["SGD-cccc", "norm-aaaa"]
    assert (superseded / "norm-bbbb" / "seed2" / "summary.json").exists()  # kept, not deleted
    # superseded again later (a choice came back and went): both copies are kept
    make_run(report, "norm-bbbb", 1, 0.1, 0.4261, 0.79, metric="accuracy")
    assert tc.retire_superseded(tmp_path, "reddit", best, of) == [superseded / "norm-bbbb.1"]
    assert tc.retire_superseded(tmp_path, "reddit", best, of) == []  # nothing left to move


def test_regime_map_reads_only_the_runs_of_its_budgets_length(tmp_path):
    import regime_map as rm

    for steps in (250, 1000):
        run = tmp_path / f"torch_sgd-{steps}" / "seed0"
        run.mkdir(parents=True)
        cfg = {"seed": 0, "step_rule": {"lr": 0.01}, "optimizer": {"name": "torch_sgd"},
               "trainer": {"max_steps": steps}}  # fmt: skip
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        (run / "summary.json").write_text(json.dumps({"status": "completed", "final": {}}))
    runs = read_runs(tmp_path)
    assert len(runs) == 2
    longer = rm.of_budget(runs, rm.replace(rm.FULL, steps=1000))
    assert [r.dir.parent.name for r in longer] == ["torch_sgd-1000"]
    with pytest.raises(SystemExit):
        rm.main(["--steps", "0", "--figures-only", "--root", str(tmp_path)])


def test_a_call_redraws_only_its_own_tasks(tmp_path):
    import tuned_comparison as tc

    (tmp_path / "voc").mkdir()  # runs of an earlier call: their committed figures stay
    command = tc.plot_command(tmp_path, tmp_path / "figs", ["reddit"])
    assert "--tasks=reddit" in command
    assert tc.plot_command(tmp_path, tmp_path, ["reddit", "cola"])[4] == "--tasks=reddit,cola"


def test_a_variant_of_a_task_keeps_its_runs_and_figures_apart_from_the_tasks_own(tmp_path):
    import tuned_comparison as tc

    assert tc.spec("cola")["task"] == "cola"
    variant = tc.spec("cola_mpnet")
    assert variant["task"] == "cola"
    configured = yaml.safe_load((ROOT / "conf" / "experiment" / "cola_mpnet.yaml").read_text())
    assert variant["target"] == configured["comparison"]["target"]
    root, out = tmp_path / "runs", tmp_path / "figs"
    assert tc.folders("cola", "cola", root, out) == (root, out)
    assert tc.folders("cola_mpnet", "cola", root, out) == (root / "cola_mpnet", out / "cola_mpnet")
    command = tc.variant_plot_command(root / "cola_mpnet" / "report", out / "cola_mpnet", variant)
    assert command[1:4] == [str(root / "cola_mpnet" / "report"), "--out", str(out / "cola_mpnet")]
    assert command[4:] == ["--tasks=cola", f"--target=cola={variant['target']}", "--no-profile"]
    with pytest.raises(SystemExit):  # a variant is asked for by name; an unknown one is refused
        tc.main(["--tasks", "cola_large", "--figures-only"])


def test_the_per_unit_cola_variant_runs_colas_protocol_and_reports_only_the_rules_it_adds():
    import tuned_comparison as tc

    own, variant = tc.spec("cola"), tc.spec("cola_per_unit")
    shared = ("metric", "target", "measure_lr", "lambda_quantiles", "tune_seeds", "report_seeds")
    assert {k: variant[k] for k in shared} == {k: own[k] for k in shared}
    # the same grid, widened upwards only: the task's choices stay comparable
    assert variant["lr_grid"][: len(own["lr_grid"])] == own["lr_grid"]
    assert min(variant["lr_grid"][len(own["lr_grid"]) :]) > max(own["lr_grid"])
    assert variant["methods"]["SGD"] == own["methods"]["SGD"]  # its measurement places λ
    best = {n: {"setting": (0.01, None)} for n in variant["methods"]}
    assert list(tc.reported(variant, best)) == ["coord_wise", "AGC", "layer_wise"]
    assert list(tc.reported(own, {n: {} for n in own["methods"]})) == list(own["methods"])
    with pytest.raises(SystemExit, match=r"report_methods.*'Adam'"):
        tc.reported({**variant, "report_methods": ["Adam"]}, best)
    # --quick keeps SGD and one rule, and reports what is left of the list
    tc.as_run(variant, quick=True, extra=[])
    assert list(variant["methods"]) == ["SGD", "coord_wise"]
    assert variant["report_methods"] == ["coord_wise"]


def test_the_reddit_agc_variant_runs_reddits_protocol_for_agc_at_each_clip_factor():
    import tuned_comparison as tc

    own, variant = tc.spec("reddit"), tc.spec("reddit_agc")
    shared = ("task", "metric", "target", "measure_lr", "lambda_quantiles", "tune_seeds",
              "report_seeds")  # fmt: skip
    assert {k: variant[k] for k in shared} == {k: own[k] for k in shared}
    # the same grid, widened upwards only: the task's choices stay comparable
    assert variant["lr_grid"][: len(own["lr_grid"])] == own["lr_grid"]
    assert min(variant["lr_grid"][len(own["lr_grid"]) :]) > max(own["lr_grid"])
    assert variant["methods"]["SGD"] == own["methods"]["SGD"]  # its measurement run
    factors = {n: o for n, o in variant["methods"].items() if n != "SGD"}
    assert len(factors) >= 3 and all("optimizer=peer_agc" in o for o in factors.values())
    # timm's default, the factor of experiment=reddit's AGC, is among them
    assert ["optimizer=peer_agc", "optimizer.peer_args.clip_factor=0.01"] in factors.values()
    assert variant["report_methods"] == list(factors)


def test_the_cola_variant_is_one_epoch_of_real_cola_at_bf16_mixed():
    from hydra import compose, initialize_config_dir

    import suite.naming  # noqa: F401  registers the run_dir resolver

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=cola_mpnet"])
    assert cfg.trainer.max_steps == 8551 // cfg.task.batch_size  # real CoLA's training set
    assert cfg.scheduler.num_warmup_steps == round(0.1 * cfg.trainer.max_steps)
    assert cfg.trainer.precision == "bf16-mixed" and cfg.task.pooling == "mean"
    assert cfg.task.model_name_or_path == "sentence-transformers/all-mpnet-base-v2"


def test_figures_get_the_configured_target_of_every_task_they_show(tmp_path):
    import tuned_comparison as tc

    (tmp_path / "voc").mkdir()  # a task of an earlier call
    flags = tc.target_flags(tmp_path, ["reddit"])
    configured = {
        t: yaml.safe_load((ROOT / "conf" / "experiment" / f"{t}.yaml").read_text())["comparison"][
            "target"
        ]
        for t in ("reddit", "voc")
    }
    assert flags == [f"--target={t}={configured[t]}" for t in ("reddit", "voc")]


def test_regime_map_tunes_every_method_on_every_lr_and_noise_and_measures_in_the_grid():
    import regime_map as rm

    noises = [*rm.FULL.alphas, rm.GAUSSIAN]
    grids = {rm.noise_key(n): {m: [0.5, 1.0] for m in rm.THRESHOLD_KEY} for n in noises}
    jobs = rm.free_tuning_jobs(noises, rm.FULL) + rm.threshold_tuning_jobs(noises, rm.FULL, grids)
    covered = set()
    for overrides, _ in jobs:
        values = dict(o.split("=", 1) for o in overrides)
        noise = values.get("task.noise_alpha", rm.GAUSSIAN)
        assert values["step_rule.lr"].split(",") == [str(lr) for lr in rm.FULL.lrs]
        for preset in values["optimizer"].split(","):
            method = rm.BY_PRESET[preset]
            covered.add((method, str(noise)))
            # every thresholded method sweeps its own key (λ, or AGC's clip factor), no other
            swept = {k for k in ("optimizer.clipping_level", "optimizer.peer_args.clip_factor")
                     if k in values}  # fmt: skip
            expected = {rm.THRESHOLD_KEY[method]} if method in rm.THRESHOLD_KEY else set()
            assert swept == expected, (method, overrides)
            if expected:
                assert values[rm.THRESHOLD_KEY[method]] == "0.5,1.0"
    assert covered == {(m, str(n)) for m in rm.METHODS for n in noises}
    assert "AGC" in rm.THRESHOLD_KEY and "AGC" in rm.FULL.methods
    # SGD's tuning runs include the λ measurement; a budget without it is refused by name
    assert rm.FULL.measure_lr in rm.FULL.lrs
    with pytest.raises(ValueError, match=r"measure_lr=0\.5"):
        rm.Budget(10, (0.1, 0.3), 0.5, (1.5,), (0,), (1,), ("SGD",))


def test_regime_map_chooses_agcs_clip_factor_and_reports_it(tmp_path):
    """AGC's runs differ only in ``optimizer.peer_args.clip_factor``: each factor is a setting of
    its own (not one setting whose seeds overwrite each other), the best one is chosen, and its
    report runs carry it."""
    import regime_map as rm

    def agc_run(name, seed, factor, mse):
        run = tmp_path / name / f"seed{seed}"
        run.mkdir(parents=True)
        cfg = {"seed": seed, "step_rule": {"lr": 1.0},
               "optimizer": {"name": "peer_agc", "peer": "agc", "peer_args": {"clip_factor": factor}},
               "task": {"noise": "gaussian"}}  # fmt: skip
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        (run / "summary.json").write_text(
            json.dumps({"status": "completed", "final": {"val_mse": mse}})
        )

    for factor, mse in ((0.001, 0.9), (0.01, 0.5), (0.1, 0.2), (1.0, 0.7)):
        agc_run(f"peer_agc,clip_factor={factor}", 0, factor, mse)
    runs = read_runs(tmp_path)
    assert sorted(rm.threshold_of(r) for r in runs) == [0.001, 0.01, 0.1, 1.0]
    best = sweeps.best_settings(runs, rm.method_of, [0], "mse", lower_is_better=True,
                                setting_of=rm.setting_of)  # fmt: skip
    assert best["AGC"]["setting"] == (1.0, 0.1) and best["AGC"]["score"] == pytest.approx(0.2)
    ((overrides, _),) = rm.report_jobs(rm.GAUSSIAN, rm.FULL, best)
    assert "optimizer.peer_args.clip_factor=0.1" in overrides and "step_rule.lr=1.0" in overrides

    # the report: seeds 1 and 2 at the chosen setting, seed 1 found in two directories (the same
    # run, once named by its explicit default): each seed counts once in the mean and interval
    agc_run("report/peer_agc,clip_factor=0.1", 1, 0.1, 0.25)
    agc_run("report/peer_agc-dup,clip_factor=0.1", 1, 0.1, 0.25)
    agc_run("report/peer_agc,clip_factor=0.1", 2, 0.1, 0.35)
    agc_run("report/peer_agc,clip_factor=0.01", 2, 0.01, 9.0)  # another setting: not counted
    (row,) = rm.summarise(
        read_runs(tmp_path / "report"), [rm.GAUSSIAN], rm.FULL, {"gaussian": best}
    )
    half = stats.t.ppf(0.95, 1) * np.std([0.25, 0.35], ddof=1) / math.sqrt(2)
    assert (row["method"], row["clipping_level"], row["seeds"]) == ("AGC", 0.1, 2)
    assert row["val_mse_mean"] == pytest.approx(0.30)
    assert row["ci90_high"] - row["val_mse_mean"] == pytest.approx(half)


#: the config section the regime map reads a run's noise law from
GAUSSIAN_TOY = {"task": {"noise": "gaussian"}}


def test_regime_map_reports_the_share_of_the_norm_each_clipping_method_removed(tmp_path):
    import regime_map as rm

    make_run(tmp_path, "norm", 1, 0.01, 1.5, 0.3, fractions=[0.2, 0.4, 0.9], extra=GAUSSIAN_TOY)
    make_run(tmp_path, "norm", 2, 0.01, 1.5, 0.5, fractions=[0.1, 0.1], extra=GAUSSIAN_TOY)
    make_run(
        tmp_path, "norm,other", 2, 0.01, 0.5, 0.5, fractions=[1.0, 1.0], extra=GAUSSIAN_TOY
    )  # not chosen
    make_run(tmp_path, "torch_sgd", 1, 0.01, None, 0.6, fractions=[0.0, 0.0], extra=GAUSSIAN_TOY)
    best = {"norm": {"setting": (0.01, 1.5)}, "SGD": {"setting": (0.01, None)}}
    rows = rm.summarise(read_runs(tmp_path), [rm.GAUSSIAN], rm.FULL, {"gaussian": best})
    by_method = {r["method"]: r for r in rows}
    # each seed's mean over its logged steps, then the mean over seeds
    assert by_method["norm"]["clip_fraction_mean"] == pytest.approx((0.5 + 0.1) / 2)
    assert math.isnan(by_method["SGD"]["clip_fraction_mean"])  # a baseline clips nothing
    rm.write_table(rows, {"gaussian": [0.1, 1.0]}, rm.FULL.lrs, tmp_path / "table", "note")
    text = (tmp_path / "table.md").read_text()
    share = text[text.index("Share of the gradient norm") :]
    assert "| norm | 0.30 |" in share and "| SGD |" not in share


def test_regime_map_lambda_grid_reaches_below_every_measured_norm(tmp_path):
    import regime_map as rm

    norms = np.random.default_rng(0).lognormal(0.0, 0.5, size=400).astype(np.float32)
    make_run(
        tmp_path, "torch_sgd", 0, rm.FULL.measure_lr, None, 0.5, norms=norms, extra=GAUSSIAN_TOY
    )
    shapes = {"num_parameter_tensors": 4, "num_parameters": 100}
    grids, global_grid = rm.threshold_grids(read_runs(tmp_path), rm.GAUSSIAN, rm.FULL, shapes)
    q = np.quantile(norms, rm.LAMBDA_QUANTILES)
    expected = [rm.LAMBDA_BELOW * q[0], *q]
    assert global_grid == pytest.approx(expected, rel=1e-3)
    assert global_grid[0] < norms.min()  # the level where the rule always clips
    assert grids["norm"] == pytest.approx(expected, rel=1e-3)
    assert grids["layer_wise"] == pytest.approx([v / 2 for v in expected], rel=1e-3)  # λ/√T
    assert grids["coord_wise"] == pytest.approx([v / 10 for v in expected], rel=1e-3)  # λ/√N
    assert grids["AGC"] == list(rm.AGC_CLIP_FACTORS)


def test_tuned_methods_that_differ_in_one_setting_are_told_apart_by_its_value(tmp_path):
    """Two methods of one preset (AGC at two clip factors) keep their tuning runs apart: a run
    belongs to the method whose every dotted override its config holds, numbers compared as
    numbers; a run matching none is named by its preset."""
    import tuned_comparison as tc

    methods = {
        "Adam": ["optimizer=torch_adamw", "step_rule.weight_decay=0"],
        "AGC_0.001": ["optimizer=peer_agc", "optimizer.peer_args.clip_factor=1e-3"],
        "AGC_0.1": ["optimizer=peer_agc", "optimizer.peer_args.clip_factor=0.1"],
    }
    for name, preset, rule, extra in (
        ("a", "peer_agc", "sgd", {"peer_args": {"clip_factor": 0.001}}),
        ("b", "peer_agc", "sgd", {"peer_args": {"clip_factor": 0.1}}),
        ("c", "peer_agc", "sgd", {"peer_args": {"clip_factor": 0.01}}),  # neither factor
        ("d", "peer_agc", "sgd", {}),  # no factor in its config
        ("e", "torch_adamw", "adamw", {}),
    ):
        run = tmp_path / name / "seed0"
        run.mkdir(parents=True)
        cfg = {"seed": 0, "optimizer": {"name": preset, **extra},
               "step_rule": {"name": rule, "lr": 0.1, "weight_decay": 0.0 if name == "e" else 0.01}}  # fmt: skip
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        (run / "summary.json").write_text(json.dumps({"status": "completed", "final": {}}))
    of = tc.method_of(methods)
    named = {r.dir.parent.name: of(r) for r in read_runs(tmp_path)}
    assert named == {
        "a": "AGC_0.001",
        "b": "AGC_0.1",
        "c": "peer_agc",
        "d": "peer_agc",
        "e": "Adam",
    }
    assert tc.same_value({"x": {"y": "cls"}}, "x.y", "cls")
    assert not tc.same_value({"x": {"y": 0.5}}, "x.y", "mean")


def test_a_stage_skips_its_completed_runs_without_starting_train_py(tmp_path, monkeypatch, capsys):
    """A resumed stage starts ``train.py`` only for the runs it has not finished: a completed run
    is found where ``train.py`` put it; another seed, a sweep over two values and a longer budget
    (which train.py refuses with a message) are left to ``train.py``, and so is a call whose
    config sweeps values itself (the regime map's ``hydra.sweeper.params``)."""
    for key, value in train_env().items():
        monkeypatch.setenv(key, value)
    tiny = ["task.num_nodes=400", "trainer.max_steps=2", "trainer.eval_every=2"]
    done = (["optimizer=norm", "seed=0", *tiny], "done")
    sweeps.run_stage([done], tmp_path, 1, "reddit")
    (summary,) = tmp_path.glob("default/reddit/*/seed0/summary.json")
    assert json.loads(summary.read_text())["status"] == "completed"

    started = []
    monkeypatch.setattr(sweeps.subprocess, "call", lambda cmd, **kw: started.append(cmd) or 0)
    capsys.readouterr()
    others = [
        (["optimizer=norm", "seed=1", *tiny], "another_seed"),
        (["optimizer=norm", "seed=0,1", *tiny], "a_sweep"),
        (["optimizer=norm", "seed=0", *tiny[:2], "trainer.eval_every=4", "trainer.max_steps=4"],
         "longer"),
    ]  # fmt: skip
    sweeps.run_stage([done, *others], tmp_path, 1, "reddit")
    assert [cmd[cmd.index("-m") + 3 :] for cmd in started] == [o for o, _ in others]
    assert "  done: already completed" in capsys.readouterr().out.splitlines()

    import suite.trainer

    monkeypatch.setattr(suite.trainer, "completed_summary", lambda run_dir, cfg: {"steps": 2})
    assert sweeps.finished(["experiment=reddit", f"results_root={tmp_path}", "seed=5"])
    assert not sweeps.finished(["experiment=regime_map", f"results_root={tmp_path}", "seed=5"])


def test_stages_side_by_side_share_their_process_slots(tmp_path, monkeypatch):
    """Two comparisons' stages running at once, each with two workers, start no more than the two
    ``train.py`` processes their shared slots allow; every job is started once."""
    import threading
    import time

    lock, running, peak, started = threading.Lock(), [0], [0], []

    def fake_call(cmd, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            started.append(cmd[-1])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return 0

    monkeypatch.setattr(sweeps.subprocess, "call", fake_call)
    monkeypatch.setattr(sweeps, "finished", lambda overrides: False)
    slots = threading.BoundedSemaphore(2)
    stages = [[([f"seed={s}", f"label={task}"], f"{task}_{s}") for s in range(3)]
              for task in ("a", "b")]  # fmt: skip
    threads = [threading.Thread(target=sweeps.run_stage, args=(jobs, tmp_path, 2, "reddit"),
                                kwargs={"slots": slots}) for jobs in stages]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2 and sorted(started) == ["label=a"] * 3 + ["label=b"] * 3


def test_a_comparisons_config_error_stops_the_call_before_any_run(monkeypatch, tmp_path):
    """The comparisons run side by side for hours: a bad ``report_methods`` or optimizer preset in
    one of them is reported before any comparison starts a run."""
    import tuned_comparison as tc

    good = tc.spec
    stages = []
    monkeypatch.setattr(sweeps, "run_stage", lambda *a, **k: stages.append(a))
    for bad in ({"report_methods": ["Adamax"]}, {"methods": {"SGD": ["optimizer=torch_sgdd"]}}):
        monkeypatch.setattr(
            tc, "spec", lambda n, bad=bad: {**good(n), **bad} if n == "voc" else good(n)
        )
        with pytest.raises(SystemExit, match=r"Adamax|torch_sgdd"):
            tc.main(["--tasks", "reddit", "voc", "--root", str(tmp_path), "--out", str(tmp_path)])
    assert stages == []


def test_an_edge_choice_extends_its_axis_until_the_cap_and_stays_flagged(tmp_path):
    """The grid-extension loop: SGD's best lr lies above the grid, so each round adds the next
    half-decade value; after ``max_extensions`` rounds the choice still sits on the upper edge."""
    import tuned_comparison as tc

    c = tc.normalized({"task": "t", "metric": "mse", "lr_grid": [0.01, 0.03, 0.1],
                       "tune_seeds": [0, 1], "methods": {"SGD": ["optimizer=torch_sgd"]}})  # fmt: skip
    made = []

    def stage(title, jobs, stage_name):
        for overrides, _ in jobs:
            values = dict(o.split("=", 1) for o in overrides if "=" in o)
            lr, seed = float(values["step_rule.lr"]), int(values["seed"])
            if (lr, seed) not in made:
                made.append((lr, seed))
                mse = abs(math.log10(lr) - math.log10(3.0)) + 0.01 * seed  # best at lr 3
                make_run(tmp_path, f"SGD,{lr}", seed, lr, None, mse, extra={"label": "SGD"})
        return read_runs(tmp_path)

    axes = {"SGD": tc.method_axes(c, "SGD", {})}
    best, runs, axes, stuck = tc.tune(c, axes, stage, [], tc.method_of(c["methods"]))
    assert axes["SGD"][0].values == (0.01, 0.03, 0.1, 0.3, 1.0)
    assert best["SGD"]["setting"] == (1.0,) and best["SGD"]["edges"] == {"step_rule.lr": "high"}
    assert best["SGD"]["count"] == 5 and len(made) == 10 and len(runs) == 10
    assert stuck == {"SGD": {}}  # extensible, only capped: the flag "high" says so
