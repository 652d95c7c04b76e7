"""``suite/run_reader.py``: a run is what its own files say, whatever its directory is called."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from torch_clip.suite.records import TornRecordError, read_json, read_jsonl
from torch_clip.suite.run_reader import discover_runs, load_run, read_runs


def write_run(run_dir, *, summary=None, config=None):
    run_dir.mkdir(parents=True)
    if config is not None:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def config(lr, level=None, preset="norm", seed=0):
    optimizer = {"name": preset} | ({} if level is None else {"clipping_level": level})
    return {"seed": seed, "step_rule": {"lr": lr}, "optimizer": optimizer}


def test_method_is_the_summary_s_display_name_and_the_hash_never_shows(tmp_path):
    hashed = write_run(
        tmp_path / "toy" / "norm,step_rule.lr=0.01-1a2b3c4d" / "seed3",
        summary={"status": "completed", "method": "norm,step_rule.lr=0.01", "task": "toy",
                 "seed": 3},
        config=config(0.01, seed=3),
    )  # fmt: skip
    labelled = write_run(
        tmp_path / "toy" / "SGD-0badc0de" / "seed0",
        summary={"status": "completed", "method": "SGD", "task": "toy", "seed": 0},
        config=config(0.1, preset="torch_sgd"),
    )
    run = load_run(hashed)
    assert (run.task, run.method, run.seed) == ("toy", "norm,step_rule.lr=0.01", 3)
    assert run.name == "toy/norm,step_rule.lr=0.01/seed3"
    assert load_run(labelled).method == "SGD"
    # two directories of one display name are one method to the plots
    write_run(
        tmp_path / "toy" / "SGD-12345678" / "seed1",
        summary={"status": "completed", "method": "SGD", "task": "toy", "seed": 1},
        config=config(0.1, preset="torch_sgd", seed=1),
    )
    assert [(r.method, r.seed) for r in discover_runs([tmp_path])] == [
        ("SGD", 0), ("SGD", 1), ("norm,step_rule.lr=0.01", 3)
    ]  # fmt: skip


def test_an_old_record_or_a_run_still_starting_falls_back_to_its_path(tmp_path):
    old = write_run(
        tmp_path / "cola" / "norm,step_rule.lr=0.1" / "seed2",
        summary={"status": "completed"},  # written before summaries named the method
        config=config(0.1),
    )
    starting = write_run(tmp_path / "voc" / "auto" / "seed5", config=config(0.3, preset="auto"))
    run = load_run(old)
    assert (run.task, run.method, run.seed) == ("cola", "norm,step_rule.lr=0.1", 2)
    run = load_run(starting)
    assert (run.task, run.method, run.seed, run.status) == ("voc", "auto", 5, "no summary.json")
    assert not run.completed


def test_read_runs_keeps_completed_runs_and_reads_their_settings_from_the_config(tmp_path):
    # the directory names lie on purpose: the settings must come from config.yaml
    write_run(
        tmp_path / "t" / "norm,step_rule.lr=9-aaaaaaaa" / "seed0",
        summary={"status": "completed", "final": {"val_mse": 0.25}, "seed": 0},
        config=config(0.01, level=2.5),
    )
    write_run(
        tmp_path / "t" / "diverged" / "seed1",
        summary={"status": "completed", "final": {"val_mse": "inf"}, "seed": 1},
        config=config(0.03, preset="torch_sgd", seed=1),
    )
    write_run(tmp_path / "t" / "failed" / "seed0", summary={"status": "failed"}, config=config(1))
    write_run(tmp_path / "t" / "no_config" / "seed0", summary={"status": "completed"})
    runs = read_runs(tmp_path)
    assert [r.dir.parent.name for r in runs] == ["diverged", "norm,step_rule.lr=9-aaaaaaaa"]
    diverged, norm = runs
    assert (norm.lr, norm.clipping_level, norm.preset, norm.seed) == (0.01, 2.5, "norm", 0)
    assert norm.final("mse") == 0.25
    assert (diverged.preset, diverged.clipping_level) == ("torch_sgd", None)
    assert np.isnan(diverged.final("mse"))  # a diverged run scores NaN, never +inf or a value
    assert read_runs(tmp_path / "not_yet") == []


def test_series_keeps_the_last_row_of_a_step_and_drops_non_finite_values(tmp_path):
    run_dir = write_run(tmp_path / "t" / "m" / "seed0", summary={"status": "completed"})
    rows = [
        {"step": 10, "split": "train", "train_loss": 2.0},
        {"step": 20, "split": "train", "train_loss": "inf"},
        {"step": 10, "split": "train", "train_loss": 1.5},  # the resumed run logged step 10 again
        {"step": 30, "split": "val", "train_loss": 9.0},
        {"step": 30, "split": "train", "train_loss": 1.0},
    ]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 40, "spl'  # torn by a kill
    (run_dir / "metrics.jsonl").write_text(text)
    steps, values = load_run(run_dir).series("train_loss", "train")
    assert steps.tolist() == [10, 30] and values.tolist() == [1.5, 1.0]


@pytest.mark.parametrize("text", ["[1, 2]", '{"status": "compl', "\xff\xfe"])
def test_read_json_returns_none_for_anything_but_an_object(tmp_path, text):
    path = tmp_path / "summary.json"
    path.write_bytes(text.encode("latin-1"))
    assert read_json(path) is None
    assert read_json(tmp_path / "missing.json") is None


def test_read_jsonl_drops_a_torn_last_line_and_skips_non_objects(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"a": 1}\n\n[2]\n{"b": 2}\n{"c": \n')
    assert read_jsonl(path) == [{"a": 1}, {"b": 2}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_read_jsonl_names_a_torn_line_with_rows_after_it(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"a": 1}\n\n{"c": \n{"d": 4}\n')
    with pytest.raises(TornRecordError, match=r"line 3 is not a JSON row .* 1 rows follow it"):
        read_jsonl(path)
