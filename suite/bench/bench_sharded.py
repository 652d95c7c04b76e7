#!/usr/bin/env python
"""Time ``optimizer.step()`` on an FSDP2-sharded model: clip_core against torch's idiom.

``python scripts/bench_sharded.py`` starts ``--procs`` gloo processes on CPU (or run it under
``torchrun``, e.g. with NCCL on GPUs: ``--device cuda``). The model is ``--layers`` square
``Linear(--width)`` layers, each one ``fully_shard`` group, and the root; one backward fills the
DTensor gradients, which every contender reuses (as ``scripts/bench_step.py`` does). Contenders,
timed round-robin in the same processes (one step each per round, shuffled with a fixed seed),
medians over the rounds after ``--warmup``:

* ``torch SGD`` / ``torch AdamW(fused)`` alone (no clipping);
* ``clip_grad_norm_ + torch SGD`` / ``+ torch AdamW(fused)``: torch's global clipping on DTensor
  gradients (its norm is a DTensor reduced over the mesh), the baseline of the ratios;
* ``ClippedSGD`` / ``ClippedAdamW`` with ``norm``, ``auto`` and ``layer_wise``: one all-reduce of
  the local squared norms, then the update on the local slices.

Prints a markdown table from rank 0: median ms per step and the ratio to the baseline of the
same step rule.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clip_core import ClippedAdamW, ClippedSGD

LEVEL = 1e-3  # below the gradient norm: every clipped contender clips on its first step


def contenders(params: list[torch.Tensor]) -> dict[str, tuple[str, Callable[[], None]]]:
    """name -> (step rule, one step)."""
    out: dict[str, tuple[str, Callable[[], None]]] = {}
    sgd = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    adamw = torch.optim.AdamW(params, lr=1e-4, fused=True)
    sgd2 = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    adamw2 = torch.optim.AdamW(params, lr=1e-4, fused=True)
    out["torch SGD"] = ("sgd", sgd.step)
    out["torch AdamW(fused)"] = ("adamw", adamw.step)

    def clipped(opt: torch.optim.Optimizer) -> Callable[[], None]:
        def step() -> None:
            torch.nn.utils.clip_grad_norm_(params, LEVEL, foreach=True)
            opt.step()

        return step

    out["clip_grad_norm_ + torch SGD"] = ("sgd", clipped(sgd2))
    out["clip_grad_norm_ + torch AdamW(fused)"] = ("adamw", clipped(adamw2))
    for ctype in ("norm", "auto", "layer_wise"):
        kw = {"clipping_type": ctype, "clipping_level": LEVEL, "seed": 0}
        out[f"ClippedSGD {ctype}"] = ("sgd", ClippedSGD(params, lr=1e-3, momentum=0.9, **kw).step)
        out[f"ClippedAdamW {ctype}"] = ("adamw", ClippedAdamW(params, lr=1e-4, **kw).step)
    return out


def bench(args: argparse.Namespace) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(args.device, int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(0)
    layers = [torch.nn.Linear(args.width, args.width) for _ in range(args.layers)]
    model = torch.nn.Sequential(*layers).to(device)
    mesh = init_device_mesh(device.type, (world,))
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    model(torch.randn(8, args.width, device=device)).square().mean().backward()
    params = list(model.parameters())
    steps = contenders(params)
    times: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    shuffle = random.Random(0)
    for round_ in range(args.warmup + args.rounds):
        shuffle.shuffle(order)  # the same order on every rank (same seed): collectives match
        for name in order:
            dist.barrier()
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            steps[name][1]()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
    # the slowest rank's median decides (a step ends when every rank's has)
    box = [None] * world
    dist.all_gather_object(box, medians)
    medians = {name: max(m[name] for m in box) for name in medians}
    if rank != 0:
        return
    n = sum(p.numel() for p in params)
    print(
        f"{n / 1e6:.1f}M parameters ({args.layers} x Linear({args.width})), {world} ranks, "
        f"{device.type}, {torch.get_num_threads()} thread(s)/rank, torch {torch.__version__}; "
        f"median of {args.rounds} rounds\n"
    )
    print("| step | ms/step | ratio to clip_grad_norm_ + torch |")
    print("| --- | --- | --- |")
    base = {rule: medians[f"clip_grad_norm_ + {n}"] for rule, n in (("sgd", "torch SGD"),)}
    base["adamw"] = medians["clip_grad_norm_ + torch AdamW(fused)"]
    for name, (rule, _) in steps.items():
        print(f"| {name} | {medians[name]:.2f} | {medians[name] / base[rule]:.2f} |")


def worker(rank: int, world: int, port: int, args: argparse.Namespace) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK="0")
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        bench(args)
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=2, help="processes when not under torchrun")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    if "RANK" in os.environ:  # under torchrun
        torch.set_num_threads(args.threads)
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
        try:
            bench(args)
        finally:
            dist.destroy_process_group()
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(
        worker, args=(args.procs, port, args), nprocs=args.procs, start_method="spawn"
    )


if __name__ == "__main__":
    main()
