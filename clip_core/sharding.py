"""Exact whole-model clipping statistics for sharded parameters (FSDP2 / DTensor), and ZeRO refusal.

With ``fully_shard`` (FSDP2) or tensor parallelism, each rank holds a slice of every parameter and
of its gradient as a ``DTensor``. The clipping statistic must still be that of the whole model:

* the squared norms of the local slices add up over the mesh to the squared norms of the whole
  tensors, so every norm the clipper needs (global, or one per tensor for ``layer_wise``) comes
  from **one** ``all_reduce`` of the vector of local squared norms (a device collective, no host
  read); ``coord_wise`` clips locally and all-reduces only the two norms of its telemetry;
* every rank then holds the same norms, so the ``auto`` history, the thresholds and the
  stochastic decisions (drawn from generators seeded alike on every rank) are identical, and
  equal to those of the unsharded model on the same global batch;
* the update runs on the local slices (``to_local()`` views of the parameters, gradients and
  optimizer state), so torch's fused SGD/AdamW kernels run on plain tensors, as without sharding.

Refused with a clear error: placements whose local values do not sum to the whole
(``Partial``), replication that differs between tensors (its weight would differ per tensor),
stochastic per-coordinate decisions (the draws of a shard are not those of the whole tensor),
and ``ZeroRedundancyOptimizer`` (each rank would clip its own partition).
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

Groups = list[tuple[dict[str, Any], list[torch.Tensor], list[torch.Tensor]]]


def is_sharded(t: torch.Tensor) -> bool:
    # Importing DTensor costs over a second (it pulls TorchDynamo); until something else imports
    # it, no tensor can be one. Also None when torch is built without distributed support.
    dtensor = getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)
    return dtensor is not None and isinstance(t, dtensor)


def _sums_exactly(placement: Any) -> bool:
    """Whether each element lives on exactly one rank along this mesh dimension, or is copied."""
    from torch.distributed.tensor.placement_types import _StridedShard

    return placement.is_shard() or placement.is_replicate() or isinstance(placement, _StridedShard)


class ShardedNorms:
    """The mesh of a list of DTensor parameters and how their local squared norms add up.

    Built by :func:`plan` at construction; :meth:`all_reduce` turns local squared norms into
    those of the whole tensors. Every tensor is copied on ``replicas`` ranks of the mesh (the
    product of its ``Replicate`` dimensions), the same for all, so the sum over the mesh is
    divided by it.
    """

    def __init__(self, params: list[torch.Tensor], owner: str) -> None:
        mesh = params[0].device_mesh
        for p in params:
            if p.device_mesh != mesh:
                raise ValueError(
                    f"{owner}: DTensor parameters on different device meshes ({mesh} and "
                    f"{p.device_mesh}); expected one mesh per optimizer"
                )
            bad = [pl for pl in p.placements if not _sums_exactly(pl)]
            if bad:
                raise ValueError(
                    f"Invalid placements: {p.placements}; {owner} needs Shard or Replicate "
                    "placements (a Partial tensor's local values do not add up to its norm)"
                )
        counts = {self._replicas(p) for p in params}
        if len(counts) > 1:
            raise ValueError(
                f"{owner}: parameters are replicated over different mesh dimensions "
                f"(copies per tensor: {sorted(counts)}); expected the same placements kind for "
                "every parameter (e.g. FSDP2 or HSDP), or one optimizer per placement kind"
            )
        self.mesh = mesh
        self.replicas = counts.pop()
        # one process group covering the whole mesh, so one all_reduce sums over every dimension
        self.group = mesh.get_group() if mesh.ndim == 1 else mesh._flatten().get_group()

    @staticmethod
    def _replicas(p: torch.Tensor) -> int:
        return math.prod(
            p.device_mesh.size(d) for d, pl in enumerate(p.placements) if pl.is_replicate()
        )

    def all_reduce(self, squares: torch.Tensor) -> torch.Tensor:
        """Sum local squared norms (any shape; summed elementwise) over the mesh, one collective."""
        if self.replicas != 1:
            squares = squares / self.replicas
        dist.all_reduce(squares, group=self.group)
        return squares

    def agree_on_seed(self, seed: int) -> int:
        """The seed of the mesh's first rank, so generators draw alike everywhere (construction only)."""
        box = [seed]
        dist.broadcast_object_list(box, group_src=0, group=self.group)
        return int(box[0])

    # -- the update on local slices -------------------------------------------------------------
    @staticmethod
    def localize(groups: Groups) -> Groups:
        """The same groups with parameters and gradients as their local slices (views)."""
        return [
            (group, [p.to_local() for p in params], [g.to_local() for g in grads])
            for group, params, grads in groups
        ]

    @staticmethod
    @contextlib.contextmanager
    def local_state(optimizer: torch.optim.Optimizer, sharded: Groups, local: Groups) -> Iterator:
        """Let the step rule see ``optimizer.state`` keyed by local slices, holding local views.

        State the step rule creates (or replaces) is stored back as DTensors shaped and placed
        like the parameter, so ``state_dict`` holds DTensors that checkpoint helpers can gather.
        """
        real = optimizer.state
        pairs = [
            (p, lp) for (_, ps, _), (_, lps, _) in zip(sharded, local) for p, lp in zip(ps, lps)
        ]
        views: dict[torch.Tensor, dict[str, Any]] = defaultdict(dict)
        for p, lp in pairs:
            views[lp] = {k: v.to_local() if is_sharded(v) else v for k, v in real[p].items()}
        before = {id(lp): dict(views[lp]) for _, lp in pairs}
        optimizer.state = views
        try:
            yield
        finally:
            optimizer.state = real
        for p, lp in pairs:
            for key, value in views[lp].items():
                if before[id(lp)].get(key) is value:
                    continue  # an existing view, updated in place
                if isinstance(value, torch.Tensor) and value.shape == lp.shape and value.dim():
                    from torch.distributed.tensor import DTensor  # imported: p is one

                    value = DTensor.from_local(
                        value, p.device_mesh, p.placements, shape=p.shape, stride=p.stride()
                    )
                real[p][key] = value


