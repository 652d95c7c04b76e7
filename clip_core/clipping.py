r"""Clipping rules as a product of three small parts, and the stateful :class:`Clipper`.

A rule replaces the stochastic gradient ``g`` by ``α ⊙ g`` before the step rule sees it. It is
built from

* a **threshold** source: a fixed level ``λ`` (:class:`FixedThreshold`) or the ``p``-quantile of
  the history of the statistic, current step included (:class:`PercentileThreshold`);
* a **decision**: never clip (:class:`Never`), always clip above the threshold (:class:`Always`),
  or clip above the threshold with probability ``β^((λ/s)^k)`` (:class:`Stochastic`, ``k=1``
  linear, ``k=2`` quadratic), where ``s`` is the statistic;
* a **granularity**: the statistic ``s`` is the global norm ``‖g‖`` over every parameter
  (``"global"``), the norm ``‖g_i‖`` of each parameter tensor (``"tensor"``) or each
  coordinate's magnitude ``|g_j|`` (``"coordinate"``).

When the decision says clip, ``α = λ/s`` for that unit, else ``α = 1``; a zero statistic never
clips, so a zero gradient gives ``α = 1`` and never NaN. The nine names in
:data:`CLIPPING_TYPES` are presets of this product (:func:`preset`); any other combination, such
as per-tensor ``auto``, is ``ClipRule(PercentileThreshold(p), Always(), "tensor")``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import torch

from clip_core._eager import eager_only
from clip_core._validation import check_choice, check_int, check_nonnegative, check_number, invalid
from clip_core.history import SortedHistory
from clip_core.norms import (
    Reduce,
    blas_measurable,
    cache_sized_pieces,
    norm_dtype,
    squared_norm,
    tensor_norms,
)

Granularity = Literal["global", "tensor", "coordinate"]
GRANULARITIES: tuple[str, ...] = ("global", "tensor", "coordinate")

CLIPPING_TYPES: tuple[str, ...] = (
    "none",
    "norm",
    "layer_wise",
    "coord_wise",
    "auto",
    "linear_stoch_norm",
    "quadratic_stoch_norm",
    "linear_stoch_auto",
    "quadratic_stoch_auto",
)

#: How an ``auto`` history is updated (``history_path``; see :mod:`clip_core.history`).
HISTORY_PATHS: tuple[str, ...] = ("auto", "host", "device")


# -- the three parts ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FixedThreshold:
    """``λ`` = ``level`` (``clipping_level``)."""

    level: float

    def __post_init__(self) -> None:
        check_nonnegative("clipping_level", self.level)


@dataclass(frozen=True)
class PercentileThreshold:
    """``λ_t = numpy.quantile(h_t, p)`` of the statistic's history ``h_t`` (current step included).

    ``window=None`` keeps the whole history (exact, ``O(t)`` memory); ``window=W`` the last ``W``.
    """

    p: float
    window: int | None = None

    def __post_init__(self) -> None:
        check_number("p_autoclip", self.p, 0.0, 1.0, low_open=True)
        check_int("auto_window", self.window, 1, optional=True)


@dataclass(frozen=True)
class Never:
    """``α = 1``: no clipping (the ``none`` preset)."""


@dataclass(frozen=True)
class Always:
    """Clip every unit whose statistic exceeds the threshold."""


@dataclass(frozen=True)
class Stochastic:
    """Clip a unit above the threshold with probability ``β^((λ/s)^power)``."""

    beta: float
    power: int  # 1: linear, 2: quadratic

    def __post_init__(self) -> None:
        check_number("beta", self.beta, 0.0, 1.0, low_open=True, high_open=True)
        if self.power not in (1, 2):
            raise invalid("power", self.power, "1 (linear) or 2 (quadratic)")


Threshold = FixedThreshold | PercentileThreshold
Decision = Never | Always | Stochastic


@dataclass(frozen=True)
class ClipRule:
    """One clipping rule: where the threshold comes from, how to decide, and at what granularity."""

    threshold: Threshold
    decision: Decision
    granularity: Granularity = "global"

    def __post_init__(self) -> None:
        check_choice("granularity", self.granularity, GRANULARITIES)
        if self.granularity == "coordinate" and isinstance(self.threshold, PercentileThreshold):
            raise ValueError(
                "Invalid combination: a percentile (auto) threshold needs a history per unit, "
                "which is not kept per coordinate; use granularity 'global' or 'tensor'"
            )

    def kind(self) -> str:
        """The rule without its values (λ, β, p): what a loaded state_dict must match."""
        threshold, decision = self.threshold, self.decision
        source = type(threshold).__name__
        if isinstance(threshold, PercentileThreshold):
            source += f"(window={threshold.window})"
        how = type(decision).__name__
        if isinstance(decision, Stochastic):
            how += f"(power={decision.power})"
        return f"{source} x {how} x {self.granularity}"

    def values(self) -> dict[str, float]:
        """The rule's values under the param-group keys that hold them."""
        out = {}
        if isinstance(self.threshold, FixedThreshold):
            out["clipping_level"] = self.threshold.level
        else:
            out["p_autoclip"] = self.threshold.p
        if isinstance(self.decision, Stochastic):
            out["beta"] = self.decision.beta
        return out

    def with_values(
        self,
        clipping_level: float | None = None,
        beta: float | None = None,
        p_autoclip: float | None = None,
    ) -> ClipRule:
        """The same kind of rule with new values (``self`` when nothing changes)."""
        threshold, decision = self.threshold, self.decision
        if isinstance(threshold, FixedThreshold) and clipping_level not in (None, threshold.level):
            threshold = FixedThreshold(clipping_level)
        if isinstance(threshold, PercentileThreshold) and p_autoclip not in (None, threshold.p):
            threshold = replace(threshold, p=p_autoclip)
        if isinstance(decision, Stochastic) and beta not in (None, decision.beta):
            decision = replace(decision, beta=beta)
        if threshold is self.threshold and decision is self.decision:
            return self
        return ClipRule(threshold, decision, self.granularity)


