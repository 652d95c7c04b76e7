"""The tuning protocol of ``suite/experiments/sweeps.py``: best-of-grid selection and the report interval."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import yaml
from scipy import stats

from tests.suite_helpers import ROOT, train_env
from torch_clip.suite.experiments import sweeps
from torch_clip.suite.run_reader import Run, read_runs


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
    from torch_clip.suite.experiments import tuned_comparison as tc

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
    from torch_clip.suite.experiments import tuned_comparison as tc

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
    from torch_clip.suite.experiments import tuned_comparison as tc

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
    old = tc.normalized({"lambda_quantile": 0.5, "lr_grid": [0.01],
                         "methods": {"SGD": ["optimizer=torch_sgd"]}})  # fmt: skip
    assert old["lambda_quantiles"] == [0.5] and old["knobs"] == {} and old["max_extensions"] == 2


def test_the_measurement_run_must_be_stable(tmp_path):
    from torch_clip.suite.experiments import tuned_comparison as tc

    make_run(tmp_path, "ok", 0, 0.003, None, 0.8, norms=[1.0, 2.0])
    make_run(tmp_path, "nan", 0, 0.003, None, 0.8, norms=[1.0, math.nan])
    runs = {r.dir.parent.name: r for r in read_runs(tmp_path)}
    assert tc.unstable(runs["ok"]) is None
    assert "not all finite" in tc.unstable(runs["nan"])
    with pytest.raises(SystemExit, match="cannot place λ: its gradient norms"):
        tc.measured_run("reddit", [runs["nan"]], lambda r: "measure_SGD", "measure_SGD", "log")
    # a folder of the earlier layout: SGD's unlabelled tuning run at measure_lr measured
    assert (
        tc.measured_run("reddit", [runs["ok"]], lambda r: "SGD", "measure_SGD", "log", 0.003)
        is runs["ok"]
    )
    with pytest.raises(SystemExit, match="no measurement run on seed 0"):
        tc.measured_run("reddit", [runs["ok"]], lambda r: "SGD", "measure_SGD", "log", 0.01)


def test_measure_lr_defaults_to_the_grids_smallest_and_must_be_on_the_grid():
    from torch_clip.suite.experiments import tuned_comparison as tc

    assert tc.measure_lr({"lr_grid": [0.1, 1e-3, 0.01]}, "voc") == 1e-3
    assert tc.measure_lr({"lr_grid": [1e-4, 1e-3], "measure_lr": 1e-3}, "voc") == 1e-3
    with pytest.raises(SystemExit, match=r"Invalid comparison.measure_lr: 0.002; expected one of"):
        tc.measure_lr({"lr_grid": [1e-4, 1e-3], "measure_lr": 0.002}, "voc")


def test_tail_over_training_takes_extra_overrides_and_halves_their_budget():
    from torch_clip.suite.experiments import tail_over_training as tot

    over = tot.task_overrides("toy", False, ["trainer.max_steps=40", "trainer.log_every=6"])
    assert over[0] == "task=toy" and over[-2:] == ["trainer.max_steps=40", "trainer.log_every=6"]
    # mid-run probe at half the budget, rounded down to a logging window: 20 -> 18
    assert tot.budget(over, quick=False) == (18, 40)


def test_tail_over_training_finds_each_seeds_run_and_refuses_two_recipes(tmp_path):
    from torch_clip.suite.experiments import tail_over_training as tot

    assert tot.run_dir_of(tmp_path, "voc", 1) is None  # before the first stage
    for seed in (0, 1):
        (tmp_path / "voc" / "norm-1a2b" / f"seed{seed}").mkdir(parents=True)
    assert tot.run_dir_of(tmp_path, "voc", 1) == tmp_path / "voc" / "norm-1a2b" / "seed1"
    (tmp_path / "voc" / "sgd-3c4d" / "seed1").mkdir(parents=True)  # a second recipe, same root
    assert tot.run_dir_of(tmp_path, "voc", 0) == tmp_path / "voc" / "norm-1a2b" / "seed0"
    with pytest.raises(SystemExit, match=r"holds 2 runs of seed 1; expected one"):
        tot.run_dir_of(tmp_path, "voc", 1)


def test_report_runs_of_a_choice_no_longer_made_are_moved_out_of_the_figures(tmp_path):
    from torch_clip.suite.experiments import tuned_comparison as tc

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


def test_a_call_redraws_only_its_own_tasks(tmp_path):
    from torch_clip.suite.experiments import tuned_comparison as tc

    (tmp_path / "voc").mkdir()  # runs of an earlier call: their committed figures stay
    command = tc.plot_command(tmp_path, tmp_path / "figs", ["reddit"])
    assert "--tasks=reddit" in command
    assert tc.plot_command(tmp_path, tmp_path, ["reddit", "cola"])[4] == "--tasks=reddit,cola"


def test_a_variant_of_a_task_keeps_its_runs_and_figures_apart_from_the_tasks_own(tmp_path):
    from torch_clip.suite.experiments import tuned_comparison as tc

    assert tc.spec("cola")["task"] == "cola"
    variant = tc.spec("cola_mpnet")
    assert variant["task"] == "cola"
    configured = yaml.safe_load((ROOT / "conf" / "comparison" / "cola_mpnet.yaml").read_text())
    assert variant["target"] == configured["target"]
    root, out = tmp_path / "runs", tmp_path / "figs"
    assert tc.folders("cola", "cola", root, out) == (root, out)
    assert tc.folders("cola_mpnet", "cola", root, out) == (root / "cola_mpnet", out / "cola_mpnet")
    command = tc.variant_plot_command(root / "cola_mpnet" / "report", out / "cola_mpnet", variant)
    assert command[1:4] == [str(root / "cola_mpnet" / "report"), "--out", str(out / "cola_mpnet")]
    assert command[4:] == ["--tasks=cola", f"--metric=cola={configured['metric']}",
                           f"--target=cola={variant['target']}", "--no-profile"]  # fmt: skip
    with pytest.raises(SystemExit):  # a variant is asked for by name; an unknown one is refused
        tc.main(["--tasks", "cola_large", "--figures-only"])


def test_the_per_unit_cola_variant_runs_colas_protocol_and_reports_only_the_rules_it_adds():
    from torch_clip.suite.experiments import tuned_comparison as tc

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
    from torch_clip.suite.experiments import tuned_comparison as tc

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

    import torch_clip.suite.naming  # noqa: F401  registers the run_dir resolver

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=cola_mpnet"])
    assert cfg.trainer.max_steps == 8551 // cfg.task.batch_size  # real CoLA's training set
    assert cfg.scheduler.num_warmup_steps == round(0.1 * cfg.trainer.max_steps)
    assert cfg.trainer.precision == "bf16-mixed" and cfg.task.pooling == "mean"
    assert cfg.task.model_name_or_path == "sentence-transformers/all-mpnet-base-v2"


def test_figures_get_the_configured_metric_and_target_of_every_task_they_show(tmp_path):
    """The runs' configs do not carry the protocol: the figures get each task's metric and target
    from conf/comparison/ (a comparison without a target, like lm's, gets its metric only)."""
    from torch_clip.suite.experiments import tuned_comparison as tc

    (tmp_path / "voc").mkdir()  # a task of an earlier call
    flags = tc.figure_flags(tmp_path, ["reddit", "lm"])

    def configured(task):
        return yaml.safe_load((ROOT / "conf" / "comparison" / f"{task}.yaml").read_text())

    shown = ("reddit", "voc")  # this call's task, then the README's task already drawn
    assert "target" not in configured("lm")
    assert flags == [
        *(f for t in shown
          for f in (f"--metric={t}={configured(t)['metric']}", f"--target={t}={configured(t)['target']}")),
        f"--metric=lm={configured('lm')['metric']}",
    ]  # fmt: skip


def test_tuned_methods_that_differ_in_one_setting_are_told_apart_by_its_value(tmp_path):
    """Two methods of one preset (AGC at two clip factors) keep their tuning runs apart: a run
    belongs to the method whose every dotted override its config holds, numbers compared as
    numbers; a run matching none is named by its preset."""
    from torch_clip.suite.experiments import tuned_comparison as tc

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


#: a launcher override: the stage's calls are ``train.py -m`` processes (Hydra's own launcher)
LAUNCHER = ("hydra/launcher=basic",)


def test_a_stage_skips_its_completed_runs_without_starting_train_py(tmp_path, monkeypatch, capsys):
    """With a launcher, a resumed stage starts ``train.py`` only for the runs it has not finished:
    a completed run (made here by the local workers) is found where ``train.py`` put it; another
    seed, a sweep over two values and a longer budget (which train.py refuses with a message) are
    left to ``train.py``, and so is a call whose config sweeps values itself (the regime map's
    ``hydra.sweeper.params``)."""
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
    sweeps.run_stage([done, *others], tmp_path, 1, "reddit", extra=LAUNCHER)
    assert [cmd[cmd.index("-m") + 3 : -1] for cmd in started] == [o for o, _ in others]
    assert "  done: already completed" in capsys.readouterr().out.splitlines()

    from torch_clip.suite import trainer

    monkeypatch.setattr(trainer, "completed_summary", lambda run_dir, cfg: {"steps": 2})
    assert sweeps.finished(["experiment=reddit", f"results_root={tmp_path}", "seed=5"])
    # values to sweep on the command line (as the regime map's batched calls pass): train.py decides
    assert not sweeps.finished(["experiment=regime_map", f"results_root={tmp_path}", "seed=5,6"])


def test_stages_side_by_side_share_their_process_slots(tmp_path, monkeypatch):
    """Two comparisons' stages running at once through a launcher, each with two workers, start
    no more than the two ``train.py`` processes their shared slots allow; every job is started
    once."""
    import threading
    import time

    lock, running, peak, started = threading.Lock(), [0], [0], []

    def fake_call(cmd, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            started.append(cmd[-2])  # the label, before the launcher override
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
                                kwargs={"slots": slots, "extra": LAUNCHER})
               for jobs in stages]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2 and sorted(started) == ["label=a"] * 3 + ["label=b"] * 3


