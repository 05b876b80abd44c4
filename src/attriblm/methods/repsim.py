"""RepSim: cosine similarity of representations (docs/DESIGN.md §3)."""

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
class RepSim(AttributionMethod):
    """``s(q, i) = cos(r_q, r_i)`` of representation vectors ``[n, h]``; ``[m, n]`` float32.

    The representation (layer, token position, pooling) is chosen when the features are
    computed. A pair where either vector is all zero scores 0. ``damping`` is not used.
    """

    name = "repsim"
    needs = "representations"
    summary = "cosine of the fine-tuned model's hidden states (last layer, last prompt token)"

    def __init__(self, damping: Damping | None = None) -> None:
        self.damping = damping

    def score(self, train: FeatureSet, queries: FeatureSet) -> MethodOutput:
        check_representations(self.name, train, queries)
        r = train.reprs.to(dtype=torch.float64)
        q = queries.reprs.to(device=r.device, dtype=torch.float64)
        scores = cosine_from_parts(q @ r.T, q.square().sum(dim=1), r.square().sum(dim=1))
        info: dict[str, Any] = self._base_info(train, queries)
        info["damping"] = "none: repsim does not damp"
        info["lambda"] = None
        info["width"] = int(r.shape[1])
        info["zero_norm"] = {
            "train": int((r.square().sum(dim=1) == 0).sum()),
            "query": int((q.square().sum(dim=1) == 0).sum()),
            "rule": "a pair with a zero-norm representation scores 0",
        }
        return MethodOutput(scores=scores.float(), info=info)
