"""The training loop: steps, telemetry, evaluation, checkpoints, and the run's record.

The hot path makes one host synchronisation per ``trainer.log_every`` steps: losses, metrics and
clipping telemetry stay on the device until a logging window is flushed.
"""

from __future__ import annotations

import contextlib
import platform
import random
import signal
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from clip_core._validation import check_choice, check_int, invalid
from torch_clip.suite.checkpoint import (
    CheckpointError,
    PreemptionGuard,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from torch_clip.suite.distributed import (
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
from torch_clip.suite.loggers import WandbLogger
from torch_clip.suite.naming import IDENTITY_TRAINER_KEYS, method_of_dir, run_identity
from torch_clip.suite.optim import build_optimizer, build_scheduler, clips, describe_optimizer
from torch_clip.suite.records import RunRecord, read_json
from torch_clip.suite.run_dir import remove_leftovers
from torch_clip.suite.run_state import RunState
from torch_clip.tasks.base import Task, TaskInfo

#: ``trainer.precision``: full float32, or Lightning's "bf16-mixed" (the forward passes and losses
#: under bfloat16 autocast; parameters, gradients and optimizer state stay float32)
PRECISIONS = ("32", "bf16-mixed")


def precision_of(t: DictConfig) -> str:
    """``trainer.precision`` as a string (Hydra reads ``32`` as an int), its default if unset."""
    return str(t.get("precision", IDENTITY_TRAINER_KEYS["precision"]))


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX). Without it oneDNN
    emulates bfloat16, and a bf16-mixed step is several times slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def warn_if_emulated_bf16(precision: str, device: torch.device) -> None:
    if precision == "bf16-mixed" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            "trainer.precision=bf16-mixed on a CPU without AVX512-BF16 or AMX "
            f"({torch.backends.cpu.get_cpu_capability()}): bfloat16 is emulated, about 10x "
            "slower than float32 on MiniLM here; use trainer.precision=32 on this machine",
            stacklevel=2,
        )


class Preempted(Exception):
    """Raised after a checkpoint was saved because the run received SIGINT, SIGTERM or SIGUSR1/2."""

    def __init__(self, signum: int, step: int) -> None:
        self.signum, self.step = signum, step
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")


#: trainer switches that must be true or false (Hydra reads "maybe" as a string)
BOOLEAN_KEYS = ("resume", "extend", "deterministic", "progress")


def error_text(exc: BaseException) -> str:
    """``"<type>: <message>"`` of what went wrong: the constructor's error Hydra wrapped."""
    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_trainer_config(cfg: DictConfig) -> None:
    """Reject bad trainer values with one message naming the value and what is accepted."""
    t = cfg.trainer
    for key in ("max_steps", "eval_every", "log_every"):
        value = t.get(key)
        if isinstance(value, float) and value.is_integer() and value >= 1:
            expected = f"an integer >= 1 (write {int(value)}: Hydra reads 1e3 or 1000.0 as a float)"
            raise invalid(f"trainer.{key}", value, expected)
        check_int(f"trainer.{key}", value, 1)
    for key in BOOLEAN_KEYS:
        if t.get(key, False) not in (True, False):
            raise invalid(f"trainer.{key}", t.get(key), "true or false")
    check_int("trainer.num_threads", t.get("num_threads"), 1, optional=True)
    check_choice("trainer.strategy", t.get("strategy", "ddp"), STRATEGIES)
    check_choice("trainer.precision", precision_of(t), PRECISIONS)
    every = check_int("trainer.checkpoint_every", t.get("checkpoint_every"), 0)
    if every % t.log_every:  # a resumed run must log the same windows
        raise invalid(
            "trainer.checkpoint_every", every, f"a multiple of trainer.log_every ({t.log_every})"
        )
    check_int("seed", cfg.get("seed"), 0)


