"""A Hydra callback that checks ``results_root`` before Hydra creates any run directory in it.

Hydra makes each run's directory itself, before ``train.py`` runs, and an ``OSError`` there ends
in its traceback; this check turns a root under a regular file, or one that cannot be created or
written, into one line naming the value.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

#: the exit status of a user error, as train.py has it
USAGE_ERROR = 2


def results_root_problem(root: Path) -> str | None:
    """Why runs cannot be written under ``root`` (None when they can). Creates ``root``."""
    root = root.expanduser().absolute()
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):  # the one sure test of writing, as any user
            pass
    except OSError as exc:
        return f"cannot write there ({exc.strerror}: {exc.filename or root})"
    return None


def check_results_root(config: DictConfig) -> None:
    root = config.get("results_root")
    problem = results_root_problem(Path(os.fspath(root))) if root else "it is empty"
    if problem is not None:
        print(
            f"torch-clip: error: Invalid results_root: {root!r}: {problem}; expected a directory "
            "you can write, or a path one can be created at",
            file=sys.stderr,
        )
        sys.exit(USAGE_ERROR)


class CheckResultsRoot(Callback):
    """``hydra.callbacks`` entry of conf/config.yaml: the check, for single runs and sweeps."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_results_root(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_results_root(config)
