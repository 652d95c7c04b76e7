"""The tables of the language-model comparison, and its two figures (``suite/reports/lm_plots.py``).

``lm_table.md``: per method, its chosen learning rate (an edge of its grid flagged) and λ, the
final validation bits per byte over the report seeds (mean and 90% t-interval), its paired
difference from AdamW + norm 1.0 (the LM recipe) seed by seed, loss spikes
(:func:`torch_clip.tasks.lm.loss_spikes` on every logged step) and training throughput.
``lm_lr_range.md``: per method, the learning rates of its grid at which both tuning seeds train
(finite final loss below the byte-unigram loss of the validation split).
``lm_tuning.md``: every tuning run's final validation loss and bits per byte.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from torch_clip.suite import protocol
from torch_clip.suite.experiments import sweeps
from torch_clip.suite.experiments.provenance import stamp
from torch_clip.suite.reports import lm_plots
from torch_clip.suite.run_reader import Run
from torch_clip.tasks.lm import SPIKE_FACTOR, SPIKE_WINDOW, loss_spikes
from torch_clip.tasks.text_corpus import load_corpus

BASELINE = "AdamW + norm 1.0"
COMMAND = "python scripts/lm_comparison.py"


def unigram_nats() -> float:
    """Cross-entropy (nats per byte) of the validation split under its own byte frequencies:
    what the best byte-unigram model scores on it."""
    val = np.frombuffer(load_corpus().val, dtype=np.uint8)
    p = np.bincount(val, minlength=256) / val.size
    return float(-(p[p > 0] * np.log(p[p > 0])).sum())


def train_losses(run: Run) -> list[float]:
    """Every logged training loss, non-finite ones kept (they count as spikes)."""
    return [float(r["train_loss"]) for r in run.rows if r.get("split") == "train"]


def cell(values: list[float]) -> str:
    """Mean [bootstrap 90% interval] over the report seeds, with the diverged ones counted."""
    s = protocol.summarize(values)
    text = "all diverged" if s.n == s.failed else s.cell(3)
    return f"{text} ({s.failed} diverged)" if s.failed and s.n != s.failed else text


def paired(runs: list[Run], base: list[Run]) -> str:
    """Method − baseline in final bits per byte on the same seeds: mean [90% CI], verdict."""
    mine = {r.seed: r.final("bits_per_byte") for r in runs}
    theirs = {r.seed: r.final("bits_per_byte") for r in base}
    d = protocol.paired_difference(mine, theirs, lower_is_better=True)
    if not d.n:
        return "no pairs"
    return f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] {protocol.verdict(d)}"


def edge(c: dict[str, Any], name: str, lr: float) -> str:
    flag = protocol.edge_flag(c["lr_grids"][c["methods"][name]["grid"]], lr)
    return f"{lr:g} ({flag} edge)" if flag in ("low", "high") else f"{lr:g}"


def method_row(c, name: str, runs: list[Run], base: list[Run], best, placed) -> str:
    lr = best[name]["setting"][0]
    spikes = [loss_spikes(train_losses(r)) for r in runs]
    speed = [r.final("tokens_per_second") for r in runs]
    clipped = [np.nanmean([row.get("clip_fraction", np.nan) for row in r.rows
                           if row.get("split") == "train"]) for r in runs]  # fmt: skip
    level = placed.get(name, 1.0 if c["methods"][name].get("fixed") else None)
    return (
        f"| {name} | {edge(c, name, lr)} | {'' if level is None else f'{level:g}'} "
        f"| {cell([r.final('bits_per_byte') for r in runs])} "
        f"| {'—' if name == BASELINE else paired(runs, base)} "
        f"| {sum(spikes)} | {max(spikes) if spikes else 0} "
        f"| {np.nanmean(clipped):.2f} | {np.nanmean(speed):,.0f} | {len(runs)} |"
    )


def write_table(c, reports: dict[str, list[Run]], best, placed, out: Path) -> None:
    base = reports.get(BASELINE, [])
    lines = [
        "| method | lr | λ | val bits per byte [90% CI] | paired Δ vs "
        f"{BASELINE} [90% CI] | loss spikes (all seeds) | most in one run "
        "| clipped fraction | tokens/s | seeds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [method_row(c, n, runs, base, best, placed) for n, runs in reports.items()]
    count = {len(g) for g in c["lr_grids"].values()}.pop()  # one count: spec() checked it
    lines += ["", f"- {count} learning rates per method (the same for all), chosen by the median "
              f"over tuning seeds {c['tune_seeds']}, reported on seeds {c['report_seeds']}; "
              "intervals: bootstrap 90% of the mean; verdicts: suite.protocol",
              f"- loss spike: a logged training loss above {SPIKE_FACTOR}× the median of "
              f"the {SPIKE_WINDOW} logged losses before it (every step is logged), or a "
              "non-finite one", f"- {stamp(COMMAND)}", ""]  # fmt: skip
    (out / "lm_table.md").write_text("\n".join(lines))


def tuning_rows(tune: list[Run], ceiling: float) -> list[dict[str, Any]]:
    rows = []
    for r in (r for r in tune if r.completed):  # a run still going has no final loss yet
        loss = r.final("loss")
        rows.append({"method": lm_label(r), "lr": r.lr, "seed": r.seed, "val_loss": loss,
                     "bits_per_byte": r.final("bits_per_byte"),
                     "trains": bool(np.isfinite(loss) and loss < ceiling)})  # fmt: skip
    return sorted(rows, key=lambda t: (t["method"], t["lr"], t["seed"]))


def lm_label(run: Run) -> str:
    return str(run.config.get("label"))


def write_lr_range(c, rows: list[dict[str, Any]], out: Path) -> None:
    by = defaultdict(list)
    for t in rows:
        by[(t["method"], t["lr"])].append(t["trains"])
    lines = ["| method | grid | learning rates at which every completed tuning seed trains "
             "| widest ratio | tuning runs completed |", "| --- | --- | --- | ---: | ---: |"]  # fmt: skip
    for name, m in c["methods"].items():
        grid = c["lr_grids"][m["grid"]]
        ok = [lr for lr in grid if by.get((name, lr)) and all(by[(name, lr)])]
        ratio = f"{max(ok) / min(ok):.3g}" if ok else "none"
        done = sum(len(by.get((name, lr), [])) for lr in grid)
        lines.append(f"| {name} | {' '.join(f'{x:g}' for x in grid)} "
                     f"| {' '.join(f'{x:g}' for x in ok) or 'none'} | {ratio} "
                     f"| {done} of {len(grid) * len(c['tune_seeds'])} |")  # fmt: skip
    lines += ["", "- trains: a finite final validation loss below the byte-unigram loss of the "
              "validation split", f"- {stamp(COMMAND)}", ""]  # fmt: skip
    (out / "lm_lr_range.md").write_text("\n".join(lines))


def write_tuning(rows: list[dict[str, Any]], out: Path) -> None:
    sweeps.write_csv(out / "lm_tuning.csv", rows)
    lines = ["| method | lr | seed | val loss | val bits per byte | trains |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    lines += [f"| {t['method']} | {t['lr']:g} | {t['seed']} | {t['val_loss']:.4f} "
              f"| {t['bits_per_byte']:.4f} | {'yes' if t['trains'] else 'no'} |" for t in rows]  # fmt: skip
    lines += ["", f"- {stamp(COMMAND)}", ""]
    (out / "lm_tuning.md").write_text("\n".join(lines))


def write_cost(result: dict[str, Any], out: Path, default_run: Path | None) -> None:
    """What the comparison's runs cost (their own wall time, set-up excluded), and the default
    ``python train.py task=lm`` run when its directory is given."""
    lines = ["| what | runs | completed | wall seconds per run (mean) | wall seconds, all runs |",
             "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for stage in ("tune", "report"):
        runs = result[stage]
        done = [r.summary.get("wall_seconds", np.nan) for r in runs if r.completed]
        mean = f"{np.mean(done):.0f}" if done else ""
        lines.append(f"| experiment=lm, {stage} | {len(runs)} | {len(done)} | {mean} "
                     f"| {np.nansum(done):.0f} |")  # fmt: skip
    if default_run is not None and (default_run / "summary.json").exists():
        from torch_clip.suite.records import read_json

        s = read_json(default_run / "summary.json")
        final = s.get("final") or {}
        lines.append(f"| python train.py task=lm ({s.get('steps')} steps, "
                     f"val bits per byte {final.get('val_bits_per_byte', float('nan')):.3f}) "
                     f"| 1 | {int(s.get('status') == 'completed')} | {s.get('wall_seconds', 0):.0f} "
                     f"| {s.get('wall_seconds', 0):.0f} |")  # fmt: skip
    lines += ["", "- wall seconds of each run's training loop and evaluations, on a 2-core CPU "
              "shared with other work; runs niced, several at once", f"- {stamp(COMMAND)}", ""]  # fmt: skip
    (out / "lm_cost.md").write_text("\n".join(lines))


def write_all(
    c: dict[str, Any], result: dict[str, Any], out: Path, default_run: Path | None = None
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ceiling = unigram_nats()
    rows = tuning_rows(result["tune"], ceiling)
    write_tuning(rows, out)
    write_lr_range(c, rows, out)
    write_cost(result, out, default_run)
    lm_plots.lr_stability_figure(rows, out / "lm_lr_stability.png", ceiling)
    reports: dict[str, list[Run]] = {n: [] for n in c["methods"]}
    for r in result["report"]:
        chosen = result["best"].get(lm_label(r), {}).get("setting", (None,))[0]
        if r.completed and lm_label(r) in reports and r.lr == chosen:  # not an earlier choice
            reports[lm_label(r)].append(r)
    reports = {n: runs for n, runs in reports.items() if runs and n in result["best"]}
    if reports:
        write_table(c, reports, result["best"], result["placed"], out)
        lm_plots.comparison_figure(reports, out / "lm_comparison.png", "val_bits_per_byte")
    else:
        write_interim(c, result, out)


def write_interim(c: dict[str, Any], result: dict[str, Any], out: Path) -> None:
    """Before any report run has finished: the table says so, and the figure shows each method's
    best tuning run on the first tuning seed, titled as such (never mistaken for the report)."""
    seed = c["tune_seeds"][0]
    best: dict[str, Run] = {}
    for r in result["tune"]:
        name, value = lm_label(r), r.final("bits_per_byte")
        usable = r.completed and r.seed == seed and np.isfinite(value)
        if usable and (name not in best or value < best[name].final("bits_per_byte")):
            best[name] = r
    lines = ["| status |", "| --- |",
             f"| no report run has finished: the report seeds {c['report_seeds']} run after every "
             f"method's tuning on seeds {c['tune_seeds']} |", "", f"- {stamp(COMMAND)}", ""]  # fmt: skip
    (out / "lm_table.md").write_text("\n".join(lines))
    if best:
        title = (f"INTERIM, tuning seed {seed} only: each method's best learning rate so far "
                 "(one run each, no interval; the report seeds have not run)")  # fmt: skip
        runs = {n: [best[n]] for n in c["methods"] if n in best}
        lm_plots.comparison_figure(runs, out / "lm_comparison.png", "val_bits_per_byte", title)
