"""Measure the suite's own overhead: the training loop of ``train.py`` (logging, telemetry,
progress bar, record writes) against a bare loop of the same task and optimizer.

    python scripts/measure_overhead.py task=imagenet optimizer=norm --steps 60

Both loops call the task's ``train_batches``/``loss``, ``backward`` and ``optimizer.step``; the
suite loop's set-up, evaluation and checkpoints are excluded from its time (the trainer reports
them apart in ``summary.json``'s ``segment_seconds``). Prints both step times and the overhead
ratio; run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from torch_clip.suite.paths import ROOT

WARMUP = 3  # steps excluded from both loops' times


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import torch_clip.suite.naming  # noqa: F401  registers the run_dir resolver

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def bare_loop(cfg, steps: int) -> float:
    from hydra.utils import instantiate

    from torch_clip.suite.optim import build_optimizer
    from torch_clip.suite.trainer import seed_everything

    if cfg.trainer.get("num_threads"):  # as the suite loop does, so both run alike
        torch.set_num_threads(int(cfg.trainer.num_threads))
    seed_everything(cfg.seed)
    task = instantiate(cfg.task, _convert_="all")
    task.setup(torch.device("cpu"), cfg.seed)
    opt = build_optimizer(cfg, [p for p in task.model.parameters() if p.requires_grad], cfg.seed)
    task.model.train()
    done, epoch, t0 = 0, 0, 0.0
    while done < steps + WARMUP:
        for batch in task.train_batches(epoch, 0, seed=cfg.seed):
            if done == WARMUP:  # warm-up steps excluded
                t0 = time.perf_counter()
            loss, _ = task.loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done >= steps + WARMUP:
                break
        epoch += 1
    return (time.perf_counter() - t0) / steps


def suite_loop(cfg, steps: int) -> float:
    """Seconds per step of train.py's loop, as the trainer times it (its ``segment_seconds``,
    without evaluation and checkpoints): a run of ``WARMUP`` steps, then its budget grown by
    ``steps``, so that the timed segment resumes past the warm-up."""
    from omegaconf import OmegaConf

    from torch_clip.suite.distributed import DistContext
    from torch_clip.suite.trainer import Trainer

    OmegaConf.set_struct(cfg, False)
    cfg.trainer.eval_every = steps + WARMUP
    # a checkpoint only at the end of each budget (the warm-up's is where the timed part resumes)
    cfg.trainer.checkpoint_every = cfg.trainer.log_every * (steps + WARMUP)
    cfg.trainer.progress = True
    with tempfile.TemporaryDirectory() as tmp:
        for budget in (WARMUP, steps + WARMUP):
            cfg.trainer.max_steps = budget
            summary = Trainer(cfg, Path(tmp), DistContext(), {"task": "measured"}).run()
    assert summary["resumed_from"][-1]["step"] == WARMUP, summary["resumed_from"]
    seconds = summary["segment_seconds"]
    return (seconds["loop"] - seconds["evaluation"] - seconds["checkpoint"]) / steps


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", default=["task=toy"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cfg = compose(args.overrides)
    bare, suite = [], []
    for _ in range(args.repeats):  # alternate, so drift hits both
        bare.append(bare_loop(cfg.copy(), args.steps))
        suite.append(suite_loop(cfg.copy(), args.steps))
    b, s = min(bare), min(suite)
    print(
        f"{' '.join(args.overrides)}: bare loop {b * 1e3:.1f} ms/step, suite loop {s * 1e3:.1f} ms/step, "
        f"overhead {100 * (s / b - 1):+.1f}% (best of {args.repeats}, {args.steps} steps, "
        f"{torch.get_num_threads()} threads)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
