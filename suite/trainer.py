"""The training loop: steps, telemetry, evaluation, checkpoints, and the run's record.

The hot path makes one host synchronisation per ``trainer.log_every`` steps: losses, metrics and
clipping telemetry stay on the device until a logging window is flushed.
"""

from __future__ import annotations

import contextlib
import platform
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from clip_core import ClippedOptimizer
from clip_core._validation import check_choice, check_int, invalid
from suite.checkpoint import (
    CheckpointError,
    PreemptionGuard,
    checkpoint_path,
    load_checkpoint,
    random_states,
    restore_random_states,
    save_checkpoint,
)
from suite.distributed import (
    STRATEGIES,
    DistContext,
    agree,
    full_model_state,
    full_optimizer_state,
    load_full_model_state,
    load_full_optimizer_state,
    resolve_device,
    whole,
    whole_parameters,
    wrap_model,
)
from suite.loggers import WandbLogger
from suite.naming import run_identity
from suite.optim import build_optimizer, build_scheduler, clips, describe_optimizer
from suite.records import RunRecord, read_json
from tasks.base import Task, TaskInfo


class Preempted(Exception):
    """Raised after a checkpoint was saved because the job received a preemption signal."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_trainer_config(cfg: DictConfig) -> None:
    """Reject bad trainer values with one message naming the value and what is accepted."""
    t = cfg.trainer
    for key in ("max_steps", "eval_every", "log_every"):
        check_int(f"trainer.{key}", t.get(key), 1)
    check_choice("trainer.strategy", t.get("strategy", "ddp"), STRATEGIES)
    every = check_int("trainer.checkpoint_every", t.get("checkpoint_every"), 0)
    if every % t.log_every:  # a resumed run must log the same windows
        raise invalid(
            "trainer.checkpoint_every", every, f"a multiple of trainer.log_every ({t.log_every})"
        )
    check_int("seed", cfg.get("seed"), 0)


def _fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed (the budget may grow; the science may not)."""
    return run_identity(cfg)


