"""Reaching a clipped optimizer's telemetry from the trainers that wrap it.

Hugging Face's ``Trainer`` hands callbacks accelerate's ``AcceleratedOptimizer``; Lightning hands
hooks a ``LightningOptimizer``. Both hold the real optimizer, which :func:`unwrap` finds.
:class:`ClipTelemetry` gathers the per-step statistics on the device and reads them once per
logging window. :func:`hf_callback` is a ``transformers.TrainerCallback`` built on them
(transformers is imported only when it is called), and :func:`lightning_callback` a Lightning
one. Both refuse, at the start of training, a trainer that clips before a clip_core optimizer
(:func:`check_trainer_clipping`): the configuration is caught, not inferred from the norms.
"""

from __future__ import annotations

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


def check_trainer_clipping(optimizers: Any, setting: str, fix: str) -> None:
    """Refuse a trainer that clips before a clip_core optimizer (its rule would clip nothing).

    ``setting`` is the trainer's clipping as the user wrote it, ``fix`` the value that turns it
    off. Called at the start of training by :func:`hf_callback` and :func:`lightning_callback`.
    """
    if not isinstance(optimizers, list | tuple):
        optimizers = [optimizers]
    clipped = [opt for opt in map(unwrap, optimizers) if opt is not None]
    if clipped:
        raise ValueError(
            f"Invalid {setting}: the trainer clips the gradients before "
            f"{type(clipped[0]).__name__} sees them, so its clipping rule "
            f"({clipped[0].clipping_type}) would clip nothing; set {fix} and let the optimizer clip"
        )


def hf_callback(prefix: str = "clip/") -> Any:
    """A ``transformers.TrainerCallback`` that logs the clipping telemetry with the Trainer's logs.

    It records after every optimizer step (through accelerate's wrapper) and adds
    :meth:`ClipTelemetry.summary` to each log entry (``trainer.state.log_history`` and the
    callbacks after it: pass it first, ``callbacks=[hf_callback()]`` comes after the reporting
    integrations, so use ``trainer.callback_handler.callbacks.insert(0, cb)`` for wandb and the
    like). At the start of training, ``max_grad_norm > 0`` (the Trainer's default is 1.0) with a
    clip_core optimizer is a ``ValueError`` naming the fix, ``max_grad_norm=0``.
    """
    from transformers import TrainerCallback

    class ClipTelemetryCallback(TrainerCallback):
        def __init__(self) -> None:
            self.telemetry = ClipTelemetry(prefix)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if args.max_grad_norm is not None and args.max_grad_norm > 0:
                check_trainer_clipping(
                    kwargs.get("optimizer"),
                    f"TrainingArguments(max_grad_norm={args.max_grad_norm})",
                    "max_grad_norm=0",
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


def lightning_callback() -> Any:
    """A ``lightning.pytorch.Callback`` that refuses ``gradient_clip_val`` with a clip_core optimizer.

    Lightning clips before ``optimizer.step`` (either ``gradient_clip_algorithm``, norm or
    value), so the optimizer's rule would see clipped gradients. At the start of training
    (``on_train_start``, once the optimizers exist) this is a ``ValueError`` naming the fix,
    ``gradient_clip_val=None``, in every precision (under ``16-mixed``/``bf16-mixed`` Lightning
    itself refuses it only at the first clipping, with a ``RuntimeError``). lightning is imported
    only when this is called.
    """
    from lightning.pytorch import Callback

    class ClipCheckCallback(Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            value = trainer.gradient_clip_val
            if value is not None and value > 0:
                algorithm = trainer.gradient_clip_algorithm or "norm"
                algorithm = getattr(algorithm, "value", algorithm)  # Lightning's enum
                check_trainer_clipping(
                    trainer.optimizers,
                    f"Trainer(gradient_clip_val={value}, gradient_clip_algorithm={algorithm!r})",
                    "gradient_clip_val=None",
                )

    return ClipCheckCallback()
