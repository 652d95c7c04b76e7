"""Clipped Stochastic Similar Triangles Method (clipped-SSTM), with optional restarts (R-clipped-SSTM).

Gorbunov, Danilova & Gasnikov, "Stochastic Optimization with Heavy-Tailed Noise via Accelerated
Gradient Clipping", NeurIPS 2020.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from clip_core._validation import check_int, check_number, check_positive, naming
from clip_core.base import ClippedOptimizer
from clip_core.clipping import ClipResult


class ClippedSSTM(ClippedOptimizer):
    r"""Clipped SSTM. With ``a = 1/lr``, ``A_0 = 0`` and ``y^0 = z^0 = x^0``, for ``k = 0, 1, …``:

    .. math::
        \alpha_{k+1} &= \frac{(k+1)^{2\nu/(1+\nu)}}{2aL}, \qquad A_{k+1} = A_k + \alpha_{k+1}\\
        x^{k+1} &= (A_k y^k + \alpha_{k+1} z^k)/A_{k+1}
            \quad(\text{the stochastic gradient } g \text{ is taken here})\\
        z^{k+1} &= z^k - \alpha_{k+1}\,\mathrm{clip}(g, \lambda/\alpha_{k+1})\\
        y^{k+1} &= (A_k y^k + \alpha_{k+1} z^{k+1})/A_{k+1}

    The model's parameters always hold ``x^{k+1}``, the point of the next gradient, so the first
    ``step()`` already uses its gradient (``x^1 = x^0``). ``clip`` is the chosen clipping rule
    with the fixed level divided by ``α_{k+1}``; percentile (``auto``) thresholds are in gradient
    units and are used as they are. The method's output is ``y`` (:meth:`averaged_params`).

    ``a_k_ratio_upper_bound = r < 1``: whenever ``A_k/A_{k+1} > r``, use ``A_k = rα_{k+1}/(1−r)``
    and ``A_{k+1} = α_{k+1}/(1−r)`` (the method otherwise grows too conservative at large ``k``).

    ``restart_every = N`` (R-clipped-SSTM): after ``N`` steps restart from the stage's last ``y``
    (``k = 0``, ``A = 0``, ``y = z = x``); each next stage is ``⌈restart_coeff · previous⌉`` steps.

    ``k`` and ``A_k`` live on the device and are updated in place (so compiled steps keep them),
    and a skipped step (non-finite gradient) leaves the whole state untouched without
    synchronising. All param groups share ``lr``, ``L`` and ``nu`` (equal to a relative 1e-9, so
    a scheduler's rounding does not matter); a group added without them takes the current ones.
    ``maximize=True`` (per group) ascends.
    """

    _STATE_KEYS = (frozenset({"y", "z"}), frozenset({"y", "z"}))
    _EXTRA_KEYS = frozenset({"k", "A", "stage_len", "restarts"})

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        L: float = 1.0,
        nu: float = 1.0,
        a_k_ratio_upper_bound: float = 1.0,
        restart_every: int | None = None,
        restart_coeff: float = 1.5,
        **clipping: Any,
    ) -> None:
        with naming(type(self).__name__):
            # lr = 0 makes α_1 = A_1 = 0, and the first step divides by A_1
            check_positive("lr", lr)
            check_positive("L", L)
            check_number("nu", nu, 0.0, 1.0)
            check_number("a_k_ratio_upper_bound", a_k_ratio_upper_bound, 0.0, 1.0, low_open=True)
            check_int("restart_every", restart_every, 1, optional=True)
            check_number("restart_coeff", restart_coeff, 1.0)
        defaults = {"lr": lr, "L": L, "nu": nu}
        super().__init__(params, defaults, **clipping)
        self.ratio_bound = float(a_k_ratio_upper_bound)
        self.restart_every = restart_every
        self.restart_coeff = float(restart_coeff)
        device = self.clipper.device
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self._k = torch.zeros((), dtype=dtype, device=device)  # steps taken in this stage
        self._A = torch.zeros((), dtype=dtype, device=device)  # A_k
        stage = float(restart_every) if restart_every is not None else float("inf")
        self._stage_len = torch.tensor(stage, dtype=dtype, device=device)
        self._restarts = torch.zeros((), dtype=torch.int64, device=device)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if self.param_groups and isinstance(param_group, dict):
            # one (lr, L, nu) for the whole method: a new group takes the current ones (a
            # scheduler may have moved lr away from the default)
            current = self.param_groups[0]
            param_group = {**{k: current[k] for k in ("lr", "L", "nu")}, **param_group}
        super().add_param_group(param_group)
        with naming(type(self).__name__):
            check_positive("lr", self.param_groups[-1]["lr"])

    def _move_to(self, device: torch.device) -> None:
        super()._move_to(device)
        dtype = torch.float32 if device.type == "mps" else torch.float64
        for name in ("_k", "_A", "_stage_len"):
            setattr(self, name, getattr(self, name).to(device, dtype))
        self._restarts = self._restarts.to(device)

    # -- coefficients ----------------------------------------------------------------------------
    def _hyper(self) -> tuple[Any, float, float]:
        first = self.param_groups[0]
        lr, L, nu = first["lr"], first["L"], first["nu"]
        for group in self.param_groups[1:]:
            if not all(_same(group[k], first[k]) for k in ("lr", "L", "nu")):
                raise ValueError(
                    "ClippedSSTM needs the same lr, L and nu in every param group; got "
                    f"{(lr, L, nu)} and {(group['lr'], group['L'], group['nu'])}"
                )
        return lr, L, nu

    def _coefficients(
        self, k: torch.Tensor, A: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(A_k, α_{k+1}, A_{k+1})`` with the ratio bound applied; pure function of ``(k, A_k)``."""
        lr, L, nu = self._hyper()
        alpha = (k + 1) ** (2 * nu / (1 + nu)) * lr / (2 * L)  # 1/(2aL) with a = 1/lr
        A_next = A + alpha
        r = self.ratio_bound
        if r < 1:
            bounded = A / A_next > r
            A = torch.where(bounded, r * alpha / (1 - r), A)
            A_next = torch.where(bounded, alpha / (1 - r), A_next)
        return A, alpha, A_next

    def _threshold_scale(self) -> torch.Tensor:
        _, alpha, _ = self._coefficients(self._k, self._A)
        return 1.0 / alpha  # the clipper casts it to the dtype of the gradient norms

    # -- the step --------------------------------------------------------------------------------
    def _init_points(self, params: list[torch.Tensor]) -> None:
        for p in params:
            state = self.state[p]
            if not state:
                state["y"] = p.detach().clone()
                state["z"] = p.detach().clone()

    def _update(self, groups: list[Any], result: ClipResult) -> None:
        params = [p for _, ps, _ in groups for p in ps]
        self._init_points(params)
        # complex tensors step as real pairs (the coefficients are real)
        params, grads, ys, zs = (
            [torch.view_as_real(t) if t.is_complex() else t for t in ts]
            for ts in (
                params,
                [g for _, _, gs in groups for g in gs],
                [self.state[p]["y"] for p in params],
                [self.state[p]["z"] for p in params],
            )
        )
        if result.found_inf is None:  # nothing measured the gradient (telemetry=False, none)
            keep = torch.ones((), dtype=self._A.dtype, device=self._A.device)
        else:
            keep = 1.0 - result.found_inf.to(self._A.dtype)

        A, alpha, A_next = self._coefficients(self._k, self._A)
        step = alpha * keep
        if result.scale is not None:
            step = step * result.scale
        for g in grads:  # a skipped step multiplies the gradient by 0: make that 0, not NaN
            torch.nan_to_num_(g, nan=0.0, posinf=0.0, neginf=0.0)
        # z^{k+1} = z^k − α_{k+1}·clip(g)  (+ with maximize)
        descend, ascend = (-step).to(zs[0].dtype), step.to(zs[0].dtype)
        signed = [ascend if group["maximize"] else descend for group, ps, _ in groups for _ in ps]
        torch._foreach_addcmul_(zs, grads, signed)
        # y^{k+1} = (A_k y^k + α_{k+1} z^{k+1}) / A_{k+1} = lerp(y^k, z^{k+1}, α_{k+1}/A_{k+1})
        torch._foreach_lerp_(ys, zs, (alpha / A_next * keep).to(ys[0].dtype))
        k = self._k + keep
        A = torch.where(keep > 0, A_next, self._A)

        if self.restart_every is not None:
            restart = k >= self._stage_len
            torch._foreach_lerp_(zs, ys, restart.to(zs[0].dtype))  # z = y on restart, exactly
            k = torch.where(restart, 0.0, k)
            A = torch.where(restart, 0.0, A)
            grown = torch.ceil(self._stage_len * self.restart_coeff)
            self._stage_len.copy_(torch.where(restart, grown, self._stage_len))
            self._restarts.add_(restart.to(torch.int64))
        # in place: torch.compile drops a reassignment of the optimizer's attributes
        self._k.copy_(k)
        self._A.copy_(A)

        # x^{k+2} = lerp(y^{k+1}, z^{k+1}, α_{k+2}/A_{k+2}) becomes the parameters
        _, alpha, A_next = self._coefficients(self._k, self._A)
        torch._foreach_copy_(params, ys)
        torch._foreach_lerp_(params, zs, (alpha / A_next).to(params[0].dtype))

    # -- outputs and persistence ---------------------------------------------------------------
    @torch.no_grad()
    def averaged_params(self) -> list[torch.Tensor]:
        """The method's output point ``y^k`` for each parameter (the current ``x`` before a step)."""
        params = [p for group in self.param_groups for p in group["params"]]
        return [self.state[p].get("y", p) for p in params]

    @property
    def restarts(self) -> torch.Tensor:
        """Number of restarts so far (0-d device tensor)."""
        return self._restarts

    def _extra_state(self) -> dict[str, Any]:
        return {
            "k": self._k.clone(),
            "A": self._A.clone(),
            "stage_len": self._stage_len.clone(),
            "restarts": self._restarts.clone(),
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        device = self.clipper.device
        self._k = state["k"].to(device)
        self._A = state["A"].to(device)
        self._stage_len = state["stage_len"].to(device)
        self._restarts = state["restarts"].to(device)


def _same(a: Any, b: Any) -> bool:
    """Equal hyper-parameters, to a relative 1e-9 (a tensor lr: the same tensor, or equal)."""
    if a is b:
        return True
    return math.isclose(float(a), float(b), rel_tol=1e-9)
