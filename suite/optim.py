"""Build the optimizer a run asked for: the ``step_rule`` node composed with the ``optimizer`` one.

``step_rule`` is a ``_partial_`` node of a clip_core class (ClippedSGD / ClippedSSTM /
ClippedAdamW) with the step hyper-parameters, and names its ``torch_equivalent``. ``optimizer`` is
one of three kinds, told apart here and nowhere else:

* a clipping preset (``clipping_type`` and its parameters): ``step_rule(params, **clipping)``;
* a torch baseline (``torch_optimizer: <step rule name>``): the step rule's torch class, built
  from the same keys, so ``step_rule.lr`` sweeps baselines and clipped methods on one grid;
* a peer package (``peer``, ``peer_args``): that torch class wrapped by :mod:`torch_clip.suite.peers`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from clip_core import ClippedOptimizer
from clip_core._validation import check_int
from torch_clip.suite.peers import PeerClipped, build_peer

_META_KEYS = ("name", "label", "torch_equivalent", "torch_optimizer", "peer", "peer_args")


def _node(cfg: DictConfig) -> dict[str, Any]:
    values = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in values.items() if k not in _META_KEYS}


def _torch_class(cfg: DictConfig) -> type[torch.optim.Optimizer]:
    """The torch optimizer of the step rule, checked against what the optimizer preset expects."""
    opt, step = cfg.optimizer, cfg.step_rule
    wanted = opt.get("torch_optimizer")
    if wanted is not None and wanted != step.name:
        raise ValueError(
            f"Invalid combination: optimizer={opt.name} is torch's {wanted} and needs "
            f"step_rule={wanted}, got step_rule={step.name}"
        )
    target = step.get("torch_equivalent")
    if target is None:
        raise ValueError(
            f"Invalid combination: optimizer={opt.name} drives a torch optimizer, and "
            f"step_rule={step.name} has none; expected step_rule=sgd or step_rule=adamw"
        )
    return get_class(target)


def build_optimizer(cfg: DictConfig, params: Any, seed: int) -> torch.optim.Optimizer:
    """Instantiate the configured optimizer; bad values raise ``ValueError`` naming them."""
    opt = cfg.optimizer
    step = _node(cfg.step_rule)
    if "betas" in step:
        step["betas"] = tuple(step["betas"])
    if opt.get("torch_optimizer") is not None or opt.get("peer") is not None:
        params = list(params)
        step.pop("_partial_", None)
        step.pop("_target_", None)
        optimizer = _torch_class(cfg)(params, **step)
        if opt.get("peer") is None:
            return optimizer
        peer_args = OmegaConf.to_container(opt.get("peer_args") or {}, resolve=True)
        return build_peer(str(opt.peer), optimizer, params, **peer_args)
    clipping = _node(opt)
    overlap = sorted(set(step) & set(clipping))
    if overlap:
        raise ValueError(
            f"Invalid combination: optimizer and step_rule both set {overlap}; put step "
            "hyper-parameters in step_rule (e.g. step_rule.lr=0.1) and clipping ones in optimizer"
        )
    clipping.setdefault("seed", seed)
    return instantiate(step, _convert_="all")(params, **clipping)


def clips(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` clips, so that its clip telemetry is a measurement (the summary's
    ``clips``; the plots tell the unclipped baselines apart by it)."""
    if isinstance(optimizer, PeerClipped):
        return True
    if isinstance(optimizer, ClippedOptimizer):
        return type(optimizer.clipper.rule.decision).__name__ != "Never"
    return False


def describe_optimizer(optimizer: torch.optim.Optimizer) -> str:
    """A legend-ready description of a built optimizer: class, clipping rule, hyper-parameters."""
    inner = optimizer.optimizer if isinstance(optimizer, PeerClipped) else optimizer
    group = inner.param_groups[0]
    hyper = {k: group[k] for k in ("lr", "momentum", "betas", "weight_decay") if k in group}
    # a scheduler has already set lr to its step-0 value (0 at the start of a warm-up);
    # torch schedulers keep the configured one as initial_lr
    hyper["lr"] = group.get("initial_lr", group["lr"])
    parts = [type(inner).__name__]
    if isinstance(optimizer, PeerClipped):
        parts.append(f"+ {optimizer.peer}")
    if isinstance(optimizer, ClippedOptimizer):
        parts.append(_describe_rule(optimizer.clipper.rule))
    return " ".join(parts) + f" ({_format(hyper)})"


def _describe_rule(rule: Any) -> str:
    """``<granularity> <threshold> <decision>`` from the rule's own fields (no name matching)."""
    fields = []
    for part in (rule.threshold, rule.decision):
        values = ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in dataclasses.asdict(part).items()
            if v is not None
        )
        fields.append(f"{type(part).__name__}({values})")
    return f"[{rule.granularity}: {' '.join(fields)}]"


def _format(values: dict[str, Any]) -> str:
    out = []
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            value = value.item()
        if isinstance(value, tuple):
            value = "/".join(f"{v:g}" for v in value)
        out.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}")
    return ", ".join(out)


#: integer scheduler arguments and their least value (a zero period divides by zero in torch)
SCHEDULER_INTS = {"T_max": 1, "step_size": 1, "num_training_steps": 1, "num_warmup_steps": 0}


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer) -> Any:
    sched = cfg.get("scheduler")
    if sched is None or sched.get("_target_") is None:
        return None
    kwargs = {k: v for k, v in OmegaConf.to_container(sched, resolve=True).items() if k != "name"}
    for key, low in SCHEDULER_INTS.items():
        if key in kwargs:
            check_int(f"scheduler.{key}", kwargs[key], low)
    target = optimizer.optimizer if isinstance(optimizer, PeerClipped) else optimizer
    return instantiate(kwargs, optimizer=target)
