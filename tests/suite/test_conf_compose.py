"""Every file under ``conf/`` composes, and every optimizer preset builds on every step rule.

The lists come from the folders themselves, so a new task, preset, experiment, launcher or
comparison is covered the moment its file exists: the files of train.py's groups compose as
``<group>=<name>``; a comparison protocol (``conf/comparison/``, which train.py never composes)
loads through the pipeline's loader and every run it makes composes and builds its optimizer.
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
#: the files at the top level: the primary config, the clipping defaults the presets pull in,
#: and the README's evidence list (tests/suite/test_registry.py); none is a group
TOP_LEVEL = {"config.yaml", "clipped_optimizer.yaml", "evidence.yaml"}
#: the protocols of the pipeline, not a group of train.py (test_each_comparison_...)
COMPARISON = "comparison"
ALL_FILES = sorted(path.relative_to(CONF).as_posix() for path in CONF.rglob("*.yaml"))
GROUP_FILES = sorted(
    (path.parent.relative_to(CONF).as_posix(), path.stem)
    for path in CONF.rglob("*.yaml")
    if path.parent != CONF and path.parent.name != COMPARISON
)
COMPARISONS = sorted(path.stem for path in (CONF / COMPARISON).glob("*.yaml"))


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_every_config_group_is_found():
    groups = {group for group, _ in GROUP_FILES}
    expected = {"task", "optimizer", "step_rule", "scheduler", "logger", "experiment",
                "hydra/launcher"}  # fmt: skip
    assert expected <= groups, sorted(groups)
    assert COMPARISONS, "no comparison protocol found"


def test_every_file_under_conf_is_covered():
    """Each file is composed or loaded by one of these tests: a group file, a comparison or one
    of the top-level files, never a file nothing reads."""
    covered = {f"{g}/{n}.yaml" for g, n in GROUP_FILES} | TOP_LEVEL
    covered |= {f"{COMPARISON}/{n}.yaml" for n in COMPARISONS}
    assert set(ALL_FILES) == covered, sorted(set(ALL_FILES) ^ covered)


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


def _comparison_runs(name: str) -> list[list[str]]:
    """One ``train.py`` run per method of comparison ``name`` at the first value of each axis,
    as the pipeline writes its overrides (λ: any level)."""
    from torch_clip.suite import protocol, registry
    from torch_clip.suite.experiments import regime_map, sweeps, tuned_comparison

    if "maps" in registry.comparison(name):
        spec = regime_map.load_spec(quick=False)
        cell = regime_map.cells_of(spec)[0]
        runs = []
        for method in spec["methods"]:
            axes = regime_map.method_axes(spec, method, [0.5, 1.0])
            setting = protocol.settings(axes)[0]
            runs.append(regime_map.run_overrides(spec, cell, method, axes, setting, 0))
        return runs
    c = tuned_comparison.spec(name)
    units = sweeps.threshold_units()
    levels = {m: [0.5, 1.0] for m, o in c["methods"].items()
              if tuned_comparison.clipping_type(o) in units}  # fmt: skip
    runs = []
    for method in c["methods"]:
        axes = tuned_comparison.method_axes(c, method, levels)
        setting = protocol.settings(axes)[0]
        runs.append(tuned_comparison.run_overrides(c, method, setting, 0, [], axes))
    return runs


@pytest.mark.parametrize("name", COMPARISONS)
def test_each_comparison_loads_and_every_run_it_makes_composes_and_builds(name):
    experiment = OmegaConf.load(CONF / "experiment" / f"{name}.yaml")
    # the protocol lives in its own file; the experiment file holds what train.py uses
    assert "comparison" not in experiment and "map" not in experiment
    for overrides in _comparison_runs(name):
        cfg = _compose(f"experiment={name}", *overrides)
        HydraConfig.instance().set_config(cfg)
        try:
            OmegaConf.to_container(cfg, resolve=True)
        finally:
            HydraConfig.instance().cfg = None
        build_optimizer(cfg, torch.nn.Linear(3, 2).parameters(), seed=0)  # a valid combination


#: the keys the registry reads from the task files, which train.py ignores
REGISTRY_KEYS = ("smoke", "variant_of")


def _without(node, keys):
    """``node`` with ``keys`` dropped at every depth."""
    if isinstance(node, dict):
        return {k: _without(v, keys) for k, v in node.items() if k not in keys}
    return [_without(v, keys) for v in node] if isinstance(node, list) else node


@pytest.fixture(scope="module")
def layout_before_the_comparison_group(tmp_path_factory):
    """``conf/`` as it was before the protocols had a group of their own: each protocol back in
    its experiment file (``comparison:``, the regime map's ``map:``) and no ``REGISTRY_KEYS``
    anywhere in the task files."""
    import shutil

    import yaml

    old = tmp_path_factory.mktemp("before") / "conf"
    shutil.copytree(CONF, old)
    shutil.rmtree(old / COMPARISON)
    for name in COMPARISONS:
        block = yaml.safe_load((CONF / COMPARISON / f"{name}.yaml").read_text())
        experiment = old / "experiment" / f"{name}.yaml"
        key = "map" if "maps" in block else "comparison"
        experiment.write_text(experiment.read_text() + yaml.safe_dump({key: block}))
    for path in (old / "task").glob("*.yaml"):
        recipe = _without(yaml.safe_load(path.read_text()), REGISTRY_KEYS)
        path.write_text("# @package _global_\n" + yaml.safe_dump(recipe))
    return old


def _run_dir(conf, overrides: list[str]) -> str:
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        return str(cfg.hydra.sweep.subdir)
    finally:
        HydraConfig.instance().cfg = None


@pytest.mark.parametrize("name", COMPARISONS)
def test_moving_the_protocols_keeps_every_run_directory(name, layout_before_the_comparison_group):
    """A run's directory is its identity: the protocol's own group and the task files' smoke and
    variant_of keys are outside it, so every run already made is found where it was (and a run
    that copies its protocol in with ``+comparison=<name>`` lands there too)."""
    old = layout_before_the_comparison_group
    runs = _comparison_runs(name)
    for overrides in runs:
        before = _run_dir(old, [f"experiment={name}", *overrides])
        assert _run_dir(CONF, [f"experiment={name}", *overrides]) == before, overrides
    copied = [f"experiment={name}", f"+{COMPARISON}={name}", *runs[0]]
    assert _run_dir(CONF, copied) == _run_dir(old, [f"experiment={name}", *runs[0]])