def preset(
    clipping_type: str,
    clipping_level: float = 1.0,
    beta: float = 0.85,
    p_autoclip: float = 0.75,
    auto_window: int | None = None,
) -> ClipRule:
    """The :class:`ClipRule` behind one of the names in :data:`CLIPPING_TYPES`."""
    check_choice("clipping_type", clipping_type, CLIPPING_TYPES)
    check_nonnegative("clipping_level", clipping_level)
    check_number("beta", beta, 0.0, 1.0, low_open=True, high_open=True)
    check_number("p_autoclip", p_autoclip, 0.0, 1.0, low_open=True)
    fixed = FixedThreshold(float(clipping_level))
    auto = PercentileThreshold(float(p_autoclip), auto_window)
    table: dict[str, ClipRule] = {
        "none": ClipRule(fixed, Never()),
        "norm": ClipRule(fixed, Always()),
        "layer_wise": ClipRule(fixed, Always(), "tensor"),
        "coord_wise": ClipRule(fixed, Always(), "coordinate"),
        "auto": ClipRule(auto, Always()),
        "linear_stoch_norm": ClipRule(fixed, Stochastic(beta, 1)),
        "quadratic_stoch_norm": ClipRule(fixed, Stochastic(beta, 2)),
        "linear_stoch_auto": ClipRule(auto, Stochastic(beta, 1)),
        "quadratic_stoch_auto": ClipRule(auto, Stochastic(beta, 2)),
    }
    return table[clipping_type]


#: Every name of :data:`CLIPPING_TYPES` with its rule at :func:`preset`'s default values: what
#: tells the presets apart (threshold source, decision, and ``granularity``, the unit a threshold
#: bounds: the global norm, each tensor's norm or each coordinate), for code that groups them.
PRESET_RULES: Mapping[str, ClipRule] = MappingProxyType({t: preset(t) for t in CLIPPING_TYPES})


# -- the stateful clipper ---------------------------------------------------------------------
class ClipStats(NamedTuple):
    """Telemetry of one step, as device tensors (reading them synchronises; the step does not).

    * ``grad_norm``: global norm ``‖g‖`` before clipping (0-d).
    * ``threshold``: the threshold used (0-d; per tensor ``[n]`` for a per-tensor percentile).
    * ``clip_fraction``: share of the gradient norm removed, ``1 − ‖α⊙g‖/‖g‖`` (0 if ``g = 0``).
    * ``skipped``: 1.0 when the step was skipped for a non-finite gradient, else 0.0.
    """

    grad_norm: torch.Tensor
    threshold: torch.Tensor
    clip_fraction: torch.Tensor
    skipped: torch.Tensor


class ClipResult(NamedTuple):
    """What the step rule needs: a global factor to fuse into its update, and the skip flag."""

    scale: torch.Tensor | None  # 0-d α for global rules; None if grads were clipped in place
    # 0-d float, 1.0 when the gradient holds a NaN or an infinity; None when nothing measured it
    found_inf: torch.Tensor | None
    stats: ClipStats | None  # None without telemetry


