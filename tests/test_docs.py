"""The documentation: the site builds strictly, every public object has an API entry, and the
figures and tables the pages cite exist, while every committed figure is cited by some page."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = ROOT / "results"

# Modules whose __all__ is the public API the reference must cover.
PUBLIC_MODULES = ("clip_core", "clip_core.heavy_tail")

_SNIPPET = re.compile(r'^\s*--8<--\s+"([^"]+)"', re.M)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_LINES = re.compile(r"(:-?\d*){1,2}$")
_API_ENTRY = re.compile(r"^:::\s+(\S+)", re.M)


def doc_pages() -> list[Path]:
    """Every Markdown page of the site (not the tables under docs/results, which are included)."""
    return sorted(p for p in DOCS.rglob("*.md") if "results" not in p.relative_to(DOCS).parts)


def local_targets(page: Path, text: str) -> list[Path]:
    """The repository files a page's links and images point to (external links and anchors left out)."""
    out = []
    for target in _LINK.findall(text):
        path = target.split("#", 1)[0]
        if not path or re.match(r"^[a-z]+:", path):
            continue
        out.append((page.parent / path).resolve())
    return out


def snippet_targets(text: str) -> list[Path]:
    """The files a page includes with pymdownx.snippets (paths from the repository root; a
    ``:start:end`` line range after the path is left out)."""
    return [(ROOT / _LINES.sub("", p)).resolve() for p in _SNIPPET.findall(text)]


def repo_relative(path: Path) -> str:
    return path.resolve().relative_to(ROOT.resolve()).as_posix()


def committed_figures() -> set[str]:
    """The PNG files under results/ that git tracks (every PNG there when git is unavailable)."""
    git = shutil.which("git")
    if git and (ROOT / ".git").exists():
        listed = subprocess.run(
            [git, "ls-files", "results"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
        return {p for p in listed if p.endswith(".png")}
    return {repo_relative(p) for p in RESULTS.rglob("*.png")}


def cited_files() -> set[str]:
    """Every repository file some page links to, shows or includes."""
    cited = set()
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        for target in local_targets(page, text) + snippet_targets(text):
            if target.is_relative_to(ROOT.resolve()):
                cited.add(repo_relative(target))
    return cited


def test_every_cited_figure_and_table_exists():
    missing = []
    for page in [*doc_pages(), ROOT / "README.md"]:
        text = page.read_text(encoding="utf-8")
        for target in local_targets(page, text) + snippet_targets(text):
            if not target.exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not missing, "cited files that do not exist:\n" + "\n".join(missing)


def test_every_committed_figure_is_cited():
    cited = cited_files()
    uncited = sorted(committed_figures() - cited)
    assert not uncited, "committed figures no page cites (cite or delete them):\n" + "\n".join(
        uncited
    )


def api_entries() -> set[str]:
    """The objects the API pages render with mkdocstrings (``::: identifier`` lines)."""
    entries = set()
    for page in (DOCS / "api").glob("*.md"):
        entries.update(_API_ENTRY.findall(page.read_text(encoding="utf-8")))
    return entries


def test_every_public_object_has_an_api_entry():
    entries = api_entries()
    missing = []
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        missing += [f"{name}.{obj}" for obj in module.__all__ if f"{name}.{obj}" not in entries]
    assert not missing, "public objects without an API entry in docs/api/:\n" + "\n".join(missing)


def test_mkdocs_build_is_strict_clean(tmp_path):
    pytest.importorskip("mkdocs")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**_env(), "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "optimizers" / "index.html").exists()


def _env() -> dict[str, str]:
    """The environment with this checkout first on the import path (mkdocstrings imports it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def readme_block(heading: str, language: str) -> str:
    """The first ``language`` code block under the README's ``## heading``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_readme_is_short():
    assert (ROOT / "README.md").stat().st_size < 12 * 1024


def test_ci_runs_the_readme_install_and_test_commands():
    readme = readme_block("Install and test", "bash").splitlines()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    ci_commands = [ci[i + 1] for i, line in enumerate(ci) if line.startswith("# --- README:")]
    assert ci_commands == readme


def test_readme_quickstart_runs_and_clips(tmp_path):
    code = readme_block("Quickstart", "python")
    assert len(code.splitlines()) <= 15
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=_env()
    )
    assert result.returncode == 0, result.stderr[-2000:]
    norm, threshold = map(float, re.findall(r"‖g‖ ([\d.]+), λ_t ([\d.]+)", result.stdout)[0])
    assert norm > 0 and threshold > 0


def test_readme_headline_numbers_come_from_the_tables_it_names():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    headline = text.split("<!-- headline: start -->", 1)[1].split("<!-- headline: end -->", 1)[0]
    tables = [p for p in local_targets(ROOT / "README.md", headline) if p.suffix == ".md"]
    assert tables, "the headline names no committed table"
    decimal = re.compile(r"(?<![\d.])\d+\.\d+")
    cells = set(decimal.findall(" ".join(p.read_text(encoding="utf-8") for p in tables)))
    numbers = decimal.findall(headline)
    assert numbers
    assert not [n for n in numbers if n not in cells], "headline numbers in none of its tables"
