"""Read a stored feature kind whole, combining the ranks' shares in a distributed run.

In a single process these are :meth:`FeatureStore.read` and :meth:`FeatureStore.sum_stats`.
Under torchrun each rank's store holds only its own batches (:meth:`attriblm.dist.Dist.mine`);
rows are assembled by a summed all-reduce of zero-filled ``[n_rows, d_b]`` tensors (exact) and
stats (K-FAC covariance sums, token counts) by an all-reduce of each rank's partial sums. The
layout (block names and widths, stat shapes) comes from rank 0, which always holds batch 0, so
a rank with no batch of its own still takes part.
"""

from __future__ import annotations

import torch

from attriblm.dist import Dist
from attriblm.features.store import STORE_DTYPES, FeatureStore

_DTYPES = {str(t): t for t in (torch.float64, torch.float32, torch.int64, *STORE_DTYPES.values())}


def gather_rows(store: FeatureStore, kind: str, n_rows: int, dist: Dist) -> dict[str, torch.Tensor]:
    """Block name → ``[n_rows, d_b]`` float32 of ``kind`` over all ranks (every rank gets it)."""
    if not dist.active:
        return store.read(kind)
    layout: dict[str, int] = dist.broadcast_json(store.blocks(kind) if dist.is_main else None)
    full = {b: torch.zeros((n_rows, w), dtype=torch.float32) for b, w in layout.items()}
    for start, stop, rows in store.iter_rows(kind):
        for b, tensor in full.items():
            tensor[start:stop] = rows[b]
    return {b: dist.all_reduce_sum(t) for b, t in full.items()}


def gather_stats(store: FeatureStore, kind: str, dist: Dist) -> dict[str, torch.Tensor]:
    """Each stat of ``kind`` summed over every shard of every rank (every rank gets it)."""
    if not dist.active:
        return store.sum_stats(kind)
    local = store.sum_stats(kind, complete=False)
    layout = dist.broadcast_json(
        {n: [list(t.shape), str(t.dtype)] for n, t in local.items()} if dist.is_main else None
    )
    summed = {}
    for name, (shape, dtype) in layout.items():
        part = local.get(name)
        if part is None:
            part = torch.zeros(shape, dtype=_DTYPES[dtype])
        summed[name] = dist.all_reduce_sum(part)
    return summed
