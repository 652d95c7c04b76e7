"""Tests for tasks/reddit.py and tasks/graph_sampling.py (embedded SBM proxy, samplers, loaders)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_geometric.data.download as pyg_download
import torch_geometric.datasets.reddit as pyg_reddit
import torch_geometric.typing as pyg_typing

from torch_clip.tasks import graph_sampling
from torch_clip.tasks.reddit import GraphBatch, RedditTask, accuracy, load_reddit, make_sbm_data

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors (see tests/conftest.py)

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[2]
SMALL = {
    "sampler": "subgraph",
    "num_nodes": 600,
    "num_classes": 6,
    "p_in": 0.1,
    "p_out": 0.01,
    "batch_size": 200,
}


def small_task(**kw) -> RedditTask:
    task = RedditTask(**{**SMALL, **kw})
    task.setup(CPU, seed=0)
    return task


def edge_set(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, edge_index.t().tolist()))


# ------------------------------------------------------------------------------ embedded graph


def test_sbm_data_is_deterministic_per_seed():
    kw = dict(
        num_nodes=500,
        num_classes=5,
        p_in=0.1,
        p_out=0.01,
        feature_dim=8,
        feature_noise=1.5,
        train_fraction=0.6,
        val_fraction=0.2,
    )
    a, b, c = make_sbm_data(seed=3, **kw), make_sbm_data(seed=3, **kw), make_sbm_data(seed=4, **kw)
    for field in ("x", "y", "edge_index", "train_idx", "val_idx", "test_idx"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert not torch.equal(a.x, c.x)
    assert edge_set(a.edge_index) != edge_set(c.edge_index)
    # the splits partition the nodes
    split = torch.cat([a.train_idx, a.val_idx, a.test_idx]).sort().values
    assert torch.equal(split, torch.arange(500))
    assert (a.train_idx.numel(), a.val_idx.numel()) == (300, 100)


def test_sbm_edge_density_matches_probabilities():
    sizes, p_in, p_out = [300, 300, 250, 250], 0.05, 0.01
    edge_index = graph_sampling.sbm_graph(sizes, p_in, p_out, torch.Generator().manual_seed(0))
    src, dst = edge_index.numpy()
    block = np.repeat(np.arange(len(sizes)), sizes)
    assert not np.any(src == dst), "self-loops"
    pairs = set(zip(src.tolist(), dst.tolist()))
    assert all((v, u) in pairs for u, v in pairs), "graph must be undirected (both directions)"
    assert len(pairs) == src.size, "duplicate edges"
    upper = src < dst  # each unordered pair once
    same = block[src[upper]] == block[dst[upper]]
    n = np.array(sizes)
    within_pairs = int((n * (n - 1) // 2).sum())
    between_pairs = int(n.sum() * (n.sum() - 1) // 2) - within_pairs
    for count, num_pairs, p in (
        (int(same.sum()), within_pairs, p_in),
        (int((~same).sum()), between_pairs, p_out),
    ):
        sd = np.sqrt(num_pairs * p * (1 - p))
        assert abs(count - num_pairs * p) < 5 * sd, (count, num_pairs * p, sd)


def test_embedded_task_info_and_graph_structure_matters():
    task = RedditTask(**SMALL)
    info = task.setup(CPU, seed=0)
    assert info.embedded
    expected = "embedded: stochastic block model, 600 nodes, 6 classes (Reddit proxy)"
    assert expected in info.data_source
    assert "sampler:" in info.data_source
    assert info.extra["sampler"] == "subgraph"
    assert info.num_train == task.data.train_idx.numel() and info.num_val == 120
    # homophily: most edges join nodes of the same class, but not all
    y, (src, dst) = task.data.y, task.data.edge_index
    same = (y[src] == y[dst]).float().mean().item()
    assert 0.5 < same < 0.95


# ------------------------------------------------------------------------------------ samplers


def test_induced_subgraph_against_independent_set_computation():
    data = make_sbm_data(
        num_nodes=400,
        num_classes=4,
        p_in=0.1,
        p_out=0.02,
        feature_dim=4,
        feature_noise=1.0,
        train_fraction=0.5,
        val_fraction=0.2,
        seed=1,
    )
    nodes = torch.randperm(400, generator=torch.Generator().manual_seed(5))[:150]
    local = graph_sampling.induced_subgraph(nodes, data.edge_index, 400)
    as_global = edge_set(nodes[local])
    chosen = set(nodes.tolist())
    expected = {(u, v) for u, v in edge_set(data.edge_index) if u in chosen and v in chosen}
    assert as_global == expected
    assert len(expected) > 100
    assert local.max() < 150


def test_accuracy_matches_numpy():
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(257, 7, generator=gen), torch.randint(0, 7, (257,), generator=gen)
    expected = float(np.mean(np.argmax(logits.numpy(), axis=1) == labels.numpy()))
    got = accuracy(logits, labels)
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected)
    assert accuracy(logits[:0], labels[:0]).item() == 0.0  # empty batch: 0, not NaN


def batch_key(b: GraphBatch) -> tuple:
    return (b.global_nodes.tolist(), b.edge_index.tolist(), b.target.tolist())


def test_train_batches_are_deterministic_and_resumable():
    task = small_task()
    assert task.steps_per_epoch() == 3  # 600 nodes / 200 per subgraph
    first = [batch_key(b) for b in task.train_batches(0, seed=7)]
    again = [batch_key(b) for b in task.train_batches(0, seed=7)]
    assert len(first) == 3 and first == again
    assert [batch_key(b) for b in task.train_batches(0, 2, seed=7)] == first[2:]
    assert [batch_key(b) for b in task.train_batches(1, seed=7)] != first
    assert [batch_key(b) for b in task.train_batches(0, seed=8)] != first
    # one epoch draws every node exactly once; targets are exactly the training nodes inside
    nodes = torch.cat([b.global_nodes for b in task.train_batches(0, seed=7)])
    assert torch.equal(nodes.sort().values, torch.arange(600))
    train = set(task.data.train_idx.tolist())
    for b in task.train_batches(0, seed=7):
        inside = {n for n in b.global_nodes.tolist() if n in train}
        assert set(b.global_nodes[b.target].tolist()) == inside


def test_ranks_split_targets_and_average_to_the_global_loss():
    task = small_task(dropout=0.0)
    single = list(task.train_batches(1, seed=3))
    ranks = [list(task.train_batches(1, seed=3, rank=r, world_size=2)) for r in range(2)]
    task.model.eval()
    for b, (r0, r1) in zip(single, zip(*ranks)):
        assert torch.equal(r0.global_nodes, b.global_nodes)
        assert torch.equal(r1.global_nodes, b.global_nodes)
        t0, t1 = set(r0.target.tolist()), set(r1.target.tolist())
        assert not t0 & t1 and t0 | t1 == set(b.target.tolist())
        assert abs(len(t0) - len(t1)) <= 1
        with torch.no_grad():
            mean_over_ranks = (task.loss(r0)[0] + task.loss(r1)[0]) / 2
            assert mean_over_ranks.item() == pytest.approx(task.loss(b)[0].item(), rel=1e-5)
    with pytest.raises(ValueError, match="rank"):
        next(task.train_batches(0, seed=0, rank=2, world_size=2))


def test_loss_returns_device_tensors_and_optimizer_steps_reduce_it():
    task = small_task(dropout=0.0)
    batch = next(task.train_batches(0, seed=0))
    loss, metrics = task.loss(batch)
    assert loss.dim() == 0 and metrics["accuracy"].dim() == 0
    opt = torch.optim.Adam(task.model.parameters(), lr=0.01)
    losses = []
    for _ in range(15):
        loss, _ = task.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_layerwise_evaluation_equals_full_graph_forward():
    for num_layers, aggr in ((2, "mean"), (3, "add"), (1, "mean")):
        task = small_task(num_layers=num_layers, aggr=aggr, num_neighbors=[5] * num_layers)
        data = task.data
        task.model.train()
        result = task.evaluate()
        assert task.model.training  # restored
        task.model.eval()
        with torch.no_grad():
            logits = task.model(data.x, data.edge_index)[data.val_idx]
        expected = float(np.mean(logits.argmax(1).numpy() == data.y[data.val_idx].numpy()))
        assert result["accuracy"] == pytest.approx(expected)
        z = logits.double().numpy()  # cross-entropy by hand: log-sum-exp minus the true logit
        y = data.y[data.val_idx].numpy()
        top = z.max(1)
        nll = top + np.log(np.exp(z - top[:, None]).sum(1)) - z[np.arange(len(y)), y]
        assert result["loss"] == pytest.approx(nll.mean(), rel=1e-4)
        lw = task.model.layerwise_inference(
            task._eval_x, task._adj_all, task._adj_val, task._eval_nodes
        )
        torch.testing.assert_close(lw, logits, rtol=1e-4, atol=1e-4)
        task.evaluate()
        assert not task.model.training  # eval mode stays eval


# --------------------------------------------------------------------------- neighbour sampler


def test_neighbor_sampler_without_backend_raises_naming_packages(monkeypatch):
    monkeypatch.setattr(pyg_typing, "WITH_PYG_LIB", False)
    monkeypatch.setattr(pyg_typing, "WITH_TORCH_SPARSE", False)
    with pytest.raises(ImportError, match=r"pyg-lib.*torch-sparse"):
        RedditTask(sampler="neighbor")
    assert RedditTask(sampler="auto").sampler == "subgraph"


def fake_neighbor_sample(colptr, row, seed, num_neighbors, replace, directed):
    """Stand-in for torch_sparse.neighbor_sample (same outputs; draws from the torch RNG like pyg-lib)."""
    nodes = seed.tolist()
    local = {n: i for i, n in enumerate(nodes)}
    rows, cols, edges = [], [], []
    begin, end = 0, len(nodes)
    for k in num_neighbors:
        for i in range(begin, end):
            s, e = int(colptr[nodes[i]]), int(colptr[nodes[i] + 1])
            picks = range(s, e) if k < 0 or k >= e - s else (s + torch.randperm(e - s)[:k]).tolist()
            for off in picks:
                v = int(row[off])
                if v not in local:
                    local[v] = len(nodes)
                    nodes.append(v)
                rows.append(local[v])
                cols.append(i)
                edges.append(off)
        begin, end = end, len(nodes)

    def t(a):
        return torch.tensor(a, dtype=torch.long)

    return t(nodes), t(rows), t(cols), t(edges)


@pytest.mark.filterwarnings("ignore:Using 'NeighborSampler' without a 'pyg-lib':UserWarning")
def test_neighbor_sampler_path_with_simulated_backend(monkeypatch):
    if graph_sampling.neighbor_sampling_backend() is None:  # simulate torch-sparse
        monkeypatch.setattr(pyg_typing, "WITH_TORCH_SPARSE", True)
        monkeypatch.setattr(
            torch.ops.torch_sparse, "neighbor_sample", fake_neighbor_sample, raising=False
        )
    task = RedditTask(**{**SMALL, "sampler": "neighbor", "batch_size": 40, "num_neighbors": [4, 3]})
    info = task.setup(CPU, seed=0)
    assert info.extra["sampler"] == "neighbor" and "NeighborLoader [4, 3]" in info.data_source
    n_train = task.data.train_idx.numel()
    assert task.steps_per_epoch() == n_train // 40
    full_edges = edge_set(task.data.edge_index)
    batches = list(task.train_batches(0, seed=1))
    assert len(batches) == n_train // 40
    seeds = torch.cat([b.global_nodes[b.target] for b in batches])
    assert len(set(seeds.tolist())) == seeds.numel()  # no training seed twice per epoch
    assert set(seeds.tolist()) <= set(task.data.train_idx.tolist())
    for b in batches[:3]:
        assert torch.equal(b.target, torch.arange(40))
        assert edge_set(b.global_nodes[b.edge_index]) <= full_edges
        # hop 1 samples at most 4 neighbours per seed
        into_seeds = b.edge_index[1] < 40
        assert torch.bincount(b.edge_index[1][into_seeds], minlength=40).max() <= 4
    # deterministic, resumable, and independent of the global RNG state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        again = list(task.train_batches(0, 2, seed=1))
    assert [batch_key(b) for b in again] == [batch_key(b) for b in batches[2:]]
    ranks = [list(task.train_batches(0, seed=1, rank=r, world_size=2)) for r in range(2)]
    for b, r0, r1 in zip(batches, *ranks):
        halves = torch.cat([r0.global_nodes[r0.target], r1.global_nodes[r1.target]])
        assert torch.equal(halves, b.global_nodes[b.target])
    loss, metrics = task.loss(batches[0])
    assert torch.isfinite(loss) and metrics["accuracy"].dim() == 0


# ------------------------------------------------------------------------------- real Reddit


@pytest.fixture
def no_download(monkeypatch):
    def fail(*args, **kwargs):
        pytest.fail(f"download attempted: {args}")

    monkeypatch.setattr(pyg_download, "download_url", fail)
    monkeypatch.setattr(pyg_reddit, "download_url", fail)
    monkeypatch.setattr(urllib.request, "urlopen", fail)


@pytest.mark.parametrize("layout", ["missing", "empty", "raw_half", "files_in_root"])
def test_missing_reddit_files_raise_without_download(tmp_path, no_download, layout):
    root = tmp_path / "reddit"
    if layout != "missing":
        root.mkdir()
    if layout == "raw_half":
        (root / "raw").mkdir()
        (root / "raw" / "reddit_data.npz").write_bytes(b"")
    if layout == "files_in_root":
        for name in ("reddit_data.npz", "reddit_graph.npz"):
            (root / name).write_bytes(b"")
    task = RedditTask(data_root=str(root))
    with pytest.raises(FileNotFoundError) as err:
        task.setup(CPU, seed=0)
    msg = str(err.value)
    assert str(root / "raw" / "reddit_graph.npz") in msg
    if layout == "files_in_root":
        assert "move them into" in msg
    assert not (root / "processed").exists()


def write_fake_reddit(raw: Path, num_nodes: int = 120, num_classes: int = 4) -> dict:
    """Files in the layout PyG's Reddit.process reads: feature/label/node_types + a COO adjacency."""
    sp = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(0)
    label = rng.integers(0, num_classes, num_nodes)
    feature = (np.eye(num_classes)[label] + rng.normal(0, 1.0, (num_nodes, num_classes))).astype(
        np.float32
    )
    node_types = rng.choice([1, 2, 3], size=num_nodes, p=[0.6, 0.2, 0.2])
    src = rng.integers(0, num_nodes, 800)
    dst = np.array([rng.choice(np.flatnonzero(label == label[s])) for s in src])
    keep = src != dst
    row, col = np.concatenate([src[keep], dst[keep]]), np.concatenate([dst[keep], src[keep]])
    raw.mkdir(parents=True)
    np.savez(raw / "reddit_data.npz", feature=feature, label=label, node_types=node_types)
    adj = sp.coo_matrix((np.ones(row.size), (row, col)), shape=(num_nodes, num_nodes))
    sp.save_npz(raw / "reddit_graph.npz", adj)
    edges = {(int(a), int(b)) for a, b in zip(row, col)}
    return {"label": label, "node_types": node_types, "edges": edges, "feature": feature}


