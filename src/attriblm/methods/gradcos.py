"""GradCos: cosine similarity of the full (all-block) gradient vectors."""

from __future__ import annotations

from typing import Any

import torch

from attriblm.methods.base import (
    AttributionMethod,
    FeatureSet,
    MethodOutput,
    check_gradients,
    cosine_from_parts,
)
from attriblm.methods.damping import Damping
from attriblm.methods.registry import register


@register
class GradCos(AttributionMethod):
    """``s(q, i) = cos(v_q, g_i)`` over the concatenation of all blocks; ``[m, n]`` float32.

    Computed blockwise without concatenating: ``v·g = Σ_b v_b·g_b`` and ``‖v‖² = Σ_b ‖v_b‖²``
    (float64). A pair where either gradient is all zero scores 0. ``damping`` is not used.
    """

    name = "gradcos"
    needs = "gradients"
    summary = "cosine of the full gradient vectors (all LoRA blocks concatenated; no damping)"

    def __init__(self, damping: Damping | None = None) -> None:
        self.damping = damping

    def score(self, train: FeatureSet, queries: FeatureSet) -> MethodOutput:
        blocks = check_gradients(self.name, train, queries)
        scores, q_sq, t_sq = blockwise_cosine(train.grads, queries.grads, blocks)
        info: dict[str, Any] = self._base_info(train, queries)
        info["damping"] = "none: gradcos does not damp"
        info["lambda"] = None
        info["zero_norm"] = {
            "train": int((t_sq == 0).sum()),
            "query": int((q_sq == 0).sum()),
            "rule": "a pair with a zero-norm gradient scores 0",
        }
        return MethodOutput(scores=scores.float(), info=info)


def blockwise_cosine(
    train: dict[str, torch.Tensor], queries: dict[str, torch.Tensor], blocks: list[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosine ``[m, n]`` float64 over the concatenation of ``blocks``, and squared norms.

    ``v·g = Σ_b v_b·g_b`` and ``‖v‖² = Σ_b ‖v_b‖²`` without concatenating; returns
    ``(cosine, ‖v_q‖² [m], ‖g_i‖² [n])``. Zero-norm pairs get 0.
    """
    first = train[blocks[0]]
    n, m = first.shape[0], queries[blocks[0]].shape[0]
    dots = torch.zeros(m, n, dtype=torch.float64, device=first.device)
    q_sq = torch.zeros(m, dtype=torch.float64, device=first.device)
    t_sq = torch.zeros(n, dtype=torch.float64, device=first.device)
    for b in blocks:
        g = train[b].to(device=first.device, dtype=torch.float64)
        v = queries[b].to(device=first.device, dtype=torch.float64)
        dots.addmm_(v, g.T)
        q_sq += v.square().sum(dim=1)
        t_sq += g.square().sum(dim=1)
    return cosine_from_parts(dots, q_sq, t_sq), q_sq, t_sq
