"""Node classification on Reddit with a GraphConv network, trained on sampled mini-batches.

Data: ``data_root`` -> the raw files of PyG's Reddit (``<data_root>/raw/*.npz``; they must already be
on disk; this task never downloads), read without pickles and cached as plain tensors under
``$TORCH_CLIP_CACHE`` (default ``~/.cache/torch-clip``), not in the data folder. ``data_root: null`` -> an embedded stochastic-block-model proxy graph
(classes = blocks, noisy class-dependent Gaussian features) generated from ``data_seed``.

Samplers (``sampler``):

* ``neighbor`` -- PyG's ``NeighborLoader`` (needs ``pyg-lib`` or ``torch-sparse``). Each step takes
  ``batch_size`` training seed nodes from an epoch permutation of the training nodes and samples
  ``num_neighbors[k]`` neighbours per node at hop ``k``. The loss is over the seeds.
* ``subgraph`` -- pure torch, GraphSAINT-style node sampler: each step takes ``batch_size`` nodes of
  the whole graph (a slice of an epoch permutation of all nodes, so every node is drawn once per
  epoch), builds the node-induced subgraph and trains on the training nodes inside it.
* ``auto`` -- ``neighbor`` when a backend is importable, else ``subgraph``.

So ``batch_size`` is the number of nodes a step is built from: training seeds (neighbor) or the
node budget of the subgraph (subgraph; its targets are ~ ``batch_size x`` training fraction).

Aggregation defaults to ``mean``: a mean over a random subset of neighbours estimates the
full-neighbourhood mean, so sampled training and full-graph evaluation see the same scale (a sum
would shrink with the sampling rate unless GraphSAINT's normalisation were added).

Evaluation is exact full-neighbourhood inference, done layer by layer with sparse matrix products
(no per-edge message tensor) and the last layer computed for the validation nodes only. On the
embedded graph this is plain full-graph inference; on real Reddit it needs a few GB of RAM
(the 114M-edge CSR) instead of the ~100 GB a per-edge message tensor of the full graph would take.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clip_core._validation import check_choice, check_int, check_number, check_path, invalid
from torch_clip.suite.checkpoint import safe_load
from torch_clip.suite.records import atomic_write_bytes
from torch_clip.tasks.base import Task, TaskInfo
from torch_clip.tasks.graph_sampling import (
    aggregation_matrix,
    block_sizes,
    induced_subgraph,
    neighbor_sampling_backend,
    rank_share,
    sbm_graph,
)
from torch_clip.tasks.sampling import batch_indices, num_batches

SAMPLERS = ("auto", "neighbor", "subgraph")
AGGRS = ("mean", "add")
REDDIT_RAW_FILES = ("reddit_data.npz", "reddit_graph.npz")
REDDIT_PROCESSED_FILE = "data.pt"


@dataclass
class GraphData:
    """A whole graph on the CPU: features, labels, edges and the node splits."""

    x: torch.Tensor
    y: torch.Tensor
    edge_index: torch.Tensor
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    test_idx: torch.Tensor
    num_classes: int

    @property
    def num_nodes(self) -> int:
        return self.x.size(0)


@dataclass
class GraphBatch:
    """One rank's share of a mini-batch.

    ``loss_scale`` turns the summed cross-entropy over ``target`` into this rank's loss:
    ``world_size / global number of targets``. Averaging the ranks' losses (and gradients, as DDP
    does) therefore gives exactly the mean loss over all targets of the global batch.
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor  # local node indices carrying this rank's loss
    loss_scale: float
    global_nodes: torch.Tensor  # global ids of the local nodes (for inspection and tests)

    def to(self, device: torch.device) -> GraphBatch:
        return GraphBatch(
            self.x.to(device),
            self.edge_index.to(device),
            self.y.to(device),
            self.target.to(device),
            self.loss_scale,
            self.global_nodes,
        )


# ------------------------------------------------------------------------------------------ data


