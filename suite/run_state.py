"""What the training loop carries from one step to the next and across a checkpoint, as one object.

The trainer creates one :class:`RunState` per run, a checkpoint saves its :meth:`RunState.state_dict`
next to the model, optimizer and scheduler, and a resume loads it back with
:meth:`RunState.load_state_dict`: nothing the loop needs lives outside it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from torch_clip.suite.checkpoint import random_states, restore_random_states


@dataclass
class RunState:
    #: optimizer steps taken; with the task's steps per epoch, the position in the data
    step: int = 0
    #: per-step telemetry (device tensors) not yet logged: flushed once per logging window
    window: list[dict[str, torch.Tensor]] = field(default_factory=list)
    #: the gradient norm of every logged step
    grad_norms: list[float] = field(default_factory=list)
    #: where the current epoch's norms start in ``grad_norms`` (its histogram)
    epoch_norm_start: int = 0
    #: the best value of the primary metric: ``{"metric", "value", "step"}``
    best: dict[str, Any] | None = None
    #: the latest evaluation row and train row, as logged (the summary's final values)
    last_eval: dict[str, Any] | None = None
    last_train: dict[str, Any] | None = None
    #: ``{"checkpoint", "step"}`` of every resume of this run, oldest first
    resumed_from: list[dict[str, Any]] = field(default_factory=list)
    #: wall seconds of the run's earlier segments (processes) ...
    wall_before: float = 0.0
    #: ... and when this segment started (``time.time()``; not saved)
    segment_start: float = field(default_factory=time.time)

    def position(self, steps_per_epoch: int) -> tuple[int, int]:
        """(epoch, batch index within it) of the next step."""
        return divmod(self.step, steps_per_epoch)

    def wall_seconds(self) -> float:
        return self.wall_before + time.time() - self.segment_start

    def start_segment(self) -> None:
        """Wall time counts from here (after set-up and resume)."""
        self.segment_start = time.time()

    def state_dict(self) -> dict[str, Any]:
        """The state as plain values, with the python/numpy/torch random states of this moment."""
        return {
            "step": self.step,
            # host floats: a resumed run logs the same window, on whatever device it runs
            "window": [{k: float(v) for k, v in w.items()} for w in self.window],
            "grad_norms": list(self.grad_norms),
            "epoch_norm_start": self.epoch_norm_start,
            "best": self.best,
            "last_eval": self.last_eval,
            "last_train": self.last_train,
            "resumed_from": list(self.resumed_from),
            "wall_seconds": self.wall_seconds(),
            "random": random_states(),
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Continue from ``state`` (restores the random states too). Checkpoints written before
        ``last_train`` and ``resumed_from`` were saved load with those empty."""
        restore_random_states(state["random"])
        self.step = int(state["step"])
        self.window = [
            {k: torch.tensor(v, device=device) for k, v in w.items()} for w in state["window"]
        ]
        self.grad_norms = list(state["grad_norms"])
        self.epoch_norm_start = int(state["epoch_norm_start"])
        self.best = state["best"]
        self.last_eval = state["last_eval"]
        self.last_train = state.get("last_train")
        self.resumed_from = list(state.get("resumed_from", []))
        self.wall_before = float(state["wall_seconds"])
        self.start_segment()
