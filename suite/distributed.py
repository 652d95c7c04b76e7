"""Data-parallel and sharded set-up from the environment ``torchrun`` provides (gloo on CPU, NCCL on
GPU): ``trainer.strategy=ddp`` (DistributedDataParallel) or ``fsdp2`` (``fully_shard``), and the
whole-model state dicts that checkpoints hold under either."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from clip_core import ClippedOptimizer
from clip_core.sharding import full_state_dict, is_sharded, load_full_state_dict


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistContext:
    """Join the process group when launched by torchrun (``WORLD_SIZE > 1``) or as one of several
    SLURM tasks of a submitit job (``hydra.launcher.tasks_per_node``/``nodes``), else single
    process."""
    if "WORLD_SIZE" not in os.environ and _submitit_tasks() > 1:
        from submitit.helpers import TorchDistributedEnvironment

        # MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK from SLURM; every GPU stays visible
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def _submitit_tasks() -> int:
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return 1
    return int(os.environ.get("SLURM_NTASKS", "1"))


def shutdown_distributed(ctx: DistContext, completed: bool = False) -> None:
    """Leave the process group. After a completed run every rank first waits for the others, so
    none tears down its connections while rank 0 still writes the record, and the garbage (a
    DDP reducer in a reference cycle holds the group) is collected while the interpreter is
    whole: a gloo group destroyed during interpreter shutdown aborts the process (SIGABRT,
    "terminate called without an active exception")."""
    if not (ctx.enabled and dist.is_initialized()):
        return
    gc.collect()
    if completed:
        dist.barrier()
    dist.destroy_process_group()


def resolve_device(name: str, ctx: DistContext) -> torch.device:
    """``auto`` picks CUDA when present (one GPU per local rank), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("trainer.device=cuda but no CUDA device is available; use auto or cpu")
        torch.cuda.set_device(ctx.local_rank)
        return torch.device("cuda", ctx.local_rank)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"Invalid trainer.device: {name!r}; expected one of auto, cpu, cuda")


STRATEGIES = ("ddp", "fsdp2")


def wrap_model(
    module: nn.Module, strategy: str, ctx: DistContext, device: torch.device
) -> nn.Module:
    """The model the training step runs: ``module`` itself in one process; under torchrun a
    ``DistributedDataParallel`` wrapper (``ddp``), or ``module`` sharded in place with FSDP2's
    ``fully_shard`` (``fsdp2``: each member of every ``nn.ModuleList``, e.g. the transformer
    layers, is one shard group, the rest of the model another)."""
    if not ctx.enabled:
        return module
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (ctx.world_size,))
    for sub in module.modules():
        if isinstance(sub, nn.ModuleList):
            for block in sub:
                fully_shard(block, mesh=mesh)
    fully_shard(module, mesh=mesh)
    return module


def _fsdp_module_class() -> type | None:
    """``FSDPModule`` once something imported FSDP; before that no module can be one."""
    # importing FSDP costs over a second per process start (it pulls DTensor and TorchDynamo)
    return getattr(sys.modules.get("torch.distributed.fsdp"), "FSDPModule", None)


def is_sharded_model(module: nn.Module) -> bool:
    fsdp_module = _fsdp_module_class()
    return fsdp_module is not None and isinstance(module, fsdp_module)


@contextlib.contextmanager
def whole_parameters(module: nn.Module) -> Iterator[None]:
    """Inside, a sharded module holds its whole parameters, so a task can evaluate it with any
    method, not only ``forward`` (e.g. reddit's layer-wise inference); a no-op otherwise."""
    fsdp_module = _fsdp_module_class()
    groups = [m for m in module.modules() if fsdp_module and isinstance(m, fsdp_module)]
    for group in groups:
        group.unshard()
    try:
        yield
    finally:
        for group in groups:
            group.reshard()


def full_model_state(module: nn.Module) -> dict[str, Any]:
    """The whole model's state dict on rank 0's CPU (a collective when sharded)."""
    if not is_sharded_model(module):
        return module.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(module, options=options)


def load_full_model_state(module: nn.Module, state: dict[str, Any]) -> None:
    if not is_sharded_model(module):
        module.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))


def full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's whole state (a collective when sharded), clip state included."""
    if not is_sharded_model(module):
        return optimizer.state_dict()
    if isinstance(optimizer, ClippedOptimizer):
        return full_state_dict(optimizer)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(module, optimizer, options=options)


def load_full_optimizer_state(
    module: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    if not is_sharded_model(module):
        optimizer.load_state_dict(state)
    elif isinstance(optimizer, ClippedOptimizer):
        load_full_state_dict(optimizer, state)
    else:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(module, optimizer, state, options=options)


def whole(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor of ``value`` (a DTensor, e.g. a baseline's norm of sharded gradients, is
    gathered)."""
    return value.full_tensor() if is_sharded(value) else value


def agree(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every rank if it is true on any (e.g. a preemption signal seen by one rank)."""
    if not ctx.enabled:
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value)