def make_sbm_data(
    *,
    num_nodes: int,
    num_classes: int,
    p_in: float,
    p_out: float,
    feature_dim: int,
    feature_noise: float,
    train_fraction: float,
    val_fraction: float,
    seed: int,
) -> GraphData:
    """The embedded Reddit proxy: an SBM graph whose blocks are the classes, a pure function of seed.

    Features are a random unit-norm centre per class plus N(0, feature_noise²) noise per dimension,
    noisy enough that a node's own features are a weak signal and averaging over (mostly
    same-class) neighbours is what makes the task solvable.
    """
    gen = torch.Generator().manual_seed(seed)
    sizes = block_sizes(num_nodes, num_classes)
    y = torch.repeat_interleave(torch.arange(num_classes), torch.tensor(sizes))
    edge_index = sbm_graph(sizes, p_in, p_out, gen)
    centres = torch.randn(num_classes, feature_dim, generator=gen)
    centres = centres / centres.norm(dim=1, keepdim=True)
    x = centres[y] + feature_noise * torch.randn(num_nodes, feature_dim, generator=gen)
    perm = torch.randperm(num_nodes, generator=gen)
    n_train, n_val = int(train_fraction * num_nodes), int(val_fraction * num_nodes)
    return GraphData(
        x=x,
        y=y,
        edge_index=edge_index,
        train_idx=perm[:n_train].sort().values,
        val_idx=perm[n_train : n_train + n_val].sort().values,
        test_idx=perm[n_train + n_val :].sort().values,
        num_classes=num_classes,
    )


def cache_dir() -> Path:
    """Where the suite keeps what it derives from data on disk: ``$TORCH_CLIP_CACHE`` or
    ``~/.cache/torch-clip``, never the user's data folder."""
    return Path(os.environ.get("TORCH_CLIP_CACHE", "~/.cache/torch-clip")).expanduser()


def _cache_path(raw_paths: Sequence[str]) -> Path:
    """The cache file of these raw files: a new one whenever a file moves or changes."""
    key = hashlib.sha256()
    for path in raw_paths:
        stat = os.stat(path)
        key.update(f"{os.path.realpath(path)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return cache_dir() / "reddit" / f"{key.hexdigest()[:16]}.pt"


def _read_npz(path: str) -> Any:
    """``np.load`` without pickles, an unreadable file named in one line."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"Reddit raw file {path} is not a readable .npz without pickles ({exc}); expected "
            "the contents of https://data.dgl.ai/dataset/reddit.zip"
        ) from None


def _graph_from_raw(data_path: str, graph_path: str) -> dict[str, torch.Tensor]:
    """What PyG's ``Reddit.process`` builds from the two raw files, as plain tensors."""
    from torch_geometric.utils import coalesce

    data, graph = _read_npz(data_path), _read_npz(graph_path)
    try:
        feature, label, split = data["feature"], data["label"], data["node_types"]
        row, col = graph["row"], graph["col"]
    except KeyError as exc:
        raise ValueError(
            f"Reddit raw files {data_path} and {graph_path} lack the array {exc}; expected "
            "feature/label/node_types and a scipy COO adjacency (row/col)"
        ) from None
    x = torch.from_numpy(feature).float()
    edge_index = torch.stack([torch.from_numpy(row).long(), torch.from_numpy(col).long()])
    split = torch.from_numpy(split)
    return {
        "x": x,
        "y": torch.from_numpy(label).long(),
        "edge_index": coalesce(edge_index, num_nodes=x.size(0)),
        "train_mask": split == 1,
        "val_mask": split == 2,
        "test_mask": split == 3,
    }


def _cached_graph(raw_paths: Sequence[str]) -> dict[str, torch.Tensor]:
    """The tensors of the raw files, from the suite's cache (a safe load) or built and cached."""
    cache = _cache_path(raw_paths)
    if cache.exists():
        return safe_load(cache, "Reddit cache", f"Delete {cache} to rebuild it from the raw files.")
    tensors = _graph_from_raw(*raw_paths)
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    atomic_write_bytes(cache, buffer.getvalue())
    return tensors


def _missing_reddit(root: str, raw_dir: str, processed_only: bool) -> FileNotFoundError:
    hint = ""
    if all(os.path.isfile(os.path.join(root, f)) for f in REDDIT_RAW_FILES):
        hint = f" (they are directly in {root}: move them into {raw_dir})"
    if processed_only:
        hint = (
            " (only PyG's processed cache is there: this task does not load it, as PyG's loader "
            "can fall back to unpickling code; it reads the raw files and caches them itself)"
        )
    return FileNotFoundError(
        f"Reddit dataset not found at data_root={root}: expected "
        f"{os.path.join(raw_dir, REDDIT_RAW_FILES[0])} and "
        f"{os.path.join(raw_dir, REDDIT_RAW_FILES[1])} (the contents of "
        f"https://data.dgl.ai/dataset/reddit.zip){hint}. "
        "This task never downloads; fetch the files yourself or set task.data_root=null "
        "for the embedded proxy graph."
    )


def load_reddit(root: str | os.PathLike) -> GraphData:
    """Load Reddit from ``root/raw/*.npz`` (PyG's layout), no download; the tensors are cached
    under :func:`cache_dir`, never in ``root``."""
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    raw_dir = os.path.join(root, "raw")
    raw_paths = [os.path.join(raw_dir, f) for f in REDDIT_RAW_FILES]
    if not all(os.path.isfile(p) for p in raw_paths):
        processed = os.path.join(root, "processed", REDDIT_PROCESSED_FILE)
        raise _missing_reddit(root, raw_dir, os.path.isfile(processed))
    data = _cached_graph(raw_paths)
    for key in ("x", "y", "edge_index", "train_mask", "val_mask", "test_mask"):
        if not isinstance(data, dict) or not isinstance(data.get(key), torch.Tensor):
            raise ValueError(f"Reddit data at {root} has no '{key}' field")
    return GraphData(
        x=data["x"].float(),
        y=data["y"].long(),
        edge_index=data["edge_index"],
        train_idx=data["train_mask"].nonzero().view(-1),
        val_idx=data["val_mask"].nonzero().view(-1),
        test_idx=data["test_mask"].nonzero().view(-1),
        num_classes=int(data["y"].max()) + 1,
    )


# ----------------------------------------------------------------------------------------- model


class GraphConvNet(nn.Module):
    """``num_layers`` GraphConv layers with ReLU and dropout between them."""

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int,
        dropout: float,
        aggr: str,
    ) -> None:
        super().__init__()
        from torch_geometric.nn import GraphConv  # PyG's import takes seconds: only when used

        dims = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.convs = nn.ModuleList(
            GraphConv(dims[i], dims[i + 1], aggr=aggr) for i in range(num_layers)
        )
        self.dropout = dropout

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x, edge_index)
            if i < len(self.convs) - 1:
                x = F.dropout(F.relu(x), p=self.dropout, training=self.training)
        return x

    @torch.no_grad()
    def layerwise_inference(
        self,
        x: torch.Tensor,
        adj_all: torch.Tensor | None,
        adj_out: torch.Tensor,
        out_nodes: torch.Tensor,
    ) -> torch.Tensor:
        """Exact eval-mode logits of ``out_nodes`` using full neighbourhoods.

        ``adj_all``/``adj_out`` are aggregation matrices (see ``aggregation_matrix``) for all nodes
        and for ``out_nodes``. GraphConv computes ``lin_rel(aggr_j x_j) + lin_root(x_i)``; the
        aggregation is a sparse product here, and the last layer is only needed for ``out_nodes``.
        """
        h = x
        for conv in self.convs[:-1]:
            h = F.relu(conv.lin_rel(_aggregate(adj_all, h)) + conv.lin_root(h))
        last = self.convs[-1]
        return last.lin_rel(_aggregate(adj_out, h)) + last.lin_root(h[out_nodes])


