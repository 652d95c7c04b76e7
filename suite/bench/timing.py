"""How ``bench_step.py`` measures: the round-robin clock of the steps, and untimed probe steps
that count torch calls, host reads and fresh allocations (and on CUDA syncs and peak memory)."""

from __future__ import annotations

import gc
import random
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from clip_core import ClippedOptimizer
from torch_clip.suite.bench.contenders import Contender
from torch_clip.suite.bench.workload import Workload


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
    clock = StepClock(cuda)
    t_start = time.perf_counter()
    for r in range(warmup + repeats):
        one_round(rng.sample(contenders, len(contenders)), w, clock, timed=r >= warmup)
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


class StepClock:
    """Milliseconds of one step: CUDA events on a GPU, ``perf_counter`` on the CPU."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        if cuda:
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)

    def time(self, step: Callable[[], Any]) -> float:
        if not self.cuda:
            t0 = time.perf_counter()
            step()
            return 1e3 * (time.perf_counter() - t0)
        torch.cuda.synchronize()
        self.start.record()
        step()
        self.end.record()
        self.end.synchronize()
        return self.start.elapsed_time(self.end)


def one_round(order: list[Contender], w: Workload, clock: StepClock, timed: bool) -> None:
    """One step of every contender in ``order``, the garbage collector held off meanwhile."""
    gc.collect()
    gc.disable()
    try:
        for c in order:
            w.restore_grads()
            ms = clock.time(c.step)
            if timed:
                c.times.append(ms)
    finally:
        gc.enable()


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
