"""How a run's directory is named: the ``run_label`` resolver used by ``conf/config.yaml``.

Importing this module registers the resolver, so anything that composes the suite's config
(``train.py``, the scripts, the tests) imports it instead of importing ``train``.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def run_label(label: Any, optimizer: str, step_rule: str, overrides: str) -> str:
    """Directory name of a method: its label, or optimizer[-step rule][,swept=values]."""
    if label not in (None, "", "None"):
        return str(label)
    name = str(optimizer)
    if step_rule != "sgd" and not str(optimizer).endswith(step_rule):
        name += f"-{step_rule}"
    return f"{name},{overrides}" if overrides else name


OmegaConf.register_new_resolver("run_label", run_label, replace=True)
