"""The clipping methods users would pick instead of clip_core, through their own packages.

Each peer clips ``p.grad`` in place before an unclipped torch optimizer steps:

* ``autoclip`` — AutoClip (Seetharaman et al., 2020), ``autoclip.torch.QuantileClip``: clip the
  global norm at a quantile of the history of (clipped) norms.
* ``zclip`` — ZClip (Kumar et al., 2025), ``zclip.ZClip``: z-score spike detection on an EMA of
  the gradient norm.
* ``agc`` — adaptive gradient clipping (Brock et al., 2021), ``timm.utils.adaptive_clip_grad``:
  unit-wise clipping relative to the parameter norm.

:class:`PeerClipped` wraps the torch optimizer so the trainer, schedulers and checkpoints treat it
like any optimizer, and records the telemetry the clip_core optimizers give (norm before
clipping, removed fraction). The peers read their norms on the host; that is their design.

The peers are records of :data:`PEERS` (:class:`PeerInfo`); a new peer is one builder and its
record here plus ``conf/optimizer/peer_<name>.yaml`` (``peer: <name>``, ``peer_args``), which the
comparisons then name as ``optimizer=peer_<name>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn


class PeerStats(NamedTuple):
    grad_norm: torch.Tensor
    threshold: torch.Tensor
    clip_fraction: torch.Tensor


class PeerClipped(torch.optim.Optimizer):
    """``optimizer`` stepped after ``clip()`` has clipped the gradients of ``params`` in place.

    ``param_groups`` and ``state`` are the wrapped optimizer's own, so schedulers act on it.
    ``state_dict`` holds the optimizer's and the peer's state (``get_state``/``set_state``).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        clip: Callable[[], Any],
        params: list[torch.Tensor],
        name: str,
        get_state: Callable[[], dict[str, Any]] = dict,
        set_state: Callable[[dict[str, Any]], None] = lambda state: None,
    ) -> None:
        # No super().__init__: this object is a facade over ``optimizer`` (hooks included).
        self.optimizer = optimizer
        self.param_groups = optimizer.param_groups
        self.defaults = optimizer.defaults
        self.state = optimizer.state
        self.peer = name
        self._clip, self._params = clip, params
        self._get_state, self._set_state = get_state, set_state
        self.last_clip_stats: PeerStats | None = None

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for p in self._params if p.grad is not None]
        before = torch.nn.utils.get_total_norm(grads)
        self._clip()
        after = torch.nn.utils.get_total_norm(grads)
        removed = torch.where(before > 0, 1 - after / before, torch.zeros_like(before))
        self.last_clip_stats = PeerStats(before, torch.full_like(before, float("nan")), removed)
        self.optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "peer": self._get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self._set_state(state_dict["peer"])

    def __repr__(self) -> str:
        return f"PeerClipped({self.peer}, {self.optimizer!r})"


@dataclass(frozen=True)
class PeerInfo:
    """One peer clipping method, in the style of timm's ``OptimInfo``: its ``name`` (the ``peer``
    key of ``conf/optimizer/peer_<name>.yaml``), the ``package`` that ships it, ``build``: a
    function of the parameters and the peer's keyword arguments that returns the in-place clip
    and the peer state's getter and setter (:class:`PeerClipped`), and ``knobs``: the keyword
    arguments it takes (the config's ``peer_args``)."""

    name: str
    package: str
    build: Callable[..., tuple[Callable[[], Any], Callable[[], dict], Callable[[dict], None]]]
    knobs: tuple[str, ...]


def _autoclip(params: list[torch.Tensor], **kwargs: Any):
    from autoclip.torch import QuantileClip

    # global_threshold: clip the whole gradient's norm, as clip_core's auto does
    clipper = QuantileClip(params, global_threshold=True, **kwargs)
    return (clipper.step, lambda: {"state": dict(clipper.state)},
            lambda s: clipper.state.update(s["state"]))  # fmt: skip


def _zclip(params: list[torch.Tensor], **kwargs: Any):
    from zclip import ZClip

    clipper = ZClip(**kwargs)
    holder = nn.Module()  # ZClip.step reads the gradients through a module's parameters
    holder.params = nn.ParameterList([p for p in params if isinstance(p, nn.Parameter)])
    if len(holder.params) != len(params):
        raise ValueError("Invalid params for zclip: every parameter must be an nn.Parameter")
    return lambda: clipper.step(holder), lambda: dict(vars(clipper)), vars(clipper).update


def _agc(params: list[torch.Tensor], **kwargs: Any):
    from timm.utils.agc import adaptive_clip_grad

    return lambda: adaptive_clip_grad(params, **kwargs), dict, lambda state: None


#: the peers by name: AutoClip, ZClip and AGC (the module docstring says what each does)
PEERS: dict[str, PeerInfo] = {
    info.name: info
    for info in (
        PeerInfo("autoclip", "autoclip", _autoclip, ("quantile", "history_length")),
        PeerInfo(
            "zclip", "zclip", _zclip, ("alpha", "z_thresh", "max_grad_norm", "warmup_steps", "mode")
        ),
        PeerInfo("agc", "timm", _agc, ("clip_factor", "eps")),
    )
}


def build_peer(
    name: str, optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor], **kwargs: Any
) -> PeerClipped:
    """Wrap ``optimizer`` with the peer ``name`` (one of :data:`PEERS`) and its ``kwargs``."""
    info = PEERS.get(name)
    if info is None:
        raise ValueError(f"Invalid peer: {name!r}; expected one of {', '.join(PEERS)}")
    unknown = sorted(set(kwargs) - set(info.knobs))
    if unknown:
        raise ValueError(f"Invalid peer_args for {name}: {unknown}; expected some of "
                         f"{', '.join(info.knobs)}")  # fmt: skip
    params = list(params)
    clip, get_state, set_state = info.build(params, **kwargs)
    return PeerClipped(optimizer, clip, params, name, get_state, set_state)
