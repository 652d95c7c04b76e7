"""Measure the stochastic-gradient noise of a task (Zhang et al., 2020, "Why are adaptive methods
good for attention models?"): the norms of ``g_i − ḡ`` where ``g_i`` are mini-batch gradients and
``ḡ`` a large-batch reference gradient, at initialisation or at a run's final checkpoint.

    python scripts/noise_probe.py results/default/cola/norm/seed0 --at end
    python scripts/noise_probe.py --overrides task=cola --at start

Writes ``<run dir or --out>/noise_probe_<at>/noise_probe.npz`` (``noise_norms``, ``grad_norms``,
``noise_coords``: a fixed random sample of noise coordinates) and ``noise_probe.json``, which
``scripts/plot_heavy_tail.py`` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clip_core.heavy_tail import alpha_stable_index, tail_summary  # noqa: E402
from suite.checkpoint import checkpoint_path  # noqa: E402
from suite.records import atomic_write_json  # noqa: E402


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import train  # noqa: F401  registers the run_label resolver

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=False)


def _flat_grad(params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(
        [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel()) for p in params]
    )


def probe(cfg, model_state, *, reference_batches: int, batches: int, coords: int, seed: int):
    from hydra.utils import instantiate

    torch.manual_seed(seed)
    task = instantiate(cfg.task, _convert_="all")
    info = task.setup(torch.device("cpu"), int(cfg.seed))
    if model_state is not None:
        task.model.load_state_dict(model_state)
    task.model.train()  # the noise the optimizer sees, dropout included
    params = [p for p in task.model.parameters() if p.requires_grad]

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
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(reference.numel(), generator=gen)[:coords]
    noise_norms, grad_norms, samples = [], [], []
    for g in gradients(batches, 0):
        noise = g - reference
        noise_norms.append(float(noise.norm()))
        grad_norms.append(float(g.norm()))
        samples.append(noise[idx].numpy())
    return info, {
        "noise_norms": np.asarray(noise_norms),
        "grad_norms": np.asarray(grad_norms),
        "noise_coords": np.stack(samples),
        "reference_norm": float(reference.norm()),
    }


def main(argv: list[str] | None = None) -> int:
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
        help="initial model, or the run's final checkpoint (needs trainer.checkpoint_every>0)",
    )
    parser.add_argument(
        "--reference-batches", type=int, default=32, help="mini-batches averaged into ḡ"
    )
    parser.add_argument(
        "--batches", type=int, default=200, help="mini-batch gradients to compare with ḡ"
    )
    parser.add_argument(
        "--coords", type=int, default=2000, help="noise coordinates kept per mini-batch"
    )
    parser.add_argument(
        "--out", type=Path, help="output directory (default: <run dir>/noise_probe_<at>)"
    )
    args = parser.parse_args(argv)
    if args.run_dir is None and not args.overrides:
        parser.error("give a run directory or --overrides")
    for name in ("reference_batches", "batches", "coords"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.run_dir is not None:
        config_path = args.run_dir / "config.yaml"
        if not config_path.exists():
            parser.error(f"{config_path} not found: is {args.run_dir} a run directory?")
        cfg = OmegaConf.load(config_path)
    else:
        cfg = _compose(args.overrides)
    state, source = None, "initialisation"
    if args.at == "end":
        if args.run_dir is None:
            parser.error("--at end needs a run directory with a checkpoint")
        ckpt = checkpoint_path(args.run_dir)
        if not ckpt.exists():
            parser.error(f"no checkpoint at {ckpt}; train with trainer.checkpoint_every > 0")
        payload = torch.load(ckpt, map_location="cpu", weights_only=False)
        state, source = payload["model"], f"{ckpt} (step {payload['step']})"
    out = args.out or ((args.run_dir or Path("results/noise_probe")) / f"noise_probe_{args.at}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    info, arrays = probe(
        cfg,
        state,
        reference_batches=args.reference_batches,
        batches=args.batches,
        coords=args.coords,
        seed=int(cfg.seed),
    )
    np.savez(
        out / "noise_probe.npz", **{k: v for k, v in arrays.items() if isinstance(v, np.ndarray)}
    )
    summary = tail_summary(arrays["noise_norms"]).as_dict()
    # Şimşekli et al. treat the noise coordinates as i.i.d. samples of one α-stable law
    stable_alpha = alpha_stable_index(arrays["noise_coords"].reshape(-1))
    meta = {
        "task": cfg.task.get("_target_"),
        "data_source": info.data_source,
        "model_source": info.model_source,
        "embedded_data": info.embedded,
        "checkpoint": source,
        "reference_batches": args.reference_batches,
        "batches": args.batches,
        "reference_grad_norm": arrays["reference_norm"],
        "noise_norm_summary": summary,
        "noise_coords_stable_alpha": stable_alpha,
        "seconds": time.time() - t0,
    }
    atomic_write_json(out / "noise_probe.json", meta)
    print(json.dumps(meta, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
