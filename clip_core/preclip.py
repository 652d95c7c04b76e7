"""A warning for gradients that were clipped before the optimizer saw them.

Trainers clip by default (Hugging Face ``Trainer(max_grad_norm=1.0)``, Lightning's
``gradient_clip_val``); a clipped optimizer behind them sees norms that are all equal to the
trainer's threshold and has nothing left to clip. The sign is unmistakable: over the first steps
every global norm is the same value (to 1e-4) while this optimizer's own rule removes nothing.
A stream of one identical gradient (a benchmark reusing it) looks the same and is warned too.
"""

from __future__ import annotations

import warnings

import torch

from clip_core.clipping import ClipStats

WINDOW = 8  # steps observed before deciding
_SAME = 1e-4  # relative spread of norms that counts as "all equal"


class PreclipCheck:
    """Observes the telemetry of the first :data:`WINDOW` steps; warns once if pre-clipped.

    Nothing is read from the device while observing. At the end one flag is read: on CPU at
    once; on CUDA through a non-blocking copy, read only once an event recorded behind it has
    completed, so the step never waits. Other devices are not checked.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.done = False
        self._norms: list[torch.Tensor] = []
        self._fractions: list[torch.Tensor] = []
        self._pending: tuple[torch.Tensor, torch.cuda.Event] | None = None

    def observe(self, stats: ClipStats) -> None:
        if self.done:
            return
        if self._pending is not None:
            host, event = self._pending
            if event.query():
                self._decide(host)
            return
        norm = stats.grad_norm.float()
        self._norms.append(torch.where(stats.skipped == 0, norm, torch.nan))
        self._fractions.append(stats.clip_fraction.float())
        if len(self._norms) < WINDOW:
            return
        norms, fractions = torch.stack(self._norms), torch.stack(self._fractions)
        self._norms, self._fractions = [], []
        finite = ~torch.isnan(norms)
        high = torch.where(finite, norms, -torch.inf).max()
        low = torch.where(finite, norms, torch.inf).min()
        flag = (
            (finite.sum() >= WINDOW // 2)
            & (high > 0)
            & (high - low <= _SAME * high)
            & (fractions.max() < 1e-3)
        )
        verdict = torch.stack([flag.float(), high])
        if verdict.device.type == "cpu":  # no device to wait for
            self._decide(verdict)
        elif verdict.device.type == "cuda":
            host = verdict.to("cpu", non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending = (host, event)
        else:
            self.done = True

    def _decide(self, verdict: torch.Tensor) -> None:
        self.done = True
        flag, norm = verdict.tolist()
        if flag:
            warnings.warn(
                f"{self.owner}: the gradient norm was {norm:.6g} at each of the first {WINDOW} "
                "steps and this optimizer clipped none of them: the gradients look clipped "
                "before the optimizer (Hugging Face Trainer's max_grad_norm, Lightning's "
                "gradient_clip_val, clip_grad_norm_). Turn that clipping off "
                "(max_grad_norm=0, gradient_clip_val=None) so that the optimizer's rule applies.",
                UserWarning,
                stacklevel=6,  # the caller of opt.step() (through torch's wrappers)
            )
