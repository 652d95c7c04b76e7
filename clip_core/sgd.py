"""Clipped SGD with heavy-ball or Nesterov momentum."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.sgd import sgd as sgd_update

from clip_core._validation import check_nonnegative, naming
from clip_core.base import ClippedOptimizer
from clip_core.clipping import ClipResult


class ClippedSGD(ClippedOptimizer):
    r"""SGD fed with the clipped stochastic gradient; ``torch.optim.SGD``'s signature.

    .. math::
        d_t &= \alpha_t \odot g_t + \text{weight\_decay}\cdot p_{t-1}
              \quad(\alpha_t \text{ from the clipping rule; decay is not clipped})\\
        b_t &= \mu\, b_{t-1} + (1 - \tau)\, d_t \qquad (b_1 = d_1,\ \tau = \text{dampening})\\
        p_t &= p_{t-1} - \gamma\, b_t \quad\text{or, with Nesterov,}\quad
              p_t = p_{t-1} - \gamma\,(d_t + \mu\, b_t)

    With ``momentum=0`` the update is ``p_t = p_{t-1} - γ d_t``; ``maximize=True`` steps along
    ``+d_t``. ``clipping_type="none"`` equals ``torch.optim.SGD`` step for step. On CPU and CUDA
    the global factor ``α_t`` and the non-finite skip ride inside torch's fused SGD kernel
    (``grad_scale``/``found_inf``), so a global-norm step reads the gradient twice (norm, update)
    and never synchronises. With ``dampening > 0`` the first step of a momentum buffer (which
    torch takes undampened) goes through the unfused path, which reads the skip flag once.

    After ``step()``, ``p.grad`` holds the clipped gradient (as after ``clip_grad_norm_``).
    See :class:`~clip_core.base.ClippedOptimizer` for the clipping arguments and the flags.
    """

    _STATE_KEYS = (frozenset({"momentum_buffer"}), frozenset())

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        **clipping: Any,
    ) -> None:
        with naming(type(self).__name__):
            check_nonnegative("lr", lr)
            # torch's names for its own conditions ("Invalid momentum value: -0.5")
            check_nonnegative("momentum value", momentum)
            check_nonnegative("dampening value", dampening)
            check_nonnegative("weight_decay value", weight_decay)
            if nesterov and (momentum <= 0 or dampening != 0):
                raise ValueError(
                    f"Invalid nesterov=True with momentum={momentum}, dampening={dampening}; "
                    "needs momentum > 0 and dampening 0"
                )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "nesterov": bool(nesterov),
            "weight_decay": weight_decay,
        }
        super().__init__(
            params,
            defaults,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
            **clipping,
        )

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
            momentum, dampening = group["momentum"], group["dampening"]
            buffers: list[torch.Tensor | None] = [None] * len(params)
            starting = False
            if momentum != 0 and dampening == 0:
                # Zeros rather than torch's "first step copies the gradient": identical result
                # without dampening, and a skipped first step leaves a valid (zero) buffer.
                buffers = [self._momentum_buffer(p) for p in params]
            elif momentum != 0:
                # torch's first step copies d into the buffer, undampened; None asks torch's
                # unfused step for exactly that (known on the host, so the skip flag is read).
                buffers = [self.state[p].get("momentum_buffer") for p in params]
                starting = any(b is None for b in buffers)
            options: dict[str, Any] = {"foreach": None, "lr": group["lr"]}
            if not fused or starting:
                # grad_scale is None here when _fused_grad_scale applied the factor already
                if not self._unfused_prepare(grads, result, not fused or grad_scale is not None):
                    continue
                options = self._unfused_options(group)
            group_fused = fused and not starting
            sgd_update(
                params,
                grads,
                buffers,
                weight_decay=group["weight_decay"],
                momentum=momentum,
                dampening=dampening,
                nesterov=group["nesterov"],
                maximize=group["maximize"],
                fused=group_fused,
                grad_scale=grad_scale if group_fused else None,
                found_inf=result.found_inf if group_fused else None,
                **options,
            )
            if starting:
                for p, buffer in zip(params, buffers):
                    self.state[p]["momentum_buffer"] = buffer
