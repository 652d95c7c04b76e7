"""The heavy-tail regime maps: which method wins as the noise gets heavier, under a fair protocol.

    python scripts/regime_map.py               # both maps; resumable (a finished run is skipped)
    python scripts/regime_map.py --quick       # the whole pipeline on tiny budgets (CI)
    python scripts/regime_map.py --figures-only
    python scripts/regime_map.py --maps gradient

Everything the maps run is in ``conf/comparison/regime_map.yaml``: the maps, their problems and
tail indices, the methods (overrides, lr grid, second knob) and the seeds; the runs' task and
budget are ``experiment=regime_map`` (``conf/experiment/regime_map.yaml``).

* **gradient map**: clean labels, symmetric α-stable noise of index α added to every stochastic
  gradient (``task.noise_on=gradient``), on least squares (smooth and convex, where clipped
  SSTM's guarantees apply) and on the MLP. The x-axis is the injected index; beside it the
  noise probe's reading of the gradient noise at initialisation (``scripts/noise_probe.py``).
* **label map**: the same noise in the training labels, clean validation targets: robust
  estimation as much as optimisation, with Huber-loss baselines.

The protocol is ``torch_clip.suite.protocol``'s (docs/evidence/protocol.md): per cell (map, problem, α),
every method is tuned on its lr grid × three values of its own knob on the tuning seeds and
chosen by the median final validation MSE (a diverged run scores worst); a choice on an edge of
either axis extends that axis by one step and is tuned again, up to ``max_extensions`` rounds,
and what stays on an edge is flagged. λ of the fixed thresholds sits at quantiles of the gradient
norm of SGD's measurement run (seed 0, ``measure_lr``, or a smaller lr of the grid when that run
is unstable). The choices are run on fresh report seeds; ``regime_map_report.py`` writes the
tables (median, mean and bootstrap intervals, settings counts, edge flags, paired differences to
the best baseline), the figures and the rliable aggregate across cells.

Runs are grouped into ``train.py -m`` calls (one per method and problem where the grid is shared
by the tail indices, else per cell), since a process start costs seconds and a run a fraction of
one. Runs go to ``results/regime_map/`` (not committed); figures and tables to
``results/readme/figures/regime_map/``.
"""

from __future__ import annotations

import argparse
import math
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from torch_clip.suite import protocol, registry
from torch_clip.suite.experiments import sweeps
from torch_clip.suite.experiments.tuned_comparison import setting_of, unstable
from torch_clip.suite.paths import ROOT
from torch_clip.suite.reports import regime_map_report
from torch_clip.suite.run_reader import Run, read_runs

NAME = "regime_map"  # its protocol conf/comparison/<NAME>.yaml, its runs experiment=<NAME>
SPEC = ROOT / "conf" / "comparison" / f"{NAME}.yaml"
EXPERIMENT = ROOT / "conf" / "experiment" / f"{NAME}.yaml"
SWEEP = ROOT / "results" / "regime_map"
OUT = "regime_map"  # the figures' folder under --out
LAMBDA = "lambda"
LAMBDA_KEY = "optimizer.clipping_level"
#: a λ grid on close quantiles of the norm grows by half decades beyond its edge
LAMBDA_STEP = 10**0.5
MEASURE = "measure_SGD"
LR_KEY = "step_rule.lr"
#: runs per batch of a ``-m`` call (its runs start after the batch's configs composed)
BATCH = 25


@dataclass(frozen=True)
class Cell:
    """One cell of a map: a problem at one tail index."""

    map: str
    problem: str
    alpha: float
    overrides: tuple[str, ...]  # the map's and the problem's task overrides, α excluded

    @property
    def key(self) -> str:
        return f"{self.map}/{self.problem}/α={self.alpha:g}"


def slug(name: str) -> str:
    """A method's run label: its name without spaces (it names the run directory)."""
    return name.replace(" ", "_")


def load_spec(quick: bool, maps: list[str] | None = None) -> dict[str, Any]:
    """The protocol (``SPEC``) with the runs' budget (``EXPERIMENT``); ``--quick`` shrinks it to a
    few runs (one problem per map, its alphas and methods, one lr grid, tuning seeds reused for the
    report)."""
    spec = registry.comparison(NAME)
    unknown = sorted(set(maps or []) - set(spec["maps"]))
    if unknown:
        raise SystemExit(f"Invalid --maps {unknown}; expected some of {', '.join(spec['maps'])}")
    spec["maps"] = {k: v for k, v in spec["maps"].items() if not maps or k in maps}
    spec["steps"] = int(OmegaConf.load(EXPERIMENT).trainer.max_steps)
    if quick:
        q = spec["quick"]
        spec.update(steps=q["steps"], tune_seeds=q["tune_seeds"], report_seeds=q["report_seeds"],
                    max_extensions=q["max_extensions"], measure_lr=q["lr_grid"][0],
                    lr_grids={k: q["lr_grid"] for k in spec["lr_grids"]})  # fmt: skip
        for m in spec["maps"].values():
            m.update(problems=dict(list(m["problems"].items())[:1]), alphas=q["alphas"],
                     methods=[x for x in m["methods"] if x in q["methods"]])  # fmt: skip
    named = [x for m in spec["maps"].values() for x in m["methods"]]
    named += [x for pair in spec.get("randomized", {}).items() for x in pair]
    missing = sorted({x for x in named if x not in spec["methods"]})
    if missing:
        raise SystemExit(
            f"Invalid methods {missing} of the maps or randomized: not in the methods of {SPEC}"
        )
    return spec


