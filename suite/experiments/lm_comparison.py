"""The language-model comparison (``experiment=lm``) under the fair protocol, with its LM tables.

    python scripts/lm_comparison.py --jobs 2             # bytes: measure, tune, report, draw
    python scripts/lm_comparison.py --figures-only       # tables and figures from the runs
    python scripts/lm_comparison.py --quick              # the pipeline on one setting per method
    python scripts/lm_comparison.py --name lm_wordpiece -- task.tokenizer=minilm

Its protocol (methods, lr grids, knobs, seeds) is ``conf/comparison/lm.yaml``; its runs' model
and budget are ``conf/experiment/lm.yaml``.

The runs are those of ``scripts/tuned_comparison.py --tasks lm``
(``torch_clip.suite.experiments.tuned_comparison``: measure λ on unclipped SGD, tune every
method on its family's learning rates × three values of its own knob on the tuning seeds by the
median, extend an edge choice once, report on fresh seeds). ``--name`` names the run folder
(``<root>/<name>/``) and the table folder (``results/lm/`` for ``lm``, ``results/lm/<name>/``
otherwise), so that another vocabulary never mixes with the bytes. Runs go to ``--root``
(default ``outputs/lm``, gitignored).

Besides the protocol's ``lm_protocol.md`` (counts, choices, edges, paired differences to the LM
recipe AdamW + norm 1.0 with their p-values) it writes the LM tables and figures of
``torch_clip.suite.reports.lm_report``: spikes, clipped fraction and throughput per method, the
learning rates that train, every tuning run, the cost, ``lm_comparison.png`` and
``lm_lr_stability.png``.
"""

from __future__ import annotations

from pathlib import Path

from torch_clip.suite.experiments import protocol_table, sweeps, tuned_comparison
from torch_clip.suite.paths import ROOT

OUT = ROOT / "results" / "lm"
EXPERIMENT = "lm"
COMMAND = "python scripts/lm_comparison.py"


def default_root() -> Path:
    return ROOT / "outputs" / "lm"


def main(argv: list[str] | None = None) -> int:
    parser = sweeps.sweep_parser(__doc__, "where runs go (default outputs/lm)", jobs=2)
    parser.set_defaults(out=OUT)
    parser.add_argument("--name", default=EXPERIMENT, help="the comparison's run and table folder")
    parser.add_argument("--default-run", type=Path, help="a `train.py task=lm` run, for the cost")
    args = sweeps.parse_sweep_args(parser, argv)
    args.root = (args.root or default_root()) / args.name
    if args.name != EXPERIMENT:
        args.out = args.out / args.name
    result = tuned_comparison.run_task(EXPERIMENT, args, list(args.overrides))
    command = COMMAND + (" --quick" if args.quick else "")
    if (
        path := protocol_table.write_protocol_table(result, command, tuned_comparison.clips)
    ) is not None:
        print(path.read_text())
    from torch_clip.suite.reports import lm_report

    lm_report.write_all(result, Path(result["out"]), args.default_run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
