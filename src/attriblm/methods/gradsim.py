"""GradSim: the plain gradient dot product, ``s = Σ_b v_b · g_b`` (``Ĥ = I``, no damping)."""

from __future__ import annotations

from torch import Tensor

from attriblm.features.store import FeatureStore
from attriblm.methods.base import PreconditionedGradientMethod
from attriblm.methods.damping import Damping
from attriblm.methods.registry import register
from attriblm.methods.streaming import StreamedFit


@register
class GradSim(PreconditionedGradientMethod):
    """``s(q, i) = Σ_b v_{q,b} · g_{i,b}``: scores ``[m, n]``, larger = more supportive.

    The identity preconditioner: :meth:`preconditioned` returns the query gradients themselves
    (float64). ``damping`` is accepted for a uniform interface and not used.
    """

    name = "gradsim"
    streams = True
    summary = "gradient dot product v·g summed over LoRA blocks (Ĥ = I, no damping)"
    damped = False

    def __init__(self, damping: Damping | None = None) -> None:
        super().__init__(damping)

    def fit_store(self, store: FeatureStore, kind: str) -> StreamedFit:
        """Scored shard by shard from the train rows of ``kind`` in ``store``
        (:mod:`attriblm.methods.streaming`): same numbers, memory independent of ``n × d``."""
        return StreamedFit(self, store, kind)

    def precondition(self, block: str, queries: Tensor, train: Tensor, damping: float) -> Tensor:
        return queries
