"""One rank of the FSDP2 tests (tests/clip_core/test_sharded.py): every case in one gloo process group.

Each case trains a small MLP twice from the same weights on the same global batch: sharded with
``fully_shard`` over 2 ranks (each rank its half of the batch), and whole, unsharded, in this
process. The rank saves both final parameters and telemetry; the test compares them.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from clip_core import (
    CLIPPING_TYPES,
    Always,
    ClippedAdamW,
    ClippedSGD,
    ClippedSSTM,
    ClipRule,
    FixedThreshold,
    PercentileThreshold,
    Stochastic,
)
from clip_core.sharding import full_state_dict, load_full_state_dict

STEPS = 5
BATCH = 8  # global; 4 rows per rank
# below the norms seen here (2-6), so every rule clips; near them for the stochastic rules, so
# that their decisions vary; SSTM clips at level/α_{k+1}, 80x the level at its first step
LEVELS = {"layer_wise": 0.15, "coord_wise": 0.03, "linear_stoch_norm": 3.0}
LEVELS["quadratic_stoch_norm"] = 3.0


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    # Linear(5, 1) shards unevenly: rank 1 holds an empty slice of its weight and bias
    return torch.nn.Sequential(
        torch.nn.Linear(6, 10), torch.nn.Tanh(), torch.nn.Linear(10, 5), torch.nn.Tanh(),
        torch.nn.Linear(5, 1),
    )  # fmt: skip


def shard(model: torch.nn.Module, mesh: Any) -> torch.nn.Module:
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def batches(seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(2 * STEPS):
        x = torch.from_numpy(rng.standard_normal((BATCH, 6), dtype=np.float32))
        noise = torch.from_numpy(rng.standard_t(1.5, (BATCH, 1)).astype(np.float32))  # clips
        out.append((x, x[:, :1] * 2 + noise))
    return out


def train(model, opt, data, rank: int | None) -> list[list[float]]:
    """Steps on the global batch (``rank=None``) or this rank's half; per-step telemetry."""
    stats = []
    for x, y in data:
        if rank is not None:
            x, y = x[rank * 4 : rank * 4 + 4], y[rank * 4 : rank * 4 + 4]
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        s = opt.last_clip_stats
        stats.append(
            [float(s.grad_norm), float(s.threshold.float().mean()), float(s.clip_fraction)]
        )
    return stats


def params_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
        for k, v in model.named_parameters()
    }


def factories() -> dict[str, Any]:
    out = {}
    for t in CLIPPING_TYPES:
        kw = dict(clipping_type=t, clipping_level=LEVELS.get(t, 0.4), beta=0.15, p_autoclip=0.5)
        out[f"sgd/{t}"] = lambda p, kw=kw: ClippedSGD(p, lr=0.05, momentum=0.9, seed=3, **kw)
        out[f"adamw/{t}"] = lambda p, kw=kw: ClippedAdamW(p, lr=0.01, seed=3, **kw)
        if t in ("norm", "auto"):
            kw = {**kw, "clipping_level": 0.02}
            out[f"sstm/{t}"] = lambda p, kw=kw: ClippedSSTM(p, lr=0.05, L=2.0, seed=3, **kw)
    per_tensor_auto = ClipRule(PercentileThreshold(0.5), Always(), "tensor")
    per_tensor_stoch = ClipRule(FixedThreshold(0.15), Stochastic(0.5, 2), "tensor")
    out["sgd/custom_tensor_auto"] = lambda p: ClippedSGD(p, lr=0.05, rule=per_tensor_auto, seed=3)
    out["adamw/custom_tensor_stoch"] = lambda p: ClippedAdamW(
        p, lr=0.01, rule=per_tensor_stoch, seed=3
    )
    return out


def equivalence_cases(rank: int, mesh: Any) -> dict[str, Any]:
    data = batches()[:STEPS]
    results = {}
    for name, make in factories().items():
        whole = make_model()
        sharded = shard(copy.deepcopy(whole), mesh)
        ref_opt, opt = make(whole.parameters()), make(sharded.parameters())
        whole_stats = train(whole, ref_opt, data, None)
        sharded_stats = train(sharded, opt, data, rank)
        results[name] = {
            "whole": params_of(whole),
            "whole_stats": whole_stats,
            "sharded": params_of(sharded),
            "sharded_stats": sharded_stats,
        }
    return results


