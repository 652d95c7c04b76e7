"""Shared machinery of the clipped optimizers: gathering gradients, clipping, skipping, persistence.

A subclass implements only its step rule in :meth:`ClippedOptimizer._update`, which receives the
clipped gradients (or a global factor to fuse in) and a ``found_inf`` flag to skip on the device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.optimizer import _get_fused_kernels_supported_devices

from clip_core import sharding
from clip_core._eager import unwrapped_when_eager
from clip_core._validation import (
    check_choice,
    check_false,
    check_int,
    check_nonnegative,
    check_number,
    invalid,
    naming,
)
from clip_core.clipping import (
    HISTORY_PATHS,
    Clipper,
    ClipResult,
    ClipRule,
    ClipStats,
    preset,
)

NONFINITE_POLICIES = ("skip", "raise")
_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _scalar(t: torch.Tensor | None) -> torch.Tensor | None:
    """AMP's ``grad_scale``/``found_inf`` as a 0-d tensor (torch's fused kernels also take ``[1]``)."""
    return t if t is None or t.dim() == 0 else t.reshape(())


def fused_supported(params: Iterable[torch.Tensor]) -> bool:
    """Whether torch's fused SGD/AdamW kernels accept these parameters."""
    devices = _get_fused_kernels_supported_devices()
    return all(
        p.device.type in devices and p.dtype in _FUSED_DTYPES and not p.is_sparse for p in params
    )


class _StepRecord:
    """What ``step()`` leaves for the user to read.

    A plain object on purpose: torch.compile keeps the writes a compiled step makes to a plain
    object's attributes, but drops those made to the optimizer's own attributes.
    """

    def __init__(self) -> None:
        self.stats: ClipStats | None = None


# What a copy leaves out: torch's hooks (as torch's own copies do) and the device mesh.
_NOT_COPIED = frozenset(
    (
        "_sharding",
        "_optimizer_step_pre_hooks",
        "_optimizer_step_post_hooks",
        "_optimizer_state_dict_pre_hooks",
        "_optimizer_state_dict_post_hooks",
        "_optimizer_load_state_dict_pre_hooks",
        "_optimizer_load_state_dict_post_hooks",
    )
)


def _rule_of(
    rule: ClipRule | None,
    clipping_type: str,
    clipping_level: float,
    beta: float,
    p_autoclip: float,
    auto_window: int | None,
) -> tuple[ClipRule, str]:
    """The rule asked for (a preset by name, or a custom one) and its name."""
    check_int("auto_window", auto_window, 1, optional=True)
    if rule is None:
        return preset(clipping_type, clipping_level, beta, p_autoclip, auto_window), clipping_type
    if isinstance(rule, ClipRule):
        return rule, "custom"
    raise invalid("rule", rule, "a clip_core.ClipRule")


# What a saved clip_state holds (``rule`` or, in newer states, also ``rule_kind``).
_CLIP_STATE_KEYS = frozenset(("clipper", "skipped_steps", "attempted_steps", "rule", "extra"))
_CLIPPER_KEYS = frozenset(("seed", "generator", "history"))
# Hyper-parameters of the other step rules: a saved group holding one is another optimizer's.
_FOREIGN_GROUP_KEYS = frozenset(
    ("betas", "eps", "amsgrad", "momentum", "dampening", "nesterov", "L", "nu", "capturable")
)


def _check_keys(where: str, value: Any, required: frozenset[str], owner: str) -> None:
    missing = sorted(required - set(value)) if isinstance(value, dict) else sorted(required)
    if missing:
        raise ValueError(
            f"Invalid {where}: missing {missing}; expected the state_dict of a {owner}"
        )


# Param-group keys of the rule's values, and the check each gets in a param group.
_RULE_KEYS = {
    "clipping_level": lambda v: check_nonnegative("clipping_level", v),
    "beta": lambda v: check_number("beta", v, 0.0, 1.0, low_open=True, high_open=True),
    "p_autoclip": lambda v: check_number("p_autoclip", v, 0.0, 1.0, low_open=True),
}


