"""Estimate the smoothness constant ``L`` that :class:`~clip_core.ClippedSSTM` needs."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from clip_core._validation import check_int, check_positive


def _flat_grad(params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    )


@torch.no_grad()
def estimate_lipschitz(
    params: Iterable[torch.Tensor],
    closure: Callable[[], torch.Tensor],
    *,
    radius: float = 1e-3,
    iterations: int = 10,
) -> float:
    r"""Estimate ``L ≈ max ‖∇f(x) − ∇f(x')‖ / ‖x − x'‖`` around the current parameters.

    Successive probe points ``x' = x + r·v_t`` are taken along the gradient difference of the
    previous probe, ``v_{t+1} ∝ ∇f(x + r v_t) − ∇f(x)`` — a power iteration on the Hessian
    through gradient and iterate differences, so the ratio approaches the largest curvature
    ``λ_max(∇²f)`` (exactly ``L`` for a quadratic). The parameters are restored afterwards.

    ``closure`` must zero the gradients, compute the loss on a *fixed* batch and call
    ``backward()`` (as for ``torch.optim`` closures). This synchronises; call it before training.
    Returns the largest ratio seen (a lower bound on the true ``L``, tight for quadratics).
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("estimate_lipschitz needs at least one parameter that requires grad")
    check_positive("radius", radius)
    check_int("iterations", iterations, 1)
    origin = [p.detach().clone() for p in params]

    def gradient_at(direction: torch.Tensor | None) -> torch.Tensor:
        offset = 0
        for p, x in zip(params, origin):
            n = p.numel()
            p.copy_(x if direction is None else x + direction[offset : offset + n].view_as(p))
            offset += n
        with torch.enable_grad():
            closure()
        return _flat_grad(params)

    try:
        g0 = gradient_at(None)
        gen = torch.Generator(device="cpu").manual_seed(0)
        v = torch.randn(g0.numel(), generator=gen, dtype=g0.dtype).to(g0.device)
        best = 0.0
        for _ in range(iterations):
            v = v / v.norm().clamp_min(torch.finfo(v.dtype).tiny)
            diff = gradient_at(radius * v) - g0
            best = max(best, float(diff.norm()) / radius)
            if float(diff.norm()) == 0.0:
                break
            v = diff
        return best
    finally:
        for p, x in zip(params, origin):
            p.copy_(x)
