"""The steps ``bench_step.py`` times: torch's optimizers alone and after ``clip_grad_norm_``,
every clipping type of clip_core's optimizers, the memory-traffic floor and (``--components``)
pieces of a clipped step alone, each with the array passes it makes by design."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import clip_core
from clip_core import ClippedAdamW, ClippedOptimizer, ClippedSGD
from torch_clip.suite.bench.workload import RULE_LABEL, Workload, prefilled_history

SGD_LR, SGD_MOMENTUM = 1e-2, 0.9
ADAMW_LR, ADAMW_WD = 1e-3, 1e-2

# the clipping types by what their step costs, from clip_core's rule table: a global statistic
# (one ‖g‖), a history quantile (auto), or one statistic per tensor or coordinate
GLOBAL_TYPES = tuple(t for t, r in clip_core.PRESET_RULES.items()
                     if r.granularity == "global" and not isinstance(r.decision, clip_core.Never))  # fmt: skip
AUTO_TYPES = tuple(t for t, r in clip_core.PRESET_RULES.items()
                   if isinstance(r.threshold, clip_core.PercentileThreshold))  # fmt: skip
LOCAL_TYPES = tuple(t for t, r in clip_core.PRESET_RULES.items() if r.granularity != "global")

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


def clip_core_passes(rule: str, ctype: str, telemetry: bool = True) -> tuple[int, str]:
    fused = FUSED_PASSES[rule]
    if ctype == "none" and not telemetry:
        return fused, f"fused ({fused}); no ‖g‖: nothing to clip, no statistics"
    if ctype == "none":
        return 1 + fused, f"‖g‖ (1) + fused ({fused})"
    if ctype in GLOBAL_TYPES:
        return 1 + fused + 1, f"‖g‖ (1) + fused with grad_scale ({fused} + write g 1)"
    unit = clip_core.PRESET_RULES[ctype].granularity
    if unit == "tensor":
        return 1 + 2 + fused, f"‖g_i‖ (1) + g*=α_i (2) + fused ({fused})"
    if unit == "coordinate":
        return (
            2 + fused,
            "per 1 MiB piece in cache on CPU: ‖g‖, clamp_, ‖g‖ again (read g, write g: 2) "
            f"+ fused ({fused})",
        )
    return 0, "?"


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
    telemetry: bool = True  # a clip_core optimizer built with telemetry=False when False

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
    unit = clip_core.PRESET_RULES[ctype].granularity
    if unit == "tensor":
        return 0.5 * w.median_tensor_norm  # clips the larger half of the tensors
    if unit == "coordinate":
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
    for rule in rules:
        out += torch_contenders(w, rule, compiled)
        out += [
            clip_core_contender(w, rule, ctype, kind, history, room)
            for ctype, kind in clip_core_variants(w, types, compiled)
        ]
    out.append(floor_contender(w))
    if components:
        out += component_contenders(w, history, room)
    return out


def shared_torch_optimizer(w: Workload, rule: str, impl: str) -> torch.optim.Optimizer:
    opt = make_torch_optimizer(rule, impl, w.params)
    w.share_state(opt, rule, step_on_device=impl == "fused")
    return opt


def torch_contenders(w: Workload, rule: str, compiled: bool) -> list[Contender]:
    """torch's fused and foreach steps, alone and after ``clip_grad_norm_`` (the baselines), and
    with ``compiled`` torch's recommended compiled path: ``torch.compile`` of the foreach step."""
    label, lam = RULE_LABEL[rule], 0.5 * w.grad_norm
    out = []
    for impl in ("fused", "foreach"):
        opt = shared_torch_optimizer(w, rule, impl)
        out.append(Contender(w.name, rule, f"{label}({impl})", "torch", opt.step,
                             *PASSES[(rule, impl)], optimizer=opt))  # fmt: skip
    for impl in ("fused", "foreach"):
        opt = shared_torch_optimizer(w, rule, impl)
        out.append(Contender(w.name, rule, f"clip_grad_norm_(foreach)+{label}({impl})", "torch",
                             clipped_step(w.params, lam, opt), *PASSES[(rule, f"clip+{impl}")],
                             optimizer=opt))  # fmt: skip
    if compiled:
        opt = shared_torch_optimizer(w, rule, "foreach")
        out.append(Contender(w.name, rule, f"{label}(foreach), compiled", "variant",
                             torch.compile(opt.step), *PASSES[(rule, "foreach")], optimizer=opt,
                             compiled=True))  # fmt: skip
    return out


def clipped_step(
    params: list[nn.Parameter], level: float, opt: torch.optim.Optimizer
) -> Callable[[], None]:
    """The idiom clip_core replaces: ``clip_grad_norm_`` and then the optimizer's step."""

    def step() -> None:
        torch.nn.utils.clip_grad_norm_(params, level, foreach=True)
        opt.step()

    return step