class ClippedOptimizer(Optimizer):
    """Base class: clips the global stochastic gradient, then hands it to a step rule.

    Args (shared by every clipped optimizer):
        clipping_type: one of :data:`clip_core.CLIPPING_TYPES` (ignored when ``rule`` is given).
        clipping_level: ``λ`` for the fixed-threshold rules (``>= 0``).
        beta: ``β`` in ``(0, 1)`` of the stochastic rules.
        p_autoclip: quantile ``p`` in ``(0, 1]`` of the ``auto`` rules.
        auto_window: ``None`` keeps the whole norm history (exact); an integer keeps the last ones.
        history_path: how the ``auto`` history is updated (:mod:`clip_core.history`):
            ``"device"`` by elementwise tensor passes, never reading a value on the host (what
            accelerators need); ``"host"`` through NumPy views with a binary search (CPU
            parameters only: reading a CPU tensor waits for no device, and it is about half
            the cost there); ``"auto"`` (default) is ``"host"`` on CPU and ``"device"``
            elsewhere. Both give the same thresholds bit for bit and keep the same buffers,
            so the choice is not saved: a ``state_dict`` loads under either path.
        rule: a :class:`~clip_core.ClipRule` for combinations beyond the presets.
        seed: seed of the optimizer's own ``torch.Generator`` (default: drawn from torch's global RNG).
        nonfinite: ``"skip"`` (default) skips a step with a NaN/inf gradient on the device, no
            synchronisation; ``"raise"`` raises ``FloatingPointError`` naming the step (this check
            synchronises once per step).
        telemetry: ``True`` (default) keeps :attr:`last_clip_stats`; ``False`` keeps none, and a
            rule that never clips (``none``) then measures nothing at all, so its step costs
            what torch's fused step costs: no norm pass, hence no non-finite check of its own
            (a ``GradScaler``'s ``found_inf`` still skips the step), ``nonfinite="raise"`` still
            checks.
        fused: use torch's fused kernels (default: when the device and dtype allow). The unfused
            fallback reads the skip flag on the host once per param group.
        foreach: ``None`` (default) takes the fused kernel when ``fused`` allows it, else torch's
            foreach implementation; ``True`` takes the foreach one and ``False`` torch's
            per-tensor loop (both are the unfused fallback). ``fused=True`` with ``foreach=True``
            is refused, as in torch.
        maximize: maximise the objective (per param group, as in torch).
        differentiable: accepted only as ``False`` (clipping decisions have no gradient).

    ``clipping_level``, ``beta`` and ``p_autoclip`` (those the rule uses) live in every param
    group, like ``lr``: change them there, give a param group its own, and a ``state_dict``
    brings them back. Per-group levels apply to the per-tensor and per-coordinate rules; a
    global rule clips the norm of all groups together, so its values must agree across groups.

    As torch's optimizers: a generator of parameters is read once; complex parameters step as
    their real views (``torch.view_as_real``, norms of complex tensors as torch defines them;
    ``coord_wise`` clips the real and imaginary parts each); meta-device parameters bind the
    optimizer to their device at the first step, after ``to_empty``; a copy
    (``copy.deepcopy``, pickle) steps exactly as the original; ``foreach``, ``fused`` and
    ``differentiable`` are in every param group (they apply optimizer-wide). A state dict of
    another optimizer or of another model is refused at :meth:`load_state_dict`.

    Works with AMP's ``GradScaler`` the way torch's fused optimizers do
    (``_step_supports_amp_scaling``): ``scaler.step(opt)`` hands the loss scale and the overflow
    flag to :meth:`step`, which unscales and skips inside its own passes.
    """

    _step_supports_amp_scaling = True
    #: Per-parameter state keys of the step rule: (all it may hold, those it must hold).
    _STATE_KEYS: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
    #: Keys of the rule's optimizer-wide state (``clip_state["extra"]``).
    _EXTRA_KEYS: frozenset[str] = frozenset()

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
        history_path: str = "auto",
        rule: ClipRule | None = None,
        seed: int | None = None,
        nonfinite: str = "skip",
        telemetry: bool = True,
        fused: bool | None = None,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        **unknown: Any,
    ) -> None:
        name = type(self).__name__
        if unknown:  # named after the class called, not this base class
            raise TypeError(
                f"{name}.__init__() got an unexpected keyword argument {next(iter(unknown))!r}"
            )
        with naming(name):
            check_choice("nonfinite", nonfinite, NONFINITE_POLICIES)
            check_choice("history_path", history_path, HISTORY_PATHS)
            check_int("seed", seed, 0, optional=True)
            for flag, value in (("fused", fused), ("foreach", foreach)):
                if value is not None and not isinstance(value, bool):
                    raise invalid(flag, value, "None, True or False")
            if not isinstance(telemetry, bool):
                raise invalid("telemetry", telemetry, "True or False")
            if fused and foreach:
                raise ValueError("Invalid fused=True with foreach=True; expected at most one")
            check_false("differentiable", differentiable, f"{name} is not differentiable")
            rule, clipping_type = _rule_of(
                rule, clipping_type, clipping_level, beta, p_autoclip, auto_window
            )
        self._rule_keys = tuple(rule.values())  # λ, β, p live in the param groups (as lr does)
        # torch's flags are in every group too (as torch keeps them), but apply optimizer-wide
        flags = {"foreach": foreach, "fused": fused, "differentiable": False}
        super().__init__(params, {**defaults, **rule.values(), "maximize": bool(maximize), **flags})
        self.foreach = foreach
        self.clipping_type = clipping_type
        self.nonfinite = nonfinite
        self.telemetry = bool(telemetry)
        self.history_path = history_path
        self._setup(rule, fused, seed)

    def _setup(self, rule: ClipRule, fused: bool | None, seed: int | None) -> None:
        """Bind the clipper, the counters and ``fused`` to the parameters' device.

        Parameters on the meta device (deferred initialisation) have no device yet: the binding
        waits for the first step, after ``to_empty`` has given them one (as torch's optimizers do).
        """
        name = type(self).__name__
        all_params = self._all_params()
        # DTensor (FSDP2) parameters: whole-model norms by one all-reduce (clip_core.sharding)
        self._sharding = sharding.plan(all_params, rule, name)
        device = all_params[0].device if all_params else torch.device("cpu")
        if self.history_path == "host" and device.type != "cpu":
            with naming(name):
                raise invalid(
                    "history_path",
                    self.history_path,
                    f"'auto' or 'device' for parameters on {device.type} (the host path "
                    "updates CPU tensors through NumPy)",
                )
        self._deferred = device.type == "meta"
        self._fused_request = fused
        self.fused = False if self._deferred else self._resolve_fused(all_params)
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
            if self._sharding is not None:  # every rank must draw the same decisions
                seed = self._sharding.agree_on_seed(seed)
        home = torch.device("cpu") if self._deferred else device
        reduce = None if self._sharding is None else self._sharding.all_reduce
        self.clipper = Clipper(
            rule, seed=seed, device=home, reduce=reduce, history_path=self.history_path
        )
        # Counters are tensors updated in place: torch.compile keeps those updates, while a
        # Python int would be lost (see _StepRecord) or recompile the step at every value.
        self.skipped_steps = torch.zeros((), dtype=torch.int64, device=home)
        self.attempted_steps = torch.zeros((), dtype=torch.int64, device=home)
        self._record = _StepRecord()

    def _resolve_fused(self, all_params: list[torch.Tensor]) -> bool:
        fused, foreach = self._fused_request, self.foreach
        if fused and not fused_supported(all_params):
            with naming(type(self).__name__):
                raise ValueError(
                    "Invalid fused=True: needs floating-point dense parameters on one of "
                    f"{_get_fused_kernels_supported_devices()}; use fused=None or False"
                )
        resolved = fused if fused is not None else foreach is None and fused_supported(all_params)
        for group in self.param_groups:
            group["fused"] = resolved
        return resolved

    def _all_params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _materialize(self) -> None:
        """First step after deferred initialisation: move what lives on the device there."""
        params = self._all_params()
        device = params[0].device
        if device.type == "meta":
            raise RuntimeError(
                f"{type(self).__name__}.step(): the parameters are still on the meta device; "
                "give them storage first (module.to_empty(device=...)) and initialise them"
            )
        self.fused = self._resolve_fused(params)
        self.clipper.to(device)
        self._move_to(device)
        self._deferred = False

    def _move_to(self, device: torch.device) -> None:
        """Move the optimizer-wide device tensors (a subclass adds its own)."""
        self.skipped_steps = self.skipped_steps.to(device)
        self.attempted_steps = self.attempted_steps.to(device)

    @property
    def last_clip_stats(self) -> ClipStats | None:
        """Telemetry of the last step (device tensors; see :class:`~clip_core.ClipStats`)."""
        return self._record.stats

    # -- copies and pickling -------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # torch keeps only defaults, state and param_groups; a clipped optimizer's copy also
        # needs its clipper, counters and flags (its hooks are left out, as torch does)
        kept = {k: v for k, v in self.__dict__.items() if k not in _NOT_COPIED}
        return {**super().__getstate__(), **kept}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_sharding" not in self.__dict__:  # a copy: the mesh is found again from the params
            self._sharding = sharding.plan(
                self._all_params(), self.clipper.rule, type(self).__name__
            )

    # torch's Optimizer methods below import TorchDynamo at their first call (over a second per
    # process start) only to turn compilation off: called unwrapped unless a compile traces them
    def zero_grad(self, set_to_none: bool = True) -> None:
        unwrapped_when_eager(Optimizer.zero_grad)(self, set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        with naming(type(self).__name__):
            params = param_group.get("params") if isinstance(param_group, dict) else None
            if params is not None and not isinstance(params, torch.Tensor | set):
                # a generator is read once: make the list torch would make, before checking it
                param_group["params"] = params = list(params)
            for p in params if isinstance(params, list) else []:
                if isinstance(p, torch.Tensor) and p.layout != torch.strided:
                    raise ValueError(
                        f"Invalid parameter: a {p.layout} tensor; expected dense parameters "
                        "(sparse gradients have no fused clipped step)"
                    )
            unwrapped_when_eager(Optimizer.add_param_group)(self, param_group)
            self._check_group(self.param_groups[-1])
            if not self.__dict__.get("_deferred", True):  # a group added after construction
                self.param_groups[-1]["fused"] = self.fused

    def _check_group(self, group: dict[str, Any]) -> None:
        for key in ("lr", "weight_decay", "momentum", "dampening"):
            if key in group:
                try:
                    check_nonnegative(key, group[key])
                except ValueError as error:
                    if "must be 1-element" in str(error):
                        raise
                    raise ValueError(
                        f"Invalid {key}: {group[key]!r} in a param group; expected a value >= 0"
                    ) from None
        for key in self._rule_keys:
            _RULE_KEYS[key](group[key])

    # -- the step ------------------------------------------------------------------------------
    def _gather(self) -> list[tuple[dict[str, Any], list[torch.Tensor], list[torch.Tensor]]]:
        groups = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:  # a dense parameter of nn.Embedding(sparse=True)
                    raise ValueError(
                        f"Invalid gradient: sparse; expected dense gradients ({type(self).__name__}"
                        " has no sparse step: build the embedding with sparse=False)"
                    )
            groups.append((group, params, [p.grad for p in params]))
        return groups

    def _rule_levels(self, groups: list[Any]) -> list[float] | None:
        """Bring the rule's values (λ, β, p) in from the param groups.

        Returns each gradient's λ when the groups' levels differ (per-tensor and per-coordinate
        rules), else None. A global rule clips the norm of all groups together, so a value that
        differs between groups has no meaning there and is refused.
        """
        first, levels = self.param_groups[0], None
        for key in self._rule_keys:
            value = first[key]
            if all(g[key] == value for g in self.param_groups[1:]):
                continue
            if key == "clipping_level" and self.clipper.rule.granularity != "global":
                levels = [float(g[key]) for g, params, _ in groups for _ in params]
                continue
            raise ValueError(
                f"Invalid {key}: {[g[key] for g in self.param_groups]} across param groups; "
                "expected one value for all groups"
                + (
                    " (a global rule clips the norm of all groups together; per-group "
                    "clipping_level needs granularity 'tensor' or 'coordinate')"
                    if key == "clipping_level"
                    else ""
                )
                + f" ({type(self).__name__})"
            )
        self.clipper.rule = self.clipper.rule.with_values(**{k: first[k] for k in self._rule_keys})
        return levels

    def _threshold_scale(self) -> torch.Tensor | None:
        """Factor on a fixed clipping level (SSTM clips at ``λ/α_{k+1}``); ``None`` for 1."""
        return None

    @torch.no_grad()
    def step(
        self,
        closure: Callable[[], Any] | None = None,
        *,
        grad_scale: torch.Tensor | None = None,
        found_inf: torch.Tensor | None = None,
    ) -> Any:
        """Clip the stochastic gradient and take one step. No host synchronisation (see class doc).

        ``grad_scale`` (AMP's loss scale ``S``: the gradients hold ``S·g``) and ``found_inf``
        (1.0 to skip the step) are what ``GradScaler.step`` hands over, as attributes of the
        optimizer of the same names; clipping sees ``g``, and a flagged step is skipped and
        counted in ``skipped_steps``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._deferred:
            self._materialize()
        grad_scale = _scalar(
            grad_scale if grad_scale is not None else getattr(self, "grad_scale", None)
        )
        found_inf = _scalar(
            found_inf if found_inf is not None else getattr(self, "found_inf", None)
        )
        groups = sharded = self._gather()
        if self._sharding is not None:  # clip and update the local slices
            groups = self._sharding.localize(sharded)
        # complex tensors are clipped as real pairs, as torch's optimizers treat them
        grads = [torch.view_as_real(g) if g.is_complex() else g for _, _, gs in groups for g in gs]
        if not grads:
            return loss
        levels = self._rule_levels(groups)
        measured = self._raise_if_nonfinite(grads, found_inf) if self.nonfinite == "raise" else None
        result = self.clipper.clip(
            grads,
            self._threshold_scale(),
            measured,
            levels=levels,
            grad_scale=grad_scale,
            found_inf=found_inf,
            telemetry=self.telemetry,
        )
        with (
            contextlib.nullcontext()
            if self._sharding is None
            else self._sharding.local_state(self, sharded, groups)
        ):
            self._update(groups, result)
        if result.found_inf is not None:
            self.skipped_steps.add_(result.found_inf.to(torch.int64))
        self.attempted_steps.add_(1)
        self._record.stats = result.stats
        return loss

    def _raise_if_nonfinite(
        self, grads: list[torch.Tensor], found_inf: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``nonfinite="raise"``: the norms, checked before any gradient is touched (one sync)."""
        measured = self.clipper.measure(grads)
        # a step GradScaler flags is its to skip (it lowers the scale), not an error
        flagged = found_inf is not None and bool(found_inf)
        if not flagged and not bool(torch.isfinite(measured[1])):
            raise FloatingPointError(
                f"non-finite gradient (global norm {float(measured[1])}) at step "
                f"{int(self.attempted_steps)} of {type(self).__name__}; pass "
                "nonfinite='skip' to skip it"
            )
        return measured

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

    def _unfused_prepare(
        self, grads: list[torch.Tensor], result: ClipResult, apply_scale: bool = True
    ) -> bool:
        """For the unfused fallback: apply the global factor in place; return False to skip.

        ``apply_scale=False`` when :meth:`_fused_grad_scale` has already applied it.
        """
        if result.found_inf is not None and bool(result.found_inf):  # the fallback's one host read
            return False
        if result.scale is not None and apply_scale:
            torch._foreach_mul_(grads, result.scale)
        return True

    def _unfused_options(self, group: dict[str, Any]) -> dict[str, Any]:
        """``foreach`` and ``lr`` for torch's unfused functional step of ``group``."""
        lr = group["lr"]
        # torch's unfused paths take a tensor lr only when capturable: read it (this path
        # reads the skip flag on the host anyway)
        return {
            "foreach": self.foreach is not False,
            "lr": float(lr) if isinstance(lr, torch.Tensor) else lr,
        }

    # -- persistence ---------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        """Optimizer-wide state of a step rule (per-parameter state lives in ``self.state``)."""
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        state = unwrapped_when_eager(Optimizer.state_dict)(self)
        state["clip_state"] = {
            "clipper": self.clipper.state_dict(),
            "skipped_steps": self.skipped_steps.clone(),
            "attempted_steps": self.attempted_steps.clone(),
            "rule": repr(self.clipper.rule),
            "rule_kind": self.clipper.rule.kind(),  # λ, β and p are in the param groups
            "extra": self._extra_state(),
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        clip_state = state_dict.pop("clip_state", None)
        name = type(self).__name__
        if clip_state is None:
            raise ValueError(f"state_dict has no 'clip_state': it was not saved by a {name}")
        _check_keys("state_dict['clip_state']", clip_state, _CLIP_STATE_KEYS, name)
        _check_keys(
            "state_dict['clip_state']['clipper']", clip_state["clipper"], _CLIPPER_KEYS, name
        )
        _check_keys(
            "state_dict['clip_state']['extra']", clip_state["extra"], self._EXTRA_KEYS, name
        )
        # The kind of rule must match; its values come from the saved param groups, as lr does
        # (older states without "rule_kind" must match exactly).
        saved, ours = clip_state.get("rule_kind"), self.clipper.rule.kind()
        if saved is None:
            saved, ours = clip_state["rule"], repr(self.clipper.rule)
        if saved != ours:
            raise ValueError(
                f"state_dict was saved with clipping rule {saved}, but this "
                f"{name} uses {ours}; only clipping_level, beta and p_autoclip may differ"
            )
        self._check_saved_groups(state_dict)
        unwrapped_when_eager(Optimizer.load_state_dict)(self, state_dict)
        for group in self.param_groups:  # keys a state saved by an older version lacks
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            group.update(foreach=self.foreach, differentiable=False)  # optimizer-wide flags
            if not self._deferred:
                group["fused"] = self.fused
        self.clipper.load_state_dict(clip_state["clipper"])
        device = self.clipper.device
        self.skipped_steps = torch.as_tensor(clip_state["skipped_steps"]).to(device)
        self.attempted_steps = torch.as_tensor(clip_state["attempted_steps"]).to(device)
        self._load_extra_state(clip_state["extra"])

    def _check_saved_groups(self, state_dict: dict[str, Any]) -> None:
        """One clear error for a state saved by another optimizer or for another model.

        torch itself checks the number of groups and of parameters in each; this checks that the
        per-parameter state is this step rule's and that its tensors have the parameters' shapes
        (torch's fused CPU kernels do not check, and a wrong shape corrupts memory).
        """
        name = type(self).__name__
        saved_groups, saved_state = state_dict.get("param_groups", []), state_dict.get("state", {})
        foreign = _FOREIGN_GROUP_KEYS - set(self.defaults)
        allowed, required = self._STATE_KEYS
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            extra = sorted(foreign & set(saved))
            if extra:
                raise ValueError(
                    f"Invalid state_dict: param group {i} holds {extra}, hyper-parameters {name} "
                    "does not have: it was saved by another optimizer"
                )
            for index, p in zip(saved.get("params", []), group["params"]):
                state = saved_state.get(index)
                if not state:
                    continue
                keys = set(state)
                if not keys <= allowed or not required <= keys:
                    raise ValueError(
                        f"Invalid state_dict: the state of parameter {index} holds "
                        f"{sorted(keys)}; {name} keeps {sorted(allowed)}: it was saved by "
                        "another optimizer"
                    )
                for key, value in state.items():
                    if key != "step" and isinstance(value, torch.Tensor) and value.shape != p.shape:
                        raise ValueError(
                            f"Invalid state_dict: state['{key}'] of parameter {index} has shape "
                            f"{list(value.shape)}, the parameter {list(p.shape)}: it was saved "
                            "for another model"
                        )

    # -- conveniences --------------------------------------------------------------------------
    def norm_history(self) -> torch.Tensor | None:
        """The recorded statistic history of an ``auto`` rule, oldest first (synchronises)."""
        history = self.clipper.history
        return None if history is None or history.sorted is None else history.values().squeeze(0)