def cells_of(spec: dict[str, Any]) -> list[Cell]:
    return [Cell(name, problem, float(alpha), (*m["task"], *over))
            for name, m in spec["maps"].items() for problem, over in m["problems"].items()
            for alpha in m["alphas"]]  # fmt: skip


def cell_of(cells: list[Cell]):
    """The cell a run belongs to, from its task config (``None``: another map's or budget's)."""

    def values(overrides: tuple[str, ...]) -> dict[str, str]:
        return dict(o.removeprefix("task.").split("=", 1) for o in overrides)

    index = {}
    for cell in cells:
        v = values(cell.overrides)
        index[(v["noise_on"], v["model"], float(v["noise_scale"]), cell.alpha)] = cell

    def of(run: Run) -> Cell | None:
        task = run.config.get("task", {})
        where = (task.get("noise_on", "labels"), task.get("model"),
                 float(task.get("noise_scale", "nan")), task.get("noise_alpha"))  # fmt: skip
        return index.get(where) if task.get("noise") == "stable" else None

    return of


def method_of(spec: dict[str, Any]):
    names = {slug(n): n for n in spec["methods"]} | {MEASURE: MEASURE}
    return lambda run: names.get(str(run.config.get("label")), None)


# ----------------------------------------------------------------------------- grids


def method_axes(spec: dict[str, Any], name: str, lambdas: list[float] | None) -> list:
    """Method ``name``'s tuned axes: its lr grid, then its knob (λ: ``lambdas``, the cell's)."""
    entry = spec["methods"][name]
    lrs = spec["lr_grids"][entry.get("lr_grid", "default")]
    axes = [protocol.Axis(LR_KEY, tuple(sorted(lrs)))]
    knob = entry.get("knob")
    if knob == LAMBDA:
        axes.append(protocol.Axis(LAMBDA_KEY, tuple(sorted(set(lambdas))), step=LAMBDA_STEP))
    elif knob:
        axes.append(protocol.Axis(knob["key"], tuple(knob["values"]), knob.get("scale", "log"),
                                  tuple(knob.get("bounds", (0.0, float("inf"))))))  # fmt: skip
    return axes


def run_overrides(spec, cell: Cell, name: str, axes, setting, seed: int) -> list[str]:
    """The ``train.py`` overrides of one run: method ``name`` in ``cell`` at ``setting`` (one
    value per axis; a knob's template places it, as Adam's β₂ in ``step_rule.betas``)."""
    entry = spec["methods"].get(name, {"overrides": spec["methods"]["SGD"]["overrides"]})
    over = [*cell.overrides, f"task.noise_alpha={cell.alpha:g}", *entry["overrides"],
            f"label={slug(name)}", f"trainer.max_steps={spec['steps']}", f"seed={seed}"]  # fmt: skip
    knob = entry.get("knob")
    for axis, value in zip(axes, setting):
        template = knob.get("override") if isinstance(knob, dict) and axis.key != LR_KEY else None
        over.append((template or f"{axis.key}={{value}}").format(value=f"{value:.6g}"))
    return over


def job_config(overrides: list[str]) -> str:
    """One run's overrides as a config of the ``rm_job`` group: many runs of different methods
    then run in one ``train.py -m +rm_job=a,b,...`` (the basic launcher runs them in-process, so
    a process start is paid once per call, not once per method and cell)."""
    groups = {d.name for d in (ROOT / "conf").iterdir() if d.is_dir()}
    chosen = [o.split("=", 1) for o in overrides if o.split("=", 1)[0] in groups]
    values = [o for o in overrides if o.split("=", 1)[0] not in groups]
    body = OmegaConf.to_container(OmegaConf.from_dotlist(values))
    defaults = [{f"override /{k}": v} for k, v in chosen]
    return "# @package _global_\n" + OmegaConf.to_yaml({"defaults": defaults, **body})


