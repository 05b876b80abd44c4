"""RepT: cosine of representation-gradient features (Li, Zhao, Li, Sun 2025, arXiv 2510.02334)."""

from __future__ import annotations

from typing import Any

import torch

from attriblm.methods.base import (
    AttributionMethod,
    FeatureSet,
    MethodOutput,
    check_representations,
    cosine_from_parts,
)
from attriblm.methods.damping import Damping
from attriblm.methods.registry import register


@register
class RepT(AttributionMethod):
    """``s(q, i) = cos(r_q, r_i)`` with ``r = [h_ℓ ; ∂L/∂h_ℓ]`` at the last prompt token.

    Features ``[n, 2h]`` come from :mod:`attriblm.features.rept` (the layer ``ℓ`` is chosen
    there, ``--rept-layer``). The two halves are concatenated as they are (no rescaling), so
    ``info["parts"]`` records their mean norms: when one dominates, the cosine is mostly that
    half's. A pair where either vector is all zero scores 0. ``damping`` is not used.
    """

    name = "rept"
    needs = "representation-gradients"
    summary = (
        "cosine of a hidden state concatenated with its loss gradient, at the last prompt "
        "token (--rept-layer)"
    )

    def __init__(self, damping: Damping | None = None) -> None:
        self.damping = damping

    def score(self, train: FeatureSet, queries: FeatureSet) -> MethodOutput:
        check_representations(self.name, train, queries, "rept", "RepT features")
        r = train.rept.to(dtype=torch.float64)
        q = queries.rept.to(device=r.device, dtype=torch.float64)
        r_sq, q_sq = r.square().sum(dim=1), q.square().sum(dim=1)
        scores = cosine_from_parts(q @ r.T, q_sq, r_sq)
        half = r.shape[1] // 2
        info: dict[str, Any] = self._base_info(train, queries)
        info["damping"] = "none: rept does not damp"
        info["lambda"] = None
        info["width"] = int(r.shape[1])
        info["parts"] = {
            "hidden_norm_mean": float(r[:, :half].norm(dim=1).mean()),
            "gradient_norm_mean": float(r[:, half:].norm(dim=1).mean()),
            "rule": "train-side mean L2 norms of the two concatenated halves",
        }
        info["zero_norm"] = {
            "train": int((r_sq == 0).sum()),
            "query": int((q_sq == 0).sum()),
            "rule": "a pair with a zero-norm feature scores 0",
        }
        return MethodOutput(scores=scores.float(), info=info)
