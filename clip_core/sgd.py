"""Clipped SGD with heavy-ball or Nesterov momentum."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.sgd import sgd as sgd_update

from clip_core._validation import check_nonnegative
from clip_core.base import ClippedOptimizer
from clip_core.clipping import ClipResult


class ClippedSGD(ClippedOptimizer):
    r"""SGD fed with the clipped stochastic gradient.

    .. math::
        d_t &= \alpha_t \odot g_t + \text{weight\_decay}\cdot p_{t-1}
              \quad(\alpha_t \text{ from the clipping rule; decay is not clipped})\\
        b_t &= \mu\, b_{t-1} + d_t \qquad (b_0 = 0,\ \text{no dampening})\\
        p_t &= p_{t-1} - \gamma\, b_t \quad\text{or, with Nesterov,}\quad
              p_t = p_{t-1} - \gamma\,(d_t + \mu\, b_t)

    With ``momentum=0`` the update is ``p_t = p_{t-1} - γ d_t``. ``clipping_type="none"`` equals
    ``torch.optim.SGD`` step for step. On CPU and CUDA the global factor ``α_t`` and the
    non-finite skip ride inside torch's fused SGD kernel (``grad_scale``/``found_inf``), so a
    global-norm step reads the gradient twice (norm, update) and never synchronises.

    After ``step()``, ``p.grad`` holds the clipped gradient (as after ``clip_grad_norm_``).
    See :class:`~clip_core.base.ClippedOptimizer` for the clipping arguments.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        **clipping: Any,
    ) -> None:
        check_nonnegative("lr", lr)
        check_nonnegative("momentum", momentum)
        check_nonnegative("weight_decay", weight_decay)
        if nesterov and momentum <= 0:
            raise ValueError(f"Invalid nesterov=True with momentum={momentum}; needs momentum > 0")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "nesterov": bool(nesterov),
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults, **clipping)

    def _momentum_buffer(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "momentum_buffer" not in state:  # allocated once, not on every step
            state["momentum_buffer"] = torch.zeros_like(p)
        return state["momentum_buffer"]

    def _update(self, groups: list[Any], result: ClipResult) -> None:
        fused = self.fused
        grad_scale = self._fused_grad_scale(groups, result) if fused else None
        for group, params, grads in groups:
            if not params:
                continue
            momentum = group["momentum"]
            buffers: list[torch.Tensor | None] = [None] * len(params)
            if momentum != 0:
                # Zeros rather than torch's "first step copies the gradient": identical result,
                # and a skipped first step leaves a valid (zero) buffer.
                buffers = [self._momentum_buffer(p) for p in params]
            if not fused and not self._unfused_prepare(grads, result):
                continue
            sgd_update(
                params,
                grads,
                buffers,
                weight_decay=group["weight_decay"],
                momentum=momentum,
                lr=group["lr"],
                dampening=0.0,
                nesterov=group["nesterov"],
                maximize=False,
                fused=fused,
                foreach=None if fused else True,
                grad_scale=grad_scale,
                found_inf=result.found_inf if fused else None,
            )
