"""The package layout: every package folder installs under its namespaced name, the scripts are
thin entry points into it, and no module edits the import path."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
import tomllib

from tests.suite_helpers import ROOT
from torch_clip.suite.paths import MARKERS, repo_root

#: the source folders of the installed packages
SOURCES = ("clip_core", "suite", "tasks")
#: one-off tools in scripts/, not entry points into the package
TOOLS = {"imagenet_bn_check.py", "long_functions.py"}
#: an entry point is a docstring, one import and the ``__main__`` guard
ENTRY_POINT_MAX_LINES = 8


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _installed_name(folder: Path, package_dir: dict[str, str]) -> str:
    """The import name of a source folder under the ``package-dir`` mapping."""
    rel = folder.relative_to(ROOT).as_posix()
    for name, source in sorted(package_dir.items(), key=lambda kv: -len(kv[1])):
        if rel == source or rel.startswith(source + "/"):
            return name + rel[len(source) :].replace("/", ".")
    return rel.replace("/", ".")


def test_every_package_folder_is_listed_in_pyproject():
    setuptools = _setuptools()
    listed = set(setuptools["packages"])
    folders = [f.parent for src in SOURCES for f in (ROOT / src).rglob("__init__.py")]
    names = {_installed_name(f, setuptools.get("package-dir", {})) for f in folders}
    assert names, "no package folders found"
    assert not names - listed, (
        f"package folders missing from [tool.setuptools] packages: {sorted(names - listed)}"
    )
    assert not listed - names, f"listed packages without a folder: {sorted(listed - names)}"


def test_installed_names_are_namespaced():
    tops = {name.split(".")[0] for name in _setuptools()["packages"]}
    assert tops == {"clip_core", "torch_clip"}
    for name in ("torch_clip.suite.experiments.sweeps", "torch_clip.tasks.toy"):
        module = importlib.import_module(name)
        assert Path(module.__file__).is_relative_to(ROOT), module.__file__


def _python_files() -> list[Path]:
    skipped = {".git", "results", "outputs", "multirun", "site"}
    return [
        f
        for f in ROOT.rglob("*.py")
        if not any(p in skipped or p.startswith(".venv") for p in f.relative_to(ROOT).parts)
    ]


def test_no_module_edits_the_import_path():
    pattern = re.compile(
        r"\bsys" + r"\.path\b|syspath" + r"_prepend"
    )  # split so that this file does not match
    offenders = [str(f.relative_to(ROOT)) for f in _python_files() if pattern.search(f.read_text())]
    assert not offenders, f"the import path is edited in: {offenders}"


def _entry_points() -> list[Path]:
    return sorted(f for f in (ROOT / "scripts").glob("*.py") if f.name not in TOOLS)


@pytest.mark.parametrize("script", _entry_points(), ids=lambda f: f.name)
def test_scripts_are_thin_entry_points_into_the_package(script: Path):
    tree = ast.parse(script.read_text())
    code_lines = {n.lineno for n in ast.walk(tree) if isinstance(n, ast.stmt)}
    assert len(code_lines) <= ENTRY_POINT_MAX_LINES, f"{script.name}: {len(code_lines)} statements"
    (imported,) = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert imported.module == f"{imported.module.rsplit('.', 1)[0]}.{script.stem}"
    assert imported.module.startswith("torch_clip.suite.")
    assert callable(importlib.import_module(imported.module).main)


def test_repo_root_is_the_checkout_and_refuses_a_folder_without_one(tmp_path: Path):
    assert repo_root() == ROOT
    (tmp_path / "conf").mkdir()
    with pytest.raises(RuntimeError, match=r"has no train\.py: clone the repository") as err:
        repo_root(tmp_path)
    assert "pip install -e" in str(err.value) and str(tmp_path) in str(err.value)
    assert set(MARKERS) == {"train.py", "conf"}
