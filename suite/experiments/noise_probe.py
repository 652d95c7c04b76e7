"""Measure the stochastic-gradient noise of a task (Zhang et al., 2020, "Why are adaptive methods
good for attention models?"): ``g_i − ḡ`` where ``g_i`` are mini-batch gradients and ``ḡ`` a
reference gradient averaged over many mini-batches, at initialisation or at a checkpoint.

    python scripts/noise_probe.py --overrides task=cola --at start
    python scripts/noise_probe.py results/default/cola/norm-<hash>/seed0 --at end
    python scripts/noise_probe.py results/default/cola/norm-<hash>/seed0 --checkpoint copy.pt

Over training (start, mid-run, end): the trainer keeps one checkpoint, ``last.pt``, and a
completed run continues from its final checkpoint when asked to (``trainer.extend=true``), so
probe, grow the budget, probe again (``scripts/tail_over_training.py`` does this per task):

    python train.py task=toy trainer.max_steps=100 trainer.checkpoint_every=50
    python scripts/noise_probe.py results/default/toy/norm-<hash>/seed0 --at start
    python scripts/noise_probe.py results/default/toy/norm-<hash>/seed0 --at end   # step 100
    python train.py task=toy trainer.max_steps=200 trainer.checkpoint_every=50 trainer.extend=true
    python scripts/noise_probe.py results/default/toy/norm-<hash>/seed0 --at end   # step 200

(with the constant scheduler the continued run is the uninterrupted 200-step run; a schedule
that depends on ``trainer.max_steps`` differs in its first part).

Tail estimates. For a fixed random sample of coordinates of every parameter tensor, the noise is
recorded over all probe batches, giving a matrix ``(batches, coords)``. Each coordinate is
centred on its median and divided by its median absolute deviation (``standardize_columns``), so
coordinates of different scales, within and across tensors, pool into one sample (pooling raw
coordinates makes Gaussian noise of unequal scales look heavy-tailed). The α-stable index
(``noise_coords_stable_alpha``) sums blocks of consecutive *batches of one coordinate*
(``alpha_stable_index(mode="columns")``), never coordinates of one batch, which are dependent;
its 90% interval is a Student-t interval over the groups of batches its blocks span
(``alpha_stable_interval``), which covers the index of α-stable noise with dependent coordinates
in 85-95% of calibration draws of the probe's shape (tests/experiments/test_noise_probe.py), where a
bootstrap over those few groups covered α = 1.8 in 76 of 100. The Hill index (the median over coordinates of each coordinate's
Hill estimate, k = √batches; pooled coordinates would let one extreme batch fill the top order
statistics with dependent values) and the Hill index of the noise norms ‖g_i − ḡ‖ are reported
too, with 90% bootstrap intervals over the same groups (``--bootstrap`` resamples), and both
indices per parameter tensor. The Hill estimator is biased for α-stable noise at k = √batches,
so its intervals describe the estimator's spread, not the law's index.

Writes ``<run dir or --out>/noise_probe_<start|stepN>/noise_probe.npz`` (``noise_norms``,
``grad_norms``, ``noise_coords``, ``coord_tensor``: the tensor of each column) and
``noise_probe.json``, which ``scripts/plot_heavy_tail.py`` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from clip_core.heavy_tail import (
    alpha_stable_index,
    alpha_stable_interval,
    bootstrap_interval,
    hill_columns,
    hill_estimator,
    standardize_columns,
    tail_summary,
)
from torch_clip.suite.checkpoint import CheckpointError, checkpoint_path, read_checkpoint
from torch_clip.suite.paths import ROOT
from torch_clip.suite.records import atomic_write_json

LEVEL = 0.9  # coverage of the bootstrap intervals


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import torch_clip.suite.naming  # noqa: F401  registers the run_dir resolver
    from torch_clip.suite.experiments.local_runs import HYDRA_STATE

    # Hydra's state is global: a driver's other threads (tail_over_training beside a sweep) wait
    with HYDRA_STATE, initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=False)


def _flat_grad(params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(
        [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel()) for p in params]
    )


def probe(cfg, model_state, *, reference_batches: int, batches: int, coords: int, seed: int):
    """Mini-batch gradients against a ``reference_batches``-batch mean, at ``coords``
    coordinates of every parameter tensor; returns ``(task info, tensors, arrays)``."""
    from hydra.utils import instantiate

    torch.manual_seed(seed)
    task = instantiate(cfg.task, _convert_="all")
    info = task.setup(torch.device("cpu"), int(cfg.seed))
    if model_state is not None:
        task.model.load_state_dict(model_state)
    task.model.train()  # the noise the optimizer sees, dropout included
    named = [(n, p) for n, p in task.model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]

    def gradients(count: int, epoch_offset: int):
        done, epoch = 0, epoch_offset
        while done < count:
            for batch in task.train_batches(epoch, 0, seed=seed):
                task.model.zero_grad(set_to_none=True)
                loss, _ = task.loss(batch)
                loss.backward()
                yield _flat_grad(params)
                done += 1
                if done >= count:
                    return
            epoch += 1

    reference = None
    for g in gradients(reference_batches, 10_000):  # batches disjoint from the probe's order
        reference = g.clone() if reference is None else reference.add_(g)
    reference /= reference_batches
    # The same number of coordinates from every tensor, so a small tensor (a bias, a norm's
    # scale) is measured too rather than drowned by the large ones.
    gen = torch.Generator().manual_seed(seed)
    index, owner, tensors, offset = [], [], [], 0
    for t, (name, p) in enumerate(named):
        pick = torch.randperm(p.numel(), generator=gen)[:coords]
        index.append(offset + pick)
        owner.append(torch.full((pick.numel(),), t))
        tensors.append({"name": name, "shape": list(p.shape), "coords": int(pick.numel())})
        offset += p.numel()
    idx = torch.cat(index)
    noise_norms, grad_norms, samples = [], [], []
    for g in gradients(batches, 0):
        noise = g - reference
        noise_norms.append(float(noise.norm()))
        grad_norms.append(float(g.norm()))
        samples.append(noise[idx].numpy())
    return (
        info,
        tensors,
        {
            "noise_norms": np.asarray(noise_norms),
            "grad_norms": np.asarray(grad_norms),
            "noise_coords": np.stack(samples).astype(np.float32),
            "coord_tensor": torch.cat(owner).numpy().astype(np.int32),
            "reference_norm": float(reference.norm()),
        },
    )


#: the interval of each estimator: the α-stable index is a mean over groups of batches (a
#: Student-t interval over the groups); resampled batches repeat values, which tie in the Hill
#: estimator's top order statistics and shift its replicates upwards, so Hill gets the bootstrap's
#: θ̂ ± 1.645 SE.
METHODS = {"stable": "student_t over the groups", "hill": "normal"}


def _interval(data: np.ndarray, statistic, *, block: int, resamples: int, seed: int, kind: str):
    if resamples < 2:
        return None
    try:
        return list(
            bootstrap_interval(
                data,
                statistic,
                block=block,
                level=LEVEL,
                resamples=resamples,
                seed=seed,
                method=kind,
            )
        )
    except ValueError:  # too few probe batches for two groups
        return None


def tail_estimates(
    coords: np.ndarray,
    coord_tensor: np.ndarray,
    noise_norms: np.ndarray,
    tensors: list[dict[str, Any]],
    *,
    k1: int | None = None,
    resamples: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """The tail indices of one probe (see the module docstring); ``resamples=0``: no bootstrap
    intervals (the α-stable index's needs none)."""
    z, kept = standardize_columns(coords)
    batches = z.shape[0]
    k1 = k1 or max(2, int(np.sqrt(batches)))

    def stable(m: np.ndarray) -> float:
        return alpha_stable_index(m, k1, mode="columns")

    def hill(m: np.ndarray) -> float:
        return float(np.nanmedian(hill_columns(m)))

    out: dict[str, Any] = {
        "noise_coords_stable_alpha": stable(z),
        "noise_coords_stable_alpha_ci90": list(alpha_stable_interval(z, k1, level=LEVEL)),
        "noise_coords_hill_alpha": hill(z),
        "noise_coords_hill_alpha_ci90": _interval(
            z, hill, block=k1, resamples=resamples, seed=seed, kind="normal"
        ),
        "noise_norm_hill_alpha_ci90": _interval(
            noise_norms, hill_estimator, block=k1, resamples=resamples, seed=seed, kind="normal"
        ),
        "stable_k1": k1,
        "stable_groups": batches // k1,
        "coords_used": int(kept.sum()),
        "coords_dropped": int((~kept).sum()),
    }
    owners = coord_tensor[kept]
    per_tensor = []
    for t, meta in enumerate(tensors):
        cols = z[:, owners == t]
        row = {**meta, "coords_used": int(cols.shape[1])}
        try:
            row["stable_alpha"], row["hill_alpha"] = stable(cols), hill(cols)
        except ValueError as exc:  # no usable coordinate (sparse or dead tensor)
            row["skipped"] = str(exc)
        per_tensor.append(row)
    out["tensors"] = per_tensor
    values = [r["stable_alpha"] for r in per_tensor if "stable_alpha" in r]
    if values:
        out["tensor_stable_alpha_spread"] = {
            "min": float(np.min(values)),
            "median": float(np.median(values)),
            "max": float(np.max(values)),
        }
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "run_dir", nargs="?", type=Path, help="a run directory (its config.yaml is used)"
    )
    parser.add_argument(
        "--overrides", nargs="*", default=[], help="compose a config instead of a run dir"
    )
    parser.add_argument(
        "--at",
        choices=["start", "end"],
        default="start",
        help="initial model, or the run's latest checkpoint (needs trainer.checkpoint_every>0)",
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="probe the weights of this checkpoint file instead"
    )
    parser.add_argument(
        "--reference-batches", type=int, default=64, help="mini-batches averaged into ḡ (64)"
    )
    parser.add_argument(
        "--batches", type=int, default=200, help="mini-batch gradients to compare with ḡ (200)"
    )
    parser.add_argument(
        "--coords", type=int, default=64, help="noise coordinates kept per parameter tensor (64)"
    )
    parser.add_argument(
        "--k1", type=int, help="batches per block of the α-stable estimator (default √batches)"
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=200,
        help="bootstrap resamples for the Hill indices' 90%% intervals (200; 0: none)",
    )
    parser.add_argument(
        "--out", type=Path, help="output directory (default: <run dir>/noise_probe_<start|stepN>)"
    )
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.run_dir is None and not args.overrides:
        parser.error("give a run directory or --overrides")
    for name in ("reference_batches", "coords"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.batches < 4:  # the α-stable estimator needs two blocks of at least two batches
        parser.error(f"--batches must be >= 4, got {args.batches}")
    if args.bootstrap < 0 or args.bootstrap == 1:
        parser.error(f"--bootstrap must be 0 or >= 2, got {args.bootstrap}")
    if args.k1 is not None and not 2 <= args.k1 <= args.batches // 2:
        parser.error(f"--k1 must be in [2, batches // 2 = {args.batches // 2}], got {args.k1}")


def probed_config(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The run directory's resolved config, or one composed from ``--overrides``."""
    if args.run_dir is None:
        return _compose(args.overrides)
    config_path = args.run_dir / "config.yaml"
    if not config_path.exists():
        parser.error(f"{config_path} not found: is {args.run_dir} a run directory?")
    return OmegaConf.load(config_path)


def probed_weights(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """``(model state or None, where it came from, its step)``: initialisation (``--at start``),
    the run's checkpoint (``--at end``) or ``--checkpoint``."""
    ckpt = args.checkpoint
    if ckpt is None and args.at == "end":
        if args.run_dir is None:
            parser.error("--at end needs a run directory with a checkpoint")
        ckpt = checkpoint_path(args.run_dir)
    if ckpt is None:
        return None, "initialisation", 0
    if not ckpt.exists():
        parser.error(f"no checkpoint at {ckpt}; train with trainer.checkpoint_every > 0")
    try:
        payload = read_checkpoint(ckpt, remedy="")  # weights_only=True: never runs code
    except CheckpointError as exc:
        parser.error(str(exc))
    step = int(payload["step"])
    return payload["model"], f"checkpoint {ckpt.name} (step {step})", step


def probe_metadata(cfg, info, source: str, step: int, args, arrays, estimates) -> dict[str, Any]:
    """``noise_probe.json``: what was probed, on which data and weights, and the estimates."""
    return {
        "task": cfg.task.get("_target_"),
        "data_source": info.data_source,
        "model_source": info.model_source,
        "embedded_data": info.embedded,
        "checkpoint": source,
        "step": step,
        "reference_batches": args.reference_batches,
        "batches": args.batches,
        "coords_per_tensor": args.coords,
        "reference_grad_norm": arrays["reference_norm"],
        "noise_norm_summary": tail_summary(arrays["noise_norms"]).as_dict(),
        **estimates,
        "bootstrap": {
            "resamples": args.bootstrap,
            "level": LEVEL,
            "unit": f"groups of {estimates['stable_k1']} consecutive probe batches",
            "units": estimates["stable_groups"],
            "intervals": METHODS,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    cfg = probed_config(parser, args)
    state, source, step = probed_weights(parser, args)
    name = "noise_probe_start" if source == "initialisation" else f"noise_probe_step{step}"
    out = args.out or ((args.run_dir or Path("results/noise_probe")) / name)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    info, tensors, arrays = probe(cfg, state, reference_batches=args.reference_batches,
                                  batches=args.batches, coords=args.coords, seed=int(cfg.seed))  # fmt: skip
    np.savez(
        out / "noise_probe.npz", **{k: v for k, v in arrays.items() if isinstance(v, np.ndarray)}
    )
    estimates = tail_estimates(arrays["noise_coords"].astype(np.float64), arrays["coord_tensor"],
                               arrays["noise_norms"], tensors, k1=args.k1,
                               resamples=args.bootstrap, seed=int(cfg.seed))  # fmt: skip
    meta = probe_metadata(cfg, info, source, step, args, arrays, estimates)
    meta["seconds"] = time.time() - t0
    atomic_write_json(out / "noise_probe.json", meta)
    brief = {k: v for k, v in meta.items() if k != "tensors"}
    print(json.dumps(brief, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
