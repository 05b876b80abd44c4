"""LESS: cosine of Adam-update gradient features (Xia et al. 2024)."""

from __future__ import annotations

from typing import Any

from attriblm.errors import ConfigError
from attriblm.methods.base import AttributionMethod, FeatureSet, MethodOutput, check_gradients
from attriblm.methods.damping import Damping
from attriblm.methods.gradcos import blockwise_cosine
from attriblm.methods.registry import register


@register
class LESS(AttributionMethod):
    """``s(q, i) = cos(Pᵀ v_q, Pᵀ Γ_i)`` over all blocks; ``[m, n]`` float32.

    ``Γ_i = m'/(√v' + ε)`` is training example ``i``'s Adam update direction under the
    fine-tune's final AdamW moments and ``v_q`` the query's plain gradient, both projected block
    by block with the same seeded ``P`` (:mod:`attriblm.features.adam`). A pair where either
    feature is all zero scores 0. ``damping`` is not used.
    """

    name = "less"
    needs = "adam-gradients"
    summary = "cosine of Adam-update gradient features from the fine-tune's final moments (LESS)"

    def __init__(self, damping: Damping | None = None) -> None:
        self.damping = damping

    def score(self, train: FeatureSet, queries: FeatureSet) -> MethodOutput:
        for which, fs in (("train", train), ("query", queries)):
            if fs.adam_grads is None:
                raise ConfigError(
                    f"method '{self.name}' needs Adam-update gradient features, but the {which} "
                    "features have none"
                )
        blocks = check_gradients(
            self.name, FeatureSet(grads=train.adam_grads), FeatureSet(grads=queries.adam_grads)
        )
        scores, q_sq, t_sq = blockwise_cosine(train.adam_grads, queries.adam_grads, blocks)
        info: dict[str, Any] = self._base_info(train, queries)
        info["damping"] = "none: less does not damp"
        info["lambda"] = None
        info["width"] = int(sum(train.adam_grads[b].shape[1] for b in blocks))
        info["features"] = {
            "train": "Adam update direction m'/(sqrt(v')+eps) with the final AdamW moments",
            "query": "plain loss gradient",
        }
        info["zero_norm"] = {
            "train": int((t_sq == 0).sum()),
            "query": int((q_sq == 0).sum()),
            "rule": "a pair with a zero-norm feature scores 0",
        }
        return MethodOutput(scores=scores.float(), info=info)