def _fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed (the budget may grow; the science may not)."""
    return run_identity(cfg)


class _Progress:
    """The progress bar (rank 0, if asked for), showing the latest train loss and val metric."""

    def __init__(self, label: str, total: int, initial: int, enabled: bool) -> None:
        self.label = label
        self.postfix: dict[str, str] = {}
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=label,
            disable=not enabled,
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def epoch(self, epoch: int) -> None:
        self.bar.set_description(f"{self.label} epoch {epoch}")

    def step(self) -> None:
        self.bar.update(1)

    def show(self, key: str, value: float) -> None:
        self.postfix[key] = f"{value:.4f}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()


class Trainer:
    """One run of one task with one optimizer. Construct, then :meth:`run`.

    Everything the loop carries across steps and checkpoints is in ``self.state`` (a
    :class:`~suite.run_state.RunState`); ``self.seconds`` is where this segment (process) spent
    its time: set-up (resume included), the loop, and within the loop evaluation and checkpoints.
    """

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        ctx: DistContext,
        choices: dict[str, str],
        method: str | None = None,
        hydra_files: dict[str, str] | None = None,
    ):
        self.cfg = cfg
        self.ctx = ctx
        self.choices = choices
        self.hydra_files = hydra_files
        #: a directory without an earlier record gets one even when set-up fails (its error);
        #: one with a record keeps it untouched until set-up and resume have passed
        self.fresh = not any(
            (Path(run_dir) / name).exists()
            for name in ("summary.json", "config.yaml", "metrics.jsonl", "checkpoints")
        )
        self.began = False
        self.record = RunRecord(run_dir, enabled=ctx.is_main)
        self.state = RunState()
        self.seconds = dict.fromkeys(("setup", "loop", "evaluation", "checkpoint"), 0.0)
        self.summary: dict[str, Any] = {
            "status": "running",
            "task": choices.get("task"),
            "optimizer": cfg.optimizer.get("name"),
            "method": method or method_of_dir(run_dir.parent.name),  # display name, no hash
            "seed": cfg.get("seed"),
            "started_at": datetime.now(timezone.utc).isoformat(),
            "world_size": ctx.world_size,
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        self.wandb: WandbLogger | None = None

    # -- set-up ---------------------------------------------------------------------------------
    def _start(self) -> None:
        """Set up, resume (or start afresh), open the loggers and say what runs."""
        started = time.perf_counter()
        self._setup()
        self._resume()
        self._begin_record()
        if self.ctx.is_main and self.cfg.logger.get("wandb"):
            self.wandb = WandbLogger(
                self.cfg.logger.wandb,
                self.record.dir,
                name=f"{self.summary['task']}/{self.record.dir.parent.name}/seed{self.cfg.seed}",
                config=OmegaConf.to_container(self.cfg, resolve=True),
            )
        self._announce()
        self.seconds["setup"] = time.perf_counter() - started
        self.state.start_segment()

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
        self.summary["precision"] = precision_of(cfg.trainer)
        if self.ctx.is_main:
            warn_if_emulated_bf16(self.summary["precision"], self.device)
        seed_everything(cfg.seed)
        self.task: Task = instantiate(cfg.task, _convert_="all")
        self.info: TaskInfo = self.task.setup(self.device, cfg.seed)
        self.steps_per_epoch = self.task.steps_per_epoch(self.ctx.world_size)
        # The task keeps its bare module (it evaluates that); the trainer keeps the model the
        # training step runs (a DDP wrapper, or the module sharded in place by fully_shard).
        self.module = self.task.model
        strategy = cfg.trainer.get("strategy", "ddp")
        self.wrapped = wrap_model(self.module, strategy, self.ctx, self.device)
        self.sharded = self.ctx.enabled and strategy == "fsdp2"
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(cfg, self.params, seed=cfg.seed)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        # the clipped optimizers and the peers measure the norm themselves; torch's do not
        self.norm_by_trainer = not hasattr(self.optimizer, "last_clip_stats")
        # made once: a torch optimizer has no threshold and clips nothing, at every step
        self.unclipped_telemetry = (
            torch.full((), float("nan"), device=self.device),
            torch.zeros((), device=self.device),
        )
        self.summary.update(
            optimizer_description=describe_optimizer(self.optimizer),
            clips=clips(self.optimizer),
            data_source=self.info.data_source,
            model_source=self.info.model_source,
            embedded_data=self.info.embedded,
            task_extra=self.info.extra,
            num_train=self.info.num_train,
            num_val=self.info.num_val,
            num_parameters=sum(p.numel() for p in self.params),
            # tensors T: a per-tensor threshold's share of a global one is about 1/sqrt(T)
            num_parameter_tensors=len(self.params),
            device=str(self.device),
            device_name=torch.cuda.get_device_name(self.device)
            if self.device.type == "cuda"
            else platform.processor() or platform.machine(),
            torch_threads=torch.get_num_threads(),
            primary_metric=self.task.primary_metric,
        )

    def _begin_record(self) -> None:
        """The first writes of this segment, once every check has passed (or for the error of a
        fresh directory): the config, Hydra's files, and no leftovers of killed writes."""
        self.began = True
        if self.ctx.is_main:
            remove_leftovers(self.record.dir)
        self.record.write_config(OmegaConf.to_yaml(self.cfg, resolve=True), self.hydra_files)

    def _autocast(self) -> contextlib.AbstractContextManager:
        """Where the task computes (forward and loss, in training and evaluation); the backward
        pass and the optimizer run outside, on float32 gradients, as torch's AMP recipe has it."""
        if self.summary["precision"] == "bf16-mixed":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _announce(self) -> None:
        if not self.ctx.is_main:
            return
        kind = "EMBEDDED PROXY data" if self.info.embedded else "real data"
        print(
            f"[torch-clip] task={self.choices.get('task')} ({kind})\n"
            f"  data:      {self.info.data_source}\n"
            f"  model:     {self.info.model_source} ({self.summary['num_parameters']:,} parameters)\n"
            f"  optimizer: {self.summary['optimizer_description']}\n"
            f"  budget:    {self.cfg.trainer.max_steps} steps from step {self.state.step}, "
            f"device {self.device}, {self.ctx.world_size} process(es), "
            f"precision {self.summary['precision']}\n"
            f"  record:    {self.record.dir}",
            flush=True,
        )

    # -- checkpoints ----------------------------------------------------------------------------
    def _checkpoint(self) -> dict[str, Any]:
        return {
            "fingerprint": _fingerprint(self.cfg),
            "model": full_model_state(self.module),
            "optimizer": full_optimizer_state(self.module, self.optimizer),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            **self.state.state_dict(),
        }

    def _save(self) -> None:
        started = time.perf_counter()
        # gathering a sharded state is a collective: every rank takes part, rank 0 writes
        if self.sharded or self.ctx.is_main:
            payload = self._checkpoint()
            if self.ctx.is_main:
                save_checkpoint(checkpoint_path(self.record.dir), payload)
        self.seconds["checkpoint"] += time.perf_counter() - started

    def _resume(self) -> None:
        """Continue from the run directory's checkpoint, rolling the record back to it; or
        start afresh, clearing what an earlier run recorded there."""
        path = checkpoint_path(self.record.dir)
        if not self.cfg.trainer.get("resume", True) or not path.exists():
            self.record.reset()
            return
        payload = load_checkpoint(path, _fingerprint(self.cfg))
        load_full_model_state(self.module, payload["model"])
        load_full_optimizer_state(self.module, self.optimizer, payload["optimizer"])
        if self.scheduler is not None and payload["scheduler"] is not None:
            self.scheduler.load_state_dict(payload["scheduler"])
        state = self.state
        state.load_state_dict(payload, self.device)
        state.resumed_from.append({"checkpoint": str(path), "step": state.step})
        self.record.rollback(state.step, epochs=state.position(self.steps_per_epoch)[0])
        if self.ctx.is_main:
            print(f"[torch-clip] resuming from {path} at step {state.step}", flush=True)

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        guard = PreemptionGuard()
        with contextlib.ExitStack() as guarded:
            try:
                self._start()
                # from the loop until the record is written, a signal only sets a flag
                guarded.enter_context(guard)
                with self._task_model(self.wrapped):
                    self._loop(guard)
                self.summary["status"] = "completed"
            except Preempted:
                self.summary.update(status="preempted", signal=guard.received)
                raise
            except BaseException as exc:
                self.summary.update(status="failed", error=error_text(exc))
                if not self.began and self.fresh and not isinstance(exc, KeyboardInterrupt):
                    self._begin_record()  # a sweep's report shows this run's error
                raise
            finally:
                if self.began:
                    self._finish()
                if self.summary["status"] == "preempted":
                    guard.forward()  # the record is safe: a launcher's handler may requeue
        return self.summary

    def _loop(self, guard: PreemptionGuard) -> None:
        t, state = self.cfg.trainer, self.state
        started = time.perf_counter()
        label = f"{self.choices.get('task')}/{self.cfg.optimizer.name}"
        show = self.ctx.is_main and t.get("progress", True)
        with _Progress(label, t.max_steps, state.step, show) as progress:
            self.wrapped.train()
            while state.step < t.max_steps:
                epoch, offset = state.position(self.steps_per_epoch)
                progress.epoch(epoch)
                batches = self.task.train_batches(
                    epoch,
                    offset,
                    seed=self.cfg.seed,
                    rank=self.ctx.rank,
                    world_size=self.ctx.world_size,
                )
                for batch in batches:
                    self._train_step(batch)
                    progress.step()
                    self._after_step(epoch, guard, progress)
                    if state.step >= t.max_steps:
                        break
        if state.epoch_norm_start < len(state.grad_norms):  # the partial epoch the run ends in
            self._epoch_histogram(state.step // self.steps_per_epoch)
        self.seconds["loop"] += time.perf_counter() - started

    def _train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One optimizer step on ``batch``. Its telemetry, still on the device, joins the logging
        window and is returned: loss, task metrics, grad norm, clip threshold, clipped fraction."""
        with self._autocast():
            loss, metrics = self.task.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = None
        if self.norm_by_trainer:  # before the step: torch's optimizers do not report it
            norm = torch.nn.utils.get_total_norm(
                [p.grad for p in self.params if p.grad is not None]
            )
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        grad_norm, threshold, fraction = self._telemetry(norm)
        measured = {
            "loss": loss.detach(),
            **{f"metric_{k}": v.detach() for k, v in metrics.items()},
            "grad_norm": grad_norm,
            "threshold": threshold,
            "clip_fraction": fraction,
        }
        self.state.window.append(measured)
        self.state.step += 1
        return measured

    def _telemetry(
        self, measured_norm: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(grad norm, threshold, clipped fraction) of the step just taken, as device tensors:
        the optimizer's own, or the norm the trainer measured with no threshold and no clipping."""
        if measured_norm is None:
            stats = self.optimizer.last_clip_stats
            return stats.grad_norm, stats.threshold.float().mean(), stats.clip_fraction
        no_threshold, no_clipping = self.unclipped_telemetry
        return whole(measured_norm), no_threshold, no_clipping

    def _after_step(self, epoch: int, guard: PreemptionGuard, progress: _Progress) -> None:
        """What the step just taken triggers: logging (the window's one host transfer), the
        epoch histogram, evaluation, a checkpoint, and stopping on a preemption signal."""
        t, step = self.cfg.trainer, self.state.step
        last = step == t.max_steps
        end_of_epoch = step % self.steps_per_epoch == 0
        if step % t.log_every == 0 or last or end_of_epoch:
            progress.show("loss", self._flush(epoch)["train_loss"])
        if end_of_epoch:
            self._epoch_histogram(epoch)
        if step % t.eval_every == 0 or last:
            primary = self._evaluate(epoch).get(f"val_{self.task.primary_metric}")
            if primary is not None:
                progress.show(f"val_{self.task.primary_metric}", primary)
        saved = bool(t.checkpoint_every) and (step % t.checkpoint_every == 0 or last)
        if saved:
            self._save()  # the final one lets a longer budget continue this run
        if self._preempted(guard):
            if not saved:
                self._save()
            raise Preempted(guard.received, step)

    def _preempted(self, guard: PreemptionGuard) -> bool:
        """Whether to stop here. Sharded ranks save together, so they agree on the step: at the
        end of a logging window (one flag all-reduced per window, none per step)."""
        if not self.sharded:
            return guard.received is not None
        if self.state.step % self.cfg.trainer.log_every:
            return False
        return agree(guard.received is not None, self.ctx, self.device)

    # -- telemetry and evaluation ---------------------------------------------------------------
    def _flush(self, epoch: int) -> dict[str, Any]:
        """Log the window's means as one train row, in a single host transfer; keep its norms."""
        state, window = self.state, self.state.window
        keys = list(window[0])
        rows = [torch.stack([w[k].float() for k in keys]) for w in window]
        counter = getattr(self.optimizer, "skipped_steps", None)  # clipped optimizers only
        if counter is not None:  # rides along in the window's single host transfer
            rows.append(counter.float().expand(len(keys)))
        values = torch.stack(rows).cpu()
        window.clear()
        skipped = None
        if counter is not None:
            skipped, values = int(values[-1, 0]), values[:-1]
        state.grad_norms.extend(values[:, keys.index("grad_norm")].tolist())
        means = dict(zip(keys, values.nanmean(dim=0).tolist()))
        row = {
            "step": state.step,
            "epoch": epoch,
            "split": "train",
            "train_loss": means.pop("loss"),
            **{f"train_{k[7:]}": v for k, v in means.items() if k.startswith("metric_")},
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": means["grad_norm"],
            "clip_threshold": means["threshold"],
            "clip_fraction": means["clip_fraction"],
            "wall_time": state.wall_seconds(),
        }
        if skipped is not None:
            row["skipped_steps"] = skipped
        state.last_train = row
        self._log(row)
        return row

    def _epoch_histogram(self, epoch: int) -> None:
        state = self.state
        norms = np.asarray(state.grad_norms[state.epoch_norm_start :], dtype=np.float64)
        self.record.log_histogram(epoch, state.step, norms)
        if self.wandb is not None:
            self.wandb.log_histogram(norms, state.step)
        state.epoch_norm_start = len(state.grad_norms)

    @contextlib.contextmanager
    def _task_model(self, model: torch.nn.Module):
        """The task runs ``model`` inside: the wrapped one while training (DDP's gradient
        all-reduce hooks), the bare module while evaluating (any method, not only forward)."""
        previous, self.task.model = self.task.model, model
        try:
            yield
        finally:
            self.task.model = previous

    def _evaluate(self, epoch: int) -> dict[str, Any]:
        started, state = time.perf_counter(), self.state
        # all ranks evaluate: gathering a sharded module's whole parameters is a collective
        with self._task_model(self.module), whole_parameters(self.module), self._autocast():
            metrics = self.task.evaluate()
        row = {
            "step": state.step,
            "epoch": epoch,
            "split": "val",
            **{f"val_{k}": v for k, v in metrics.items()},
            "wall_time": state.wall_seconds(),
        }
        primary = metrics.get(self.task.primary_metric)
        if primary is not None and (state.best is None or primary > state.best["value"]):
            state.best = {"metric": self.task.primary_metric, "value": primary, "step": state.step}
        state.last_eval = row
        self._log(row)
        self.seconds["evaluation"] += time.perf_counter() - started
        return row

    def _log(self, row: dict[str, Any]) -> None:
        self.record.log(row)
        if self.wandb is not None:
            self.wandb.log(row, row["step"])

    # -- the end --------------------------------------------------------------------------------
    def _finish(self) -> None:
        """Write the summary and the norms of this segment, however it ended (once, from run)."""
        state = self.state
        last_train = state.last_train or {}
        self.summary.update(
            steps=state.step,
            finished_at=datetime.now(timezone.utc).isoformat(),
            wall_seconds=state.wall_seconds(),
            best=state.best,
            final=None
            if state.last_eval is None
            else {k: v for k, v in state.last_eval.items() if k.startswith("val_")},
            final_train_loss=last_train.get("train_loss"),
            resumed_from=state.resumed_from,
            segment_seconds=dict(self.seconds),
        )
        if "skipped_steps" in last_train:  # clipped optimizers: the count at the last log
            self.summary["skipped_steps"] = last_train["skipped_steps"]
        self.record.save_grad_norms(state.grad_norms)
        self.record.write_summary(self.summary)
        self.record.close()
        if self.wandb is not None:
            self.wandb.finish(0 if self.summary["status"] == "completed" else 1)


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
