"""Why an early ResNet18 can score higher in validation with a *higher* training loss: BatchNorm.

    python scripts/imagenet_bn_check.py                       # SGD against a clipped method
    python scripts/imagenet_bn_check.py --steps 40 --method optimizer=auto step_rule.lr=0.05

Trains the ImageNet proxy for a few steps with each method, then evaluates twice: as the task
does (``model.eval()``: BatchNorm uses its running statistics, an exponential average with
momentum 0.1 of the batch statistics seen so far), and after recomputing those statistics over
``--recalibrate`` training batches at the final weights (a cumulative average, as
``torch.optim.swa_utils.update_bn`` does). When the two accuracies differ widely, the running
statistics lag behind weights that moved fast, and the eval-mode accuracy measures that lag
rather than the weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import torch_clip.suite.naming  # noqa: F401  registers the run_dir resolver
from torch_clip.suite.optim import build_optimizer

ROOT_CONF = Path(__file__).resolve().parents[1] / "conf"

DEFAULT_METHODS = (
    "optimizer=torch_sgd step_rule.lr=0.01",
    "optimizer=quadratic_stoch_norm optimizer.clipping_level=2 step_rule.lr=0.05",
)


def recalibrate(model: torch.nn.Module, batches) -> None:
    """Running BatchNorm statistics := the plain average over ``batches`` at the current weights."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for images, _ in batches:
            model(images)


def check(overrides: list[str], steps: int, recal: int, seed: int) -> dict[str, float]:
    with initialize_config_dir(config_dir=str(ROOT_CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["task=imagenet", *overrides])
    torch.manual_seed(seed)
    task = instantiate(cfg.task, _convert_="all")
    task.setup(torch.device("cpu"), seed)
    opt = build_optimizer(cfg, task.model.parameters(), seed)
    task.model.train()
    losses = []
    batches = task.train_batches(0, 0, seed=seed)
    for _ in range(steps):
        loss, _ = task.loss(next(batches))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    eval_mode = task.evaluate()["accuracy"]
    recalibrate(task.model, (b for _, b in zip(range(recal), task.train_batches(1, 0, seed=seed))))
    return {
        "train_loss_last5": sum(losses[-5:]) / 5,
        "val_acc_eval_mode": eval_mode,
        "val_acc_recalibrated_bn": task.evaluate()["accuracy"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--recalibrate", type=int, default=10, help="training batches for BN")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", action="append", nargs="+", help="train.py overrides")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.recalibrate < 1:
        parser.error("--steps and --recalibrate must be >= 1")
    torch.set_num_threads(1)
    methods = [m for m in args.method] if args.method else [m.split() for m in DEFAULT_METHODS]
    for overrides in methods:
        result = check(overrides, args.steps, args.recalibrate, args.seed)
        print(" ".join(overrides), {k: round(v, 3) for k, v in result.items()}, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
