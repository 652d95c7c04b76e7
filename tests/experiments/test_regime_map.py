"""The regime map's driver: its YAML spec, the fair protocol's equal budgets, and the batched
runs (one run's overrides written as an ``rm_job`` config must compose to the same run)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.suite_helpers import ROOT
from torch_clip.suite import protocol


@pytest.fixture
def regime_map():
    from torch_clip.suite.experiments import regime_map

    return regime_map


def test_every_method_of_a_map_gets_the_same_number_of_settings(regime_map):
    spec = regime_map.load_spec(quick=False)
    for name, m in spec["maps"].items():
        spaces = {n: regime_map.method_axes(spec, n, [1.0, 2.0, 3.0]) for n in m["methods"]}
        assert protocol.unequal_counts(spaces) == {}, name
        assert {protocol.settings_count(a) for a in spaces.values()} == {15}
    cells = regime_map.cells_of(spec)
    assert {(c.map, c.problem) for c in cells} == {
        ("gradient", "least squares"), ("gradient", "MLP"), ("labels", "MLP")
    }  # fmt: skip


def _compose(overrides):
    import torch_clip.suite.naming  # noqa: F401  (the run_dir resolver)

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=regime_map", *overrides])
    return OmegaConf.to_container(cfg, resolve=False)


@pytest.mark.parametrize(
    ("method", "setting"),
    [("Adam", (0.001, 0.999)), ("R-clipped SSTM", (1e-5, 0.1)), ("Huber SGD", (0.01, 0.5))],
)
def test_a_batched_run_composes_to_the_run_its_overrides_make(
    regime_map, tmp_path, method, setting
):
    spec = regime_map.load_spec(quick=False)
    cell = next(c for c in regime_map.cells_of(spec) if c.map == "labels")
    axes = regime_map.method_axes(spec, method, None)
    over = regime_map.run_overrides(spec, cell, method, axes, setting, seed=3)
    [(job, _)] = regime_map.calls([over], tmp_path, workers=2)
    direct, batched = _compose(over), _compose(job)
    for key in ("task", "optimizer", "step_rule", "scheduler", "label", "seed", "trainer"):
        assert batched[key] == direct[key], key
    assert direct["seed"] == 3 and direct["label"] == regime_map.slug(method)
    assert direct["task"]["noise_on"] == "labels" and direct["task"]["noise_alpha"] == cell.alpha
    if method == "Adam":
        assert direct["step_rule"]["betas"] == [0.9, 0.999]
    if method == "R-clipped SSTM":
        assert direct["step_rule"]["restart_every"] == 50
        assert direct["optimizer"]["clipping_level"] == 0.1


def test_unknown_maps_and_methods_are_refused(regime_map):
    with pytest.raises(
        SystemExit, match=r"Invalid --maps \['grad'\]; expected some of gradient, labels"
    ):
        regime_map.load_spec(quick=False, maps=["grad"])


def test_the_randomized_pairs_come_from_the_protocol_and_name_its_methods(regime_map, monkeypatch):
    from torch_clip.suite.reports import regime_map_report

    spec = regime_map.load_spec(quick=False)
    assert spec["randomized"] == {"SGD+linear_stoch_norm": "SGD+norm"}
    real = regime_map.registry.comparison
    renamed = {**real("regime_map"), "randomized": {"SGD+rand_norm": "SGD+norm"}}
    monkeypatch.setattr(regime_map.registry, "comparison", lambda name: renamed)
    with pytest.raises(SystemExit, match=r"Invalid methods \['SGD\+rand_norm'\] of the maps or"):
        regime_map.load_spec(quick=False)
    # seeds 1..5 at 1..5: IQR 4 - 2 = 2, sample std sqrt(2.5) = 1.58; the deterministic rule 0.5
    # above on every seed: a paired difference of -0.5
    cell = {"problem": "MLP", "alpha": 1.5}
    rows = [{**cell, "method": "R", "by_seed": {s: float(s) for s in range(1, 6)}},
            {**cell, "method": "D", "by_seed": {s: s + 0.5 for s in range(1, 6)}}]  # fmt: skip
    lines = regime_map_report.stochastic_table(rows, {"R": "D"}, "note")
    body = [line for line in lines if line.startswith("| MLP")]
    assert body[0].startswith("| MLP | 1.5 | D | 2 | 1.58 | — |")
    assert body[1].startswith("| MLP | 1.5 | R | 2 | 1.58 | -0.5 [")
    assert regime_map_report.stochastic_table(rows, {}, "note")[-2:] == ["note", ""]


class _ResumedMap:
    """A map whose every run is already on disk (a resumed map): the final metric falls with
    the lr, so the lowest lr is always chosen and each round extends the lr grid downwards."""

    def __init__(self, max_extensions: int) -> None:
        self.spec = {"tune_seeds": [0, 6], "max_extensions": max_extensions}
        self.stages: list[str] = []

    def stage(self, title, runs):
        self.stages.append(title)

    def todo(self, cell, name, axes, seeds, settings=None):
        return []

    def results(self, cell, name, axes, seeds):
        return {s: {seed: s[0] for seed in seeds} for s in protocol.settings(axes)}


def test_a_resumed_map_extends_its_grids_as_often_as_a_fresh_one(regime_map):
    """The extension rounds depend on the choices, not on whether their runs still had to be
    made: a map whose runs all exist re-derives the same grids (it stopped after one round)."""
    m = _ResumedMap(max_extensions=2)
    axes = {("cell", "SGD"): [protocol.Axis("step_rule.lr", (1e-3, 1e-2, 1e-1))]}
    best = regime_map.tune(m, axes)
    (lr,) = axes["cell", "SGD"]
    assert len(lr.values) == 3 + 2
    assert best["cell", "SGD"]["setting"] == (min(lr.values),)
    assert best["cell", "SGD"]["edges"] == {"step_rule.lr": "low"}