def test_a_comparisons_config_error_stops_the_call_before_any_run(monkeypatch, tmp_path):
    """The comparisons run side by side for hours: a bad ``report_methods`` or optimizer preset in
    one of them is reported before any comparison starts a run."""
    from torch_clip.suite.experiments import tuned_comparison as tc

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
    from torch_clip.suite.experiments import tuned_comparison as tc

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


def test_the_protocol_table_pairs_each_method_with_the_best_baseline_on_the_same_seeds(tmp_path):
    from scipy import stats

    from torch_clip.suite.experiments import protocol_table
    from torch_clip.suite.experiments import tuned_comparison as tc

    c = tc.normalized({"task": "reddit", "metric": "accuracy", "lr_grid": [0.01, 0.03, 0.1],
                       "tune_seeds": [0, 6], "report_seeds": [1, 2, 3, 4, 5],
                       "methods": {"SGD": ["optimizer=torch_sgd"],
                                   "Adam": ["optimizer=torch_adamw"],
                                   "AGC": ["optimizer=peer_agc"]}})  # fmt: skip
    values = {"SGD": [0.80, 0.81, 0.79, 0.80, 0.82], "Adam": [0.84, 0.83, 0.85, 0.84, 0.83],
              "AGC": [0.87, 0.86, 0.88, 0.86, 0.87]}  # fmt: skip
    for name, vs in values.items():
        for seed, v in zip(c["report_seeds"], vs):
            make_run(tmp_path, f"{name},x", seed, 0.03, None, v, metric="accuracy",
                     extra={"label": name})  # fmt: skip
    axes = {n: tc.method_axes(c, n, {}) for n in c["methods"]}
    best = {n: {"setting": (0.03,), "count": 3, "edges": {"step_rule.lr": ""}} for n in axes}
    result = {"task": "reddit", "spec": c, "shown": list(c["methods"]), "best": best,
              "axes": axes, "report": read_runs(tmp_path), "of": tc.method_of(c["methods"]),
              "out": tmp_path / "figs"}  # fmt: skip
    rows = {r["method"]: r for r in protocol_table.protocol_rows(result, tc.clips)}
    # AGC clips (a peer method without a clip_core clipping type): the baselines are SGD and
    # Adam, and Adam is the better
    assert not tc.clips(c["methods"]["Adam"]) and tc.clips(c["methods"]["AGC"])
    assert {r["baseline"] for r in rows.values()} == {"Adam"}
    agc = rows["AGC"]
    d = np.subtract(values["AGC"], values["Adam"])
    assert agc["diff_mean"] == pytest.approx(d.mean())
    assert agc["p_t"] == pytest.approx(stats.ttest_rel(values["AGC"], values["Adam"]).pvalue)
    assert agc["holds"] == "holds: better" and rows["SGD"]["holds"] == "holds: worse"
    assert rows["Adam"]["holds"] == "" and agc["settings"] == 3
    path = protocol_table.write_protocol_table(result, "python x", tc.clips)
    text = path.read_text()
    assert "| AGC | 3 | 0.03 |" in text and "holds: better" in text and "| baseline |" in text