def torch_baseline(rank: int, mesh: Any) -> dict[str, Any]:
    """ClippedSGD(norm) vs clip_grad_norm_ on the DTensor gradients + torch.optim.SGD."""
    data = batches()[:STEPS]
    ours, theirs = shard(make_model(), mesh), shard(make_model(), mesh)
    opt = ClippedSGD(ours.parameters(), lr=0.05, momentum=0.9, clipping_level=0.4, seed=3)
    sgd = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9)
    norms = []
    for x, y in data:
        x, y = x[rank * 4 : rank * 4 + 4], y[rank * 4 : rank * 4 + 4]
        sgd.zero_grad()
        torch.nn.functional.mse_loss(theirs(x), y).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.4).full_tensor()))
        sgd.step()
    ours_stats = train(ours, opt, data, rank)
    return {
        "ours": params_of(ours),
        "ours_stats": ours_stats,
        "torch": params_of(theirs),
        "torch_norms": norms,
    }


def resume_cases(rank: int, mesh: Any, tmp: Path) -> dict[str, Any]:
    """Save after STEPS steps, load into fresh objects, continue: same as never stopping."""
    data = batches()
    out = {}
    for name in ("sgd/quadratic_stoch_auto", "adamw/auto", "sstm/auto"):
        make = factories()[name]
        straight = shard(make_model(), mesh)
        opt = make(straight.parameters())
        train(straight, opt, data[:STEPS], rank)
        model_full = get_model_state_dict(straight, options=StateDictOptions(full_state_dict=True))
        optim_full = full_state_dict(opt)
        ckpt = tmp / name.replace("/", "_")
        dcp.save({"model": straight.state_dict(), "optim": opt.state_dict()}, checkpoint_id=ckpt)
        # torch's own helper keeps only state and param_groups
        torch_helper_keys = sorted(get_optimizer_state_dict(straight, opt))
        straight_stats = train(straight, opt, data[STEPS:], rank)

        # full state dicts into fresh objects (a new process would do the same)
        fresh = shard(make_model(), mesh)
        set_model_state_dict(fresh, model_full, options=StateDictOptions(full_state_dict=True))
        fresh_opt = make(fresh.parameters())
        load_full_state_dict(fresh_opt, optim_full)
        full_stats = train(fresh, fresh_opt, data[STEPS:], rank)

        # torch.distributed.checkpoint into an optimizer whose state exists (one step taken)
        other = shard(make_model(), mesh)
        other_opt = make(other.parameters())
        train(other, other_opt, data[:1], rank)
        target = {"model": other.state_dict(), "optim": other_opt.state_dict()}
        dcp.load(target, checkpoint_id=ckpt)
        other.load_state_dict(target["model"])
        other_opt.load_state_dict(target["optim"])
        dcp_stats = train(other, other_opt, data[STEPS:], rank)
        out[name] = {
            "straight": params_of(straight),
            "straight_stats": straight_stats,
            "full": params_of(fresh),
            "full_stats": full_stats,
            "dcp": params_of(other),
            "dcp_stats": dcp_stats,
            "torch_helper_keys": torch_helper_keys,
        }
    return out


def refusals(rank: int, mesh: Any) -> dict[str, str]:
    from torch.distributed.optim import ZeroRedundancyOptimizer

    def message(fn) -> str:
        try:
            fn()
        except ValueError as exc:
            return str(exc)
        return "no error"

    sharded, plain = shard(make_model(), mesh), torch.nn.Linear(2, 2)
    coord_stoch = ClipRule(FixedThreshold(0.1), Stochastic(0.5, 1), "coordinate")
    return {
        "zero": message(
            lambda: ZeroRedundancyOptimizer(
                make_model().parameters(), optimizer_class=ClippedSGD, lr=0.1
            )
        ),
        "mixed": message(lambda: ClippedSGD([*sharded.parameters(), *plain.parameters()], lr=0.1)),
        "coord_stoch": message(lambda: ClippedSGD(sharded.parameters(), lr=0.1, rule=coord_stoch)),
    }


def seed_agreement(rank: int, mesh: Any) -> list[list[float]]:
    """seed=None on ranks whose global RNGs differ: the decisions still agree."""
    torch.manual_seed(100 + rank)
    model = shard(make_model(), mesh)
    opt = ClippedSGD(model.parameters(), lr=0.05, clipping_type="linear_stoch_norm", beta=0.5)
    return train(model, opt, batches()[:STEPS], rank)


def run(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        results = {
            "equivalence": equivalence_cases(rank, mesh),
            "torch_baseline": torch_baseline(rank, mesh),
            "resume": resume_cases(rank, mesh, Path(out)),
            "refusals": refusals(rank, mesh),
            "seed_none": seed_agreement(rank, mesh),
        }
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
