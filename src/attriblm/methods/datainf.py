"""DataInf (Kwon et al. 2023): a closed-form approximation of ``(H + λI)⁻¹ v`` per block."""

from __future__ import annotations

from torch import Tensor

from attriblm.features.store import FeatureStore
from attriblm.methods.base import PreconditionedGradientMethod
from attriblm.methods.damping import Damping
from attriblm.methods.registry import register
from attriblm.methods.streaming import StreamedFit


def datainf_precondition(v: Tensor, g: Tensor, damping: float) -> Tensor:
    """``u = (1/(nλ)) Σ_i ( v − (v·g_i) / (λ + ‖g_i‖²) · g_i )`` for each row of ``v [m, d]``.

    Vectorised as two matrix products: with ``C_{qi} = (v_q·g_i) / (λ + ‖g_i‖²)``,
    ``u = (1/λ) (v − C G / n)``. ``g`` is ``[n, d]``; returns ``[m, d]``.
    """
    n = g.shape[0]
    coeff = (v @ g.T) / (damping + g.square().sum(dim=1))[None, :]  # [m, n]
    return (v - coeff @ g / n) / damping


@register
class DataInf(PreconditionedGradientMethod):
    """DataInf: ``s = u · g`` with ``u`` from :func:`datainf_precondition`; ``[m, n]`` float32.

    DataInf swaps the order of inversion and averaging: it averages the exact inverses of the
    rank-one terms ``g_i g_iᵀ + λI`` (Sherman-Morrison) instead of inverting their average.
    """

    name = "datainf"
    streams = True
    summary = "DataInf: closed-form average of rank-one damped inverses (Kwon et al. 2023)"

    def __init__(self, damping: Damping | None = None) -> None:
        super().__init__(damping)

    def fit_store(self, store: FeatureStore, kind: str) -> StreamedFit:
        """Scored shard by shard from the train rows of ``kind`` in ``store``
        (:mod:`attriblm.methods.streaming`): same numbers, memory independent of ``n × d``."""
        return StreamedFit(self, store, kind)

    def precondition(self, block: str, queries: Tensor, train: Tensor, damping: float) -> Tensor:
        return datainf_precondition(queries, train, damping)