def test_the_aggregate_over_tasks_normalises_each_task_to_its_baseline_and_best(tmp_path):
    from scipy import stats

    from torch_clip.suite.experiments import protocol_table

    tasks = {  # task -> metric, {method: per-seed values}; Adam is each task's baseline
        "reddit": ("accuracy", {"Adam": [0.84, 0.83, 0.85], "AGC": [0.86, 0.88, 0.87],
                                "only_here": [0.9, 0.9, 0.9]}),
        "lm": ("loss", {"Adam": [2.0, 2.2, 2.1], "AGC": [1.9, 2.0, 1.8]}),
    }  # fmt: skip
    for task, (metric, values) in tasks.items():
        rows = [{"method": m, "baseline": "Adam", "metric": metric,
                 "values": " ".join(f"{s}:{v}" for s, v in enumerate(vs, start=1))}
                for m, vs in values.items()]  # fmt: skip
        sweeps.write_csv(tmp_path / f"{task}_protocol.csv", rows)
    scores, used = protocol_table.aggregate_scores(
        {t: tmp_path / f"{t}_protocol.csv" for t in tasks}
    )
    assert sorted(used) == ["lm", "reddit"] and sorted(scores) == ["AGC", "Adam"]
    col = used.index("reddit")
    # reddit: Adam's median 0.84 -> 0, the best median (AGC, 0.87) -> 1
    assert scores["AGC"][:, col] == pytest.approx((np.array([0.86, 0.88, 0.87]) - 0.84) / 0.03)
    # lm (a loss): Adam's median 2.1 -> 0, AGC's 1.9 -> 1
    assert scores["Adam"][:, used.index("lm")] == pytest.approx(
        (np.array([2.0, 2.2, 2.1]) - 2.1) / -0.2
    )
    path = protocol_table.write_aggregate(tmp_path, "python x")
    text = path.read_text()
    iqm = stats.trim_mean(scores["AGC"].ravel(), 0.25)
    assert f"| AGC | {iqm:.3f} |" in text


