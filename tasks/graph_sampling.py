"""Graph helpers for the node-classification task: the SBM proxy graph, node-induced subgraph
sampling, the neighbour-sampling backend probe and the sparse aggregation matrices used for exact
layer-wise inference.

Everything here is pure torch (plus PyG's pure-Python utilities), so it runs without the compiled
``pyg-lib``/``torch-sparse`` extensions.
"""

from __future__ import annotations

import warnings

import torch


def neighbor_sampling_backend() -> str | None:
    """The compiled package PyG's ``NeighborLoader`` would sample with, or ``None`` if neither."""
    # Read the flags at call time (not import time) so tests can simulate either installation;
    # PyG is imported here, not at module import, as its import takes seconds.
    import torch_geometric.typing as pyg_typing

    if pyg_typing.WITH_PYG_LIB:
        return "pyg-lib"
    if pyg_typing.WITH_TORCH_SPARSE:
        return "torch-sparse"
    return None


def block_sizes(num_nodes: int, num_blocks: int) -> list[int]:
    """Near-equal block sizes (the first ``num_nodes % num_blocks`` blocks get one node more)."""
    base, extra = divmod(num_nodes, num_blocks)
    return [base + (1 if b < extra else 0) for b in range(num_blocks)]


def sbm_graph(
    sizes: list[int], p_in: float, p_out: float, generator: torch.Generator
) -> torch.Tensor:
    """Undirected stochastic-block-model graph as a coalesced ``[2, E]`` edge index (both directions).

    Nodes ``0..sizes[0]-1`` form block 0, and so on. Each unordered pair is an edge independently
    with probability ``p_in`` (same block) or ``p_out`` (different blocks); no self-loops.
    Written block pair by block pair with an explicit generator (PyG's
    ``stochastic_blockmodel_graph`` draws from the global RNG and materialises all N²/2 pairs at once).
    """
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    rows, cols = [], []
    for a, na in enumerate(sizes):
        for b in range(a, len(sizes)):
            nb = sizes[b]
            mask = torch.rand(na, nb, generator=generator) < (p_in if a == b else p_out)
            if a == b:
                mask = torch.triu(mask, diagonal=1)  # each unordered pair once, no self-loops
            r, c = mask.nonzero(as_tuple=True)
            rows.append(r + offsets[a])
            cols.append(c + offsets[b])
    row, col = torch.cat(rows), torch.cat(cols)
    num_nodes = offsets[-1]
    src, dst = torch.cat([row, col]), torch.cat([col, row])
    order = torch.argsort(src * num_nodes + dst)  # coalesced: sorted by (source, target)
    return torch.stack([src[order], dst[order]])


def induced_subgraph(nodes: torch.Tensor, edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Edges of the subgraph induced by ``nodes``, relabelled so local node ``i`` is ``nodes[i]``."""
    from torch_geometric.utils import subgraph

    local, _ = subgraph(nodes, edge_index, relabel_nodes=True, num_nodes=num_nodes)
    return local


def rank_share(items: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous share of ``items``; the shares are disjoint and cover ``items``."""
    return torch.tensor_split(items, world_size)[rank]


def aggregation_matrix(
    edge_index: torch.Tensor,
    num_nodes: int,
    aggr: str,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sparse CSR matrix ``A`` with ``(A @ h)[i]`` = the ``aggr`` of ``h[j]`` over edges ``j -> i``.

    ``rows`` restricts the output to those target nodes (in that order); degrees are always those of
    the full graph, matching PyG's scatter-mean. Used for exact full-neighbourhood inference without
    materialising one message per edge (Reddit: 114M edges x hidden channels would not fit).
    """
    src, dst = edge_index[0], edge_index[1]
    if aggr == "mean":
        deg = torch.bincount(dst, minlength=num_nodes).clamp_(min=1).to(torch.float32)
        weight = deg.reciprocal()[dst]
    elif aggr == "add":
        weight = torch.ones(dst.numel(), dtype=torch.float32)
    else:
        raise ValueError(f"aggr must be 'mean' or 'add', got {aggr!r}")
    if rows is None:
        out_rows, r = num_nodes, dst
    else:
        pos = torch.full((num_nodes,), -1, dtype=torch.long)
        pos[rows] = torch.arange(rows.numel())
        keep = pos[dst] >= 0
        out_rows, r, src, weight = rows.numel(), pos[dst[keep]], src[keep], weight[keep]
    coo = torch.sparse_coo_tensor(
        torch.stack([r, src]), weight, (out_rows, num_nodes), check_invariants=False
    )
    with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR @ dense is all we use
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.coalesce().to_sparse_csr()
