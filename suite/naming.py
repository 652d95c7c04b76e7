"""A run's identity and its directory name (the ``run_dir`` resolver of ``conf/config.yaml``).

A run *is* its composed configuration: the nodes that decide what it computes, the config
groups :data:`IDENTITY_GROUPS`, the seed, and ``trainer.precision`` when it is not full float32
(:data:`IDENTITY_TRAINER_KEYS`). Everything else (the other ``trainer`` keys, ``logger``,
``hydra``, where results go) says how or where it runs, so such a key never changes which
directory a run lands in, and a new task, optimizer or step-rule key always does.

The directory is ``<task>/<method>-<hash>/seed<N>``: ``<method>`` names what the command line
changed (the label, or ``optimizer[-step_rule][,key=value...]``) and ``<hash>`` is a short hash
of the whole identity except the seed, so two configurations never share a directory.

Importing this module registers the resolver, so anything that composes the suite's config
(``train.py``, the scripts, the tests) imports it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: the config groups whose resolved nodes decide what a run computes
IDENTITY_GROUPS = ("task", "optimizer", "step_rule", "scheduler")
#: trainer keys that change what a run computes, with their defaults. A key joins the identity
#: only when it differs from its default, so the runs made before it existed keep their directory.
IDENTITY_TRAINER_KEYS = {"precision": "32"}
HASH_CHARS = 8
#: the installed namespace of the suite and the tasks (``torch_clip.tasks.toy``)
NAMESPACE = "torch_clip."


def run_identity(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """What must match for two runs to be the same run (and a checkpoint to be resumed)."""

    def resolved(key: str) -> Any:
        # node by node: resolving the whole root would resolve hydra.run.dir, i.e. this resolver
        value = cfg.get(key)
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

    identity = {group: resolved(group) for group in IDENTITY_GROUPS}
    task = identity.get("task")
    if isinstance(task, dict) and str(task.get("_target_", "")).startswith(NAMESPACE):
        # the class, not its import path: runs recorded before the namespace keep their identity
        identity["task"] = {**task, "_target_": task["_target_"].removeprefix(NAMESPACE)}
    trainer = cfg.get("trainer") or {}
    for key, default in IDENTITY_TRAINER_KEYS.items():
        value = str(trainer.get(key, default))
        if value != default:
            identity[f"trainer.{key}"] = value
    return {**identity, "seed": resolved("seed")}


def config_hash(cfg: DictConfig | dict[str, Any]) -> str:
    """A short stable hash of the identity without the seed (the seeds of a method share it)."""
    identity = {k: v for k, v in run_identity(cfg).items() if k != "seed"}
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def method_name(label: Any, optimizer: str, step_rule: str, overrides: Iterable[str]) -> str:
    """The display name of a method: its label, or optimizer[-step rule][,key=value...].

    The ``key=value`` part lists the command-line overrides of identity keys (``step_rule.lr=0.1``)
    in the order given; a value holding a path separator is left to the hash.
    """
    if label not in (None, "", "None"):
        return str(label)
    name = str(optimizer)
    if step_rule != "sgd" and not str(optimizer).endswith(str(step_rule)):
        name += f"-{step_rule}"
    swept = [
        o.lstrip("+")
        for o in overrides
        if "." in _override_key(o)
        and _override_key(o).split(".")[0] in IDENTITY_GROUPS
        and "/" not in o.split("=", 1)[-1]
    ]
    return ",".join([name, *swept])


def run_dir_name(
    label: Any, optimizer: str, step_rule: str, overrides: Iterable[str], *, _root_: DictConfig
) -> str:
    """``<method>-<hash>``: the directory of a method's seeds."""
    return f"{method_name(label, optimizer, step_rule, overrides)}-{config_hash(_root_)}"


def method_of_dir(name: str) -> str:
    """The method name of a run directory named by :func:`run_dir_name` (older names: as is)."""
    stem, _, tail = name.rpartition("-")
    is_hash = len(tail) == HASH_CHARS and all(ch in "0123456789abcdef" for ch in tail)
    return stem if stem and is_hash else name


OmegaConf.register_new_resolver("run_dir", run_dir_name, replace=True)
