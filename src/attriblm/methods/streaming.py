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

:class:`StreamedFit` is the :class:`~attriblm.methods.base.Fitted` of a method that declares
``streams = True`` (gradsim, datainf: :meth:`AttributionMethod.fit_store`); the attribution
pipeline picks it when every method of a run streams.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attriblm.features.store import FeatureStore
from attriblm.methods.base import SIGN_NOTE, AttributionMethod, FeatureSet, Fitted, MethodOutput
from attriblm.methods.damping import Damping


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


class StreamedFit(Fitted):
    """GradSim or DataInf fitted on the train rows of ``kind`` in ``store`` (read shard by
    shard); :meth:`score` takes the query gradients in memory. Info as the in-memory method
    records it (options, damping, λ per block) plus ``streamed``."""

    def __init__(self, method: AttributionMethod, store: FeatureStore, kind: str) -> None:
        super().__init__(method, None)
        self.store, self.kind = store, kind
        damping = getattr(method, "damping", None)
        self.damped = bool(getattr(method, "damped", True))
        # pass 1 of DataInf: λ per block depends on the train rows alone
        self.lambdas = block_dampings(store, kind, damping) if self.damped else None

    def score(self, queries: FeatureSet) -> MethodOutput:
        method, grads = self.method, queries.grads
        if grads is None:
            raise ValueError(f"{method.name}: the query features have no gradients to stream")
        if self.damped:
            scores = stream_datainf(
                self.store, self.kind, grads, method.damping, lambdas=self.lambdas
            )
            damping: object = method.damping.to_dict()
        else:
            scores = stream_gradsim(self.store, self.kind, grads)
            damping = f"none: {method.name} does not damp (Ĥ = I)"
        info = {
            "method": method.name,
            "needs": ["gradients"],
            "options": method.options(),
            "n_train": int(scores.shape[1]),
            "n_query": int(scores.shape[0]),
            "sign": SIGN_NOTE,
            "damping": damping,
            "lambda": self.lambdas,
            "streamed": "scored shard by shard from the feature store (attriblm.methods.streaming)",
        }
        return MethodOutput(scores=scores, info=info)
