"""Optional Weights & Biases mirror of the local record. A run never fails or hangs because of it."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


class WandbLogger:
    """Logs rows and per-epoch histograms to wandb; offline unless the user is logged in."""

    def __init__(self, cfg: Any, run_dir: Path, name: str, config: dict[str, Any]) -> None:
        self.run = None
        mode = cfg.get("mode", "auto")
        if mode == "auto":
            mode = "online" if _has_wandb_credentials() else "offline"
        try:
            import wandb

            self._wandb = wandb
            self.run = wandb.init(
                project=cfg.get("project", "torch-clip"),
                entity=cfg.get("entity"),
                group=cfg.get("group"),
                tags=list(cfg.get("tags") or []),
                name=name,
                dir=str(run_dir),
                mode=mode,
                config=config,
                settings=wandb.Settings(init_timeout=float(cfg.get("init_timeout", 60))),
            )
        except Exception as exc:  # no network, bad key, wandb service failure: keep training
            warnings.warn(
                f"wandb disabled ({type(exc).__name__}: {exc}); the local record continues",
                stacklevel=2,
            )
            self.run = None

    def log(self, row: dict[str, Any], step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log({k: v for k, v in row.items() if isinstance(v, int | float)}, step=step)
        except Exception as exc:
            warnings.warn(
                f"wandb logging failed ({exc}); disabling wandb for this run", stacklevel=2
            )
            self.run = None

    def log_histogram(self, norms: np.ndarray, step: int) -> None:
        if self.run is None or norms.size == 0:
            return
        try:
            self.run.log({"grad_norm_hist": self._wandb.Histogram(norms)}, step=step)
        except Exception as exc:
            warnings.warn(
                f"wandb histogram failed ({exc}); disabling wandb for this run", stacklevel=2
            )
            self.run = None

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            try:
                self.run.finish(exit_code=exit_code)
            except Exception as exc:
                warnings.warn(f"wandb finish failed ({exc})", stacklevel=2)
            self.run = None
