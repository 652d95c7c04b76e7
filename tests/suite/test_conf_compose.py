"""Every file under ``conf/`` composes, and every optimizer preset builds on every step rule.

The lists come from the folders themselves, so a new task, preset, experiment or launcher is
covered the moment its file exists.
"""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import torch_clip.suite.naming  # noqa: F401  (registers the run_dir resolver of the run directory)
from tests.suite_helpers import ROOT
from torch_clip.suite.optim import build_optimizer, build_scheduler

CONF = ROOT / "conf"
# conf/clipped_optimizer.yaml and conf/config.yaml sit at the top level on purpose (not groups)
GROUP_FILES = sorted(
    (path.parent.relative_to(CONF).as_posix(), path.stem)
    for path in CONF.rglob("*.yaml")
    if path.parent != CONF
)


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_every_config_group_is_found():
    groups = {group for group, _ in GROUP_FILES}
    expected = {"task", "optimizer", "step_rule", "scheduler", "logger", "experiment"}
    assert expected <= groups, sorted(groups)


@pytest.mark.parametrize(("group", "name"), GROUP_FILES, ids=[f"{g}={n}" for g, n in GROUP_FILES])
def test_each_config_file_composes_and_resolves(group, name):
    overrides = [f"{group}={name}"]
    if group != "task" and group != "experiment":
        overrides.append("task=toy")  # the default task (CoLA) is fine too, but slower to build
    cfg = _compose(*overrides)
    HydraConfig.instance().set_config(cfg)  # the ${hydra:...} parts of the run directory
    try:
        OmegaConf.to_container(cfg, resolve=True)  # raises on a broken interpolation
        assert cfg.hydra.runtime.choices[group] == name
    finally:
        HydraConfig.instance().cfg = None


OPTIMIZERS = sorted(path.stem for path in (CONF / "optimizer").glob("*.yaml"))
STEP_RULES = sorted(path.stem for path in (CONF / "step_rule").glob("*.yaml"))
SCHEDULERS = sorted(path.stem for path in (CONF / "scheduler").glob("*.yaml"))


def _drives_torch(optimizer: str) -> bool:
    """Presets that run torch's own SGD/AdamW (bare or wrapped by a peer) have no SSTM."""
    return optimizer.startswith(("torch_", "peer_"))


@pytest.mark.parametrize("step_rule", STEP_RULES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_optimizer_preset_builds_and_steps_on_each_step_rule(optimizer, step_rule):
    cfg = _compose("task=toy", f"optimizer={optimizer}", f"step_rule={step_rule}")
    model = torch.nn.Linear(3, 2)
    try:
        opt = build_optimizer(cfg, model.parameters(), seed=0)
    except ValueError as err:  # a contradictory combination is one clear error, never a crash
        assert _drives_torch(optimizer), f"{optimizer} × {step_rule} refused: {err}"
        assert f"optimizer={optimizer}" in str(err) and f"step_rule={step_rule}" in str(err)
        return
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(4, 3)).square().mean().backward()
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters())), (
        f"{optimizer} × {step_rule} did not move the parameters"
    )


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_each_scheduler_builds(scheduler):
    cfg = _compose("task=toy", f"scheduler={scheduler}")
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    build_scheduler(cfg, opt)