def plan(params: list[torch.Tensor], rule: Any, owner: str) -> ShardedNorms | None:
    """Check ``params`` at construction: ``None`` for plain tensors, else how to reduce their norms."""
    refuse_zero(owner)
    sharded = [p for p in params if is_sharded(p)]
    if not sharded:
        return None
    if len(sharded) != len(params):
        raise ValueError(
            f"{owner}: a mix of DTensor (sharded) and plain parameters; expected all parameters "
            "sharded (e.g. fully_shard on the root module too) or none"
        )
    if rule.granularity == "coordinate" and type(rule.decision).__name__ == "Stochastic":
        raise ValueError(
            f"{owner}: stochastic per-coordinate clipping is not supported with DTensor "
            "parameters (a shard's random draws are not those of the whole tensor); use a "
            "global or per-tensor rule"
        )
    return ShardedNorms(sharded, owner)


def refuse_zero(owner: str) -> None:
    """Refuse construction by ``ZeroRedundancyOptimizer``: each rank would clip its partition.

    ZeRO builds the wrapped optimizer on one rank's partition of the parameters, so the norm the
    optimizer sees is that partition's, not the model's; found from the constructing frame.
    """
    zero = sys.modules.get("torch.distributed.optim.zero_redundancy_optimizer")
    if zero is None:
        return
    frame = sys._getframe(1)
    for _ in range(8):  # ZeRO's __init__ -> _init_local_optimizer -> our constructor(s)
        frame = frame.f_back
        if frame is None:
            return
        if isinstance(frame.f_locals.get("self"), zero.ZeroRedundancyOptimizer):
            raise ValueError(
                f"{owner} cannot run inside ZeroRedundancyOptimizer: each rank would clip its "
                "own partition of the parameters with that partition's norm, not the model's. "
                "Use FSDP2 (fully_shard) for sharded optimizer state with exact global clipping, "
                "or DistributedDataParallel with the optimizer on every rank."
            )


# -- whole (unsharded) state dicts -----------------------------------------------------------------
def full_state_dict(optimizer: torch.optim.Optimizer, cpu: bool = True) -> dict[str, Any]:
    """``optimizer.state_dict()`` with every DTensor gathered whole (a collective: call on every
    rank), clip state included, e.g. for rank 0 to ``torch.save`` next to the model's
    ``get_model_state_dict(..., StateDictOptions(full_state_dict=True))``.

    torch's ``get_optimizer_state_dict`` keeps only ``state`` and ``param_groups``, which loses
    the clip state (history, generator, step counters); a clipped optimizer refuses to load it.
    """
    state = optimizer.state_dict()

    def whole(value: Any) -> Any:
        if is_sharded(value):
            value = value.full_tensor()
        elif isinstance(value, torch.Tensor):  # a snapshot, as the gathered tensors are
            value = value.clone()
        return value.cpu() if cpu and isinstance(value, torch.Tensor) else value

    state["state"] = {
        key: {name: whole(v) for name, v in entry.items()} for key, entry in state["state"].items()
    }
    return state


def load_full_state_dict(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> None:
    """Load a :func:`full_state_dict` (the same on every rank) into an optimizer over DTensor
    parameters: each rank keeps its slice of every whole per-parameter tensor (no collective)."""
    from torch.distributed.tensor import distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
    if len(saved_ids) != len(params):
        raise ValueError(
            f"Invalid state_dict: it holds {len(saved_ids)} parameters; this optimizer has "
            f"{len(params)}"
        )
    owners = dict(zip(saved_ids, params))
    state = {}
    for key, entry in state_dict["state"].items():
        p = owners[key]
        state[key] = {
            name: distribute_tensor(v.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
            if is_sharded(p) and isinstance(v, torch.Tensor) and v.shape == p.shape and v.dim()
            else v
            for name, v in entry.items()
        }
    optimizer.load_state_dict({**state_dict, "state": state})
