"""A seconds-long task for tests and demos: regression with heavy-tailed noise of a known law.

The noise (``noise``, ``noise_scale``) goes where ``noise_on`` says:

* ``labels`` (the default): the training targets carry it, and the stochastic gradients inherit
  its tail. The validation targets are clean, so this is robust *estimation* as much as
  optimisation: fully fitting the noisy labels is harmful, and a robust loss (``loss=huber``)
  competes with clipping.
* ``gradient``: the labels are clean, and every stochastic gradient is the mini-batch gradient
  plus ``noise_scale · ξ``, with ``ξ`` one i.i.d. draw of the law per parameter and step — the
  oracle of the clipped-SGD/SSTM analyses (Gorbunov et al. 2020; Sadiev et al. 2023), with the
  tail index of ``ξ`` known exactly. The draws come from ``tasks/noise_laws.py`` on the device,
  seeded by ``(seed, epoch, batch)``, and enter as the loss term ``⟨ξ, θ⟩ − ⟨ξ, θ⟩.detach()``:
  its gradient is ``ξ``, its value 0, so the logged loss is the clean loss.

The laws:

* ``gaussian``: ``noise_scale · N(0, 1)``;
* ``student_t``: ``noise_scale · t(noise_df)`` (tail index ``noise_df``; ``df <= 2``: infinite
  variance);
* ``stable``: ``noise_scale · S`` with ``S`` symmetric α-stable of index ``noise_alpha`` and
  scale parameter ``1/√2`` (labels: ``scipy.stats.levy_stable(α, β=0, scale=2**-0.5)``;
  gradients: the same law by Chambers–Mallows–Stuck in torch). The ``1/√2`` makes ``α = 2``
  *exactly* the ``gaussian`` law ``N(0, noise_scale²)`` (an SαS law with scale c and α = 2 is
  N(0, 2c²)); for α < 2 the tail is ``P(|S| > x) ~ C x^(−α)``.

Label noise is drawn from a generator seeded by the run seed, so a seed fixes the data set.
``model=mlp`` is a small MLP; ``model=linear`` is least squares on the same inputs, the smooth
convex problem (its best fit cannot represent the targets' tanh and x0·x1 parts, so R² stays
below 1). For the linear model and label noise the per-example gradient is ``2 (w·x − y) x``,
whose heavy part is ``−2 noise_scale · ε x``: the label noise reaches the gradient noise with
the same tail index (a Gaussian factor ``x`` has all moments, so by Breiman's lemma ``ε x``
keeps the index of ``ε``). ``loss=huber`` trains on ``torch.nn.functional.huber_loss`` with
``huber_delta`` (quadratic ``r²/2`` below δ, linear beyond: half the MSE's gradient near 0).
Validation targets are noise-free; the metrics are R² and the MSE.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from clip_core._validation import check_choice, check_int, check_number, invalid
from torch_clip.tasks import noise_laws
from torch_clip.tasks.base import Task, TaskInfo
from torch_clip.tasks.noise_laws import STABLE_SCALE
from torch_clip.tasks.sampling import batch_indices, num_batches

NOISE_LAWS = noise_laws.LAWS
MODELS = ("mlp", "linear")
#: where the noise enters: the training labels, or each stochastic gradient directly
NOISE_TARGETS = ("labels", "gradient")
LOSSES = ("mse", "huber")


def label_noise(
    law: str, size: int, *, df: float, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """``size`` unit-scale draws of the noise law ``law`` (see the module docstring)."""
    if law == "gaussian":
        return rng.standard_normal(size)
    if law == "student_t":
        return rng.standard_t(df, size)
    if law == "stable":
        from scipy import stats  # here only: the import costs most of a second per process

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
        noise_on: str = "labels",
        model: str = "mlp",
        loss: str = "mse",
        huber_delta: float = 1.0,
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
        check_choice("task.noise_on", noise_on, NOISE_TARGETS)
        check_choice("task.model", model, MODELS)
        check_choice("task.loss", loss, LOSSES)
        check_number("task.noise_df", noise_df, 0, low_open=True)
        check_number("task.noise_alpha", noise_alpha, 0, 2, low_open=True)
        check_number("task.noise_scale", noise_scale, 0)
        check_number("task.huber_delta", huber_delta, 0, low_open=True)
        self.num_train, self.num_val, self.dim, self.hidden = num_train, num_val, dim, hidden
        self.noise, self.noise_df, self.noise_alpha = noise, float(noise_df), float(noise_alpha)
        self.noise_scale, self.noise_on = float(noise_scale), noise_on
        self.model_kind, self.batch_size = model, batch_size
        self.loss_kind, self.huber_delta = loss, float(huber_delta)

    def noise_law(self) -> str:
        """The noise law in words, for run records and figure titles."""
        if self.noise == "student_t":
            return f"Student-t(df={self.noise_df:g})"
        if self.noise == "stable":
            return f"symmetric {self.noise_alpha:g}-stable"
        return "Gaussian"

    def setup(self, device: torch.device, seed: int) -> TaskInfo:
        self.device, self.seed = device, seed
        gen = torch.Generator().manual_seed(10_000 + seed)
        teacher = torch.randn(self.dim, generator=gen) / self.dim**0.5
        x = torch.randn(self.num_train + self.num_val, self.dim, generator=gen)
        clean = torch.tanh(x @ teacher * 2) + 0.5 * (x[:, 0] * x[:, 1])
        n = self.num_train
        y_train = clean[:n]
        if self.noise_on == "labels":
            rng = np.random.default_rng([seed, 20_000])  # its own stream: the law is a knob
            noise = label_noise(self.noise, n, df=self.noise_df, alpha=self.noise_alpha, rng=rng)
            y_train = y_train + self.noise_scale * torch.from_numpy(noise).to(clean.dtype)
        self.x_train, self.y_train = x[:n].to(device), y_train.to(device)
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
        self.num_parameters = sum(p.numel() for p in self.model.parameters())
        where = "label" if self.noise_on == "labels" else "gradient"
        return TaskInfo(
            data_source=(
                f"generated: {n} points, {self.noise_law()} {where} noise × {self.noise_scale:g}"
            ),
            model_source=model_source
            + (f", Huber loss δ={self.huber_delta:g}" if self.loss_kind == "huber" else ""),
            num_train=n,
            num_val=self.num_val,
            embedded=True,
        )

    def steps_per_epoch(self, world_size: int = 1) -> int:
        return num_batches(self.num_train, self.batch_size)

    def gradient_noise(self, epoch: int, batch: int) -> torch.Tensor:
        """The noise added to the gradient of global batch ``batch`` of ``epoch``: one draw per
        parameter, a pure function of ``(seed, epoch, batch)`` (every rank draws the same, so
        data-parallel averaging leaves it whole, and a resumed run sees the same draws)."""
        state = np.random.SeedSequence([self.seed, epoch, batch, 30_000]).generate_state(2)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(int(state[0]) << 32 | int(state[1]))
        draws = noise_laws.sample(self.noise, self.num_parameters, df=self.noise_df,
                                  alpha=self.noise_alpha, gen=gen, device=self.device)  # fmt: skip
        return self.noise_scale * draws

    def train_batches(
        self, epoch: int, start: int = 0, *, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[Any]:
        batches = batch_indices(
            self.num_train,
            self.batch_size,
            seed=seed,
            epoch=epoch,
            start=start,
            rank=rank,
            world_size=world_size,
        )
        for b, idx in enumerate(batches, start):
            idx = idx.to(self.device)
            noise = self.gradient_noise(epoch, b) if self.noise_on == "gradient" else None
            yield self.x_train[idx], self.y_train[idx], noise

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y, noise = batch
        pred = self.model(x).squeeze(-1)
        if self.loss_kind == "huber":
            loss = nn.functional.huber_loss(pred, y, delta=self.huber_delta)
        else:
            loss = nn.functional.mse_loss(pred, y)
        if noise is None:
            return loss, {}
        # ⟨ξ, θ⟩ − its value: the loss keeps its value and its gradient gains ξ (on the device)
        theta = torch.cat([p.reshape(-1) for p in self.model.parameters()])
        inner = torch.dot(noise, theta)
        return loss + (inner - inner.detach()), {}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        pred = self.model(self.x_val).squeeze(-1)
        self.model.train(was_training)
        residual = ((pred - self.y_val) ** 2).sum()
        total = ((self.y_val - self.y_val.mean()) ** 2).sum()
        return {"r2": float(1 - residual / total), "mse": float(residual / len(self.y_val))}
