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
"""

from __future__ import annotations

import argparse
import csv
import gc
import math
import os
import platform
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

ROOT = Path(__file__).resolve().parents[1]

import clip_core  # noqa: E402
from clip_core import CLIPPING_TYPES, ClippedAdamW, ClippedOptimizer, ClippedSGD  # noqa: E402
from clip_core.history import SortedHistory  # noqa: E402

MODELS = ("resnet18", "bert-base")
RULES = ("sgd", "adamw")
RULE_LABEL = {"sgd": "SGD", "adamw": "AdamW"}
SGD_LR, SGD_MOMENTUM = 1e-2, 0.9
ADAMW_LR, ADAMW_WD = 1e-3, 1e-2
GLOBAL_TYPES = (
    "norm",
    "auto",
    "linear_stoch_norm",
    "quadratic_stoch_norm",
    "linear_stoch_auto",
    "quadratic_stoch_auto",
)
AUTO_TYPES = ("auto", "linear_stoch_auto", "quadratic_stoch_auto")
LOCAL_TYPES = ("layer_wise", "coord_wise")

# Array passes over model-sized arrays (one read or one write of every parameter-sized tensor),
# SGD with momentum and no weight decay, AdamW with decoupled weight decay, no amsgrad.
# "floor" is the least a global-norm clipped step can do: read g once for ‖g‖, then one fused
# update that folds the factor α in.
FLOOR_PASSES = {"sgd": 6, "adamw": 8}
FLOOR_COUNTING = {
    "sgd": "‖g‖ reads g (1) + fused update reads g, p, buf and writes buf, p (5) = 6",
    "adamw": "‖g‖ reads g (1) + fused update reads g, p, m, v and writes p, m, v (7) = 8",
}
# Passes of each contender as implemented (the design; see the notes for measured excess).
PASSES = {
    ("sgd", "fused"): (5, "read g,p,buf; write buf,p"),
    ("sgd", "foreach"): (8, "buf*=μ (2) + buf+=g (3) + p-=lr·buf (3)"),
    ("sgd", "clip+fused"): (8, "foreach_norm g (1) + g*=c (2) + fused (5)"),
    ("sgd", "clip+foreach"): (11, "foreach_norm g (1) + g*=c (2) + foreach (8)"),
    ("adamw", "fused"): (7, "read g,p,m,v; write p,m,v"),
    ("adamw", "foreach"): (
        20,
        "p*=1-lr·wd (2) + lerp m (3) + v*=β2 (2) + addcmul v (3) + t=sqrt v (2) "
        "+ t/=bc (2) + t+=eps (2) + addcdiv p (4)",
    ),
    ("adamw", "clip+fused"): (10, "foreach_norm g (1) + g*=c (2) + fused (7)"),
    ("adamw", "clip+foreach"): (23, "foreach_norm g (1) + g*=c (2) + foreach (20)"),
}
# clip_core types: the fused kernel with grad_scale also writes the scaled g back (+1 pass), so
# that p.grad holds the clipped gradient after step() as after clip_grad_norm_.
FUSED_PASSES = {"sgd": 5, "adamw": 7}


def clip_core_passes(rule: str, ctype: str) -> tuple[int, str]:
    fused = FUSED_PASSES[rule]
    if ctype == "none":
        return 1 + fused, f"‖g‖ (1) + fused ({fused})"
    if ctype in GLOBAL_TYPES:
        return 1 + fused + 1, f"‖g‖ (1) + fused with grad_scale ({fused} + write g 1)"
    if ctype == "layer_wise":
        return 1 + 2 + fused, f"‖g_i‖ (1) + g*=α_i (2) + fused ({fused})"
    if ctype == "coord_wise":
        return (
            2 + fused,
            "per 1 MiB piece in cache on CPU: ‖g‖, clamp_, ‖g‖ again (read g, write g: 2) "
            f"+ fused ({fused})",
        )
    return 0, "?"


# -- parameter shapes -----------------------------------------------------------------------------
def resnet18_shapes() -> list[tuple[int, ...]]:
    import torchvision

    with torch.device("meta"):
        model = torchvision.models.resnet18(weights=None)
    return [tuple(p.shape) for p in model.parameters()]


def _bert_shapes_from_config(
    vocab: int = 30522,
    hidden: int = 768,
    layers: int = 12,
    intermediate: int = 3072,
    positions: int = 512,
    token_types: int = 2,
) -> list[tuple[int, ...]]:
    """BertModel's parameters in registration order, from BertConfig's default sizes."""
    h, i = hidden, intermediate
    shapes: list[tuple[int, ...]] = [(vocab, h), (positions, h), (token_types, h), (h,), (h,)]
    per_layer = [(h, h), (h,), (h, h), (h,), (h, h), (h,), (h, h), (h,), (h,), (h,)]
    per_layer += [(i, h), (i,), (h, i), (h,), (h,), (h,)]
    shapes += per_layer * layers
    shapes += [(h, h), (h,)]  # pooler
    return shapes


def bert_base_shapes() -> tuple[list[tuple[int, ...]], str]:
    try:
        from transformers import BertConfig, BertModel
    except ImportError:
        return _bert_shapes_from_config(), "built-in list (BertConfig defaults)"
    config = BertConfig()
    with torch.device("meta"):
        model = BertModel(config)
    return [tuple(p.shape) for p in model.parameters()], "transformers BertModel(BertConfig())"


def model_shapes(name: str) -> tuple[list[tuple[int, ...]], str]:
    if name == "resnet18":
        return resnet18_shapes(), "torchvision resnet18()"
    if name == "bert-base":
        return bert_base_shapes()
    raise ValueError(f"unknown model {name!r}")


# -- the workload: parameters, gradients and shared state buffers ---------------------------------
class Workload:
    def __init__(
        self, name: str, shapes: list[tuple[int, ...]], device: torch.device, restore: bool
    ):
        self.name = name
        self.device = device
        torch.manual_seed(0)
        self.params = [nn.Parameter(torch.randn(s, device=device).mul_(0.02)) for s in shapes]
        for p in self.params:
            p.grad = torch.randn_like(p)
        self.grads = [p.grad for p in self.params]
        self.numel = sum(p.numel() for p in self.params)
        self.bytes = sum(p.numel() * p.element_size() for p in self.params)
        self.master = [g.clone() for g in self.grads] if restore else None
        with torch.no_grad():
            norms = torch.stack(torch._foreach_norm(self.grads))
            self.grad_norm = float(torch.linalg.vector_norm(norms))
            self.median_tensor_norm = float(norms.median())
            self.rms = float(
                torch.sqrt(sum((g.double() ** 2).sum() for g in self.grads) / self.numel)
            )
        zeros = lambda: [torch.zeros_like(p) for p in self.params]  # noqa: E731
        self.sgd_buf = zeros()
        self.adam_m = zeros()
        self.adam_v = zeros()
        self.floor_a = zeros()

    def restore_grads(self) -> None:
        if self.master is not None:
            torch._foreach_copy_(self.grads, self.master)

    def share_state(self, opt: torch.optim.Optimizer, rule: str, step_on_device: bool) -> None:
        """Point the optimizer's per-parameter state at the shared buffers before its first step."""
        for i, p in enumerate(self.params):
            state = opt.state[p]
            if rule == "sgd":
                state["momentum_buffer"] = self.sgd_buf[i]
            else:
                device = p.device if step_on_device else torch.device("cpu")
                state["step"] = torch.zeros((), dtype=torch.float32, device=device)
                state["exp_avg"] = self.adam_m[i]
                state["exp_avg_sq"] = self.adam_v[i]

    def state_is_shared(self, opt: torch.optim.Optimizer, rule: str) -> bool:
        keys = ("momentum_buffer",) if rule == "sgd" else ("exp_avg", "exp_avg_sq")
        shared = self.sgd_buf if rule == "sgd" else self.adam_m + self.adam_v
        ptrs = {t.data_ptr() for t in shared}
        return all(
            opt.state[p].get(k) is not None and opt.state[p][k].data_ptr() in ptrs
            for p in self.params
            for k in keys
        )


