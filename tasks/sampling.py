"""Deterministic, resumable mini-batch index streams shared by the map-style tasks."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def epoch_permutation(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of ``num_items`` for one epoch, a pure function of ``(seed, epoch)``."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=gen)


def num_batches(num_items: int, batch_size: int) -> int:
    """Full batches per epoch (the ragged tail is dropped so every step sees ``batch_size`` items)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    return max(1, num_items // batch_size)


def batch_indices(
    num_items: int,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    start: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[torch.Tensor]:
    """Yield index tensors of each global batch from batch ``start`` on, this rank's share only.

    The global batch is split into ``world_size`` equal contiguous slices so that data-parallel
    training on ``world_size`` ranks averages to the same gradient as one process on the global batch.
    """
    if batch_size % world_size:
        raise ValueError(
            f"batch_size={batch_size} must be divisible by the number of processes ({world_size})"
        )
    perm = epoch_permutation(num_items, seed, epoch)
    per_rank = batch_size // world_size
    if num_items < batch_size:  # tiny data: one batch of everything (with repetition avoided)
        perm = perm[: (num_items // world_size) * world_size]
        per_rank = len(perm) // world_size
        batch_size = per_rank * world_size
    for b in range(start, num_batches(len(perm), batch_size)):
        batch = perm[b * batch_size : (b + 1) * batch_size]
        yield batch[rank * per_rank : (rank + 1) * per_rank]
