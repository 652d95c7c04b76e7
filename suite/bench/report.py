"""What ``bench_step.py`` reports: ratios to the baseline and to the memory-traffic floor, the
target checks, and the console table, ``step.md`` and ``step.csv``."""

from __future__ import annotations

import csv
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from torch_clip.suite.bench.contenders import (
    FLOOR_COUNTING,
    FLOOR_PASSES,
    GLOBAL_TYPES,
    LOCAL_TYPES,
    Contender,
)
from torch_clip.suite.bench.workload import RULE_LABEL, RULES


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
            torch_fused = by.get((c.rule, f"{RULE_LABEL[c.rule]}(fused)"))
            if c.ctype == "none" and not c.telemetry and torch_fused is not None:
                specs.append((f"× {RULE_LABEL[c.rule]}(fused)", c.median_ms / torch_fused.median_ms,
                              c.min_ms / torch_fused.min_ms, 1.05))  # fmt: skip
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


def write_md(path: Path, results: list[dict[str, Any]], meta: dict[str, Any], cuda: bool) -> None:
    out = ["# optimizer.step() benchmark: clip_core vs torch idioms", ""]
    out += [f"- {k}: {v}" for k, v in meta.items()]
    out += load_warning(meta, cuda) + method_text(results, cuda)
    for res in results:
        out += model_section(res, cuda)
    out += targets_section([ch for res in results for ch in res["checks"]])
    path.write_text("\n".join(out))


def load_warning(meta: dict[str, Any], cuda: bool) -> list[str]:
    """A warning when other processes shared the CPU cores at the start: medians include waits."""
    load = float(str(meta["load average at start"]).split()[0])
    cores = os.cpu_count() or 1
    if cuda or load <= cores:
        return []
    return [
        "",
        f"**Warning:** the load average at the start ({load:.1f}) exceeded the {cores} cores: "
        "other processes shared them, so the medians include waiting for the CPU (with "
        "several torch threads every parallel region also waits for its slowest thread). "
        + (
            "Compare the `min` columns, or rerun on a quiet machine."
            if str(meta.get("threads")) == "1"
            else "Compare the `min` columns, or rerun on a quiet machine or with `--threads 1`."
        )
        + " Under such load the fixed limits of the targets test the load as much as the "
        "step; the ratios between contenders of one run, which shared the load round by "
        "round, are the comparison that holds.",
    ]


def method_text(results: list[dict[str, Any]], cuda: bool) -> list[str]:
    """What is timed, how the floor and the passes are counted, and what the columns mean."""
    out = [
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
        "clip_core types. `[none], telemetry=False` measures nothing (no statistics, no "
        "non-finite check of its own: a GradScaler's flag still skips), so it makes the passes "
        "of torch's fused step; its target is the ratio to that step, measured in the same "
        "run. Per contender:",
        "",
    ]
    out += pass_counts(results[:1])
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
    return [*out, ""]


def pass_counts(results: list[dict[str, Any]]) -> list[str]:
    """One line per contender (components aside): its array passes and how they add up."""
    out: list[str] = []
    seen: set[tuple[str, str]] = set()
    for res in results:
        for row in res["rows"]:
            c: Contender = row["c"]
            key = (c.rule, c.name)
            if c.passes is not None and key not in seen and c.kind != "component":
                seen.add(key)
                out.append(f"- {c.name}: {c.passes} = {c.counting}")
    return out


def model_section(res: dict[str, Any], cuda: bool) -> list[str]:
    """A model's heading, its rounds and floor, the table of contenders and its notes."""
    out = [
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
    return out


def targets_section(checks: list[Check]) -> list[str]:
    """How many target checks pass, on medians and on minima, and a row per check."""
    out = ["## Targets", ""]
    if not checks:
        return [*out, "No targets apply to the contenders run.", ""]
    npass = sum(ch.passed for ch in checks)
    npass_min = sum(ch.passed_min for ch in checks)
    out += [
        f"{npass} of {len(checks)} checks pass on medians ({npass_min} on the fastest "
        "steps: the ratio of minima, a check against load noise).",
        "",
        "| model | rule | contender | check | median ratio | limit | result | min ratio | result (min) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for ch in checks:
        out.append(
            f"| {ch.model} | {RULE_LABEL[ch.rule]} | {ch.contender} | {ch.check} | "
            f"{ch.value:.3f} | {ch.limit:g} | {'PASS' if ch.passed else 'FAIL'} | "
            f"{ch.value_min:.3f} | {'PASS' if ch.passed_min else 'FAIL'} |"
        )
    return [*out, ""]


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
