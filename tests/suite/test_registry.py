"""One source for each list: the tasks, their smoke overrides, the comparisons, the README's
evidence (``torch_clip.suite.registry``), the clipping types' units (clip_core's rule table) and
the peers (``torch_clip.suite.peers.PEERS``); each test fails when a list drifts from its source.
"""

from __future__ import annotations

import ast
import importlib.metadata
import math

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import clip_core
from tests.suite_helpers import ROOT
from torch_clip.suite import registry
from torch_clip.suite.experiments import sweeps
from torch_clip.suite.peers import PEERS

CONF = ROOT / "conf"
#: where a copy of a list would hide: the package's sources, the entry points and the tests
SOURCES = [*(ROOT / "suite").rglob("*.py"), *(ROOT / "scripts").rglob("*.py"),
           *(ROOT / "tests").rglob("*.py"), ROOT / "train.py"]  # fmt: skip


def _task_classes() -> set[str]:
    """``module.Class`` of every concrete task in ``tasks/`` (a subclass of ``Task`` or of one of
    its subclasses), read from the sources, not from the registry."""
    bases, found = {"Task"}, {}
    trees = {
        path.stem: ast.parse(path.read_text()) for path in sorted((ROOT / "tasks").glob("*.py"))
    }
    for _ in range(3):  # Task <- ImageTask <- ImageNetTask: a few rounds reach every level
        for module, tree in trees.items():
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.ClassDef)
                    and {getattr(b, "id", None) for b in node.bases} & bases
                ):
                    bases.add(node.name)
                    found[node.name] = f"{module}.{node.name}"
    abstract = {"ImageTask"}  # the shared base of the two vision tasks, not a task of its own
    return {path for name, path in found.items() if name not in abstract}


def test_every_task_class_has_one_task_file_and_each_variant_its_tasks_class():
    files = {name: yaml.safe_load((CONF / "task" / f"{name}.yaml").read_text())
             for name in (p.stem for p in (CONF / "task").glob("*.yaml"))}  # fmt: skip
    target = {
        name: f["task"]["_target_"].removeprefix("torch_clip.tasks.") for name, f in files.items()
    }
    tasks = registry.tasks()
    assert sorted(target[t] for t in tasks) == sorted(_task_classes())  # one file per class
    variants = registry.task_variants()
    assert set(tasks) | set(variants) == set(files) and not set(tasks) & set(variants)
    for variant, task in variants.items():
        assert target[variant] == target[task], variant


def _name_lists(path) -> list[tuple[int, list[str]]]:
    """Literal tuples, lists, sets and dict keys of ``path`` naming three or more tasks."""
    names = set(registry.tasks())
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        items = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
        if not isinstance(node, ast.Tuple | ast.List | ast.Set | ast.Dict) or not items:
            continue
        values = [
            e.value for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str)
        ]
        if len(set(values) & names) >= 3:
            found.append((node.lineno, values))
    return found


def test_no_source_keeps_its_own_list_of_tasks():
    """A hand-kept tuple of tasks (or a dict keyed by them) drifts from conf/task/ the day a task
    is added; every list of them comes from the registry or from conf/evidence.yaml."""
    copies = {str(p.relative_to(ROOT)): found for p in SOURCES if (found := _name_lists(p))}
    assert copies == {}


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("task", registry.tasks())
def test_each_tasks_smoke_overrides_shrink_keys_of_its_recipe(task):
    """Every smoke override sets a key the recipe has to a smaller number (null: unbounded), and
    the --quick pipelines shrink the task by exactly these."""
    recipe = _compose(f"task={task}")
    for override in registry.smoke(task):
        key, value = override.split("=", 1)
        assert key.startswith("task.") and key.removeprefix("task.") in recipe.task, override
        held = OmegaConf.select(recipe, key)
        assert held is None or float(value) < float(held), (override, held)
    assert sweeps.quick_task_overrides(task, True, trainer=False) == registry.smoke(task)


def test_the_registry_refuses_unknown_names_naming_what_exists():
    with pytest.raises(ValueError, match=r"Invalid task: 'colaa'; expected one of .*cola"):
        registry.smoke("colaa")
    with pytest.raises(ValueError, match=r"Invalid comparison: 'redit'; expected one of .*reddit"):
        registry.comparison("redit")


def test_the_readme_evidence_names_task_comparisons_and_variants_of_them():
    evidence = registry.evidence()
    for task in evidence["tasks"]:  # a task's own comparison is named by its task
        assert task in registry.tasks() and registry.comparison(task).get("task", task) == task
    for variant in evidence["variants"]:
        assert registry.comparison(variant)["task"] in evidence["tasks"], variant
    for name in registry.comparisons():  # every comparison has the experiment its runs use
        assert (CONF / "experiment" / f"{name}.yaml").is_file(), name


def _update(clipping_type: str, level: float) -> list[torch.Tensor]:
    """One step of clipped SGD (lr 1, no momentum) from zero weights on a gradient far above
    ``level`` in every unit: the update is the clipped gradient."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros(shape)) for shape in ((4, 3), (5,))]
    for p in params:
        p.grad = 1e3 * (1 + torch.rand(p.shape, generator=gen))
    opt = clip_core.ClippedSGD(params, lr=1.0, clipping_type=clipping_type, clipping_level=level)
    opt.step()
    return [-p.detach().double() for p in params]


def _bounded_unit(update: list[torch.Tensor], level: float) -> str | None:
    """The unit whose size the update holds at ``level``, measured here (None: no unit is)."""
    flat = torch.cat([u.flatten() for u in update])
    if torch.allclose(flat.abs(), torch.full_like(flat, level), rtol=1e-5):
        return "coordinate"
    if all(math.isclose(float(u.norm()), level, rel_tol=1e-5) for u in update):
        return "tensor"
    return "global" if math.isclose(float(flat.norm()), level, rel_tol=1e-5) else None


@pytest.mark.parametrize("clipping_type", clip_core.CLIPPING_TYPES)
def test_the_threshold_units_are_what_each_clipping_type_bounds(clipping_type):
    """sweeps' units of λ (and the benchmark's groups) come from clip_core's rule table: a type
    has a unit exactly when a fixed level bounds that unit of its update."""
    level = 0.5
    measured = _bounded_unit(_update(clipping_type, level), level)
    assert sweeps.threshold_units().get(clipping_type) == measured
    from torch_clip.suite.bench import contenders

    local = measured in ("tensor", "coordinate")
    assert (clipping_type in contenders.LOCAL_TYPES) == local


def _peer_files() -> dict[str, dict]:
    return {p.stem: yaml.safe_load(p.read_text()) for p in (CONF / "optimizer").glob("peer_*.yaml")}


def test_every_peer_config_has_a_record_and_every_record_a_config():
    files = _peer_files()
    assert sorted(files) == sorted(f"peer_{name}" for name in PEERS)
    for stem, cfg in files.items():
        info = PEERS[cfg["peer"]]
        assert stem == f"peer_{info.name}" and cfg["name"] == stem
        assert set(cfg.get("peer_args") or {}) == set(info.knobs), stem
        importlib.metadata.distribution(info.package)  # the package it names is installed