@eager_only  # torch.compile cannot trace a torch.Generator: one graph break
def _uniform(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform draws shaped like ``like`` from the optimizer's own generator."""
    return torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def _result(
    scale: torch.Tensor | None,
    total_norm: torch.Tensor,
    valid: torch.Tensor,
    threshold: torch.Tensor,
    fraction: torch.Tensor,
) -> ClipResult:
    found_inf = (~valid).float()
    stats = ClipStats(total_norm, threshold, torch.where(valid, fraction, 0.0), found_inf)
    return ClipResult(scale, found_inf, stats)


class Clipper:
    """Applies a :class:`ClipRule` to gradient lists; owns the random generator and the history.

    ``clip`` never synchronises with the host: decisions are sampled on the device, non-finite
    gradients are flagged in ``found_inf`` for the step rule to skip, and the history ignores them
    (on the host path the history reads the norm and the flag: see :mod:`clip_core.history`;
    ``history_path`` is one of :data:`HISTORY_PATHS`, as in ``ClippedOptimizer``).
    Global rules return the factor ``α`` instead of touching the gradients, so a fused update can
    apply it in the same pass; per-tensor and per-coordinate rules clip the gradients in place
    (as ``clip_grad_norm_`` / ``clip_grad_value_`` do).
    """

    def __init__(
        self,
        rule: ClipRule,
        *,
        seed: int,
        device: torch.device,
        reduce: Reduce | None = None,
        history_path: str = "auto",
    ) -> None:
        check_choice("history_path", history_path, HISTORY_PATHS)
        self.rule = rule
        self.history_path = history_path
        # sums local squared norms over the shards of sharded gradients (clip_core.sharding)
        self.reduce = reduce
        self.seed = int(seed)
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        self.history: SortedHistory | None = None
        self._level: torch.Tensor | None = None  # λ on the device, made once per value
        self._level_key: tuple[Any, ...] | None = None

    def to(self, device: torch.device) -> None:
        """Move to ``device`` (the first step after deferred initialisation), drawing on."""
        device = torch.device(device)
        if device == self.device:
            return
        generator = torch.Generator(device=device)
        if device.type == self.device.type:
            generator.set_state(self.generator.get_state())
        else:  # a generator's state is per device type: start the new one from the seed
            generator.manual_seed(self.seed)
        self.device, self.generator = device, generator
        self._level_key = None
        if self.history is not None:
            self.history.load_state_dict(self.history.state_dict(), device)

    # -- measuring ---------------------------------------------------------------------------
    def measure(self, grads: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-tensor norms ``[n]`` and the global norm (0-d): :func:`~clip_core.norms.tensor_norms`."""
        return tensor_norms(grads, self.device, self.reduce)

    # -- thresholds and decisions ------------------------------------------------------------
    def _threshold(
        self,
        stat: torch.Tensor,
        valid: torch.Tensor,
        scale: torch.Tensor | None,
        levels: list[float] | None,
    ) -> torch.Tensor:
        source = self.rule.threshold
        if isinstance(source, PercentileThreshold):
            if self.history is None:
                self.history = self._new_history(stat.numel(), stat.dim() == 0)
            elif stat.dim() and self.history.num_units != stat.numel():  # per-tensor histories
                raise ValueError(
                    "per-tensor auto clipping needs the same parameters to have gradients at "
                    f"every step (history has {self.history.num_units}, this step {stat.numel()})"
                )
            self.history.push(stat, valid)
            return self.history.quantile(source.p)
        return self._fixed_level(stat.dtype, scale, levels)

    def _fixed_level(
        self, dtype: torch.dtype, scale: torch.Tensor | None, levels: list[float] | None = None
    ) -> torch.Tensor:
        """λ as a 0-d device tensor, or ``[n]`` for per-tensor ``levels``; times ``scale``."""
        level = self.rule.threshold.level  # type: ignore[union-attr]
        key = (dtype, level if levels is None else tuple(levels))
        if self._level_key != key:
            # in the statistic's dtype, so float64 gradients see λ itself, not float32(λ); filled
            # on the device (torch.tensor(..., device=cuda) would copy from the host and sync)
            def fill(value: float) -> torch.Tensor:
                return torch.full((), value, dtype=dtype, device=self.device)

            self._level = fill(level) if levels is None else torch.stack([fill(v) for v in levels])
            self._level_key = key
        assert self._level is not None
        return self._level if scale is None else self._level * scale.to(dtype)

    def _clip_mask(self, stat: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        decision = self.rule.decision
        if isinstance(decision, Never):
            return torch.zeros_like(stat, dtype=torch.bool)
        exceeds = stat > threshold
        if isinstance(decision, Always):
            return exceeds
        u = _uniform(stat, self.generator)
        ratio = threshold / stat  # < 1 wherever it matters (stat > threshold)
        probability = torch.pow(decision.beta, ratio**decision.power)
        return exceeds & (u < probability)

    @staticmethod
    def _valid(total_norm: torch.Tensor, found_inf: torch.Tensor | None) -> torch.Tensor:
        valid = torch.isfinite(total_norm)
        return valid if found_inf is None else valid & (found_inf.to(valid.device) == 0)

    # -- the public entry --------------------------------------------------------------------
    def clip(
        self,
        grads: list[torch.Tensor],
        threshold_scale: torch.Tensor | None = None,
        measured: tuple[torch.Tensor, torch.Tensor] | None = None,
        *,
        levels: list[float] | None = None,
        grad_scale: torch.Tensor | None = None,
        found_inf: torch.Tensor | None = None,
        telemetry: bool = True,
    ) -> ClipResult:
        """Measure and clip ``grads``.

        ``threshold_scale`` multiplies a fixed level (SSTM clips at ``λ/α_{k+1}``); percentile
        thresholds are already in gradient units and are not scaled. ``measured`` is the
        :meth:`measure` of ``grads`` when the caller has already taken it. ``levels`` gives each
        gradient its own fixed λ (per-tensor and per-coordinate rules only).

        ``grad_scale`` and ``found_inf`` come from AMP's ``GradScaler``: the gradients hold
        ``S·g`` with ``S = grad_scale``, and ``found_inf`` is the scaler's overflow flag. Norms,
        thresholds, the history and the telemetry are in units of ``g``; the returned factor
        includes ``1/S``, so the step rule's one pass both unscales and clips.

        ``telemetry=False`` returns no statistics; a rule that never clips then measures
        nothing, so its only skip flag is ``found_inf`` (the step costs what torch's does).
        """
        if not telemetry and isinstance(self.rule.decision, Never):
            inv = None if grad_scale is None else grad_scale.to(norm_dtype(grads)).reciprocal()
            return ClipResult(inv, found_inf, None)
        if self.rule.granularity == "coordinate":
            result = self._clip_coordinatewise(
                grads, threshold_scale, measured, levels, grad_scale, found_inf
            )
        else:
            result = self._clip_by_norms(
                grads, threshold_scale, measured, levels, grad_scale, found_inf
            )
        return result if telemetry else result._replace(stats=None)

    def _clip_by_norms(
        self,
        grads: list[torch.Tensor],
        threshold_scale: torch.Tensor | None,
        measured: tuple[torch.Tensor, torch.Tensor] | None,
        levels: list[float] | None,
        grad_scale: torch.Tensor | None,
        found_inf: torch.Tensor | None,
    ) -> ClipResult:
        """Global and per-tensor rules: one measuring pass, then a factor (global) or in place."""
        norms, total_norm = measured if measured is not None else self.measure(grads)
        inv = None if grad_scale is None else grad_scale.to(total_norm.dtype).reciprocal()
        if inv is not None:
            norms, total_norm = norms * inv, total_norm * inv
        valid = self._valid(total_norm, found_inf)
        if self.rule.granularity == "global":
            threshold = self._threshold(total_norm, valid, threshold_scale, None)
            mask = self._clip_mask(total_norm, threshold)
            alpha = torch.where(mask, threshold / total_norm, 1.0)
            scale = None if isinstance(self.rule.decision, Never) else alpha
            if inv is not None:
                scale = inv if scale is None else scale * inv
            fraction = 1.0 - alpha
        else:
            threshold = self._threshold(norms, valid, threshold_scale, levels)
            mask = self._clip_mask(norms, threshold)
            alpha = torch.where(mask, threshold / norms, 1.0)
            factors = alpha if inv is None else alpha * inv
            torch._foreach_mul_(grads, [a.to(g.device) for a, g in zip(factors.unbind(0), grads)])
            kept = torch.linalg.vector_norm(alpha * norms)
            fraction = torch.where(total_norm > 0, 1.0 - kept / total_norm, 0.0)
            scale = None
        return _result(scale, total_norm, valid, threshold, fraction)

    def _clip_coordinatewise(
        self,
        grads: list[torch.Tensor],
        threshold_scale: torch.Tensor | None,
        measured: tuple[torch.Tensor, torch.Tensor] | None,
        levels: list[float] | None,
        grad_scale: torch.Tensor | None,
        found_inf: torch.Tensor | None,
    ) -> ClipResult:
        """Clip each coordinate in place; measures ``‖g‖`` before and after for the telemetry.

        The threshold is a fixed level (a percentile needs no per-coordinate history), known
        before measuring. On CPU each piece of about 1 MiB is measured, clipped and measured
        again while it is in the core's cache, so the three passes cost about one read and one
        write of memory. Under AMP the gradients hold ``S·g``: they are clipped at ``S·λ`` and
        the ``1/S`` is left to the step rule (returned as the factor).
        """
        dtype = norm_dtype(grads)
        threshold = self._fixed_level(dtype, threshold_scale, levels)
        limit = threshold if grad_scale is None else threshold * grad_scale.to(dtype)
        fixed = threshold_scale is None and grad_scale is None  # λ itself: clamp by host floats
        level = self.rule.threshold.level  # type: ignore[union-attr]

        def clip_one(i: int, g: torch.Tensor) -> None:
            host = (level if levels is None else levels[i]) if fixed else None
            self._clip_coordinates(g, limit[i] if limit.dim() else limit, host)

        if measured is None and blas_measurable(grads):
            before, after = [], []
            for i, g in enumerate(grads):
                for piece in cache_sized_pieces(g):
                    before.append(squared_norm(piece, dtype))
                    clip_one(i, piece)
                    after.append(squared_norm(piece, dtype))
            total_norm, kept = self._whole_norms(
                torch.stack(before).sum(), torch.stack(after).sum()
            )
        else:
            total_norm = (measured if measured is not None else self.measure(grads))[1]
            for i, g in enumerate(grads):
                clip_one(i, g)
            kept = self.measure(grads)[1]
        inv = None
        if grad_scale is not None:
            inv = grad_scale.to(dtype).reciprocal()
            total_norm, kept = total_norm * inv, kept * inv
        valid = self._valid(total_norm, found_inf)
        fraction = torch.where(total_norm > 0, 1.0 - kept / total_norm, 0.0)
        return _result(inv, total_norm, valid, threshold, fraction)

    def _whole_norms(
        self, before: torch.Tensor, after: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Norms before and after clipping from their squares, summed over shards in one collective."""
        if self.reduce is None:
            return before.sqrt(), after.sqrt()
        return self.reduce(torch.stack([before, after])).sqrt().unbind(0)

    def _clip_coordinates(self, g: torch.Tensor, limit: torch.Tensor, host: float | None) -> None:
        """Clip the coordinates of one tensor (or piece of one) in place at ``limit``.

        ``host`` is the same limit as a Python float when there is one (the fastest clamp).
        """
        decision = self.rule.decision
        if isinstance(decision, Never):
            return
        if isinstance(decision, Always):
            if host is not None:  # clamp(g, -λ, λ) == g·min(1, λ/|g|), one pass
                g.clamp_(-host, host)
            else:
                t = limit.to(g.device)
                g.clamp_(-t, t)
            return
        t = limit.to(g.device, g.dtype)
        magnitude = g.abs()
        mask = self._clip_mask(magnitude, t)
        g.copy_(torch.where(mask, torch.sign(g) * t, g))

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "generator": self.generator.get_state(),
            "history": None if self.history is None else self.history.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.generator.set_state(state["generator"].cpu())
        saved = state["history"]
        if saved is None:
            self.history = None
            return
        if not isinstance(self.rule.threshold, PercentileThreshold):
            raise ValueError("state_dict holds an auto-clipping history, but this rule keeps none")
        # the buffers are the same on both paths: this clipper's path carries on from them
        self.history = self._new_history(saved["num_units"], self.rule.granularity == "global")
        self.history.load_state_dict(saved, self.device)

    def _new_history(self, num_units: int, scalar: bool) -> SortedHistory:
        window = self.rule.threshold.window  # type: ignore[union-attr]
        # "auto" and "host" differ only for non-CPU tensors, which ClippedOptimizer refuses
        # with "host"; SortedHistory takes the device path for those either way
        host_path = self.history_path != "device"
        return SortedHistory(num_units, window, scalar=scalar, host_path=host_path)
