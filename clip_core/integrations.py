"""Reaching a clipped optimizer's telemetry from the trainers that wrap it.

Hugging Face's ``Trainer`` hands callbacks accelerate's ``AcceleratedOptimizer``; Lightning hands
hooks a ``LightningOptimizer``. Both hold the real optimizer, which :func:`unwrap` finds.
:class:`ClipTelemetry` gathers the per-step statistics on the device and reads them once per
logging window. :func:`hf_callback` is a ``transformers.TrainerCallback`` built on them
(transformers is imported only when it is called).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from clip_core.base import ClippedOptimizer

_WRAPPED = ("optimizer", "_optimizer")  # accelerate, Lightning


def unwrap(optimizer: Any) -> ClippedOptimizer | None:
    """The :class:`ClippedOptimizer` inside trainer wrappers, or None if there is none.

    Wrappers are followed first: Lightning's wrapper even passes ``isinstance`` checks for the
    class it wraps (it copies the optimizer's attributes).
    """
    seen: set[int] = set()
    while optimizer is not None and id(optimizer) not in seen:
        seen.add(id(optimizer))
        attrs = getattr(optimizer, "__dict__", {})
        inner = next(
            (attrs[n] for n in _WRAPPED if isinstance(attrs.get(n), torch.optim.Optimizer)), None
        )
        if inner is None:
            return optimizer if isinstance(optimizer, ClippedOptimizer) else None
        optimizer = inner
    return None


class ClipTelemetry:
    """Per-step clipping statistics kept on the device; one host read per :meth:`summary`.

    ``record(optimizer)`` after each optimizer step (any wrapper is unwrapped), then
    ``summary()`` when logging: the mean and max gradient norm, the mean clip fraction, the last
    threshold (the mean over tensors for per-tensor ``auto``), the steps skipped in the window
    and in total.
    """

    def __init__(self, prefix: str = "clip/") -> None:
        self.prefix = prefix
        self._rows: list[torch.Tensor] = []
        self._optimizer: ClippedOptimizer | None = None

    def record(self, optimizer: Any) -> None:
        opt = unwrap(optimizer)
        if opt is None:
            raise ValueError(
                f"Invalid optimizer: {type(optimizer).__name__}; expected a clip_core optimizer "
                "(or a trainer's wrapper around one)"
            )
        stats = opt.last_clip_stats
        if stats is None:
            return
        self._optimizer = opt
        self._rows.append(
            torch.stack(
                [
                    stats.grad_norm.float(),
                    stats.threshold.float().mean(),
                    stats.clip_fraction.float(),
                    stats.skipped.float(),
                    opt.skipped_steps.float(),
                ]
            )
        )

    def summary(self) -> dict[str, float]:
        """The window's statistics as floats (synchronises once), then start a new window."""
        if not self._rows:
            return {}
        rows = torch.stack(self._rows)
        self._rows = []
        kept = rows[:, 3] == 0  # the norm of a skipped step is not finite
        norms = torch.where(kept, rows[:, 0], torch.nan)
        values = torch.stack(
            [
                norms.nanmean(),
                torch.where(kept, rows[:, 0], -torch.inf).max(),
                rows[:, 2].mean(),
                rows[-1, 1],
                rows[:, 3].sum(),
                rows[-1, 4],
            ]
        ).tolist()
        names = (
            "grad_norm",
            "grad_norm_max",
            "clip_fraction",
            "threshold",
            "skipped",
            "skipped_total",
        )
        return {self.prefix + name: value for name, value in zip(names, values)}


def hf_callback(prefix: str = "clip/") -> Any:
    """A ``transformers.TrainerCallback`` that logs the clipping telemetry with the Trainer's logs.

    It records after every optimizer step (through accelerate's wrapper) and adds
    :meth:`ClipTelemetry.summary` to each log entry (``trainer.state.log_history`` and the
    callbacks after it: pass it first, ``callbacks=[hf_callback()]`` comes after the reporting
    integrations, so use ``trainer.callback_handler.callbacks.insert(0, cb)`` for wandb and the
    like). Warns at the start of training when ``max_grad_norm > 0``: the Trainer would clip
    before the optimizer.
    """
    from transformers import TrainerCallback

    class ClipTelemetryCallback(TrainerCallback):
        def __init__(self) -> None:
            self.telemetry = ClipTelemetry(prefix)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if args.max_grad_norm is not None and args.max_grad_norm > 0:
                warnings.warn(
                    f"TrainingArguments(max_grad_norm={args.max_grad_norm}) clips the gradients "
                    "before the clip_core optimizer sees them; set max_grad_norm=0",
                    UserWarning,
                    stacklevel=2,
                )

        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.telemetry.record(kwargs["optimizer"])

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            summary = self.telemetry.summary()
            if logs is not None:
                logs.update(summary)
            if state.log_history:  # Trainer.log appends the entry before calling on_log
                state.log_history[-1].update(summary)

    return ClipTelemetryCallback()
