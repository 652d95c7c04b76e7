"""A seconds-long task for tests and demos: regression with heavy-tailed (Student-t) label noise.

The model is a small MLP; the training targets carry Student-t noise with ``noise_df`` degrees of
freedom (``df <= 2``: infinite variance), so the stochastic gradients are heavy-tailed — the
setting clipping is built for. Validation targets are noise-free; the metric is R².
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from tasks.base import Task, TaskInfo
from tasks.sampling import batch_indices, num_batches


class ToyRegressionTask(Task):
    name = "toy"
    metric_names = ("r2",)
    primary_metric = "r2"

    def __init__(
        self,
        num_train: int = 2048,
        num_val: int = 512,
        dim: int = 16,
        hidden: int = 32,
        noise_df: float = 1.5,
        noise_scale: float = 0.5,
        batch_size: int = 32,
        fail_at_step: int | None = None,
    ) -> None:
        for key, value in (
            ("num_train", num_train),
            ("num_val", num_val),
            ("dim", dim),
            ("hidden", hidden),
            ("batch_size", batch_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid task.{key}: {value!r}; expected an integer >= 1")
        if not noise_df > 0:
            raise ValueError(f"Invalid task.noise_df: {noise_df!r}; expected a value > 0")
        self.num_train, self.num_val, self.dim, self.hidden = num_train, num_val, dim, hidden
        self.noise_df, self.noise_scale, self.batch_size = noise_df, noise_scale, batch_size
        self.fail_at_step = fail_at_step  # raise mid-run: exercises failure handling in sweeps
        self._calls = 0
        # Seconds of sleep per step, from the environment so that it changes neither the run's
        # directory nor its checkpoint fingerprint: lets tests interrupt a run mid-way.
        self.step_delay = float(os.environ.get("TORCH_CLIP_TOY_STEP_DELAY", "0"))

    def setup(self, device: torch.device, seed: int) -> TaskInfo:
        self.device = device
        gen = torch.Generator().manual_seed(10_000 + seed)
        teacher = torch.randn(self.dim, generator=gen) / self.dim**0.5
        x = torch.randn(self.num_train + self.num_val, self.dim, generator=gen)
        clean = torch.tanh(x @ teacher * 2) + 0.5 * (x[:, 0] * x[:, 1])
        noise = torch.distributions.StudentT(self.noise_df).sample((self.num_train,))
        n = self.num_train
        self.x_train, self.y_train = (
            x[:n].to(device),
            (clean[:n] + self.noise_scale * noise).to(device),
        )
        self.x_val, self.y_val = x[n:].to(device), clean[n:].to(device)
        torch.manual_seed(seed)
        self.model = nn.Sequential(
            nn.Linear(self.dim, self.hidden), nn.Tanh(), nn.Linear(self.hidden, 1)
        ).to(device)
        return TaskInfo(
            data_source=f"generated: {n} points, Student-t(df={self.noise_df}) label noise",
            model_source=f"MLP {self.dim}-{self.hidden}-1",
            num_train=n,
            num_val=self.num_val,
            embedded=True,
        )

    def steps_per_epoch(self, world_size: int = 1) -> int:
        return num_batches(self.num_train, self.batch_size)

    def train_batches(
        self, epoch: int, start: int = 0, *, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[Any]:
        for idx in batch_indices(
            self.num_train,
            self.batch_size,
            seed=seed,
            epoch=epoch,
            start=start,
            rank=rank,
            world_size=world_size,
        ):
            idx = idx.to(self.device)
            yield self.x_train[idx], self.y_train[idx]

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y = batch
        self._calls += 1
        if self.fail_at_step is not None and self._calls > self.fail_at_step:
            raise RuntimeError(f"toy task: deliberate failure at step {self._calls} (fail_at_step)")
        if self.step_delay:
            time.sleep(self.step_delay)
        pred = self.model(x).squeeze(-1)
        return nn.functional.mse_loss(pred, y), {}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        pred = self.model(self.x_val).squeeze(-1)
        self.model.train(was_training)
        residual = ((pred - self.y_val) ** 2).sum()
        total = ((self.y_val - self.y_val.mean()) ** 2).sum()
        return {"r2": float(1 - residual / total), "mse": float(residual / len(self.y_val))}
