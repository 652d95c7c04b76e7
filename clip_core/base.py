"""Shared machinery of the clipped optimizers: gathering gradients, clipping, skipping, persistence.

A subclass implements only its step rule in :meth:`ClippedOptimizer._update`, which receives the
clipped gradients (or a global factor to fuse in) and a ``found_inf`` flag to skip on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.optimizer import _get_fused_kernels_supported_devices

from clip_core._validation import check_choice, check_optional_int
from clip_core.clipping import Clipper, ClipResult, ClipRule, ClipStats, preset

NONFINITE_POLICIES = ("skip", "raise")
_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fused_supported(params: Iterable[torch.Tensor]) -> bool:
    """Whether torch's fused SGD/AdamW kernels accept these parameters."""
    devices = _get_fused_kernels_supported_devices()
    return all(
        p.device.type in devices and p.dtype in _FUSED_DTYPES and not p.is_sparse for p in params
    )


class ClippedOptimizer(Optimizer):
    """Base class: clips the global stochastic gradient, then hands it to a step rule.

    Args (shared by every clipped optimizer):
        clipping_type: one of :data:`clip_core.CLIPPING_TYPES` (ignored when ``rule`` is given).
        clipping_level: ``λ`` for the fixed-threshold rules (``>= 0``).
        beta: ``β`` in ``(0, 1)`` of the stochastic rules.
        p_autoclip: quantile ``p`` in ``(0, 1]`` of the ``auto`` rules.
        auto_window: ``None`` keeps the whole norm history (exact); an integer keeps the last ones.
        rule: a :class:`~clip_core.ClipRule` for combinations beyond the presets.
        seed: seed of the optimizer's own ``torch.Generator`` (default: drawn from torch's global RNG).
        nonfinite: ``"skip"`` (default) skips a step with a NaN/inf gradient on the device, no
            synchronisation; ``"raise"`` raises ``FloatingPointError`` naming the step (this check
            synchronises once per step).
        fused: use torch's fused kernels (default: when the device and dtype allow). The unfused
            fallback reads the skip flag on the host once per param group.
    """

    def __init__(
        self,
        params: Any,
        defaults: dict[str, Any],
        *,
        clipping_type: str = "norm",
        clipping_level: float = 1.0,
        beta: float = 0.85,
        p_autoclip: float = 0.75,
        auto_window: int | None = None,
        rule: ClipRule | None = None,
        seed: int | None = None,
        nonfinite: str = "skip",
        fused: bool | None = None,
    ) -> None:
        check_choice("nonfinite", nonfinite, NONFINITE_POLICIES)
        check_optional_int("auto_window", auto_window, 1)
        check_optional_int("seed", seed, 0)
        if fused not in (None, True, False):
            raise ValueError(f"Invalid fused: {fused!r}; expected None, True or False")
        if rule is None:
            rule = preset(clipping_type, clipping_level, beta, p_autoclip, auto_window)
        elif isinstance(rule, ClipRule):
            clipping_type = "custom"
        else:
            raise ValueError(f"Invalid rule: {rule!r}; expected a clip_core.ClipRule")
        super().__init__(params, defaults)
        all_params = [p for g in self.param_groups for p in g["params"]]
        _refuse_sharded(all_params)
        if fused and not fused_supported(all_params):
            raise ValueError(
                "fused=True needs floating-point dense parameters on one of "
                f"{_get_fused_kernels_supported_devices()}; use fused=None or False"
            )
        self.fused = fused_supported(all_params) if fused is None else fused
        self.clipping_type = clipping_type
        self.nonfinite = nonfinite
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        device = all_params[0].device if all_params else torch.device("cpu")
        self.clipper = Clipper(rule, seed=seed, device=device)
        self.skipped_steps = torch.zeros((), dtype=torch.int64, device=device)
        self.attempted_steps = 0  # host counter of step() calls that had gradients
        self.last_clip_stats: ClipStats | None = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        for key in ("lr", "weight_decay", "momentum"):
            value = self.param_groups[-1].get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and not value >= 0:
                raise ValueError(
                    f"Invalid {key}: {value!r} in a param group; expected a value >= 0"
                )

    # -- the step ------------------------------------------------------------------------------
    def _gather(self) -> list[tuple[dict[str, Any], list[torch.Tensor], list[torch.Tensor]]]:
        groups = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:
                    raise ValueError(f"{type(self).__name__} does not support sparse gradients")
            groups.append((group, params, [p.grad for p in params]))
        return groups

    def _threshold_scale(self) -> torch.Tensor | None:
        """Factor on a fixed clipping level (SSTM clips at ``λ/α_{k+1}``); ``None`` for 1."""
        return None

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Clip the stochastic gradient and take one step. No host synchronisation (see class doc)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self._gather()
        grads = [g for _, _, gs in groups for g in gs]
        if not grads:
            return loss
        measured = None
        if self.nonfinite == "raise":  # checked before any gradient is touched
            measured = self.clipper.measure(grads)
            if not bool(torch.isfinite(measured[1])):
                raise FloatingPointError(
                    f"non-finite gradient (global norm {float(measured[1])}) at step "
                    f"{self.attempted_steps} of {type(self).__name__}; pass nonfinite='skip' "
                    "to skip it"
                )
        result = self.clipper.clip(grads, self._threshold_scale(), measured)
        self._update(groups, result)
        self.skipped_steps += result.found_inf.to(torch.int64)
        self.attempted_steps += 1
        self.last_clip_stats = result.stats
        return loss

    def _update(
        self,
        groups: list[tuple[dict[str, Any], list[torch.Tensor], list[torch.Tensor]]],
        result: ClipResult,
    ) -> None:
        raise NotImplementedError

    def _fused_grad_scale(
        self,
        groups: list[tuple[dict[str, Any], list[torch.Tensor], list[torch.Tensor]]],
        result: ClipResult,
    ) -> torch.Tensor | None:
        """The ``grad_scale`` for torch's fused kernels (they divide the gradient by it): ``1/α``.

        The kernels accept only a float32 ``grad_scale``. When the norms are float64 (some
        gradient is float64), ``α`` is instead applied to the gradients in place, so float64
        parameters keep float64 precision in the clipping factor (one extra pass, no sync).
        """
        if result.scale is None:
            return None
        if result.scale.dtype == torch.float32:
            return result.scale.reciprocal()
        torch._foreach_mul_([g for _, _, gs in groups for g in gs], result.scale)
        return None

    def _unfused_prepare(self, grads: list[torch.Tensor], result: ClipResult) -> bool:
        """For the unfused fallback: apply the global factor in place; return False to skip."""
        if bool(result.found_inf):  # the one host read of the fallback path
            return False
        if result.scale is not None:
            torch._foreach_mul_(grads, result.scale)
        return True

    # -- persistence ---------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        """Optimizer-wide state of a step rule (per-parameter state lives in ``self.state``)."""
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["clip_state"] = {
            "clipper": self.clipper.state_dict(),
            "skipped_steps": self.skipped_steps.clone(),
            "attempted_steps": self.attempted_steps,
            "rule": repr(self.clipper.rule),
            "extra": self._extra_state(),
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        clip_state = state_dict.pop("clip_state", None)
        if clip_state is None:
            raise ValueError(
                f"state_dict has no 'clip_state': it was not saved by a {type(self).__name__}"
            )
        if clip_state["rule"] != repr(self.clipper.rule):
            raise ValueError(
                f"state_dict was saved with clipping rule {clip_state['rule']}, "
                f"but this optimizer uses {self.clipper.rule!r}"
            )
        super().load_state_dict(state_dict)
        self.clipper.load_state_dict(clip_state["clipper"])
        self.skipped_steps = clip_state["skipped_steps"].to(self.clipper.device)
        self.attempted_steps = int(clip_state["attempted_steps"])
        self._load_extra_state(clip_state["extra"])

    # -- conveniences --------------------------------------------------------------------------
    def norm_history(self) -> torch.Tensor | None:
        """The recorded statistic history of an ``auto`` rule, oldest first (synchronises)."""
        history = self.clipper.history
        return None if history is None or history.sorted is None else history.values().squeeze(0)


def _refuse_sharded(params: list[torch.Tensor]) -> None:
    """FSDP2/DTensor shards hold a slice of each tensor: a local norm is not the model's norm."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed support
        return
    if any(isinstance(p, DTensor) for p in params):
        raise ValueError(
            "clip_core optimizers do not support DTensor (FSDP2-sharded) parameters: the global "
            "gradient norm would be that of the local shard, not of the whole model. Use "
            "DistributedDataParallel, or FSDP with full (unsharded) gradients."
        )