class Trainer:
    """One run of one task with one optimizer. Construct, then :meth:`run`."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        ctx: DistContext,
        choices: dict[str, str],
        method: str | None = None,
    ):
        self.cfg = cfg
        self.ctx = ctx
        self.choices = choices
        self.record = RunRecord(run_dir, enabled=ctx.is_main)
        self.summary: dict[str, Any] = {
            "status": "running",
            "task": choices.get("task"),
            "optimizer": cfg.optimizer.get("name"),
            "method": method or run_dir.parent.name,  # the display name (no hash)
            "seed": cfg.get("seed"),
            "started_at": datetime.now(timezone.utc).isoformat(),
            "world_size": ctx.world_size,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "resumed_from": [],
        }
        self.wandb: WandbLogger | None = None

    # -- set-up ---------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        check_trainer_config(cfg)
        self.summary["step_rule"] = cfg.step_rule.get("name")
        threads = cfg.trainer.get("num_threads")
        if threads:
            torch.set_num_threads(int(threads))
        if cfg.trainer.get("deterministic"):
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.device = resolve_device(cfg.trainer.device, self.ctx)
        seed_everything(cfg.seed)
        self.task: Task = instantiate(cfg.task, _convert_="all")
        self.info: TaskInfo = self.task.setup(self.device, cfg.seed)
        # The task keeps its bare module (it evaluates that); the trainer keeps the model the
        # training step runs (a DDP wrapper, or the module sharded in place by fully_shard).
        self.module = self.task.model
        strategy = cfg.trainer.get("strategy", "ddp")
        self.wrapped = wrap_model(self.module, strategy, self.ctx, self.device)
        self.sharded = self.ctx.enabled and strategy == "fsdp2"
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(cfg, self.params, seed=cfg.seed)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.summary["optimizer_description"] = describe_optimizer(self.optimizer)
        self.summary["clips"] = clips(self.optimizer)
        # the clipped optimizers and the peers measure the norm themselves; torch's do not
        self.norm_by_trainer = not hasattr(self.optimizer, "last_clip_stats")
        self.summary.update(
            data_source=self.info.data_source,
            model_source=self.info.model_source,
            embedded_data=self.info.embedded,
            task_extra=self.info.extra,
            num_train=self.info.num_train,
            num_val=self.info.num_val,
            num_parameters=sum(p.numel() for p in self.params),
            device=str(self.device),
            device_name=torch.cuda.get_device_name(self.device)
            if self.device.type == "cuda"
            else platform.processor() or platform.machine(),
            torch_threads=torch.get_num_threads(),
            primary_metric=self.task.primary_metric,
        )
        self.record.write_config(OmegaConf.to_yaml(cfg, resolve=True))

    def _announce(self, start_step: int) -> None:
        if not self.ctx.is_main:
            return
        kind = "EMBEDDED PROXY data" if self.info.embedded else "real data"
        print(
            f"[torch-clip] task={self.choices.get('task')} ({kind})\n"
            f"  data:      {self.info.data_source}\n"
            f"  model:     {self.info.model_source} ({self.summary['num_parameters']:,} parameters)\n"
            f"  optimizer: {self.summary['optimizer_description']}\n"
            f"  budget:    {self.cfg.trainer.max_steps} steps from step {start_step}, device {self.device}"
            f", {self.ctx.world_size} process(es)\n"
            f"  record:    {self.record.dir}",
            flush=True,
        )

    # -- state ----------------------------------------------------------------------------------
    def _state(self, step: int) -> dict[str, Any]:
        return {
            "fingerprint": _fingerprint(self.cfg),
            "step": step,
            "model": full_model_state(self.module),
            "optimizer": full_optimizer_state(self.module, self.optimizer),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "random": random_states(),
            "grad_norms": list(self.grad_norms),
            # the unflushed part of the logging window, so a resumed run logs the same rows
            "window": [{k: float(v) for k, v in w.items()} for w in self.window],
            "epoch_norm_start": self.epoch_norm_start,
            "best": self.best,
            "last_eval": self.last_eval,
            "wall_seconds": self.wall_before + (time.time() - self.t0),
        }

    def _save(self, step: int) -> None:
        if self.sharded:  # gathering the whole state is a collective: every rank takes part
            state = self._state(step)
            if self.ctx.is_main:
                save_checkpoint(checkpoint_path(self.record.dir), state)
        elif self.ctx.is_main:
            save_checkpoint(checkpoint_path(self.record.dir), self._state(step))

    def _try_resume(self) -> int:
        path = checkpoint_path(self.record.dir)
        if not self.cfg.trainer.get("resume", True) or not path.exists():
            self.record.reset()
            return 0
        payload = load_checkpoint(path, _fingerprint(self.cfg))
        load_full_model_state(self.module, payload["model"])
        load_full_optimizer_state(self.module, self.optimizer, payload["optimizer"])
        if self.scheduler is not None and payload["scheduler"] is not None:
            self.scheduler.load_state_dict(payload["scheduler"])
        restore_random_states(payload["random"])
        self.grad_norms = list(payload["grad_norms"])
        self.window = [
            {k: torch.tensor(v, device=self.device) for k, v in w.items()}
            for w in payload["window"]
        ]
        self.epoch_norm_start = payload["epoch_norm_start"]
        self.best = payload["best"]
        self.last_eval = payload["last_eval"]
        self.wall_before = payload["wall_seconds"]
        step = int(payload["step"])
        self.record.truncate_metrics(step)
        self.summary["resumed_from"].append({"checkpoint": str(path), "step": step})
        if self.ctx.is_main:
            print(f"[torch-clip] resuming from {path} at step {step}", flush=True)
        return step

    # -- telemetry ------------------------------------------------------------------------------
    def _telemetry(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(grad norm, threshold, clipped fraction) of the step just taken, as device tensors."""
        stats = None if self.norm_by_trainer else self.optimizer.last_clip_stats
        if stats is not None:
            return stats.grad_norm, stats.threshold.float().mean(), stats.clip_fraction
        nan = torch.full((), float("nan"), device=self.device)
        return whole(self._baseline_norm), nan, torch.zeros((), device=self.device)

    def _flush(
        self, window: list[dict[str, torch.Tensor]], step: int, epoch: int
    ) -> dict[str, Any]:
        keys = list(window[0])
        rows = [torch.stack([w[k].float() for k in keys]) for w in window]
        counter = getattr(self.optimizer, "skipped_steps", None)  # clipped optimizers only
        if counter is not None:  # rides along in the window's single host transfer
            rows.append(counter.float().expand(len(keys)))
        values = torch.stack(rows).cpu()
        skipped = None
        if counter is not None:
            skipped, values = int(values[-1, 0]), values[:-1]
        self.grad_norms.extend(values[:, keys.index("grad_norm")].tolist())
        means = dict(zip(keys, values.nanmean(dim=0).tolist()))
        row = {
            "step": step,
            "epoch": epoch,
            "split": "train",
            "train_loss": means.pop("loss"),
            **{f"train_{k[7:]}": v for k, v in means.items() if k.startswith("metric_")},
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": means["grad_norm"],
            "clip_threshold": means["threshold"],
            "clip_fraction": means["clip_fraction"],
            "wall_time": self.wall_before + time.time() - self.t0,
        }
        if skipped is not None:
            row["skipped_steps"] = skipped
        return row

    def _epoch_histogram(self, epoch: int, step: int) -> None:
        norms = np.asarray(self.grad_norms[self.epoch_norm_start :], dtype=np.float64)
        self.record.log_histogram(epoch, step, norms)
        if self.wandb is not None:
            self.wandb.log_histogram(norms, step)
        self.epoch_norm_start = len(self.grad_norms)

    @contextlib.contextmanager
    def _task_model(self, model: torch.nn.Module):
        """The task runs ``model`` inside: the wrapped one while training (DDP's gradient
        all-reduce hooks), the bare module while evaluating (any method, not only forward)."""
        previous, self.task.model = self.task.model, model
        try:
            yield
        finally:
            self.task.model = previous

    def _evaluate(self, step: int, epoch: int) -> dict[str, Any]:
        # all ranks evaluate: gathering a sharded module's whole parameters is a collective
        with self._task_model(self.module), whole_parameters(self.module):
            metrics = self.task.evaluate()
        row = {
            "step": step,
            "epoch": epoch,
            "split": "val",
            **{f"val_{k}": v for k, v in metrics.items()},
        }
        row["wall_time"] = self.wall_before + time.time() - self.t0
        primary = metrics.get(self.task.primary_metric)
        if primary is not None and (self.best is None or primary > self.best["value"]):
            self.best = {"metric": self.task.primary_metric, "value": primary, "step": step}
        self.last_eval = row
        return row

    def _log(self, row: dict[str, Any]) -> None:
        self.record.log(row)
        if self.wandb is not None:
            self.wandb.log(row, row["step"])

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        try:
            self._setup()
            self.grad_norms: list[float] = []
            self.window: list[dict[str, torch.Tensor]] = []
            self.epoch_norm_start = 0
            self.best: dict[str, Any] | None = None
            self.last_eval: dict[str, Any] | None = None
            self.wall_before = 0.0
            self.t0 = time.time()
            start = self._try_resume()
            self.t0 = time.time()
            if self.ctx.is_main and self.cfg.logger.get("wandb"):
                self.wandb = WandbLogger(
                    self.cfg.logger.wandb,
                    self.record.dir,
                    name=f"{self.summary['task']}/{self.record.dir.parent.name}/seed{self.cfg.seed}",
                    config=OmegaConf.to_container(self.cfg, resolve=True),
                )
            self._announce(start)
            with PreemptionGuard() as guard, self._task_model(self.wrapped):
                final_step = self._loop(start, guard)
            self.summary["status"] = "completed"
            self.summary["steps"] = final_step
        except Preempted:
            self.summary["status"] = "preempted"
            raise
        except BaseException as exc:
            self.summary["status"] = "failed"
            self.summary["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._finish()
        return self.summary

    def _loop(self, start: int, guard: PreemptionGuard) -> int:
        cfg, t = self.cfg, self.cfg.trainer
        model = self.wrapped
        steps_per_epoch = self.task.steps_per_epoch(self.ctx.world_size)
        step = start
        window = self.window
        postfix: dict[str, str] = {}
        bar = tqdm(
            total=t.max_steps,
            initial=start,
            desc=f"{self.choices.get('task')}/{cfg.optimizer.name}",
            disable=not (self.ctx.is_main and t.get("progress", True)),
            dynamic_ncols=True,
            file=sys.stderr,
        )
        model.train()
        while step < t.max_steps:
            epoch, offset = divmod(step, steps_per_epoch)
            bar.set_description(f"{self.choices.get('task')}/{cfg.optimizer.name} epoch {epoch}")
            batches = self.task.train_batches(
                epoch, offset, seed=cfg.seed, rank=self.ctx.rank, world_size=self.ctx.world_size
            )
            for batch in batches:
                loss, metrics = self.task.loss(batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.norm_by_trainer:
                    grads = [p.grad for p in self.params if p.grad is not None]
                    self._baseline_norm = torch.nn.utils.get_total_norm(grads)
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                grad_norm, threshold, fraction = self._telemetry()
                window.append(
                    {
                        "loss": loss.detach(),
                        **{f"metric_{k}": v.detach() for k, v in metrics.items()},
                        "grad_norm": grad_norm,
                        "threshold": threshold,
                        "clip_fraction": fraction,
                    }
                )
                step += 1
                bar.update(1)
                end_of_epoch = step % steps_per_epoch == 0
                if step % t.log_every == 0 or step == t.max_steps or end_of_epoch:
                    row = self._flush(window, step, epoch)
                    window.clear()
                    self._log(row)
                    postfix["loss"] = f"{row['train_loss']:.4f}"
                    bar.set_postfix(postfix, refresh=False)
                if end_of_epoch:
                    self._epoch_histogram(epoch, step)
                if step % t.eval_every == 0 or step == t.max_steps:
                    row = self._evaluate(step, epoch)
                    self._log(row)
                    primary = row.get(f"val_{self.task.primary_metric}")
                    if primary is not None:
                        postfix[f"val_{self.task.primary_metric}"] = f"{primary:.4f}"
                        bar.set_postfix(postfix, refresh=False)
                if t.checkpoint_every and (step % t.checkpoint_every == 0 or step == t.max_steps):
                    self._save(step)  # the final one lets a longer budget continue this run
                if self._preempted(guard, step):
                    self._save(step)
                    bar.close()
                    self.summary.update(status="preempted", steps=step, signal=guard.received)
                    self._finish()
                    guard.forward()  # requeue (submitit) or re-raise the signal
                    raise Preempted(f"preempted by signal {guard.received} at step {step}")
                if step >= t.max_steps:
                    break
        bar.close()
        if self.epoch_norm_start < len(self.grad_norms):
            self._epoch_histogram(step // steps_per_epoch, step)
        return step

    def _preempted(self, guard: PreemptionGuard, step: int) -> bool:
        """Whether to stop here. Sharded ranks save together, so they agree on the step: at the
        end of a logging window (one flag all-reduced per window, none per step)."""
        if not self.sharded:
            return guard.received is not None
        if step % self.cfg.trainer.log_every:
            return False
        return agree(guard.received is not None, self.ctx, self.device)

    def _finish(self) -> None:
        if getattr(self, "_finished", False):
            return
        self._finished = True
        wall = getattr(self, "wall_before", 0.0) + (time.time() - getattr(self, "t0", time.time()))
        self.summary["finished_at"] = datetime.now(timezone.utc).isoformat()
        self.summary["wall_seconds"] = wall
        self.summary["best"] = getattr(self, "best", None)
        last = getattr(self, "last_eval", None)
        self.summary["final"] = (
            None if last is None else {k: v for k, v in last.items() if k.startswith("val_")}
        )
        norms = getattr(self, "grad_norms", [])
        self.summary["final_train_loss"] = self._last_train_loss()
        if isinstance(getattr(self, "optimizer", None), ClippedOptimizer):
            self.summary["skipped_steps"] = int(self.optimizer.skipped_steps)
        self.record.save_grad_norms(norms)
        self.record.write_summary(self.summary)
        self.record.close()
        if self.wandb is not None:
            self.wandb.finish(0 if self.summary["status"] == "completed" else 1)

    def _last_train_loss(self) -> float | None:
        from suite.records import read_jsonl

        rows = [r for r in read_jsonl(self.record.metrics_path) if r.get("split") == "train"]
        return rows[-1]["train_loss"] if rows else None


def completed_summary(run_dir: Path, cfg: DictConfig) -> dict[str, Any] | None:
    """The summary of a finished run of this configuration in ``run_dir``, if any (so sweeps can
    skip finished work). A finished run of another configuration or budget is an error, not a
    skip; a longer budget extends it only when asked (``trainer.extend=true``)."""
    summary = read_json(Path(run_dir) / "summary.json")
    if not summary or summary.get("status") != "completed":
        return None
    config_path = Path(run_dir) / "config.yaml"
    if config_path.exists() and _fingerprint(OmegaConf.load(config_path)) != _fingerprint(cfg):
        raise CheckpointError(
            f"{run_dir} holds a completed run of a different configuration (see its config.yaml); "
            "use another results directory or label, or delete it"
        )
    steps, asked = summary.get("steps", 0), cfg.trainer.max_steps
    if steps > asked:  # never hand back a longer run's result for a shorter request
        raise CheckpointError(
            f"{run_dir} holds a completed run of {steps} steps, not the {asked} asked for; "
            f"ask for trainer.max_steps={steps}, or use another results_root or label"
        )
    if steps < asked:
        if not cfg.trainer.get("extend", False):
            raise CheckpointError(
                f"{run_dir} holds a completed run of {steps} steps, not the {asked} asked for; "
                f"add trainer.extend=true to continue it to {asked} steps, or ask for "
                f"trainer.max_steps={steps}"
            )
        if not checkpoint_path(Path(run_dir)).exists():
            raise CheckpointError(
                f"{run_dir} holds a completed run of {steps} steps without a final checkpoint "
                "(it ran with trainer.checkpoint_every=0), so it cannot be extended; use another "
                "results_root or label to train a longer run from the start"
            )
        return None  # the trainer resumes from the final checkpoint
    return summary
