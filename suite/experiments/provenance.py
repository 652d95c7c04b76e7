"""What made a committed figure or table: the command and the commit, written into the file."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone

from torch_clip.suite.paths import ROOT


def commit() -> str:
    """The current commit (short hash), with ``+dirty`` when tracked code differs from it."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
        # dirty: code or configs differ from the commit (the figures being written do not count)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!results"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return sha + ("+dirty" if dirty else "")


def stamp(command: str, detail: str = "") -> str:
    """One line for a figure's footnote or a table's last line."""
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    text = f"made by `{command}` at commit {commit()} on {day}"
    return f"{text}; {detail}" if detail else text