def prefilled_history(
    length: int, centre: float, room: int, device: torch.device, device_path: bool = False
) -> SortedHistory:
    """A whole-history SortedHistory as if ``length`` valid norms had been pushed already.

    Capacity follows the history's own doubling from 1024, with ``room`` free slots so the timed
    steps never trigger a growth. ``device_path`` forces the device path on CPU too.
    """
    gen = torch.Generator().manual_seed(1)
    raw = centre * (0.6 + 0.8 * torch.rand(length, generator=gen))  # λ_auto ≈ 1.2·centre
    capacity = 1024
    while capacity < length + room:
        capacity *= 2
    sorted_ = torch.full((1, capacity), float("inf"))
    sorted_[0, :length] = torch.sort(raw).values
    raw_buf = torch.zeros((1, capacity))
    raw_buf[0, :length] = raw
    history = SortedHistory(1, None, scalar=True, host_path=not device_path)
    history.load_state_dict(
        {
            "num_units": 1,
            "window": None,
            "pushes": length,
            "sorted": sorted_,
            "raw": raw_buf,
            "count": torch.tensor(length, dtype=torch.int64),
        },
        device,
    )
    return history


# -- contenders -----------------------------------------------------------------------------------
@dataclass
class Contender:
    model: str
    rule: str  # "sgd", "adamw", "floor" or "component"
    name: str
    # "torch", "clip_core", "variant" (a clip_core alternative, no targets), "floor", "component"
    kind: str
    step: Callable[[], Any]
    passes: int | None = None
    counting: str = ""
    ctype: str | None = None
    optimizer: torch.optim.Optimizer | None = None
    times: list[float] = field(default_factory=list)
    state_bytes: int | None = None
    alloc_bytes: int | None = None
    torch_calls: int | None = None
    host_reads: int | None = None
    syncs: int | None = None
    peak_extra: int | None = None
    note: str = ""
    alloc_note: str = ""
    compiled: bool = False  # a torch.compile'd step: not probed (a probe mode would recompile it)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times) if self.times else math.nan

    @property
    def min_ms(self) -> float:
        return min(self.times) if self.times else math.nan

    @property
    def spread(self) -> float:
        """Inter-quartile range over the median, in percent."""
        if len(self.times) < 4:
            return math.nan
        q = statistics.quantiles(self.times, n=4)
        return 100.0 * (q[2] - q[0]) / self.median_ms


