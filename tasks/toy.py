"""A seconds-long task for tests and demos: regression with controlled heavy-tailed label noise.

The training targets carry label noise of a chosen law (``noise``), so the stochastic gradients
are heavy-tailed by construction — the setting clipping is built for — with a known tail index:

* ``gaussian``: ``noise_scale · N(0, 1)``;
* ``student_t``: ``noise_scale · t(noise_df)`` (tail index ``noise_df``; ``df <= 2``: infinite
  variance);
* ``stable``: ``noise_scale · S`` with ``S`` symmetric α-stable of index ``noise_alpha`` and
  scale parameter ``1/√2`` (``scipy.stats.levy_stable(α, β=0, scale=2**-0.5)``, which samples
  with the Chambers–Mallows–Stuck method). The ``1/√2`` makes ``α = 2`` *exactly* the
  ``gaussian`` law ``N(0, noise_scale²)`` (an SαS law with scale c and α = 2 is N(0, 2c²)); for
  α < 2 the tail is ``P(|S| > x) ~ C x^(−α)``.

The noise is drawn from a generator seeded by the run seed, so a seed fixes the data set.
``model=mlp`` is a small MLP; ``model=linear`` is linear regression on the same inputs (its best
fit cannot represent the targets' tanh and x0·x1 parts, so R² stays below 1). For the linear
model the per-example gradient is ``2 (w·x − y) x``, whose heavy part is ``−2 noise_scale · ε x``:
the label noise reaches the gradient noise directly, with the same tail index (a Gaussian factor
``x`` has all moments, so by Breiman's lemma ``ε x`` keeps the index of ``ε``). Validation
targets are noise-free; the metric is R².
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from clip_core._validation import check_choice, check_int, check_number, invalid
from tasks.base import Task, TaskInfo
from tasks.sampling import batch_indices, num_batches

NOISE_LAWS = ("gaussian", "student_t", "stable")
MODELS = ("mlp", "linear")
#: scipy's SαS scale c with N(0, 2c²) at α = 2: c = 1/√2 makes α = 2 the unit Gaussian
STABLE_SCALE = 2.0**-0.5


def label_noise(
    law: str, size: int, *, df: float, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """``size`` unit-scale draws of the noise law ``law`` (see the module docstring)."""
    if law == "gaussian":
        return rng.standard_normal(size)
    if law == "student_t":
        return rng.standard_t(df, size)
    if law == "stable":
        return stats.levy_stable.rvs(alpha, 0.0, scale=STABLE_SCALE, size=size, random_state=rng)
    raise invalid("task.noise", law, f"one of {', '.join(NOISE_LAWS)}")


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
        noise: str = "student_t",
        noise_df: float = 1.5,
        noise_alpha: float = 1.5,
        noise_scale: float = 0.5,
        model: str = "mlp",
        batch_size: int = 32,
    ) -> None:
        for key, value in (
            ("num_train", num_train),
            ("num_val", num_val),
            ("dim", dim),
            ("hidden", hidden),
            ("batch_size", batch_size),
        ):
            check_int(f"task.{key}", value, 1)
        check_choice("task.noise", noise, NOISE_LAWS)
        check_choice("task.model", model, MODELS)
        check_number("task.noise_df", noise_df, 0, low_open=True)
        check_number("task.noise_alpha", noise_alpha, 0, 2, low_open=True)
        check_number("task.noise_scale", noise_scale, 0)
        self.num_train, self.num_val, self.dim, self.hidden = num_train, num_val, dim, hidden
        self.noise, self.noise_df, self.noise_alpha = noise, float(noise_df), float(noise_alpha)
        self.noise_scale, self.model_kind, self.batch_size = noise_scale, model, batch_size

    def noise_law(self) -> str:
        """The label-noise law in words, for run records and figure titles."""
        if self.noise == "student_t":
            return f"Student-t(df={self.noise_df:g})"
        if self.noise == "stable":
            return f"symmetric {self.noise_alpha:g}-stable"
        return "Gaussian"

    def setup(self, device: torch.device, seed: int) -> TaskInfo:
        self.device = device
        gen = torch.Generator().manual_seed(10_000 + seed)
        teacher = torch.randn(self.dim, generator=gen) / self.dim**0.5
        x = torch.randn(self.num_train + self.num_val, self.dim, generator=gen)
        clean = torch.tanh(x @ teacher * 2) + 0.5 * (x[:, 0] * x[:, 1])
        n = self.num_train
        rng = np.random.default_rng([seed, 20_000])  # its own stream: the noise law is a knob
        noise = label_noise(self.noise, n, df=self.noise_df, alpha=self.noise_alpha, rng=rng)
        noise = torch.from_numpy(noise).to(clean.dtype)
        self.x_train, self.y_train = (
            x[:n].to(device),
            (clean[:n] + self.noise_scale * noise).to(device),
        )
        self.x_val, self.y_val = x[n:].to(device), clean[n:].to(device)
        torch.manual_seed(seed)
        if self.model_kind == "linear":
            self.model = nn.Linear(self.dim, 1).to(device)
            model_source = f"linear regression {self.dim}-1"
        else:
            self.model = nn.Sequential(
                nn.Linear(self.dim, self.hidden), nn.Tanh(), nn.Linear(self.hidden, 1)
            ).to(device)
            model_source = f"MLP {self.dim}-{self.hidden}-1"
        return TaskInfo(
            data_source=(
                f"generated: {n} points, {self.noise_law()} label noise × {self.noise_scale:g}"
            ),
            model_source=model_source,
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
