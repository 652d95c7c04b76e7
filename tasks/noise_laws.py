"""Noise laws sampled on the torch device, for noise injected into stochastic gradients.

The toy task adds such noise to each mini-batch gradient (``task.noise_on=gradient``), so the
samplers run once per training step and must neither touch the host nor import SciPy (whose
import alone costs close to a second per process start):

* ``gaussian``: ``N(0, 1)``;
* ``student_t``: Student-t with ``df`` degrees of freedom, by Bailey's (1994) polar formula
  ``T = sqrt(df (U^(-2/df) - 1)) cos(2πV)`` with ``U, V`` uniform, the Student-t analogue of
  Box–Muller: exact, without rejection;
* ``stable``: symmetric α-stable by Chambers, Mallows & Stuck (1976), with ``V`` uniform on
  ``(-π/2, π/2)`` and ``W`` standard exponential,
  ``X = sin(αV) / cos(V)^(1/α) · (cos((1−α)V) / W)^((1−α)/α)``, whose characteristic function is
  ``exp(−|t|^α)``; it is returned times ``STABLE_SCALE = 1/√2``, the scale of the label noise
  (``scipy.stats.levy_stable(α, 0, scale=1/√2)``), so that ``α = 2`` is exactly ``N(0, 1)``.

Every draw comes from the ``torch.Generator`` it is given, so a seeded generator fixes it. The
arithmetic is float64 (float32 on MPS, which has no float64): near ``V = ±π/2`` the formula
divides by a vanishing cosine, which float32 would turn into spurious infinities.
"""

from __future__ import annotations

import math

import torch

from clip_core._validation import invalid

LAWS = ("gaussian", "student_t", "stable")
#: SαS scale c with N(0, 2c²) at α = 2: c = 1/√2 makes α = 2 the unit Gaussian
STABLE_SCALE = 2.0**-0.5


def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _uniform(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform on the open interval (0, 1): ``torch.rand`` can return 0, never 1."""
    return 1.0 - torch.rand(n, generator=gen, device=device, dtype=_work_dtype(device))


def symmetric_stable(
    alpha: float, n: int, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """``n`` draws of the SαS law with characteristic function ``exp(−|t|^α)``, ``0 < α <= 2``
    (Chambers–Mallows–Stuck)."""
    v = (_uniform(n, gen, device) - 0.5) * math.pi
    w = torch.empty(n, device=device, dtype=v.dtype).exponential_(generator=gen)
    if alpha == 1.0:
        return torch.tan(v)  # the Cauchy law: the general formula's limit
    return (
        torch.sin(alpha * v)
        / torch.cos(v) ** (1.0 / alpha)
        * (torch.cos((1.0 - alpha) * v) / w) ** ((1.0 - alpha) / alpha)
    )


def student_t(df: float, n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` draws of Student-t with ``df`` degrees of freedom (Bailey's polar formula)."""
    u, v = _uniform(n, gen, device), _uniform(n, gen, device)
    return torch.sqrt(df * (u ** (-2.0 / df) - 1.0)) * torch.cos(2.0 * math.pi * v)


def sample(
    law: str,
    n: int,
    *,
    df: float,
    alpha: float,
    gen: torch.Generator,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``n`` unit-scale draws of ``law`` (see the module docstring) on ``device``, as ``dtype``."""
    if law == "gaussian":
        out = torch.randn(n, generator=gen, device=device, dtype=_work_dtype(device))
    elif law == "student_t":
        out = student_t(df, n, gen, device)
    elif law == "stable":
        out = STABLE_SCALE * symmetric_stable(alpha, n, gen, device)
    else:
        raise invalid("task.noise", law, f"one of {', '.join(LAWS)}")
    return out.to(dtype)
