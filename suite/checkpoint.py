"""Atomic checkpoints, safe loading and resume, plus the interrupt guard (SIGINT/SIGTERM/USR1/USR2).

A checkpoint holds everything a bit-identical continuation needs: ``fingerprint`` (what must
match to resume), ``model``, ``optimizer`` (with the clip history and its generator),
``scheduler``, and the entries of the trainer's :class:`~suite.run_state.RunState`: ``step`` (so
the data position), the unlogged telemetry of the current logging window, the norms, best and
last rows, and the torch/numpy/python random states.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torch_clip.suite.records import atomic_write_bytes

CHECKPOINT_NAME = "last.pt"
#: 2: every random state is a tensor or a plain value, so the file loads with weights_only=True
FORMAT_VERSION = 2


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be used: never silently start over."""


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / CHECKPOINT_NAME


def random_states() -> dict[str, Any]:
    """The python/numpy/torch random states as tensors and plain values (no numpy arrays: a
    safe load refuses the globals they unpickle through)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_states(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["bit_generator"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


#: what a user can do about a checkpoint that cannot be resumed
START_OVER = "Delete it to start over, or pass trainer.resume=false."


def safe_load(path: Path, what: str, remedy: str = "") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain values only, never code.

    A file that needs any other global (a crafted pickle, or one another program wrote) is
    refused with a :class:`CheckpointError` naming it, as is a file that is not a torch file.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names the refused global ("... GLOBAL posix.system ..."); anything else: corrupt
        refused = [line for line in str(exc).splitlines() if "GLOBAL" in line]
        if not refused:
            raise CheckpointError(
                f"{what} {path} is corrupt or unreadable (not a torch file). {remedy}".rstrip()
            ) from exc
        first = refused[0].split("WeightsUnpickler error: ", 1)[-1].strip()
        raise CheckpointError(
            f"{what} {path} holds more than tensors and plain values ({first}); a safe load "
            f"(weights_only=True) refuses it, as it could run code. {remedy}".rstrip()
        ) from exc
    except Exception as exc:  # any zip/format error means a corrupt file
        raise CheckpointError(
            f"{what} {path} is corrupt or unreadable ({type(exc).__name__}: {exc}). {remedy}".rstrip()
        ) from exc


def read_checkpoint(path: Path, remedy: str = START_OVER) -> dict[str, Any]:
    """The payload of the torch-clip checkpoint ``path`` (loaded safely), of this format."""
    payload = safe_load(path, "checkpoint", remedy)
    found = payload.get("format_version") if isinstance(payload, dict) else None
    if found != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} is not a torch-clip checkpoint of format {FORMAT_VERSION} "
            f"(format {found!r}). {remedy}".rstrip()
        )
    return payload


def load_checkpoint(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Load ``path``; raise :class:`CheckpointError` naming the file if it is unreadable, unsafe
    or foreign."""
    payload = read_checkpoint(path)
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


#: exit status of a run stopped by a signal after saving its checkpoint: 128 + the signal's
#: number, as a shell reports a process the signal killed (SIGINT 130, SIGTERM 143)
def interrupted_exit_code(signum: int) -> int:
    return 128 + int(signum)


class PreemptionGuard:
    """Turns SIGINT/SIGTERM/SIGUSR1/SIGUSR2 into a flag the loop checks between steps.

    After the loop has saved a checkpoint it calls :meth:`forward`, which hands the signal to a
    handler installed before (submitit's, which requeues the job on SIGUSR2); Python's own
    SIGINT handler and the default actions are not called: the caller reports and exits.
    """

    SIGNALS = tuple(
        s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2) if s is not None
    )

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
        """Pass the received signal on to a launcher's handler, once our state is safe on disk."""
        signum = self.received
        previous = self._previous.get(signum) if signum is not None else None
        self.__exit__()
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, None)