def _aggregate(adj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``adj @ h`` in float32 outside autocast: torch has no bfloat16 sparse CSR product on the
    CPU, and under ``trainer.precision=bf16-mixed`` the linear layers hand back bfloat16."""
    with torch.autocast(h.device.type, enabled=False):
        return adj @ h.float()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy as a 0-d tensor (0 for an empty batch, not NaN)."""
    correct = (logits.argmax(dim=-1) == labels).sum()
    return correct / max(labels.numel(), 1)


def _neighbor_counts(num_neighbors: Any) -> list[int]:
    """``num_neighbors`` as a list of integers > 0 or -1 (all neighbours), else one clear error."""
    # Hydra passes a ListConfig, which is no typing.Sequence: any iterable but a string
    neighbors = None
    if not isinstance(num_neighbors, str | bytes):
        with contextlib.suppress(TypeError):
            neighbors = list(num_neighbors)
    if neighbors is None or not all(
        isinstance(k, int) and not isinstance(k, bool) and (k > 0 or k == -1) for k in neighbors
    ):
        raise invalid(
            "task.num_neighbors", num_neighbors, "a list of integers > 0 or -1 (all neighbours)"
        )
    return [int(k) for k in neighbors]


# ------------------------------------------------------------------------------------------ task


class RedditTask(Task):
    """GraphConv node classification on Reddit (or its embedded SBM proxy). See module docstring."""

    name = "reddit"
    metric_names = ("accuracy",)
    primary_metric = "accuracy"

    def __init__(
        self,
        data_root: str | None = None,
        sampler: str = "auto",
        batch_size: int = 1000,
        num_neighbors: Sequence[int] = (10, 10),
        hidden_channels: int = 64,
        num_layers: int = 2,
        dropout: float = 0.5,
        aggr: str = "mean",
        # embedded proxy graph (ignored when data_root is set)
        num_nodes: int = 4000,
        num_classes: int = 10,
        p_in: float = 0.04,
        p_out: float = 0.004,
        feature_dim: int = 32,
        feature_noise: float = 1.0,
        train_fraction: float = 0.6,
        val_fraction: float = 0.2,
        data_seed: int = 0,
    ) -> None:
        self.data_root = check_path("task.data_root", data_root, optional=True)
        check_choice("task.sampler", sampler, SAMPLERS)
        self._set_model(aggr, batch_size, num_neighbors, hidden_channels, num_layers, dropout)
        self._set_proxy_graph(num_nodes, num_classes, p_in, p_out, feature_dim, feature_noise)
        self._set_splits(train_fraction, val_fraction, data_seed)
        self._set_sampler(sampler)
        self.device = torch.device("cpu")
        self.data: GraphData | None = None
        self._loader = None

    def _set_model(
        self,
        aggr: str,
        batch_size: int,
        num_neighbors: Sequence[int],
        hidden_channels: int,
        num_layers: int,
        dropout: float,
    ) -> None:
        """Check and keep the network's and the sampler's sizes."""
        if aggr not in AGGRS:
            raise invalid(
                "task.aggr",
                aggr,
                f"one of {', '.join(AGGRS)} (linear aggregations, needed for sparse layer-wise "
                "inference)",
            )
        self.aggr = aggr
        self.batch_size = check_int("task.batch_size", batch_size, 1)
        self.hidden_channels = check_int("task.hidden_channels", hidden_channels, 1)
        self.num_layers = check_int("task.num_layers", num_layers, 1)
        self.num_neighbors = _neighbor_counts(num_neighbors)
        self.dropout = float(check_number("task.dropout", dropout, 0, 1, high_open=True))

    def _set_proxy_graph(
        self,
        num_nodes: int,
        num_classes: int,
        p_in: float,
        p_out: float,
        feature_dim: int,
        feature_noise: float,
    ) -> None:
        """Check and keep the embedded stochastic-block-model graph's parameters."""
        self.num_classes = check_int("task.num_classes", num_classes, 2)
        self.num_nodes = check_int("task.num_nodes", num_nodes, 1)
        if num_nodes < 2 * num_classes:
            raise invalid(
                "task.num_nodes",
                num_nodes,
                f"an integer >= 2 * task.num_classes = {2 * num_classes}",
            )
        self.p_in = float(check_number("task.p_in", p_in, 0, 1))
        self.p_out = float(check_number("task.p_out", p_out, 0, 1))
        self.feature_dim = check_int("task.feature_dim", feature_dim, 1)
        self.feature_noise = float(check_number("task.feature_noise", feature_noise, 0))

    def _set_splits(self, train_fraction: float, val_fraction: float, data_seed: int) -> None:
        """Check and keep the proxy graph's training and validation fractions, and its seed."""
        fraction = check_number("task.train_fraction", train_fraction, 0, 1, low_open=True)
        self.train_fraction = float(fraction)
        fraction = check_number("task.val_fraction", val_fraction, 0, 1, low_open=True)
        self.val_fraction = float(fraction)
        if self.train_fraction + self.val_fraction > 1.0:  # both splits must fit in the nodes
            rest = 1 - self.train_fraction
            raise invalid(
                "task.val_fraction", val_fraction, f"a value <= 1 - task.train_fraction = {rest:g}"
            )
        self.data_seed = check_int("task.data_seed", data_seed, 0)

    def _set_sampler(self, sampler: str) -> None:
        """Resolve the sampler now, so a missing backend fails before minutes of data loading."""
        backend = neighbor_sampling_backend()
        if sampler == "neighbor" and backend is None:
            raise ImportError(
                "sampler='neighbor' uses torch_geometric.loader.NeighborLoader, which needs "
                "'pyg-lib' or 'torch-sparse' (neither is importable). Install one of them "
                "(wheels at https://data.pyg.org/whl/) or use sampler=subgraph / sampler=auto."
            )
        self.sampler = sampler if sampler != "auto" else ("neighbor" if backend else "subgraph")
        self.sampler_backend = backend if self.sampler == "neighbor" else "torch_geometric.utils"
        if self.sampler == "neighbor" and len(self.num_neighbors) != self.num_layers:
            raise invalid(
                "task.num_neighbors",
                self.num_neighbors,
                f"one entry per layer (task.num_layers={self.num_layers})",
            )

    # -------------------------------------------------------------------------------- set-up

    def setup(self, device: torch.device, seed: int) -> TaskInfo:
        self.device = torch.device(device)
        self.data = self._load_data()
        self._build_model(self.data, seed)
        self._build_evaluation(self.data)
        sampler_desc = self._build_sampler(self.data)
        return self._info(self.data, sampler_desc)

    def _load_data(self) -> GraphData:
        """The embedded proxy graph, or Reddit from ``data_root``."""
        if self.data_root is not None:
            return load_reddit(self.data_root)
        return make_sbm_data(
            num_nodes=self.num_nodes,
            num_classes=self.num_classes,
            p_in=self.p_in,
            p_out=self.p_out,
            feature_dim=self.feature_dim,
            feature_noise=self.feature_noise,
            train_fraction=self.train_fraction,
            val_fraction=self.val_fraction,
            seed=self.data_seed,
        )

    def _build_model(self, data: GraphData, seed: int) -> None:
        # Model init from `seed` without disturbing (or depending on) the global RNG stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = GraphConvNet(
                data.x.size(1),
                self.hidden_channels,
                data.num_classes,
                self.num_layers,
                self.dropout,
                self.aggr,
            ).to(self.device)

    def _build_evaluation(self, data: GraphData) -> None:
        """Evaluation structures (see module docstring): built once, kept on the device."""
        self._eval_x = data.x.to(self.device)
        self._eval_y = data.y[data.val_idx].to(self.device)
        self._eval_nodes = data.val_idx.to(self.device)
        self._adj_all = (
            aggregation_matrix(data.edge_index, data.num_nodes, self.aggr).to(self.device)
            if self.num_layers > 1
            else None
        )
        self._adj_val = aggregation_matrix(
            data.edge_index, data.num_nodes, self.aggr, rows=data.val_idx
        ).to(self.device)

    def _build_sampler(self, data: GraphData) -> str:
        """Build PyG's ``NeighborLoader`` if that is the sampler; what samples, for the record."""
        if self.sampler != "neighbor":
            return (
                f"node-induced random subgraphs of {self.batch_size} nodes "
                "(GraphSAINT-style node sampler, pure torch)"
            )
        from torch_geometric.data import Data
        from torch_geometric.loader import NeighborLoader

        graph = Data(x=data.x, y=data.y, edge_index=data.edge_index, num_nodes=data.num_nodes)
        # Built once (the CSC conversion of 114M edges is expensive); batches are then drawn
        # by index through `loader(positions)`, which is what makes start=k cheap.
        self._loader = NeighborLoader(
            graph,
            num_neighbors=self.num_neighbors,
            input_nodes=data.train_idx,
            batch_size=self.batch_size,
            filter_per_worker=False,
        )
        return f"NeighborLoader {self.num_neighbors} via {self.sampler_backend}"

    def _info(self, data: GraphData, sampler_desc: str) -> TaskInfo:
        num_edges = data.edge_index.size(1)
        if self.data_root is None:
            source = (
                f"embedded: stochastic block model, {data.num_nodes} nodes, "
                f"{data.num_classes} classes (Reddit proxy); sampler: {sampler_desc}"
            )
        else:
            source = (
                f"Reddit (PyG) at {self.data_root}, {data.num_nodes} nodes, {num_edges} edges, "
                f"{data.num_classes} classes; sampler: {sampler_desc}"
            )
        return TaskInfo(
            data_source=source,
            model_source=(
                f"GraphConv x{self.num_layers} (hidden {self.hidden_channels}, aggr "
                f"{self.aggr}, dropout {self.dropout}), random init"
            ),
            num_train=int(data.train_idx.numel()),
            num_val=int(data.val_idx.numel()),
            embedded=self.data_root is None,
            extra={
                "sampler": self.sampler,
                "sampler_backend": self.sampler_backend,
                "batch_size_means": "training seed nodes per step"
                if self.sampler == "neighbor"
                else "nodes per sampled subgraph (targets = its training nodes)",
                "num_nodes": data.num_nodes,
                "num_edges": num_edges,
                "num_classes": data.num_classes,
                "num_test": int(data.test_idx.numel()),
                "evaluation": "exact full-neighbourhood inference, layer-wise sparse matmul",
            },
        )

    # ------------------------------------------------------------------------------- batches

    def _require_setup(self) -> GraphData:
        if self.data is None:
            raise RuntimeError("RedditTask.setup(device, seed) must be called first")
        return self.data

    def steps_per_epoch(self, world_size: int = 1) -> int:
        data = self._require_setup()
        if self.sampler == "neighbor":  # one pass over the training seeds
            return num_batches(data.train_idx.numel(), self.batch_size)
        return num_batches(data.num_nodes, self.batch_size)  # every node drawn once per epoch

    @staticmethod
    def _batch_seed(seed: int, epoch: int, index: int, rank: int) -> int:
        return (((seed * 1_000_003 + epoch) * 1_000_003 + index) * 1009 + rank) % (2**63)

    def train_batches(
        self, epoch: int, start: int = 0, *, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[GraphBatch]:
        data = self._require_setup()
        check_int("rank", rank, 0, world_size - 1)
        if self.sampler == "neighbor":
            yield from self._neighbor_batches(data, epoch, start, seed, rank, world_size)
        else:
            yield from self._subgraph_batches(data, epoch, start, seed, rank, world_size)

    def _subgraph_batches(
        self, data: GraphData, epoch: int, start: int, seed: int, rank: int, world_size: int
    ) -> Iterator[GraphBatch]:
        # Every rank builds the same global subgraph (slice b of the epoch permutation of all
        # nodes) and takes a disjoint share of its training nodes as loss targets.
        is_train = torch.zeros(data.num_nodes, dtype=torch.bool)
        is_train[data.train_idx] = True
        for nodes in batch_indices(
            data.num_nodes, self.batch_size, seed=seed, epoch=epoch, start=start
        ):
            edge_index = induced_subgraph(nodes, data.edge_index, data.num_nodes)
            targets = is_train[nodes].nonzero().view(-1)
            batch = GraphBatch(
                x=data.x[nodes],
                edge_index=edge_index,
                y=data.y[nodes],
                target=rank_share(targets, rank, world_size),
                loss_scale=world_size / max(targets.numel(), 1),
                global_nodes=nodes,
            )
            yield batch.to(self.device)

    def _neighbor_batches(
        self, data: GraphData, epoch: int, start: int, seed: int, rank: int, world_size: int
    ) -> Iterator[GraphBatch]:
        # Seeds: this rank's equal share of global batch b of the training-node permutation. Each
        # rank samples its seeds' neighbourhoods with the torch RNG seeded from
        # (seed, epoch, b, rank): pyg-lib draws from torch's default CPU generator, so a batch is
        # reproducible on its own (start=k needs no replay) and the global RNG is left untouched.
        positions_iter = batch_indices(
            data.train_idx.numel(),
            self.batch_size,
            seed=seed,
            epoch=epoch,
            start=start,
            rank=rank,
            world_size=world_size,
        )
        for b, positions in enumerate(positions_iter, start=start):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self._batch_seed(seed, epoch, b, rank))
                sub = self._loader(positions)
            n_seeds = positions.numel()
            batch = GraphBatch(
                x=sub.x,
                edge_index=sub.edge_index,
                y=sub.y,
                target=torch.arange(n_seeds),  # NeighborLoader puts the seeds first
                loss_scale=1.0 / n_seeds,  # equal shares: the mean over ranks is the global mean
                global_nodes=sub.n_id,
            )
            yield batch.to(self.device)

    # ------------------------------------------------------------------------- loss and eval

    def loss(self, batch: GraphBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.model(batch.x, batch.edge_index)[batch.target]
        labels = batch.y[batch.target]
        loss = F.cross_entropy(logits, labels, reduction="sum") * batch.loss_scale
        return loss, {"accuracy": accuracy(logits.detach(), labels)}

    def evaluate(self) -> dict[str, float]:
        self._require_setup()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                logits = self.model.layerwise_inference(
                    self._eval_x, self._adj_all, self._adj_val, self._eval_nodes
                )
                acc = accuracy(logits, self._eval_y)
                loss = F.cross_entropy(logits, self._eval_y)
        finally:
            self.model.train(was_training)
        return {"accuracy": float(acc), "loss": float(loss)}
