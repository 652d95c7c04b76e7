"""What made a committed figure or table: the command and the commit, written into the file."""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

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


# An absolute path: POSIX ``/a/b`` (first component starting with a letter, ``_`` or ``.``), home
# ``~/a`` or Windows ``C:\\a``; never a ratio such as ``8551/516``, ``λ/‖g‖`` or ``(a+b)/2``.
ABSOLUTE_PATH = re.compile(
    r"(?<![\w./:~)\]}‖])(?:~/|[A-Za-z]:\\|/(?=[A-Za-z_.]))[^\s,;|()\[\]'\"`]*"
)


def scrub_paths(text: str) -> str:
    """``text`` with every absolute path of this machine replaced by a machine-free name.

    Committed figures and tables must not hold such paths: a path inside the repository becomes
    repository-relative, any other keeps its last two components (``/home/x/data/cola`` →
    ``data/cola``).
    """

    def replace(match: re.Match[str]) -> str:
        raw = match.group(0)
        path = Path(raw).expanduser()
        if path.is_absolute():  # a Windows path never lies inside this POSIX checkout
            try:
                return path.resolve().relative_to(ROOT.resolve()).as_posix() or "."
            except (ValueError, OSError):
                pass
        parts = [p for p in re.split(r"[\\/]+", raw) if p not in ("", "~") and not p.endswith(":")]
        return "/".join(parts[-2:]) or "<path>"

    return ABSOLUTE_PATH.sub(replace, str(text))


def command_line(script: str, argv: Sequence[str]) -> str:
    """``python <script> <args>`` as typed, with absolute paths scrubbed (see :func:`scrub_paths`)."""
    return " ".join(["python", script, *(shlex.quote(scrub_paths(a)) for a in argv)])
