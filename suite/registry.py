"""What exists in ``conf/``, read from the config files themselves so that no list is kept by hand.

* **Tasks**: one file ``conf/task/<name>.yaml`` per task. A file with a top-level
  ``variant_of: <task>`` is another recipe of that task (``cola_full``: the same class at full
  scale), not a task of its own; every other file is a task (:func:`tasks`).
* **Smoke-test overrides**: a task file's top-level ``smoke`` list, the overrides that shrink
  the task so a run sets up in seconds (:func:`smoke`): the ``--quick`` pipelines and the task
  tests read them from there.
* **Comparisons**: one file ``conf/comparison/<name>.yaml`` per comparison protocol (methods,
  grids, seeds; :func:`comparison`), run through ``experiment=<name>``.
* **The README's evidence**: ``conf/evidence.yaml`` names the task comparisons the README shows
  and the variants run with them (:func:`evidence`).

``train.py`` ignores ``variant_of`` and ``smoke`` (top-level keys outside the run's identity,
``torch_clip.suite.naming``) and never composes ``conf/comparison/`` or ``conf/evidence.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from torch_clip.suite.paths import ROOT

CONF = ROOT / "conf"
TASKS = CONF / "task"
COMPARISONS = CONF / "comparison"
EVIDENCE = CONF / "evidence.yaml"


def _stems(folder: Path) -> list[str]:
    return sorted(path.stem for path in folder.glob("*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}


def task_files() -> dict[str, dict[str, Any]]:
    """Every file of ``conf/task/`` by name, tasks and their variants alike."""
    return {name: _load(TASKS / f"{name}.yaml") for name in _stems(TASKS)}


def task_variants() -> dict[str, str]:
    """Each variant recipe (a task file with ``variant_of``) and the task it is a variant of."""
    files = task_files()
    variants = {name: f["variant_of"] for name, f in files.items() if f.get("variant_of")}
    for name, base in variants.items():
        if base not in files or base in variants:
            raise ValueError(f"Invalid variant_of in conf/task/{name}.yaml: {base!r}; expected "
                             f"one of the tasks {', '.join(tasks_of(files))}")  # fmt: skip
    return variants


def tasks_of(files: dict[str, dict[str, Any]]) -> list[str]:
    return [name for name, f in files.items() if not f.get("variant_of")]


def tasks() -> tuple[str, ...]:
    """The tasks of ``conf/task/`` (its files without ``variant_of``), sorted by name."""
    task_variants()  # a broken variant_of is one clear error here, not a task of its own
    return tuple(tasks_of(task_files()))


def smoke(task: str) -> list[str]:
    """The overrides that shrink ``task`` (a task or a variant recipe) to a smoke test: its
    file's ``smoke`` list (none given: the recipe is small already)."""
    files = task_files()
    if task not in files:
        raise ValueError(f"Invalid task: {task!r}; expected one of {', '.join(files)}")
    overrides = files[task].get("smoke") or []
    if not all(isinstance(o, str) and "=" in o for o in overrides):
        raise ValueError(f"Invalid smoke in conf/task/{task}.yaml: {overrides!r}; expected a "
                         "list of train.py overrides key=value")  # fmt: skip
    return list(overrides)


def comparisons() -> tuple[str, ...]:
    """The comparison protocols of ``conf/comparison/``, sorted by name."""
    return tuple(_stems(COMPARISONS))


def comparison(name: str) -> dict[str, Any]:
    """The protocol ``conf/comparison/<name>.yaml`` as plain data (interpolations resolved)."""
    path = COMPARISONS / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"Invalid comparison: {name!r}; expected one of "
                         f"{', '.join(comparisons())} (conf/comparison/<name>.yaml)")  # fmt: skip
    return _load(path)


def evidence() -> dict[str, list[str]]:
    """``conf/evidence.yaml``: ``tasks``, the task comparisons of the README in the order of its
    tables and figures, and ``variants``, the comparisons run with their task; each a
    comparison of ``conf/comparison/``."""
    spec = _load(EVIDENCE)
    out = {key: list(spec.get(key) or []) for key in ("tasks", "variants")}
    unknown = [n for names in out.values() for n in names if n not in comparisons()]
    unknown += [n for n in out["tasks"] if n not in tasks()]
    if unknown or sorted(spec) != ["tasks", "variants"]:
        raise ValueError(f"Invalid {EVIDENCE.relative_to(ROOT)}: keys {sorted(spec)}, unknown "
                         f"names {unknown}; expected tasks (names of conf/task/ and "
                         "conf/comparison/) and variants (of conf/comparison/)")  # fmt: skip
    return out


def evidence_tasks() -> tuple[str, ...]:
    """The README's task comparisons (``conf/evidence.yaml``'s ``tasks``), in its order."""
    return tuple(evidence()["tasks"])