def calls(runs: list[list[str]], root: Path, workers: int) -> list[sweeps.Job]:
    """``runs`` written as ``rm_job`` configs under ``<root>/jobs/`` and split into ``workers``
    calls (each a ``-m`` sweep over its share of the job names)."""
    folder = root / "jobs" / "rm_job"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for over in runs:
        text = job_config(over)
        name = f"j{zlib.crc32(text.encode()):08x}"
        (folder / f"{name}.yaml").write_text(text)
        names.append(name)
    names = sorted(set(names))
    # no more calls than batches: a process start costs seconds, a short stage needs one
    size = max(1, math.ceil(len(names) / min(workers, math.ceil(len(names) / BATCH))))
    chunks = [names[i : i + size] for i in range(0, len(names), size)]
    # batches of BATCH: Hydra composes a whole batch to check it before its first run starts
    return [([f"hydra.searchpath=[file://{root / 'jobs'}]", f"hydra.sweeper.max_batch_size={BATCH}",
              "+rm_job=" + ",".join(chunk)],
             f"{zlib.crc32(','.join(chunk).encode()):08x}") for chunk in chunks]  # fmt: skip


# ----------------------------------------------------------------------------- stages


class Map:
    """The runs of every cell, read back after each stage; choices and grids per cell."""

    def __init__(self, spec, cells, args) -> None:
        self.spec, self.cells, self.args = spec, cells, args
        self.cell_of, self.method_of = cell_of(cells), method_of(spec)
        self.runs: dict[tuple[Cell, str], list[Run]] = {}
        self.read()

    def read(self) -> None:
        """The runs of this budget, by (cell, method)."""
        runs = read_runs(self.args.root) if self.args.root.exists() else []
        self.runs = {}
        for r in runs:
            if r.config.get("trainer", {}).get("max_steps") != self.spec["steps"]:
                continue
            cell, name = self.cell_of(r), self.method_of(r)
            if cell is not None and name is not None:
                self.runs.setdefault((cell, name), []).append(r)

    def of(self, cell: Cell, name: str) -> list[Run]:
        return self.runs.get((cell, name), [])

    def stage(self, title: str, runs: list[list[str]]) -> None:
        """Make ``runs`` (override lists), ``--jobs`` processes at once, then read back."""
        if runs and not self.args.figures_only:
            jobs = calls(runs, self.args.root, self.args.jobs)
            print(f"[regime map] {title}: {len(runs)} runs in {len(jobs)} calls", flush=True)
            sweeps.run_stage(jobs, self.args.root, self.args.jobs, NAME, self.args.overrides)
        self.read()

    def todo(self, cell: Cell, name: str, axes, seeds, settings=None) -> list[list[str]]:
        """The runs of ``name`` in ``cell`` not made yet: ``settings`` (default: the whole grid of
        ``axes``) on ``seeds``."""
        done = self.results(cell, name, axes, seeds)
        return [run_overrides(self.spec, cell, name, axes, s, seed)
                for s in (settings or protocol.settings(axes)) for seed in seeds
                if seed not in done.get(s, {})]  # fmt: skip

    def results(self, cell: Cell, name: str, axes, seeds) -> dict:
        """setting → {seed: final metric} of ``name`` in ``cell`` on ``seeds`` (grid order)."""
        out = {s: {} for s in protocol.settings(axes)}
        for run in self.of(cell, name):
            if run.seed in seeds:
                s = setting_of(run, axes)
                if s in out:
                    out[s][run.seed] = run.final(self.spec["metric"])
        return out


def measure(m: Map) -> dict[Cell, dict[str, Any]]:
    """SGD's measurement run per cell at ``measure_lr`` (seed 0), stepping down by half decades
    (three decades at most) while it is unstable; returns per cell the stable run's λ grid and
    its lr."""
    top = m.spec["measure_lr"]
    lrs = [top, *protocol.half_decade_grid(top / 1000, top)[::-1]]
    lrs = list(dict.fromkeys(float(f"{x:.6g}") for x in lrs))
    placed: dict[Cell, dict[str, Any]] = {}
    for lr in lrs:
        todo = [c for c in m.cells if c not in placed]
        axes = [protocol.Axis(LR_KEY, (lr,))]
        m.stage(f"measuring the gradient norm (SGD lr {lr:g})",
                [r for c in todo for r in m.todo(c, MEASURE, axes, [0])])  # fmt: skip
        for cell in todo:
            run = next((r for r in m.of(cell, MEASURE) if r.seed == 0 and r.lr == lr), None)
            if run is not None and unstable(run) is None:
                q = sweeps.norm_quantiles(run, m.spec["lambda_quantiles"])
                placed[cell] = {"lambdas": q, "lr": lr}
    lost = [c.key for c in m.cells if c not in placed]
    if lost and not m.args.figures_only:
        raise SystemExit(f"[regime map] no stable measurement run for {lost}; see the logs")
    return placed