def make_torch_optimizer(rule: str, impl: str, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    flags = {impl: True}
    if rule == "sgd":
        return torch.optim.SGD(params, lr=SGD_LR, momentum=SGD_MOMENTUM, **flags)
    return torch.optim.AdamW(params, lr=ADAMW_LR, weight_decay=ADAMW_WD, **flags)


def clipping_level(ctype: str, w: Workload) -> float:
    if ctype == "layer_wise":
        return 0.5 * w.median_tensor_norm  # clips the larger half of the tensors
    if ctype == "coord_wise":
        return 1.0 * w.rms  # clips about a third of the coordinates of a Gaussian gradient
    return 0.5 * w.grad_norm


def build_contenders(
    w: Workload,
    rules: list[str],
    types: list[str],
    history: int,
    room: int,
    components: bool,
    compiled: bool = False,
) -> list[Contender]:
    out: list[Contender] = []
    lam = 0.5 * w.grad_norm
    params, grads = w.params, w.grads
    for rule in rules:
        label = RULE_LABEL[rule]
        for impl in ("fused", "foreach"):
            opt = make_torch_optimizer(rule, impl, params)
            w.share_state(opt, rule, step_on_device=impl == "fused")
            passes, counting = PASSES[(rule, impl)]
            out.append(
                Contender(
                    w.name,
                    rule,
                    f"{label}({impl})",
                    "torch",
                    opt.step,
                    passes,
                    counting,
                    optimizer=opt,
                )
            )
        for impl in ("fused", "foreach"):
            opt = make_torch_optimizer(rule, impl, params)
            w.share_state(opt, rule, step_on_device=impl == "fused")

            def step(opt: torch.optim.Optimizer = opt) -> None:
                torch.nn.utils.clip_grad_norm_(params, lam, foreach=True)
                opt.step()

            passes, counting = PASSES[(rule, f"clip+{impl}")]
            out.append(
                Contender(
                    w.name,
                    rule,
                    f"clip_grad_norm_(foreach)+{label}({impl})",
                    "torch",
                    step,
                    passes,
                    counting,
                    optimizer=opt,
                )
            )
        if compiled:
            opt = make_torch_optimizer(rule, "foreach", params)
            w.share_state(opt, rule, step_on_device=False)
            passes, counting = PASSES[(rule, "foreach")]
            out.append(
                Contender(
                    w.name,
                    rule,
                    f"{label}(foreach), compiled",
                    "variant",
                    torch.compile(opt.step),
                    passes,
                    counting,
                    optimizer=opt,
                    compiled=True,
                )
            )
        variants = [(ctype, "clip_core") for ctype in types]
        if "auto" in types and w.device.type == "cpu":
            # the auto history's device path (the one CUDA runs) beside the CPU default
            variants.append(("auto", "variant"))
        if compiled and "norm" in types:
            variants.append(("norm", "compiled"))
        for ctype, kind in variants:
            level = clipping_level(ctype, w)
            if rule == "sgd":
                copt: ClippedOptimizer = ClippedSGD(
                    params,
                    lr=SGD_LR,
                    momentum=SGD_MOMENTUM,
                    clipping_type=ctype,
                    clipping_level=level,
                    seed=0,
                )
            else:
                copt = ClippedAdamW(
                    params,
                    lr=ADAMW_LR,
                    weight_decay=ADAMW_WD,
                    clipping_type=ctype,
                    clipping_level=level,
                    seed=0,
                )
            w.share_state(copt, rule, step_on_device=copt.fused)
            note = "" if copt.fused else "unfused fallback"
            name = f"Clipped{label}[{ctype}]"
            if ctype in AUTO_TYPES:
                device_path = kind == "variant"
                copt.clipper.history = prefilled_history(
                    history, lam, room, w.device, device_path=device_path
                )
                note = f"history {history}"
                name += ", device-path history" if device_path else ""
            passes, counting = clip_core_passes(rule, ctype)
            step, is_compiled = copt.step, kind == "compiled"
            if is_compiled:
                name, kind, step = f"{name}, compiled", "variant", torch.compile(copt.step)
            out.append(
                Contender(
                    w.name,
                    rule,
                    name,
                    kind,
                    step,
                    passes,
                    counting,
                    ctype=ctype,
                    optimizer=copt,
                    note=note,
                    compiled=is_compiled,
                )
            )
    out.append(
        Contender(
            w.name,
            "floor",
            "floor: _foreach_add_(a, g)",
            "floor",
            lambda: torch._foreach_add_(w.floor_a, grads),
            3,
            "read a, g; write a",
        )
    )
    if components:
        out += component_contenders(w, history, room)
    return out


def component_contenders(w: Workload, history: int, room: int) -> list[Contender]:
    """Pieces of a clipped step timed alone (to locate the cost of each)."""
    params, grads = w.params, w.grads
    one = torch.ones((), device=w.device)
    hist = prefilled_history(history, 0.5 * w.grad_norm, room, w.device)
    valid = torch.ones((), dtype=torch.bool, device=w.device)
    value = torch.full((1,), 0.5 * w.grad_norm, device=w.device)

    def push() -> None:
        hist.push(value, valid)
        hist.quantile(0.75)

    def zeros() -> None:
        for p in params:
            torch.zeros_like(p)

    def norms() -> None:
        norms = torch._foreach_norm(grads, 2, dtype=torch.float32)
        torch.linalg.vector_norm(torch.stack(norms))

    clipper = clip_core.clipping.Clipper(clip_core.preset("norm"), seed=0, device=w.device)

    rows = [
        ("zeros_like(p) for every p", zeros, 1, "write every p-sized array once"),
        ("_foreach_norm(g) + norm of norms", norms, 1, "read g"),
        ("Clipper.measure(g) (BLAS dot on CPU)", lambda: clipper.measure(grads), 1, "read g"),
        (
            "_foreach_mul_(g, 0-d tensor)",
            lambda: torch._foreach_mul_(grads, one),
            2,
            "read g, write g",
        ),
        (
            f"SortedHistory.push+quantile (T={history})",
            push,
            None,
            "binary search + memmove on CPU; one clamp pass on a device",
        ),
    ]
    if w.device.type == "cpu":  # also the history's device path (the one CUDA runs), timed here
        device_hist = prefilled_history(
            history, 0.5 * w.grad_norm, room, w.device, device_path=True
        )

        def push_device() -> None:
            device_hist.push(value, valid)
            device_hist.quantile(0.75)

        rows.append(
            (
                f"SortedHistory.push+quantile (T={history}), device path",
                push_device,
                None,
                "one clamp pass over a [1, cap] array, no host read",
            )
        )
    return [
        Contender(w.name, "component", name, "component", fn, passes, counting)
        for name, fn, passes, counting in rows
    ]


# -- measuring ------------------------------------------------------------------------------------
class StepProbe(TorchFunctionMode):
    """Counts the torch calls made from Python in one step, host reads, and fresh allocations."""

    HOST_READS = frozenset({"item", "__bool__", "__float__", "__int__", "__index__", "tolist"})

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.host_reads = 0
        self.alloc_bytes = 0
        self.alloc_by_func: dict[str, int] = {}

    @staticmethod
    def _tensors(obj: Any) -> list[torch.Tensor]:
        if isinstance(obj, torch.Tensor):
            return [obj]
        if isinstance(obj, list | tuple):
            return [t for o in obj for t in StepProbe._tensors(o)]
        if isinstance(obj, dict):
            return [t for o in obj.values() for t in StepProbe._tensors(o)]
        return []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        out = func(*args, **kwargs)
        if name in ("__get__", "__set__"):
            return out
        self.calls += 1
        if name in self.HOST_READS:
            self.host_reads += 1
        inputs = {
            t.untyped_storage().data_ptr()
            for t in self._tensors(args) + self._tensors(kwargs)
            if t.device.type != "meta"
        }
        seen: set[int] = set()
        for t in self._tensors(out):
            ptr = t.untyped_storage().data_ptr()
            if ptr and ptr not in inputs and ptr not in seen:
                seen.add(ptr)
                nbytes = t.untyped_storage().nbytes()
                self.alloc_bytes += nbytes
                self.alloc_by_func[name] = self.alloc_by_func.get(name, 0) + nbytes
        return out


def state_bytes(c: Contender) -> int | None:
    opt = c.optimizer
    if opt is None:
        return None
    seen: set[int] = set()
    total = 0

    def add(obj: Any) -> None:
        nonlocal total
        for t in StepProbe._tensors(obj):
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()

    for state in opt.state.values():
        add(state)
    if isinstance(opt, ClippedOptimizer):
        add(opt.skipped_steps)
        add([v for v in vars(opt.clipper).values() if isinstance(v, torch.Tensor)])
        if opt.clipper.history is not None:
            add(opt.clipper.history.state_dict())
    return total


def count_syncs(step: Callable[[], Any]) -> int:
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return sum("synchroniz" in str(m.message).lower() for m in caught)


def peak_extra_cuda(step: Callable[[], Any]) -> int:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def run_rounds(
    contenders: list[Contender],
    w: Workload,
    warmup: int,
    repeats: int,
    cuda: bool,
    log: Callable[[str], None],
    budget: float | None = None,
    min_repeats: int = 3,
) -> int:
    """Round-robin timing; returns the timed rounds done.

    With ``budget`` (seconds, warm-up included) it stops early, after at least ``min_repeats``
    timed rounds, when the next round would not fit.
    """
    # A fresh order every round: with a fixed (or merely rotated) order each contender always
    # follows the same one and inherits its cache state, a bias of up to ±5% seen here.
    rng = random.Random(0)
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t_start = time.perf_counter()
    for r in range(warmup + repeats):
        gc.collect()
        gc.disable()
        try:
            order = rng.sample(contenders, len(contenders))
            for c in order:
                w.restore_grads()
                if cuda:
                    torch.cuda.synchronize()
                    start.record()
                    c.step()
                    end.record()
                    end.synchronize()
                    ms = start.elapsed_time(end)
                else:
                    t0 = time.perf_counter()
                    c.step()
                    ms = 1e3 * (time.perf_counter() - t0)
                if r >= warmup:
                    c.times.append(ms)
        finally:
            gc.enable()
        elapsed = time.perf_counter() - t_start
        timed = max(0, r + 1 - warmup)
        stop = (
            budget is not None
            and timed >= min_repeats
            and timed < repeats
            and elapsed * (r + 2) / (r + 1) > budget
        )
        if r == warmup - 1 or timed == repeats or stop or (r + 1) % max(1, repeats // 5) == 0:
            label = "warm-up" if r < warmup else "timed"
            log(f"  {w.name}: round {r + 1}/{warmup + repeats} ({label}), {elapsed:.0f} s")
        if stop:
            log(f"  {w.name}: time budget of {budget:.0f} s reached after {timed} timed rounds")
            return timed
    return repeats


def probe_contenders(contenders: list[Contender], w: Workload, cuda: bool) -> None:
    """Untimed extra steps: allocations, host reads, syncs and peak memory of one step each."""
    for c in contenders:
        if c.compiled:
            c.state_bytes = state_bytes(c)
            continue
        w.restore_grads()
        probe = StepProbe()
        with probe:
            c.step()
        c.alloc_bytes, c.torch_calls, c.host_reads = (
            probe.alloc_bytes,
            probe.calls,
            probe.host_reads,
        )
        if c.alloc_bytes >= 0.1 * w.bytes:
            top = sorted(probe.alloc_by_func.items(), key=lambda kv: -kv[1])[:3]
            top = [(name, nbytes) for name, nbytes in top if nbytes >= 0.01 * c.alloc_bytes]
            c.alloc_note = ", ".join(f"{name} {nbytes / 2**20:.1f} MB" for name, nbytes in top)
        c.state_bytes = state_bytes(c)
        if cuda:
            w.restore_grads()
            c.syncs = count_syncs(c.step)
            w.restore_grads()
            c.peak_extra = peak_extra_cuda(c.step)


# -- targets and reporting ------------------------------------------------------------------------
@dataclass
class Check:
    model: str
    rule: str
    contender: str
    check: str
    value: float  # ratio of medians (decides PASS/FAIL)
    limit: float
    value_min: float = math.nan  # the same ratio of the fastest steps (a robustness check)

    @property
    def passed(self) -> bool:
        return self.value <= self.limit

    @property
    def passed_min(self) -> bool:
        return self.value_min <= self.limit


def baseline_name(rule: str) -> str:
    return f"clip_grad_norm_(foreach)+{RULE_LABEL[rule]}(fused)"


def analyse(contenders: list[Contender]) -> tuple[list[dict[str, Any]], list[Check], dict]:
    """Ratios to the baseline and the floor (of medians, and of minima), and the target checks."""
    rows: list[dict[str, Any]] = []
    checks: list[Check] = []
    by = {(c.rule, c.name): c for c in contenders}
    floor = next(c for c in contenders if c.kind == "floor")
    per_pass = floor.median_ms / floor.passes
    per_pass_min = floor.min_ms / floor.passes
    floors = {rule: per_pass * FLOOR_PASSES[rule] for rule in RULES}
    floors_min = {rule: per_pass_min * FLOOR_PASSES[rule] for rule in RULES}
    model = floor.model
    nan = math.nan
    for c in contenders:
        row: dict[str, Any] = {"c": c, "checks": []}
        row.update(x_base=nan, x_floor=nan, x_base_min=nan, x_floor_min=nan)
        if c.rule in RULES:
            base = by.get((c.rule, baseline_name(c.rule)))
            if base is not None:
                row["x_base"] = c.median_ms / base.median_ms
                row["x_base_min"] = c.min_ms / base.min_ms
            row["x_floor"] = c.median_ms / floors[c.rule]
            row["x_floor_min"] = c.min_ms / floors_min[c.rule]
        if c.kind == "clip_core":
            specs: list[tuple[str, float, float, float]] = []  # (check, median, min, limit)
            base_check = "× clip_grad_norm_+fused"
            if c.ctype in GLOBAL_TYPES:
                specs.append((base_check, row["x_base"], row["x_base_min"], 0.9))
                if c.rule == "sgd":
                    specs.append(("× floor", row["x_floor"], row["x_floor_min"], 1.5))
            if c.ctype in LOCAL_TYPES:
                specs.append((base_check, row["x_base"], row["x_base_min"], 1.05))
            norm = by.get((c.rule, f"Clipped{RULE_LABEL[c.rule]}[norm]"))
            if c.ctype == "auto" and norm is not None:
                specs.append(("× norm", c.median_ms / norm.median_ms, c.min_ms / norm.min_ms, 1.05))
            row["checks"] = [
                Check(model, c.rule, c.name, what, value, limit, value_min)
                for what, value, value_min, limit in specs
            ]
            checks += row["checks"]
        rows.append(row)
    return rows, checks, {"per_pass": per_pass, "floors": floors, "floors_min": floors_min}


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def mb(x: int | None) -> str:
    return "–" if x is None else f"{x / 2**20:.1f}"


def status_of(checks: list[Check]) -> str:
    if not checks:
        return ""
    return "PASS" if all(ch.passed for ch in checks) else "FAIL"


def target_text(checks: list[Check]) -> str:
    return "; ".join(f"{ch.check} ≤ {ch.limit:g}" for ch in checks)


def table_rows(result: dict[str, Any], cuda: bool) -> list[list[str]]:
    lines = []
    for row in result["rows"]:
        c: Contender = row["c"]
        rule = {"floor": "–", "component": "part"}.get(c.rule, RULE_LABEL.get(c.rule, c.rule))
        line = [
            rule,
            c.name,
            "" if c.passes is None else str(c.passes),
            fmt(c.median_ms),
            fmt(c.spread, 0),
            fmt(c.min_ms),
            fmt(row["x_base"]),
            fmt(row["x_floor"]),
            fmt(row["x_base_min"]),
            mb(c.state_bytes),
            mb(c.alloc_bytes),
            "–" if c.host_reads is None else str(c.host_reads),
        ]
        if cuda:
            line += [mb(c.peak_extra), "–" if c.syncs is None else str(c.syncs)]
        checks = row["checks"]
        status_min = ""
        if checks:
            status_min = "PASS" if all(ch.passed_min for ch in checks) else "FAIL"
        line += [target_text(checks), status_of(checks), status_min]
        lines.append(line)
        if c.kind == "floor":
            for rule in RULES:
                derived = ["–", f"floor {RULE_LABEL[rule]} ({FLOOR_PASSES[rule]} passes)"]
                derived += [str(FLOOR_PASSES[rule]), fmt(result["floors"][rule]), ""]
                derived += [fmt(result["floors_min"][rule])]
                lines.append(derived + [""] * (len(line) - len(derived)))
    return lines


def headers(cuda: bool) -> list[str]:
    h = ["rule", "contender", "passes", "median ms", "IQR %", "min ms", "× base", "× floor"]
    h += ["× base (min)", "state MB", "alloc/step MB", "host reads"]
    if cuda:
        h += ["peak extra MB", "syncs/step"]
    return [*h, "target", "status", "status (min)"]


def print_table(result: dict[str, Any], cuda: bool) -> None:
    head = headers(cuda)
    lines = table_rows(result, cuda)
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    print(
        f"\n{result['model']} ({result['numel'] / 1e6:.1f}M parameters, {result['ntensors']} tensors)"
    )
    print("  ".join(h.ljust(wd) for h, wd in zip(head, widths)))
    for line in lines:
        print("  ".join(x.ljust(wd) for x, wd in zip(line, widths)))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_md(path: Path, results: list[dict[str, Any]], meta: dict[str, Any], cuda: bool) -> None:
    out = ["# optimizer.step() benchmark: clip_core vs torch idioms", ""]
    out += [f"- {k}: {v}" for k, v in meta.items()]
    load = float(str(meta["load average at start"]).split()[0])
    cores = os.cpu_count() or 1
    if not cuda and load > cores:
        out += [
            "",
            f"**Warning:** the load average at the start ({load:.1f}) exceeded the {cores} cores: "
            "other processes shared them, so the medians include waiting for the CPU (with "
            "several torch threads every parallel region also waits for its slowest thread). "
            "Compare the `min` columns, or rerun on a quiet machine or with `--threads 1`.",
        ]
    out += [
        "",
        "Only `optimizer.step()` is timed (fixed random gradients, no forward/backward). All "
        "contenders of a model run in one process, one step each per round, in an order "
        "shuffled every round (seed 0); medians over the timed rounds. `IQR %` is the inter-quartile range over the "
        "median. `× base` is the ratio to `clip_grad_norm_(foreach)+<rule>(fused)` of the same "
        "rule, `× floor` the ratio to the memory-traffic floor of the rule.",
        "",
        "**Memory floor.** One `torch._foreach_add_(a, g)` over model-sized arrays is 3 array "
        "passes (read a, read g, write a); time per pass = its median / 3. The floor of a "
        "global-norm clipped step is that times the passes it needs at the least:",
        "",
        f"- SGD (momentum, no weight decay): {FLOOR_COUNTING['sgd']}.",
        f"- AdamW: {FLOOR_COUNTING['adamw']}.",
        "",
        "`passes` is the count of each contender as implemented: torch's fused kernels with a "
        "`grad_scale` also write the unscaled gradient back to `g` (so that `p.grad` holds the "
        "clipped gradient, as after `clip_grad_norm_`): +1 over the floor for the global "
        "clip_core types. Per contender:",
        "",
    ]
    seen: set[tuple[str, str]] = set()
    for res in results[:1]:
        for row in res["rows"]:
            c: Contender = row["c"]
            key = (c.rule, c.name)
            if c.passes is not None and key not in seen and c.kind != "component":
                seen.add(key)
                out.append(f"- {c.name}: {c.passes} = {c.counting}")
    out += [
        "",
        "`state MB`: bytes of the optimizer's state tensors (momentum / moments / step "
        "counters; for clip_core also the clipper's tensors and the auto history buffers) — "
        "what the optimizer holds between steps (contenders share these buffers here, which "
        "does not change the cost). `alloc/step MB`: bytes of fresh tensors returned by the "
        "torch calls one step makes from Python (TorchFunctionMode; allocations inside C++ "
        "kernels are not seen) — on CPU the proxy for transient extra memory. `host reads`: "
        "`.item()`/`bool()`/`float()` calls in one step. On CPU the auto types read the skip "
        "flag once: their history takes its host (NumPy) path there, where reading a CPU "
        "tensor waits for no device; the device path that CUDA runs reads nothing (the "
        "component row `device path` times it on this machine).",
    ]
    if cuda:
        out += [
            "`peak extra MB`: `torch.cuda.max_memory_allocated()` during one step minus the "
            "allocation before it. `syncs/step`: warnings of `torch.cuda.set_sync_debug_mode('warn')`."
        ]
    out.append("")
    all_checks: list[Check] = []
    for res in results:
        out += [
            f"## {res['model']} ({res['numel'] / 1e6:.1f}M parameters in {res['ntensors']} tensors; "
            f"shapes from {res['source']})",
            "",
            f"{res['repeats']} timed rounds after {res['warmup']} warm-up rounds; "
            f"floor time per array pass {res['per_pass']:.2f} ms "
            f"({res['bytes'] / 2**20 / res['per_pass'] * 1e3 / 1024:.1f} GiB/s per pass-equivalent); "
            f"wall time {res['wall']:.0f} s.",
            "",
        ]
        head = headers(cuda)
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join("---" for _ in head) + "|")
        for line in table_rows(res, cuda):
            out.append("| " + " | ".join(x.replace("|", "\\|") for x in line) + " |")
        out.append("")
        if res["notes"]:
            out += [f"- {n}" for n in res["notes"]] + [""]
        all_checks += res["checks"]
    out += ["## Targets", ""]
    if all_checks:
        npass = sum(ch.passed for ch in all_checks)
        npass_min = sum(ch.passed_min for ch in all_checks)
        out.append(
            f"{npass} of {len(all_checks)} checks pass on medians ({npass_min} on the fastest "
            "steps: the ratio of minima, a check against load noise)."
        )
        out.append("")
        out.append(
            "| model | rule | contender | check | median ratio | limit | result | min ratio | result (min) |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|")
        for ch in all_checks:
            out.append(
                f"| {ch.model} | {RULE_LABEL[ch.rule]} | {ch.contender} | {ch.check} | "
                f"{ch.value:.3f} | {ch.limit:g} | {'PASS' if ch.passed else 'FAIL'} | "
                f"{ch.value_min:.3f} | {'PASS' if ch.passed_min else 'FAIL'} |"
            )
    else:
        out.append("No targets apply to the contenders run.")
    out.append("")
    path.write_text("\n".join(out))


def write_csv(path: Path, results: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    fields = [
        "model", "n_params", "rule", "contender", "kind", "clipping_type", "passes", "median_ms",
        "q25_ms", "q75_ms", "min_ms", "n", "ratio_vs_baseline", "ratio_vs_floor", "floor_ms",
        "ratio_vs_baseline_min", "ratio_vs_floor_min", "status_min",
        "state_bytes", "alloc_bytes_per_step", "torch_calls_per_step", "host_reads_per_step",
        "syncs_per_step", "peak_extra_bytes", "targets", "status", "note", "device", "threads",
        "torch",
    ]  # fmt: skip
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for res in results:
            for row in res["rows"]:
                c: Contender = row["c"]
                q = statistics.quantiles(c.times, n=4) if len(c.times) >= 2 else [math.nan] * 3
                writer.writerow(
                    {
                        "model": c.model,
                        "n_params": res["numel"],
                        "rule": c.rule,
                        "contender": c.name,
                        "kind": c.kind,
                        "clipping_type": c.ctype or "",
                        "passes": "" if c.passes is None else c.passes,
                        "median_ms": f"{c.median_ms:.4f}",
                        "q25_ms": f"{q[0]:.4f}",
                        "q75_ms": f"{q[2]:.4f}",
                        "min_ms": f"{c.min_ms:.4f}",
                        "ratio_vs_baseline_min": f"{row['x_base_min']:.4f}",
                        "ratio_vs_floor_min": f"{row['x_floor_min']:.4f}",
                        "status_min": (
                            ""
                            if not row["checks"]
                            else ("PASS" if all(ch.passed_min for ch in row["checks"]) else "FAIL")
                        ),
                        "n": len(c.times),
                        "ratio_vs_baseline": f"{row['x_base']:.4f}",
                        "ratio_vs_floor": f"{row['x_floor']:.4f}",
                        "floor_ms": f"{res['floors'][c.rule]:.4f}" if c.rule in RULES else "",
                        "state_bytes": "" if c.state_bytes is None else c.state_bytes,
                        "alloc_bytes_per_step": "" if c.alloc_bytes is None else c.alloc_bytes,
                        "torch_calls_per_step": "" if c.torch_calls is None else c.torch_calls,
                        "host_reads_per_step": "" if c.host_reads is None else c.host_reads,
                        "syncs_per_step": "" if c.syncs is None else c.syncs,
                        "peak_extra_bytes": "" if c.peak_extra is None else c.peak_extra,
                        "targets": target_text(row["checks"]),
                        "status": status_of(row["checks"]),
                        "note": c.note,
                        "device": meta["device"],
                        "threads": meta["threads"],
                        "torch": torch.__version__,
                    }
                )


def _no_step() -> None:
    pass


# -- main -----------------------------------------------------------------------------------------
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
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: CUDA is not available")
    cuda = device.type == "cuda"
    threads = args.threads or os.cpu_count() or 1
    # the same gradient every step looks pre-clipped to the optimizers' check: it is, by design
    warnings.filterwarnings("ignore", message=".*look clipped before the optimizer")
    torch.set_num_threads(threads)

    def log(msg: str) -> None:
        print(msg, flush=True)

    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "clip_core": clip_core.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "cores (os.cpu_count)": os.cpu_count(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "command": "python scripts/bench_step.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": (
            f"SGD lr={SGD_LR} momentum={SGD_MOMENTUM}; AdamW lr={ADAMW_LR} wd={ADAMW_WD}; "
            f"λ = 0.5·‖g‖ (global types, clip_grad_norm_), 0.5·median ‖g_i‖ (layer_wise), "
            f"1.0·rms(g) (coord_wise); auto p=0.75 with {args.history} prefilled norms; "
            f"gradients {'restored before every step' if args.restore_grads else 'reused (clipped in place)'}"
        ),
    }
    log(f"torch {torch.__version__}, device {meta['device']}, {threads} threads, cpu {meta['cpu']}")
    results = []
    for model in args.models:
        t0 = time.perf_counter()
        shapes, source = model_shapes(model)
        w = Workload(model, shapes, device, args.restore_grads)
        rounds = (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)[model]
        warmup = rounds[0] if args.warmup is None else args.warmup
        repeats = rounds[1] if args.repeats is None else args.repeats
        room = warmup + repeats + 8
        contenders = build_contenders(
            w, args.rules, args.types, args.history, room, args.components, args.compiled
        )
        log(
            f"{model}: {w.numel / 1e6:.1f}M parameters in {len(shapes)} tensors ({source}), "
            f"{len(contenders)} contenders, {warmup} + {repeats} rounds"
        )
        budget = None
        if args.repeats is None and args.budget > 0:
            budget = args.budget * (QUICK_BUDGET if args.quick else DEFAULT_BUDGET)[model]
        repeats = run_rounds(contenders, w, warmup, repeats, cuda, log, budget)
        probe_contenders(contenders, w, cuda)
        notes = []
        for c in contenders:
            if c.optimizer is not None and not w.state_is_shared(c.optimizer, c.rule):
                notes.append(f"{c.name}: state buffers were not the shared ones (own allocation)")
            if c.alloc_note and c.kind != "component":
                notes.append(
                    f"{c.name} allocates {mb(c.alloc_bytes)} MB of fresh tensors per step "
                    f"(model: {mb(w.bytes)} MB); largest: {c.alloc_note}"
                )
        rows, checks, floors = analyse(contenders)
        results.append(
            {
                "model": model,
                "numel": w.numel,
                "bytes": w.bytes,
                "ntensors": len(shapes),
                "source": source,
                "rows": rows,
                "checks": checks,
                "per_pass": floors["per_pass"],
                "floors": floors["floors"],
                "floors_min": floors["floors_min"],
                "warmup": warmup,
                "repeats": repeats,
                "wall": time.perf_counter() - t0,
                "notes": notes,
            }
        )
        print_table(results[-1], cuda)
        for c in contenders:  # keep the numbers, free the model-sized tensors
            c.optimizer = None
            c.step = _no_step
        del contenders, rows, w
        gc.collect()
    meta["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
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


if __name__ == "__main__":
    raise SystemExit(main())