def clip_core_variants(w: Workload, types: list[str], compiled: bool) -> list[tuple[str, str]]:
    """``(clipping type, kind)`` of every clip_core contender of a rule."""
    variants = [(ctype, "clip_core") for ctype in types]
    if "none" in types:  # the unclipped baseline of a comparison, at torch's cost
        variants.append(("none", "no-telemetry"))
    if "auto" in types and w.device.type == "cpu":
        # the auto history's device path (the one CUDA runs) beside the CPU default
        variants.append(("auto", "variant"))
    if compiled and "norm" in types:
        variants.append(("norm", "compiled"))
    return variants


def make_clipped_optimizer(
    rule: str, ctype: str, w: Workload, telemetry: bool = True
) -> ClippedOptimizer:
    common = {"clipping_type": ctype, "clipping_level": clipping_level(ctype, w), "seed": 0}
    if rule == "sgd":
        return ClippedSGD(w.params, lr=SGD_LR, momentum=SGD_MOMENTUM, telemetry=telemetry,
                          **common)  # fmt: skip
    return ClippedAdamW(w.params, lr=ADAMW_LR, weight_decay=ADAMW_WD, telemetry=telemetry,
                        **common)  # fmt: skip


def clip_core_contender(
    w: Workload, rule: str, ctype: str, kind: str, history: int, room: int
) -> Contender:
    """A clipped optimizer on the shared state; the auto types start from a full history."""
    telemetry = kind != "no-telemetry"
    copt = make_clipped_optimizer(rule, ctype, w, telemetry)
    w.share_state(copt, rule, step_on_device=copt.fused)
    note = "" if copt.fused else "unfused fallback"
    name = f"Clipped{RULE_LABEL[rule]}[{ctype}]" + ("" if telemetry else ", telemetry=False")
    kind = "clip_core" if kind == "no-telemetry" else kind
    if ctype in AUTO_TYPES:
        device_path = kind == "variant"
        copt.clipper.history = prefilled_history(
            history, 0.5 * w.grad_norm, room, w.device, device_path=device_path
        )
        note = f"history {history}"
        name += ", device-path history" if device_path else ""
    step, is_compiled = copt.step, kind == "compiled"
    if is_compiled:
        name, kind, step = f"{name}, compiled", "variant", torch.compile(copt.step)
    return Contender(w.name, rule, name, kind, step, *clip_core_passes(rule, ctype, telemetry),
                     ctype=ctype, optimizer=copt, note=note, compiled=is_compiled,
                     telemetry=telemetry)  # fmt: skip


def floor_contender(w: Workload) -> Contender:
    """One ``_foreach_add_`` over model-sized arrays: the time of three array passes."""
    return Contender(w.name, "floor", "floor: _foreach_add_(a, g)", "floor",
                     lambda: torch._foreach_add_(w.floor_a, w.grads), 3, "read a, g; write a")  # fmt: skip


def history_step(w: Workload, history: int, room: int, device_path: bool) -> Callable[[], None]:
    """One push of a norm into a full auto history and the quantile read after it."""
    hist = prefilled_history(history, 0.5 * w.grad_norm, room, w.device, device_path=device_path)
    valid = torch.ones((), dtype=torch.bool, device=w.device)
    value = torch.full((1,), 0.5 * w.grad_norm, device=w.device)

    def push() -> None:
        hist.push(value, valid)
        hist.quantile(0.75)

    return push


def component_contenders(w: Workload, history: int, room: int) -> list[Contender]:
    """Pieces of a clipped step timed alone (to locate the cost of each)."""
    params, grads = w.params, w.grads
    one = torch.ones((), device=w.device)
    clipper = clip_core.clipping.Clipper(clip_core.preset("norm"), seed=0, device=w.device)

    def zeros() -> None:
        for p in params:
            torch.zeros_like(p)

    def norms() -> None:
        norms = torch._foreach_norm(grads, 2, dtype=torch.float32)
        torch.linalg.vector_norm(torch.stack(norms))

    rows = [
        ("zeros_like(p) for every p", zeros, 1, "write every p-sized array once"),
        ("_foreach_norm(g) + norm of norms", norms, 1, "read g"),
        ("Clipper.measure(g) (BLAS dot on CPU)", lambda: clipper.measure(grads), 1, "read g"),
        ("_foreach_mul_(g, 0-d tensor)", lambda: torch._foreach_mul_(grads, one), 2,
         "read g, write g"),
        (f"SortedHistory.push+quantile (T={history})", history_step(w, history, room, False),
         None, "binary search + memmove on CPU; one clamp pass on a device"),
    ]  # fmt: skip
    if w.device.type == "cpu":  # also the history's device path (the one CUDA runs), timed here
        rows.append((f"SortedHistory.push+quantile (T={history}), device path",
                     history_step(w, history, room, True), None,
                     "one clamp pass over a [1, cap] array, no host read"))  # fmt: skip
    return [
        Contender(w.name, "component", name, "component", fn, passes, counting)
        for name, fn, passes, counting in rows
    ]
