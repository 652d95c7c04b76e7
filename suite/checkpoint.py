"""Atomic checkpoints and resume, plus the preemption guard (SIGTERM/SIGUSR1/SIGUSR2).

A checkpoint holds everything a bit-identical continuation needs: ``fingerprint`` (what must
match to resume), ``model``, ``optimizer`` (with the clip history and its generator),
``scheduler``, and the entries of the trainer's :class:`~suite.run_state.RunState`: ``step`` (so
the data position), the unlogged telemetry of the current logging window, the norms, best and
last rows, and the torch/numpy/python random states.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from suite.records import atomic_write_bytes

CHECKPOINT_NAME = "last.pt"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be used: never silently start over."""


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / CHECKPOINT_NAME


def random_states() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_states(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Load ``path``; raise :class:`CheckpointError` naming the file if it is unreadable or foreign."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # any unpickling/zip error means a corrupt file
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {exc}). "
            "Delete it to start over, or pass trainer.resume=false."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} is not a torch-clip checkpoint of this version")
    saved = payload.get("fingerprint", {})
    different = {k: (saved.get(k), v) for k, v in fingerprint.items() if saved.get(k) != v}
    if different:
        details = "; ".join(
            f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in different.items()
        )
        raise CheckpointError(
            f"checkpoint {path} belongs to a different configuration ({details}). "
            "Use another results directory, delete the checkpoint, or pass trainer.resume=false."
        )
    return payload


class PreemptionGuard:
    """Turns SIGTERM/SIGUSR1/SIGUSR2 into a flag the loop checks between steps.

    After the loop has saved a checkpoint it calls :meth:`forward`, which hands the signal to the
    handler that was installed before (submitit's, which requeues the job) or re-raises it.
    """

    SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2) if s is not None)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> PreemptionGuard:
        for sig in self.SIGNALS:
            # outside the main thread (some launchers) signals cannot be caught: periodic saves only
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def forward(self) -> None:
        """Pass the received signal on, once our state is safe on disk."""
        signum = self.received
        previous = self._previous.get(signum) if signum is not None else None
        self.__exit__()
        if callable(previous):
            previous(signum, None)
        elif signum is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
