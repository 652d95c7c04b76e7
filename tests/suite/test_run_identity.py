"""A run's identity does not depend on the import path of its task: runs recorded under the
un-namespaced names (``tasks.toy.ToyRegressionTask``) keep their directory and stay finished."""

from __future__ import annotations

import json
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.suite_helpers import ROOT, composed_run_dir
from torch_clip.suite.naming import config_hash
from torch_clip.suite.trainer import completed_summary

OLD_TARGET = "tasks.toy.ToyRegressionTask"


def _composed(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["task=toy", *overrides])


def test_the_run_directory_depends_on_the_task_class_not_its_import_path(tmp_path: Path):
    new = _composed()
    assert new.task._target_ == "torch_clip.tasks.toy.ToyRegressionTask"
    assert config_hash(_composed(f"task._target_={OLD_TARGET}")) == config_hash(new)
    assert config_hash(_composed("task._target_=tests.fault_task.FaultyToyTask")) != config_hash(
        new
    )
    assert composed_run_dir(tmp_path, "task=toy").parent.name == f"norm-{config_hash(new)}"


def test_a_finished_run_of_the_old_task_path_is_found_finished(tmp_path: Path):
    cfg, old = _composed(), _composed(f"task._target_={OLD_TARGET}")
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(old))
    summary = {"status": "completed", "steps": cfg.trainer.max_steps}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert completed_summary(tmp_path, cfg) == summary
