"""The LM tables and figures of the language-model comparison (``suite/reports/lm_plots.py``);
its statistics (counts, choices, edges, paired tests) are ``lm_protocol.md``'s.

``lm_table.md``: per method, its chosen setting, the final validation bits per byte over the
report seeds (mean and bootstrap 90% interval), loss spikes (:func:`torch_clip.tasks.lm.loss_spikes`
on every logged step), the clipped fraction and training throughput.
``lm_lr_range.md``: per method, the learning rates of its grid at which every tuning seed trains
(finite final loss below the byte-unigram loss of the validation split), at its chosen knob and
at any value of it. ``lm_tuning.md``: every tuning run's final validation loss and bits per byte.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from torch_clip.suite import protocol
from torch_clip.suite.experiments import sweeps
from torch_clip.suite.experiments.provenance import stamp
from torch_clip.suite.experiments.tuned_comparison import knob_text, setting_of
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


def chosen_runs(result: dict[str, Any], runs: list[Run]) -> dict[str, list[Run]]:
    """Per method, its completed ``runs`` at its chosen setting."""
    best, axes, of = result["best"], result["axes"], result["of"]
    mine: dict[str, list[Run]] = {n: [] for n in best}
    for r in runs:
        name = of(r)
        if (
            r.completed
            and name in best
            and setting_of(r, axes[name]) == tuple(best[name]["setting"])
        ):
            mine[name].append(r)
    return {n: sorted(rs, key=lambda r: r.seed) for n, rs in mine.items() if rs}


def setting_cells(result: dict[str, Any], name: str) -> tuple[str, str]:
    """The chosen lr and knob of ``name``, each with its edge flag when it sits on one."""
    chosen, axes = result["best"][name], result["axes"][name]
    flags = chosen["edges"]

    def flagged(text: str, key: str) -> str:
        return f"{text} ({flags[key]} edge)" if flags.get(key) in ("low", "high") else text

    lr = flagged(f"{chosen['setting'][0]:g}", axes[0].key)
    knob = flagged(knob_text(axes, chosen["setting"]), axes[1].key) if len(axes) > 1 else "—"
    return lr, knob


def method_row(result: dict[str, Any], name: str, runs: list[Run]) -> str:
    spikes = [loss_spikes(train_losses(r)) for r in runs]
    speed = [r.final("tokens_per_second") for r in runs]
    clipped = [np.nanmean([row.get("clip_fraction", np.nan) for row in r.rows
                           if row.get("split") == "train"]) for r in runs]  # fmt: skip
    lr, knob = setting_cells(result, name)
    return (
        f"| {name} | {lr} | {knob} | {cell([r.final('bits_per_byte') for r in runs])} "
        f"| {sum(spikes)} | {max(spikes) if spikes else 0} "
        f"| {np.nanmean(clipped):.2f} | {np.nanmean(speed):,.0f} | {len(runs)} |"
    )


def write_table(result: dict[str, Any], reports: dict[str, list[Run]], out: Path) -> None:
    c = result["spec"]
    lines = [
        "| method | lr | knob | val bits per byte [90% CI] | loss spikes (all seeds) "
        "| most in one run | clipped fraction | tokens/s | seeds |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [method_row(result, n, runs) for n, runs in reports.items()]
    lines += ["", f"- tuned on seeds {c['tune_seeds']} by the median, reported on seeds "
              f"{c['report_seeds']}; the setting counts, edges and paired differences with their "
              "p-values are in lm_protocol.md; intervals: bootstrap 90% of the mean",
              f"- loss spike: a logged training loss above {SPIKE_FACTOR}× the median of "
              f"the {SPIKE_WINDOW} logged losses before it (every step is logged), or a "
              "non-finite one", f"- {stamp(COMMAND)}", ""]  # fmt: skip
    (out / "lm_table.md").write_text("\n".join(lines))


def tuning_rows(result: dict[str, Any], tune: list[Run], ceiling: float) -> list[dict[str, Any]]:
    """Every completed tuning run on the final grid of its method: its setting, its final
    validation loss and bits per byte, whether it trains, whether it is at the chosen knob."""
    axes, of, best = result["axes"], result["of"], result["best"]
    rows, seen = [], set()
    for r in sorted(tune, key=lambda r: str(r.dir)):
        name = of(r)
        if not r.completed or name not in best or r.seed not in result["spec"]["tune_seeds"]:
            continue  # a run still going has no final loss yet; the measurement run is SGD's
        setting = setting_of(r, axes[name])
        # one row per setting and seed: `lr=1` and `lr=1.0` name two directories of one run
        if setting not in protocol.settings(axes[name]) or (name, setting, r.seed) in seen:
            continue
        seen.add((name, setting, r.seed))
        loss = r.final("loss")
        rows.append({"method": name, "lr": r.lr, "knob": knob_text(axes[name], setting),
                     "chosen_knob": setting[1:] == tuple(best[name]["setting"][1:]),
                     "seed": r.seed, "val_loss": loss, "bits_per_byte": r.final("bits_per_byte"),
                     "trains": bool(np.isfinite(loss) and loss < ceiling)})  # fmt: skip
    return sorted(rows, key=lambda t: (t["method"], t["lr"], t["knob"], t["seed"]))


def _training_lrs(rows: list[dict[str, Any]], grid: list[float]) -> list[float]:
    """The learning rates of ``grid`` at which some knob value trains on every tuning seed."""
    by = defaultdict(list)
    for t in rows:
        by[(t["lr"], t["knob"])].append(t["trains"])
    return [lr for lr in grid if any(all(v) for (x, _), v in by.items() if x == lr)]


def write_lr_range(result: dict[str, Any], rows: list[dict[str, Any]], out: Path) -> None:
    lines = ["| method | grid | trains at its chosen knob | widest ratio | trains at some knob "
             "| widest ratio | tuning runs completed |",
             "| --- | --- | --- | ---: | --- | ---: | ---: |"]  # fmt: skip
    seeds = len(result["spec"]["tune_seeds"])

    def shown(lrs: list[float]) -> tuple[str, str]:
        ratio = f"{max(lrs) / min(lrs):.3g}" if lrs else "none"
        return " ".join(f"{x:g}" for x in lrs) or "none", ratio

    for name, axes in result["axes"].items():
        grid = list(axes[0].values)
        mine = [t for t in rows if t["method"] == name]
        at_choice, ratio = shown(_training_lrs([t for t in mine if t["chosen_knob"]], grid))
        anywhere, wide = shown(_training_lrs(mine, grid))
        lines.append(f"| {name} | {' '.join(f'{x:g}' for x in grid)} | {at_choice} | {ratio} "
                     f"| {anywhere} | {wide} "
                     f"| {len(mine)} of {protocol.settings_count(axes) * seeds} |")  # fmt: skip
    lines += ["", "- trains: a finite final validation loss below the byte-unigram loss of the "
              "validation split, on every tuning seed", f"- {stamp(COMMAND)}", ""]  # fmt: skip
    (out / "lm_lr_range.md").write_text("\n".join(lines))


def write_tuning(rows: list[dict[str, Any]], out: Path) -> None:
    sweeps.write_csv(out / "lm_tuning.csv", rows)
    lines = ["| method | lr | knob | seed | val loss | val bits per byte | trains |",
             "| --- | ---: | --- | ---: | ---: | ---: | --- |"]  # fmt: skip
    lines += [f"| {t['method']} | {t['lr']:g} | {t['knob']} | {t['seed']} | {t['val_loss']:.4f} "
              f"| {t['bits_per_byte']:.4f} | {'yes' if t['trains'] else 'no'} |" for t in rows]  # fmt: skip
    lines += ["", f"- {stamp(COMMAND)}", ""]
    (out / "lm_tuning.md").write_text("\n".join(lines))


def write_cost(stages: dict[str, list[Run]], out: Path, default_run: Path | None) -> None:
    """What the comparison's runs cost (their own wall time, set-up excluded), and the default
    ``python train.py task=lm`` run when its directory is given."""
    lines = ["| what | runs | completed | wall seconds per run (mean) | wall seconds, all runs |",
             "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for stage, runs in stages.items():
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
              "shared with other work; runs niced, two at once", f"- {stamp(COMMAND)}", ""]  # fmt: skip
    (out / "lm_cost.md").write_text("\n".join(lines))


def write_all(result: dict[str, Any], out: Path, default_run: Path | None = None) -> None:
    """Every LM table and figure of one comparison (``tuned_comparison.run_task``'s result)."""
    tune = result["tune"]
    out.mkdir(parents=True, exist_ok=True)
    ceiling = unigram_nats()
    rows = tuning_rows(result, tune, ceiling)
    write_tuning(rows, out)
    write_lr_range(result, rows, out)
    write_cost({"tune": tune, "report": result["report"]}, out, default_run)
    lm_plots.lr_stability_figure([t for t in rows if t["chosen_knob"]],
                                 out / "lm_lr_stability.png", ceiling)  # fmt: skip
    reports = chosen_runs(result, result["report"])
    if reports:
        write_table(result, reports, out)
        lm_plots.comparison_figure(reports, out / "lm_comparison.png", "val_bits_per_byte")
