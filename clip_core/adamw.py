"""Clipped AdamW: torch's AdamW update fed with the clipped gradient."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.adamw import adamw as adamw_update

from clip_core._validation import check_false, check_nonnegative, check_number, invalid, naming
from clip_core.base import ClippedOptimizer
from clip_core.clipping import ClipResult


class ClippedAdamW(ClippedOptimizer):
    r"""AdamW (decoupled weight decay, as ``torch.optim.AdamW``) on the clipped gradient.

    .. math::
        \hat g_t &= \alpha_t \odot g_t \quad(\text{clipping rule})\\
        p_t &\leftarrow p_{t-1}(1 - \gamma\lambda_{wd})\\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\hat g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\hat g_t^2\\
        p_t &\leftarrow p_t - \gamma\,\frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    ``clipping_type="none"`` equals ``torch.optim.AdamW(fused=True)`` step for step. A skipped
    step (non-finite gradient) leaves ``t``, ``m``, ``v`` and the parameters untouched.
    Signature and defaults are ``torch.optim.AdamW``'s, plus the clipping arguments of
    :class:`~clip_core.base.ClippedOptimizer`, whose defaults (``norm`` at ``1.0``) make
    ``ClippedAdamW(params)`` equal to ``clip_grad_norm_(params, 1.0)`` + ``AdamW(params)``: the
    recipe Hugging Face's Trainer runs by default. ``clipping_type="none"`` is plain AdamW.
    ``capturable=True`` (CUDA graphs) is refused: it is untested here.
    """

    _STATE_KEYS = (
        frozenset({"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
        frozenset({"step", "exp_avg", "exp_avg_sq"}),
    )

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        **clipping: Any,
    ) -> None:
        with naming(type(self).__name__):
            check_nonnegative("lr", lr)
            _check_betas(betas, lr, foreach)
            check_nonnegative("epsilon value", eps)  # torch's names for torch's conditions
            check_nonnegative("weight_decay value", weight_decay)
            check_false("capturable", capturable, "CUDA-graph capture is not supported")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": bool(amsgrad),
            "capturable": False,
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

    def _param_state(self, p: torch.Tensor, amsgrad: bool) -> dict[str, torch.Tensor]:
        state = self.state[p]
        if not state:
            # fused kernels keep the step count on the parameter's device
            step_device = p.device if self.fused else torch.device("cpu")
            state["step"] = torch.zeros((), dtype=torch.float32, device=step_device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if amsgrad:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # a step saved as a number (older or hand-made states) becomes the tensor the kernels
        # take, as torch's AdamW does
        for group in self.param_groups:
            for p in group["params"]:
                param_state = self.state.get(p)
                if param_state and not torch.is_tensor(param_state.get("step", 0.0)):
                    device = p.device if self.fused else torch.device("cpu")
                    step = float(param_state["step"])
                    param_state["step"] = torch.tensor(step, dtype=torch.float32, device=device)

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        # torch's load_state_dict moves ``step`` to the parameter's device only for groups marked
        # ``fused``/``capturable``, which these groups are not; the fused kernels need it there
        # (e.g. a checkpoint loaded with map_location="cpu" into a CUDA model).
        if not self.fused:
            return
        for group in self.param_groups:
            for p in group["params"]:
                param_state = self.state.get(p)
                if param_state and "step" in param_state:
                    param_state["step"] = param_state["step"].to(
                        device=p.device, dtype=torch.float32
                    )

    def _update(self, groups: list[Any], result: ClipResult) -> None:
        fused = self.fused
        grad_scale = self._fused_grad_scale(groups, result) if fused else None
        for group, params, grads in groups:
            if not params:
                continue
            amsgrad = group["amsgrad"]
            states = [self._param_state(p, amsgrad) for p in params]
            options: dict[str, Any] = {"foreach": None, "lr": group["lr"]}
            if not fused:
                if not self._unfused_prepare(grads, result):
                    continue
                options = self._unfused_options(group)
                # torch's unfused AdamW views complex tensors as real pairs only when told
                options["has_complex"] = any(p.is_complex() for p in params)
            beta1, beta2 = group["betas"]
            adamw_update(
                params,
                grads,
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [s["max_exp_avg_sq"] for s in states] if amsgrad else [],
                [s["step"] for s in states],
                fused=fused,
                grad_scale=grad_scale,
                found_inf=result.found_inf if fused else None,
                amsgrad=amsgrad,
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
                **options,
            )


def _check_betas(betas: Any, lr: Any, foreach: bool | None) -> None:
    """``betas`` as torch's AdamW takes them, with torch's wording for torch's conditions."""
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        raise invalid("betas", betas, "a pair (beta1, beta2)")
    for i, beta in enumerate(betas):
        check_number(f"beta parameter at index {i}", beta, 0.0, 1.0, high_open=True)
    tensors = [isinstance(b, torch.Tensor) for b in betas]
    if tensors[0] != tensors[1]:
        raise ValueError(
            f"Invalid betas: {betas!r}; betas must be either both floats or both Tensors"
        )
    # torch's foreach step takes no tensor hyper-parameters (the fused step does)
    if foreach and isinstance(lr, torch.Tensor):
        raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
    if foreach and tensors[0]:
        raise ValueError(
            "betas[0] as a Tensor is not supported for capturable=False and foreach=True"
        )
