"""A toy task with faults to order, for the tests that fail, kill or interrupt ``train.py`` runs.

Select it with :data:`FAULTY_TOY` (``task=faulty_toy`` from ``tests/conf``, which train.py finds
through ``hydra.searchpath``); the subprocesses import it because the tests put the repository
on ``PYTHONPATH`` (``tests.suite_helpers.train_env``).

* ``task.fail_at_step=N``: ``loss()`` raises on step N+1 (a failing run, recorded as ``failed``).
* ``task.exit_at_step=N``: the process ends with ``os._exit(3)`` on step N+1 (a worker that dies
  mid-run, chosen per run rather than per process).
* ``TORCH_CLIP_TEST_STEP_DELAY=<seconds>``: sleep that long in every ``loss()``, so a test can
  signal a run mid-way.
* ``TORCH_CLIP_TEST_KILL_AFTER=N``: the process SIGKILLs itself on step N+1, after step N was
  logged, evaluated and checkpointed as the config asks (a hard crash at a chosen step).

The two hooks in the environment change neither the run directory nor the checkpoint
fingerprint, so the same command, without them, resumes the interrupted run.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import torch

from torch_clip.tasks.toy import ToyRegressionTask

#: the overrides that select this task (its config is tests/conf/task/faulty_toy.yaml)
FAULTY_TOY = ("task=faulty_toy", f"hydra.searchpath=[file://{Path(__file__).parent / 'conf'}]")


class FaultyToyTask(ToyRegressionTask):
    name = "faulty_toy"

    def __init__(
        self, fail_at_step: int | None = None, exit_at_step: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.fail_at_step, self.exit_at_step = fail_at_step, exit_at_step
        self.step_delay = float(os.environ.get("TORCH_CLIP_TEST_STEP_DELAY", "0"))
        kill_after = os.environ.get("TORCH_CLIP_TEST_KILL_AFTER")
        self.kill_after = None if kill_after is None else int(kill_after)
        self._calls = 0

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self._calls += 1
        if self.kill_after is not None and self._calls > self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.exit_at_step is not None and self._calls > self.exit_at_step:
            os._exit(3)
        if self.fail_at_step is not None and self._calls > self.fail_at_step:
            raise RuntimeError(f"faulty_toy: deliberate failure at step {self._calls}")
        if self.step_delay:
            time.sleep(self.step_delay)
        return super().loss(batch)