def test_methods_may_name_their_own_lr_grid_family_and_keep_a_fixed_level(tmp_path, monkeypatch):
    """experiment=lm's needs: an SGD and an AdamW family of learning rates, a method that keeps
    its own λ (AdamW + norm at 1.0), and --tasks taking any experiment with a comparison block."""
    from torch_clip.suite.experiments import tuned_comparison as tc

    c = tc.normalized({
        "task": "lm", "lr_grids": {"sgd": [0.03, 0.1, 0.3], "adamw": [1e-4, 3e-4, 1e-3]},
        "methods": {
            "SGD": {"overrides": ["optimizer=torch_sgd"], "grid": "sgd"},
            "AdamW": {"overrides": ["optimizer=torch_adamw"], "grid": "adamw"},
            "AdamW+norm@1": {"overrides": ["optimizer=norm", "step_rule=adamw",
                                           "optimizer.clipping_level=1.0"],
                             "grid": "adamw", "fixed_level": True},
            "AdamW+norm": {"overrides": ["optimizer=norm", "step_rule=adamw"], "grid": "adamw"},
        },
    })  # fmt: skip
    assert c["lr_grid"] == [0.03, 0.1, 0.3] and tc.measure_lr(c, "lm") == 0.03  # SGD's grid
    levels = {"AdamW+norm@1": [0.5, 1, 2], "AdamW+norm": [0.5, 1, 2]}
    fixed = tc.method_axes(c, "AdamW+norm@1", levels)
    assert [a.key for a in fixed] == ["step_rule.lr"] and fixed[0].values == (1e-4, 3e-4, 1e-3)
    assert [a.key for a in tc.method_axes(c, "AdamW+norm", levels)][1] == "optimizer.clipping_level"
    with pytest.raises(SystemExit, match="Invalid grid of X: 'adam'"):
        tc.normalized({"lr_grids": {"adamw": [1e-3]}, "methods": {"X": {"grid": "adam"}}})
    quick = tc.normalized({**c, "methods": {n: c["methods"][n] for n in c["methods"]}})
    tc.as_run(quick, quick=True, extra=[])
    assert quick["knobs"] == {"AdamW+norm@1": "none"}  # --quick keeps the fixed level
    # the LM recipe keeps λ = 1.0 and is tuned on AdamW's β₂ instead; --quick drops the knob,
    # never turning the fixed level into a tuned λ
    beta2 = {"key": "step_rule.betas.1", "values": [0.95, 0.99, 0.999], "scale": "log1m",
             "bounds": [0, 1], "override": "step_rule.betas=[0.9,{value}]"}  # fmt: skip
    recipe = {"overrides": ["optimizer=norm", "step_rule=adamw", "optimizer.clipping_level=1.0"],
              "grid": "adamw", "fixed_level": True, "knob": beta2}  # fmt: skip
    tuned = tc.normalized({"task": "lm", "lr_grids": c["lr_grids"],
                           "methods": {"SGD": {"overrides": ["optimizer=torch_sgd"], "grid": "sgd"},
                                       "recipe": recipe}})  # fmt: skip
    axes = tc.method_axes(tuned, "recipe", {"recipe": [0.5, 1, 2]})
    assert [(a.key, a.values) for a in axes[1:]] == [("step_rule.betas.1", (0.95, 0.99, 0.999))]
    over = tc.run_overrides(tuned, "recipe", (1e-3, 0.95), 0, [], axes)
    assert "optimizer.clipping_level=1.0" in over and "step_rule.betas=[0.9,0.95]" in over
    assert not any(o.startswith("optimizer.clipping_level=0") for o in over)
    tc.as_run(tuned, quick=True, extra=[])
    assert tuned["knobs"] == {"recipe": "none"}
    assert [a.key for a in tc.method_axes(tuned, "recipe", {"recipe": [0.5, 1, 2]})] == [
        "step_rule.lr"
    ]
    # any file of conf/comparison/ is a comparison --tasks accepts, but the regime map's cells
    with pytest.raises(SystemExit):
        tc.main(["--tasks", "no_such_experiment", "--figures-only"])
    with pytest.raises(SystemExit, match="regime map"):
        tc.spec("regime_map")


