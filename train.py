"""Train one task with one optimizer (or sweep many with ``-m``), composed by Hydra from ``conf/``.

    python train.py                                            # default: a ~2 minute CPU run
    python train.py task=cola optimizer=quadratic_stoch_auto   # one method on one task
    python train.py -m task=cola optimizer=norm,auto seed=0,1,2
    python train.py -m hydra/launcher=submitit_slurm ...       # the same sweep on SLURM

Each run writes ``results/<experiment>/<task>/<method>-<hash>/seed<N>/`` (``suite/naming.py``
says what the hash covers; ``suite/records.py`` what the directory holds), holding an exclusive
lock on it (``suite/run_dir.py``) and writing nothing there until its checks pass.

Exit status: 0 completed (or already completed); 1 an unexpected error; 2 a user error, in one
line; 128 + the signal's number (130 SIGINT, 143 SIGTERM) when a signal stopped it after saving a
checkpoint, with the command that resumes it.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from torch_clip.suite.checkpoint import CheckpointError, checkpoint_path, interrupted_exit_code
from torch_clip.suite.distributed import init_distributed, shutdown_distributed
from torch_clip.suite.naming import method_name  # importing registers the run_dir resolver of conf/
from torch_clip.suite.run_dir import RunDirBusy, RunDirLock
from torch_clip.suite.trainer import Preempted, Trainer, check_trainer_config, completed_summary

# Errors that mean "the user asked for something invalid": one clear line, no stack trace.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    ImportError,  # e.g. a sampler backend that is not installed
    CheckpointError,
    RunDirBusy,
    MissingMandatoryValue,
)


def _user_error(exc: BaseException) -> BaseException | None:
    """The user-facing cause of ``exc`` (Hydra wraps constructor errors), if it is one."""
    seen = exc
    while seen is not None:
        if isinstance(seen, USER_ERRORS):
            return seen
        if not isinstance(seen, InstantiationException):
            return None
        seen = seen.__cause__
    return None


def print_summary(summary: dict[str, Any]) -> None:
    best = summary.get("best") or {}
    final = summary.get("final") or {}
    lines = [
        f"{'run':<18}{summary.get('task')}/{summary.get('optimizer')} seed {summary.get('seed')}",
        f"{'status':<18}{summary.get('status')} after {summary.get('steps')} steps "
        f"in {summary.get('wall_seconds', 0):.1f} s",
        f"{'final train loss':<18}{summary.get('final_train_loss')}",
    ]
    lines += [f"{k:<18}{v:.4f}" for k, v in final.items() if isinstance(v, float)]
    if best:
        lines.append(f"{'best ' + best['metric']:<18}{best['value']:.4f} at step {best['step']}")
    lines.append(f"{'data':<18}{summary.get('data_source')}")
    print("\n".join(["-" * 60, *lines, "-" * 60]), flush=True)


def hydra_files(hydra_cfg: DictConfig, cfg: DictConfig) -> dict[str, str]:
    """What Hydra writes into ``<run dir>/.hydra/`` (conf/config.yaml turns that off, so nothing
    is written before the run's checks pass): the config, Hydra's config and the overrides."""
    return {
        "config.yaml": OmegaConf.to_yaml(cfg),
        "hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})),
        "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.overrides.task),
    }


#: Hydra overrides that only a multirun reads: a one-run command leaves them out
MULTIRUN_ONLY = ("hydra.mode", "hydra/launcher", "hydra/sweeper", "hydra.launcher", "hydra.sweep")


def resume_command(hydra_cfg: DictConfig, run_dir: Path) -> str:
    """``python train.py <this run's overrides>``: the one-run command that resumes this run
    (from its own overrides, not ``sys.argv``, which names a whole sweep or, in a persistent
    sweep worker, the worker)."""
    hydra_overrides = [o for o in hydra_cfg.overrides.hydra if not o.startswith(MULTIRUN_ONLY)]
    if any(o.startswith("hydra.sweep.") for o in hydra_cfg.overrides.hydra):
        hydra_overrides.append(f"hydra.run.dir={run_dir}")  # a moved sweep: name the directory
    here = Path(__file__).resolve()
    if Path(sys.argv[0]).resolve() == here:  # started as a script: the path as it was typed
        script = sys.argv[0]
    else:  # a sweep worker: this file, from the directory the worker runs in
        script = here.name if Path.cwd() == here.parent else str(here)
    argv = [Path(sys.executable).name, script, *hydra_cfg.overrides.task, *hydra_overrides]
    return shlex.join(argv)


def train(cfg: DictConfig, run_dir: Path, ctx: Any) -> Any:
    """Check the request, then skip, resume or start the run in ``run_dir``; its best value."""
    hydra_cfg = HydraConfig.get()
    check_trainer_config(cfg)
    done = completed_summary(run_dir, cfg) if cfg.trainer.resume else None
    if done:
        print(f"[torch-clip] {run_dir} already completed ({done['steps']} steps); skipping")
        return (done.get("best") or {}).get("value")
    method = method_name(
        cfg.get("label"), cfg.optimizer.name, cfg.step_rule.name, hydra_cfg.overrides.task
    )
    choices = dict(hydra_cfg.runtime.choices)
    files = hydra_files(hydra_cfg, cfg)
    summary = Trainer(cfg, run_dir, ctx, choices, method=method, hydra_files=files).run()
    if ctx.is_main:
        print_summary(summary)
    return (summary.get("best") or {}).get("value")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> Any:
    return run(cfg)


def run(cfg: DictConfig) -> Any:
    """One run of the composed ``cfg`` under the Hydra config set in ``HydraConfig``: what
    ``python train.py`` does after composing (torch_clip.suite.experiments.local_runs calls it
    in its workers, one run after another)."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    device_type = "cuda" if cfg.trainer.device != "cpu" else "cpu"
    ctx = init_distributed(device_type if device_type == "cpu" or _cuda() else "cpu")
    completed = False
    try:
        # one process per run directory: rank 0 holds its lock until the record is written
        with RunDirLock(run_dir) if ctx.is_main else contextlib.nullcontext():
            result = train(cfg, run_dir, ctx)
        completed = True
        return result
    except Preempted as exc:
        if ctx.is_main:
            print(
                f"[torch-clip] {exc}; checkpoint saved in {checkpoint_path(run_dir)}; "
                f"resume with: {resume_command(hydra_cfg, run_dir)}",
                file=sys.stderr,
                flush=True,
            )
        sys.exit(interrupted_exit_code(exc.signum))
    except KeyboardInterrupt:  # before the loop's guard was up: nothing to save yet
        print(f"[torch-clip] interrupted during set-up; {run_dir} is unchanged", file=sys.stderr)
        sys.exit(interrupted_exit_code(signal.SIGINT))
    except Exception as exc:
        cause = _user_error(exc)
        if cause is not None:
            print(f"torch-clip: error: {cause}", file=sys.stderr)
        else:
            traceback.print_exc()
            print(f"torch-clip: run failed; see {run_dir / 'summary.json'}", file=sys.stderr)
        if multirun:
            return None  # the sweep goes on; the failure is in this run's summary.json
        sys.exit(2 if cause is not None else 1)
    finally:
        shutdown_distributed(ctx, completed)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