def choose(m: Map, cell: Cell, name: str, axes) -> dict[str, Any] | None:
    chosen = protocol.select(m.results(cell, name, axes, m.spec["tune_seeds"]),
                             m.spec["tune_seeds"], lower_is_better=True)  # fmt: skip
    if chosen is None:
        return None
    return {"setting": chosen.setting, "score": chosen.score, "tied": chosen.tied,
            "rule": chosen.rule, "count": protocol.settings_count(axes),
            "edges": protocol.edge_flags(axes, chosen.setting)}  # fmt: skip


def tune(m: Map, axes: dict) -> dict:
    """Tune every (cell, method), extending edge choices for up to ``max_extensions`` rounds."""
    seeds = m.spec["tune_seeds"]
    m.stage("tuning (round 0)", [r for (c, n), a in axes.items() for r in m.todo(c, n, a, seeds)])
    best = {}
    for rounds in range(m.spec["max_extensions"] + 1):
        runs, grown = [], False
        for (cell, name), a in axes.items():
            best[cell, name] = choose(m, cell, name, a)
            if best[cell, name] is None or rounds == m.spec["max_extensions"]:
                continue
            axes[cell, name], _ = protocol.extensions(a, best[cell, name]["setting"])
            grown = grown or axes[cell, name] != a
            runs += m.todo(cell, name, axes[cell, name], seeds)
        # stop when no grid grew, not when nothing was left to run: a resumed map finds its
        # extension runs made and must still take every round a fresh one takes
        if not grown:
            break
        if runs:
            m.stage(f"tuning (extension round {rounds + 1})", runs)
    for key, a in axes.items():  # the choices on the final grids, edges flagged
        best[key] = choose(m, *key, a)
    return best


def report(m: Map, axes: dict, best: dict) -> None:
    """Each choice on the report seeds."""
    runs = [r for (cell, name), chosen in best.items() if chosen is not None
            for r in m.todo(cell, name, axes[cell, name], m.spec["report_seeds"],
                            [chosen["setting"]])]  # fmt: skip
    m.stage("reporting on seeds " + ",".join(map(str, m.spec["report_seeds"])), runs)


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = sweeps.sweep_parser(__doc__, "run directory (default results/regime_map)")
    parser.add_argument("--maps", nargs="*", help="only these maps (gradient, labels)")
    parser.add_argument("--no-probe", action="store_true", help="skip the noise probe's readings")
    parser.add_argument("--probe-only", action="store_true",
                        help="only the probe's readings of the gradient map (gradient_probe.md)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    """The problems one after another (gradient map's least squares, its MLP, the label map),
    each measured, tuned and reported; the tables and figures are rewritten after each, so an
    interrupted map has committed-ready outputs for the problems it finished."""
    parser = build_parser()
    args = sweeps.parse_sweep_args(parser, argv)
    spec = load_spec(args.quick, args.maps)
    args.root = args.root or (SWEEP.with_name("regime_map_quick") if args.quick else SWEEP)
    command = "python scripts/regime_map.py" + " --quick" * args.quick
    command += f" --maps {' '.join(args.maps)}" if args.maps else ""
    if args.probe_only:
        regime_map_report.write_probe(cells_of(spec), args.out / OUT, command + " --probe-only",
                                      args.quick)  # fmt: skip
        return 0
    done: list[Cell] = []
    axes, best, placed = {}, {}, {}
    # --quick: every cell at once (fewer stages, so fewer process starts)
    for group in [cells_of(spec)] if args.quick else problems(cells_of(spec)):
        m = Map(spec, group, args)
        print(f"[regime map] {', '.join(dict.fromkeys(c.key.rsplit('/', 1)[0] for c in group))}",
              flush=True)  # fmt: skip
        placed |= measure(m)
        these = {(c, n): method_axes(spec, n, placed.get(c, {}).get("lambdas", [1.0]))
                 for c in group for n in spec["maps"][c.map]["methods"]}  # fmt: skip
        chosen = tune(m, these)
        report(m, these, chosen)
        axes |= these
        best |= chosen
        done += group
        everything = Map(spec, done, args)
        regime_map_report.write_all(everything, axes, best, placed, args.out / OUT, command,
                                    args.no_probe)  # fmt: skip
    print(f"[regime map] wrote {args.out / OUT}")
    return 0


def problems(cells: list[Cell]) -> list[list[Cell]]:
    """The cells grouped by (map, problem), in the spec's order."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.map, cell.problem), []).append(cell)
    return list(groups.values())


if __name__ == "__main__":
    sys.exit(main())