def test_heavy_tail_figure_draws_the_unclipped_run_that_placed_the_lambda_grid(tmp_path):
    # heavy_tail.png shows the measurement run (label measure_SGD, seed 0) of each task's
    # comparison or of a variant of it; only --quick, which measures on SGD's first report run,
    # falls back to that one
    from torch_clip.suite.experiments import reproduce_readme as rr

    measure = {"label": "measure_SGD"}
    make_run(tmp_path / "report" / "voc", "SGD", 1, 0.1, None, 0.3)
    assert [(r.method, r.seed) for r in rr.measuring_run(tmp_path, "voc")] == [("SGD", 1)]
    make_run(tmp_path / "tune" / "voc", "SGD", 6, 0.001, None, 0.2, extra=measure)
    make_run(tmp_path / "tune" / "voc" / "m", "SGD", 0, 0.001, None, 0.2, extra=measure)
    (run,) = rr.measuring_run(tmp_path, "voc")
    assert run.dir == tmp_path / "tune" / "voc" / "m" / "SGD" / "seed0"
    make_run(tmp_path / "reddit_protocol" / "tune" / "reddit", "SGD", 0, 0.003, None, 0.5,
             extra=measure)  # fmt: skip
    (run,) = rr.measuring_run(tmp_path, "reddit")
    assert run.dir.is_relative_to(tmp_path / "reddit_protocol")
    assert rr.measuring_run(tmp_path, "cola") == []


def test_measure_only_runs_the_measurement_and_nothing_else(tmp_path, capsys):
    from torch_clip.suite import registry
    from torch_clip.suite.experiments import tuned_comparison as tc
    from torch_clip.suite.run_reader import discover_runs

    shrink = [*registry.smoke("reddit"), "trainer.max_steps=12", "trainer.eval_every=12"]
    out = tmp_path / "figures"
    argv = ["--measure-only", "--tasks", "reddit", "--root", str(tmp_path), "--out", str(out)]
    assert tc.main([*argv, "--", *shrink]) == 0
    (run,) = discover_runs([tmp_path])
    assert run.config["label"] == "measure_SGD" and run.seed == 0
    assert run.dir.is_relative_to(tmp_path / "tune" / "reddit")
    assert run.lr == registry.comparison("reddit")["measure_lr"]
    assert not out.exists()  # no tables, no figures
    norms = run.grad_norms()
    want = [float(f"{q:.4g}") for q in np.quantile(norms, [0.1, 0.5, 0.9])]
    assert f"norm {want}" in capsys.readouterr().out  # λ's grid: the measured quantiles
