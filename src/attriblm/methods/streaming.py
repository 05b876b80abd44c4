"""GradSim and DataInf scores straight from a feature store, one shard of train rows at a time.

The in-memory methods (:mod:`attriblm.methods.gradsim`, :mod:`attriblm.methods.datainf`) hold
the whole ``[n, d_b]`` train matrix of every block. These functions read the train kind of a
:class:`~attriblm.features.store.FeatureStore` shard by shard, so memory is one shard, the query
gradients ``[m, d_b]`` and the score matrix ``[m, n]`` float32 — it does not grow with
``n × d``. They give the same numbers as the in-memory methods (float64 arithmetic; scores
float32, larger = more supportive):

* ``stream_gradsim``: ``s = Σ_b v_b · g_b`` (one pass).
* ``stream_datainf``: ``λ_b`` by :class:`~attriblm.methods.damping.Damping` from the block's
  mean squared train entry (pass 1), ``C G / n`` with ``C_{qi} = (v_q·g_i) / (λ + ‖g_i‖²)``
  (pass 2), then ``s = u · g`` with ``u = (v − C G / n) / λ`` (pass 3).
"""

from __future__ import annotations

import torch
from torch import Tensor

from attriblm.features.store import FeatureStore
from attriblm.methods.base import SIGN_NOTE, AttributionMethod, MethodOutput
from attriblm.methods.damping import Damping

STREAMABLE = ("gradsim", "datainf")


def _n_rows(store: FeatureStore, kind: str) -> int:
    return sum(stop - start for start, stop in store.done(kind))


def _check_blocks(store: FeatureStore, kind: str, queries: dict[str, Tensor]) -> list[str]:
    """``kind``'s block names, after checking it is complete and matches the query blocks."""
    if not store.is_complete(kind):
        raise ValueError(f"{kind} is incomplete")
    blocks = list(store.blocks(kind))
    if sorted(blocks) != sorted(queries):
        raise ValueError(f"query blocks {sorted(queries)[:3]}… differ from {kind}'s {blocks[:3]}…")
    return blocks


def stream_scores(store: FeatureStore, kind: str, preconditioned: dict[str, Tensor]) -> Tensor:
    """``[m, n]`` float32: ``Σ_b u_b · g_{i,b}`` for preconditioned query vectors ``u_b [m, d_b]``
    against every stored train row of ``kind`` (complete), one shard at a time."""
    blocks = _check_blocks(store, kind, preconditioned)
    m = next(iter(preconditioned.values())).shape[0]
    scores = torch.empty((m, _n_rows(store, kind)), dtype=torch.float32)
    u = {b: preconditioned[b].double() for b in blocks}
    for start, stop, rows in store.iter_rows(kind):
        part = sum(u[b] @ rows[b].double().T for b in blocks)
        scores[:, start:stop] = part.float()
    return scores


def stream_gradsim(store: FeatureStore, kind: str, queries: dict[str, Tensor]) -> Tensor:
    """GradSim ``[m, n]``: the query gradients themselves against the stored train rows."""
    return stream_scores(store, kind, queries)


def block_dampings(store: FeatureStore, kind: str, damping: Damping) -> dict[str, float]:
    """``λ_b`` per block from one pass over the stored rows (``relative``: value · mean g²)."""
    if damping.mode == "absolute":
        return {b: damping.value for b in store.blocks(kind)}
    if damping.mode != "relative":
        raise ValueError(f"streamed scores take relative or absolute damping, not {damping.mode}")
    sums = {b: 0.0 for b in store.blocks(kind)}
    count = 0
    for start, stop, rows in store.iter_rows(kind):
        count += stop - start
        for b in sums:
            sums[b] += float(rows[b].double().square().sum())
    widths = store.blocks(kind)
    return {b: damping.lambda_from_mean_square(s / (count * widths[b]), b) for b, s in sums.items()}


def stream_datainf(
    store: FeatureStore,
    kind: str,
    queries: dict[str, Tensor],
    damping: Damping | None = None,
    lambdas: dict[str, float] | None = None,
) -> Tensor:
    """DataInf ``[m, n]`` from the store in three passes (module doc); equals ``datainf``.

    ``lambdas`` (block → λ_b, e.g. from :func:`block_dampings`) skips the first pass.
    """
    damping = damping if damping is not None else Damping()
    blocks = _check_blocks(store, kind, queries)
    lam = lambdas if lambdas is not None else block_dampings(store, kind, damping)
    v = {b: queries[b].double() for b in blocks}
    cg = {b: torch.zeros_like(v[b]) for b in blocks}
    for _start, _stop, rows in store.iter_rows(kind):
        for b in blocks:
            g = rows[b].double()
            coeff = (v[b] @ g.T) / (lam[b] + g.square().sum(dim=1))[None, :]
            cg[b] += coeff @ g
    n = _n_rows(store, kind)
    u = {b: (v[b] - cg[b] / n) / lam[b] for b in blocks}
    return stream_scores(store, kind, u)


def streamed_output(
    method: AttributionMethod, store: FeatureStore, kind: str, queries: dict[str, Tensor]
) -> MethodOutput:
    """``method`` (one of :data:`STREAMABLE`) scored from the store; info as the in-memory
    method records it (options, damping, λ per block) plus ``streamed``."""
    if method.name not in STREAMABLE:
        raise ValueError(f"method {method.name!r} cannot be streamed; streamable: {STREAMABLE}")
    lam = None
    if method.name == "gradsim":
        scores = stream_gradsim(store, kind, queries)
        damping: object = "none: gradsim does not damp (Ĥ = I)"
    else:
        lam = block_dampings(store, kind, method.damping)
        scores = stream_datainf(store, kind, queries, method.damping, lambdas=lam)
        damping = method.damping.to_dict()
    info = {
        "method": method.name,
        "needs": ["gradients"],
        "options": method.options(),
        "n_train": int(scores.shape[1]),
        "n_query": int(scores.shape[0]),
        "sign": SIGN_NOTE,
        "damping": damping,
        "lambda": lam,
        "streamed": "scored shard by shard from the feature store (attriblm.methods.streaming)",
    }
    return MethodOutput(scores=scores, info=info)