def test_fake_reddit_loads_through_the_real_code_path(tmp_path, no_download, monkeypatch):
    monkeypatch.setenv("TORCH_CLIP_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "reddit"
    fake = write_fake_reddit(root / "raw")
    task = RedditTask(data_root=str(root), sampler="subgraph", batch_size=50, hidden_channels=16)
    info = task.setup(CPU, seed=0)
    assert not info.embedded
    assert info.data_source.startswith(f"Reddit (PyG) at {root}, 120 nodes")
    assert info.extra["sampler"] == "subgraph" and "sampler: node-induced" in info.data_source
    data = task.data
    assert np.array_equal(data.y.numpy(), fake["label"])
    assert np.allclose(data.x.numpy(), fake["feature"])
    assert edge_set(data.edge_index) == fake["edges"]
    assert data.train_idx.tolist() == np.flatnonzero(fake["node_types"] == 1).tolist()
    assert data.val_idx.tolist() == np.flatnonzero(fake["node_types"] == 2).tolist()
    assert info.num_train == data.train_idx.numel() and info.num_val == data.val_idx.numel()
    # the tensors are cached in the suite's cache, never in the user's data folder
    assert sorted(p.name for p in root.rglob("*")) == ["raw", "reddit_data.npz", "reddit_graph.npz"]
    assert len(list((tmp_path / "cache" / "reddit").glob("*.pt"))) == 1
    opt = torch.optim.SGD(task.model.parameters(), lr=0.1, momentum=0.9)
    for batch in task.train_batches(0, seed=0):
        loss, _ = task.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert 0.0 <= task.evaluate()["accuracy"] <= 1.0
    # a second load reads the cache (safely), and gives the same graph
    again = load_reddit(root)
    assert torch.equal(again.edge_index, data.edge_index) and torch.equal(again.x, data.x)


class _RunsCode:
    """Unpickling this runs ``touch <marker>``: what a crafted cache or checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_reddit_cache_is_refused_and_never_run(tmp_path, no_download, monkeypatch):
    from torch_clip.suite.checkpoint import CheckpointError

    monkeypatch.setenv("TORCH_CLIP_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "reddit"
    write_fake_reddit(root / "raw")
    load_reddit(root)
    (cache,) = (tmp_path / "cache" / "reddit").glob("*.pt")
    marker = tmp_path / "ran"
    torch.save({"x": _RunsCode(marker)}, cache)
    with pytest.raises(CheckpointError, match="holds more than tensors and plain values"):
        load_reddit(root)
    assert not marker.exists()
    # PyG's own processed cache is not loaded either (its loader falls back to unpickling code)
    (root / "processed").mkdir()
    torch.save({"x": _RunsCode(marker)}, root / "processed" / "data.pt")
    for f in (root / "raw").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match="only PyG's processed cache is there"):
        load_reddit(root)
    assert not marker.exists()


def test_garbage_reddit_npz_files_are_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_CLIP_CACHE", str(tmp_path / "cache"))
    raw = tmp_path / "reddit" / "raw"
    raw.mkdir(parents=True)
    with open(raw / "reddit_data.npz", "wb") as f:  # a pickled object array, not an archive
        np.save(f, np.array([object()], dtype=object), allow_pickle=True)
    (raw / "reddit_graph.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"is not a readable \.npz") as err:
        load_reddit(tmp_path / "reddit")
    assert str(raw / "reddit_data.npz") in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "reddit" / "processed").exists()


# ------------------------------------------------------------------------ validation, configs


def test_hydra_configs_instantiate():
    hydra_utils = pytest.importorskip("hydra.utils")
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "conf" / "task" / "reddit.yaml")
    task = hydra_utils.instantiate(cfg.task)
    assert isinstance(task, RedditTask) and task.data_root is None
    assert cfg.trainer.max_steps > 0 and cfg.trainer.eval_every > 0
    full = OmegaConf.load(REPO / "conf" / "task" / "reddit_full.yaml")
    assert OmegaConf.is_missing(full.task, "data_root")
    assert list(full.task.num_neighbors) == [25, 10] and full.task.batch_size == 1024
    assert full.task.hidden_channels == 256
