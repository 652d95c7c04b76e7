#!/usr/bin/env python
"""Time ``optimizer.step()`` alone: clip_core's clipped optimizers against torch's idioms.

Only the step is timed. The parameters carry the shapes of ResNet18 (11.7M, from
``torchvision.models.resnet18()``) or BERT-base (110M, from ``transformers.BertModel(BertConfig())``
built on the meta device; a built-in list from the same config if transformers is missing). The
gradients are random tensors assigned once and reused by every step of every contender (the
clipped optimizers and ``clip_grad_norm_`` scale them in place, so after the first steps nothing is
clipped any more; the fused kernels cost the same either way — ``--restore-grads`` copies fresh
gradients in before every step, outside the timed region, to check that).

Contenders, per model and step rule (SGD with momentum 0.9, AdamW):

* ``torch.optim.SGD`` / ``AdamW`` with ``fused=True`` and with ``foreach=True``;
* ``clip_grad_norm_(params, λ, foreach=True)`` followed by each of them (the idiom clip_core
  replaces; ``clip_grad_norm_(foreach)+<rule>(fused)`` is the baseline of the ratios);
* every clipping type of ``ClippedSGD(momentum=0.9)`` / ``ClippedAdamW``; the ``auto`` types start
  from a prefilled history of ``--history`` norms;
* ``clipping_type="none"`` with ``telemetry=False``: the unclipped baseline of a comparison,
  checked against torch's fused step of the same run (it makes the same array passes);
* the memory-traffic floor: one ``torch._foreach_add_(a, g)`` pass over model-sized arrays (three
  array passes), scaled to the passes a clipped step needs at the least;
* with ``--components`` (default on): pieces of the clipped steps timed alone;
* with ``--compiled``: ``torch.compile(opt.step)`` of the clipped ``norm`` step and of torch's
  foreach optimizer (torch's recommended compiled path), beside the eager steps; the compile
  happens in the first warm-up round (about a minute per contender on CPU).

All contenders of a model run in one process, round-robin (one step each per round, the order
shuffled every round with a fixed seed) so that load drift and the cache state a predecessor
leaves hit them alike; the medians after ``--warmup`` rounds are reported. The optimizer states
of contenders of the same rule share their buffers (values do not change the cost), which keeps
BERT-base within memory; the reported state memory is what each optimizer would hold alone.

Run ``python scripts/bench_step.py`` (about 7 minutes on 2 quiet CPU cores; on a loaded machine
the timed rounds stop at per-model time budgets, ``--budget``, so about 12-15 minutes) or
``--quick`` (ResNet18 only, 1 + 2 rounds: about 35 s quiet). ``--threads 1`` gives much steadier
numbers when other processes share the cores. Writes ``<out>/step.md`` and ``<out>/step.csv``.

The parts live in ``suite/bench/``: the workload, the contenders, the timing and the report.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import clip_core
from clip_core import CLIPPING_TYPES
from torch_clip.suite.bench.contenders import (
    ADAMW_LR,
    ADAMW_WD,
    SGD_LR,
    SGD_MOMENTUM,
    Contender,
    build_contenders,
)
from torch_clip.suite.bench.report import analyse, mb, print_table, write_csv, write_md
from torch_clip.suite.bench.timing import probe_contenders, run_rounds
from torch_clip.suite.bench.workload import MODELS, RULES, Workload, model_shapes
from torch_clip.suite.experiments.provenance import command_line, commit
from torch_clip.suite.paths import ROOT


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _no_step() -> None:
    pass


# (warm-up, timed) rounds; without --repeats the timed rounds also stop at a time budget (s).
DEFAULT_ROUNDS = {"resnet18": (5, 100), "bert-base": (3, 40)}
QUICK_ROUNDS = {"resnet18": (1, 2), "bert-base": (1, 1)}
DEFAULT_BUDGET = {"resnet18": 120.0, "bert-base": 420.0}
QUICK_BUDGET = {"resnet18": 25.0, "bert-base": 60.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", choices=MODELS, default=None)
    ap.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES))
    ap.add_argument("--types", nargs="+", choices=CLIPPING_TYPES, default=list(CLIPPING_TYPES))
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (default per model)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default per model)")
    ap.add_argument("--history", type=int, default=100_000, help="prefilled auto history length")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--quick", action="store_true", help="smoke run: ResNet18 only, few rounds")
    ap.add_argument(
        "--budget",
        type=float,
        default=1.0,
        help="scale of the per-model time budgets of the timed rounds (0: none; "
        "ignored with --repeats); full run: ResNet18 120 s, BERT-base 420 s",
    )
    ap.add_argument(
        "--components",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time pieces of the clipped step alone",
    )
    ap.add_argument(
        "--compiled",
        action="store_true",
        help="also time torch.compile'd steps (clipped norm, and torch's foreach optimizer)",
    )
    ap.add_argument(
        "--restore-grads",
        action="store_true",
        help="copy fresh gradients in before every step (untimed) so every step really clips",
    )
    args = ap.parse_args(argv)
    if args.models is None:
        args.models = ["resnet18"] if args.quick else list(MODELS)
    for name in ("repeats", "warmup", "history"):
        value = getattr(args, name)
        if value is not None and value < (1 if name == "repeats" else 0):
            ap.error(f"--{name} must be >= {1 if name == 'repeats' else 0}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    meta = run_meta(args, argv, device)
    log(f"torch {torch.__version__}, device {meta['device']}, {threads} threads, cpu {meta['cpu']}")
    results = [bench_model(model, args, device) for model in args.models]
    meta["load average at end"] = load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    write_md(args.out / "step.md", results, meta, cuda)
    write_csv(args.out / "step.csv", results, meta)
    checks = [ch for res in results for ch in res["checks"]]
    failed = [ch for ch in checks if not ch.passed]
    log(f"\n{len(checks) - len(failed)} of {len(checks)} target checks pass")
    for ch in failed:
        log(f"  FAIL {ch.model} {ch.contender}: {ch.check} = {ch.value:.3f} > {ch.limit:g}")
    log(f"wrote {args.out / 'step.md'} and {args.out / 'step.csv'}")
    return 0


def log(msg: str) -> None:
    print(msg, flush=True)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    return device


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_meta(args: argparse.Namespace, argv: list[str] | None, device: torch.device) -> dict:
    """The machine, versions, command and settings that head the report."""
    cuda = device.type == "cuda"
    gradients = "restored before every step" if args.restore_grads else "reused (clipped in place)"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "clip_core": clip_core.__version__,
        "commit": commit(),
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "cores (os.cpu_count)": os.cpu_count(),
        "load average at start": load_average(),
        "command": command_line("scripts/bench_step.py", sys.argv[1:] if argv is None else argv),
        "settings": (
            f"SGD lr={SGD_LR} momentum={SGD_MOMENTUM}; AdamW lr={ADAMW_LR} wd={ADAMW_WD}; "
            f"λ = 0.5·‖g‖ (global types, clip_grad_norm_), 0.5·median ‖g_i‖ (layer_wise), "
            f"1.0·rms(g) (coord_wise); auto p=0.75 with {args.history} prefilled norms; "
            f"gradients {gradients}"
        ),
    }


def bench_model(model: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Time and probe every contender on one model's parameters; its part of the report."""
    t0 = time.perf_counter()
    cuda = device.type == "cuda"
    shapes, source = model_shapes(model)
    w = Workload(model, shapes, device, args.restore_grads)
    warmup, repeats = (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)[model]
    warmup = warmup if args.warmup is None else args.warmup
    repeats = repeats if args.repeats is None else args.repeats
    contenders = build_contenders(w, args.rules, args.types, args.history,
                                  warmup + repeats + 8, args.components, args.compiled)  # fmt: skip
    log(
        f"{model}: {w.numel / 1e6:.1f}M parameters in {len(shapes)} tensors ({source}), "
        f"{len(contenders)} contenders, {warmup} + {repeats} rounds"
    )
    budget = None
    if args.repeats is None and args.budget > 0:
        budget = args.budget * (QUICK_BUDGET if args.quick else DEFAULT_BUDGET)[model]
    repeats = run_rounds(contenders, w, warmup, repeats, cuda, log, budget)
    probe_contenders(contenders, w, cuda)
    rows, checks, floors = analyse(contenders)
    result = {
        "model": model, "numel": w.numel, "bytes": w.bytes, "ntensors": len(shapes),
        "source": source, "rows": rows, "checks": checks, "per_pass": floors["per_pass"],
        "floors": floors["floors"], "floors_min": floors["floors_min"], "warmup": warmup,
        "repeats": repeats, "wall": time.perf_counter() - t0, "notes": notes(contenders, w),
    }  # fmt: skip
    print_table(result, cuda)
    release(contenders)
    del contenders, w
    gc.collect()  # the model-sized tensors go before the next model's are made
    return result


def notes(contenders: list[Contender], w: Workload) -> list[str]:
    """What the report should flag: state not on the shared buffers, large fresh allocations."""
    out = []
    for c in contenders:
        if c.optimizer is not None and not w.state_is_shared(c.optimizer, c.rule):
            out.append(f"{c.name}: state buffers were not the shared ones (own allocation)")
        if c.alloc_note and c.kind != "component":
            out.append(
                f"{c.name} allocates {mb(c.alloc_bytes)} MB of fresh tensors per step "
                f"(model: {mb(w.bytes)} MB); largest: {c.alloc_note}"
            )
    return out


def release(contenders: list[Contender]) -> None:
    """Keep the numbers, drop the contenders' hold on the optimizers and the model's tensors."""
    for c in contenders:
        c.optimizer = None
        c.step = _no_step


if __name__ == "__main__":
    raise SystemExit(main())
