"""Build the optimizer and scheduler a run asked for, from the ``optimizer``/``step_rule`` groups.

``optimizer`` is either a clipping preset (``clipping_type`` and its parameters) that is combined
with the ``step_rule`` (``_target_`` ClippedSGD / ClippedSSTM / ClippedAdamW and its
hyper-parameters), or an unclipped torch baseline that carries its own ``baseline._target_``.
"""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

_META_KEYS = ("name", "label")


def is_baseline(cfg: DictConfig) -> bool:
    return cfg.optimizer.get("baseline") is not None


def describe_optimizer(cfg: DictConfig) -> str:
    """A legend-ready description: step rule, clipping rule and the hyper-parameters that matter."""
    opt = cfg.optimizer
    if is_baseline(cfg):
        base = OmegaConf.to_container(opt.baseline, resolve=True)
        target = str(base.pop("_target_")).rsplit(".", 1)[-1]
        return f"{target} ({_format(base)})"
    rule = OmegaConf.to_container(cfg.step_rule, resolve=True)
    step = str(rule.pop("_target_")).rsplit(".", 1)[-1].replace("Clipped", "clipped ")
    for key in _META_KEYS:
        rule.pop(key, None)
    clip = {"type": opt.clipping_type}
    if opt.clipping_type != "none":
        if "auto" in opt.clipping_type:
            clip["p"] = opt.get("p_autoclip")
        else:
            clip["λ"] = opt.get("clipping_level")
        if "stoch" in opt.clipping_type:
            clip["β"] = opt.get("beta")
    return f"{step} {_format(clip)}, {_format(rule)}"


def _format(values: dict[str, Any]) -> str:
    short = {"momentum": "m", "weight_decay": "wd", "clipping_level": "λ"}
    parts = []
    for key, value in values.items():
        if value is None or (key == "nesterov" and not value):
            continue
        if key == "type":
            parts.append(str(value))
            continue
        parts.append(
            f"{short.get(key, key)}={value:g}"
            if isinstance(value, float)
            else f"{short.get(key, key)}={value}"
        )
    return ", ".join(parts)


def build_optimizer(cfg: DictConfig, params: Any, seed: int) -> torch.optim.Optimizer:
    """Instantiate the configured optimizer; bad values raise ``ValueError`` from its constructor."""
    opt = cfg.optimizer
    if is_baseline(cfg):
        return instantiate(opt.baseline, params=params, _convert_="all")
    clipping = {
        k: v for k, v in OmegaConf.to_container(opt, resolve=True).items() if k not in _META_KEYS
    }
    rule = OmegaConf.to_container(cfg.step_rule, resolve=True)
    for key in _META_KEYS:
        rule.pop(key, None)
    overlap = set(rule) & set(clipping)
    if overlap:
        raise ValueError(
            f"optimizer and step_rule both set {sorted(overlap)}; put step hyper-parameters "
            "in step_rule (e.g. step_rule.lr=0.1) and clipping ones in optimizer"
        )
    rule.update(clipping)
    if "betas" in rule:
        rule["betas"] = tuple(rule["betas"])
    rule.setdefault("seed", seed)
    return instantiate(rule, params=params, _convert_="all")


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer) -> Any:
    sched = cfg.get("scheduler")
    if sched is None or sched.get("_target_") is None:
        return None
    kwargs = {k: v for k, v in OmegaConf.to_container(sched, resolve=True).items() if k != "name"}
    return instantiate(kwargs, optimizer=optimizer)
