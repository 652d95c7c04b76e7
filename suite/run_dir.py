"""Who may write a run directory: an exclusive lock for one process, and the cleaning of what a
killed checkpoint write left behind.

The lock is ``fcntl.flock`` on the directory itself (no lock file, so a refused start changes
nothing in the directory); the kernel drops it when its process dies, so it is never stale.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

#: the temporary files :func:`torch_clip.suite.records.atomic_write_bytes` renames into place
LEFTOVER_GLOB = ".*.tmp"


class RunDirBusy(RuntimeError):
    """Another process holds the run directory's lock."""


def lock_holder(path: Path) -> int | None:
    """The PID holding a ``flock`` on ``path``, from ``/proc/locks`` (None if not found)."""
    stat = os.stat(path)
    inode = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; "->" marks a waiter, not the holder
        if "->" not in fields and len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == inode:
            return int(fields[4])
    return None


class RunDirLock:
    """An exclusive, non-blocking lock on ``run_dir`` for as long as the ``with`` block runs."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)
        self._fd: int | None = None

    def __enter__(self) -> RunDirLock:
        self._fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(self.dir)
            os.close(self._fd)
            self._fd = None
            who = f"process {holder}" if holder is not None else "another process"
            raise RunDirBusy(
                f"{self.dir} is in use by {who} (a run of the same configuration); wait for it "
                "to end, or use another results_root or label"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete the temporary files of writes a kill interrupted (each may be a whole checkpoint);
    only call it holding the lock, when no write of this directory is in flight."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        for path in folder.glob(LEFTOVER_GLOB):
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed
