"""LESS features: per-example gradients turned into Adam update directions, then projected.

For a training example with LoRA gradient ``g`` (one block at a time) and the fine-tune's final
AdamW moments ``m``, ``v`` (:mod:`attriblm.train.optimizer_state`), the feature is the direction
of the step Adam would take on that example alone (Xia et al. 2024, LESS)::

    m' = β₁ m + (1 − β₁) g        v' = β₂ v + (1 − β₂) g²        Γ = m' / (√v' + ε)

(element-wise; no bias correction). Queries keep their plain gradient ``g``, as in LESS: they
are never trained on, so no optimizer step applies to them. Both sides are then projected with
the same seeded :class:`~attriblm.features.projection.Projection`, block by block (a block wider
than its ``dim`` becomes ``dim`` wide; narrower blocks stay exact), and compared by cosine over
all blocks (:mod:`attriblm.methods.less`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from attriblm.errors import DataError
from attriblm.features.projection import Projection
from attriblm.train.optimizer_state import HOW_TO_GET, AdamMoments

LESS_PROJ_DIM = 8192


def adam_direction(g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, moments: AdamMoments):
    """``Γ = m'/(√v' + ε)`` ``[n, d]`` for rows ``g [n, d]`` and one block's moments ``[d]``."""
    g = g.to(torch.float64)
    m_new = moments.beta1 * m.to(g) + (1 - moments.beta1) * g
    v_new = moments.beta2 * v.to(g) + (1 - moments.beta2) * g.square()
    return (m_new / (v_new.sqrt() + moments.eps)).to(torch.float32)


def less_features(
    grads: Mapping[str, torch.Tensor],
    moments: AdamMoments | None,
    projection: Projection,
) -> dict[str, torch.Tensor]:
    """Block → ``[n, min(d_b, dim)]`` float32 LESS features of per-example gradients ``grads``.

    ``moments`` given: the Adam direction (train side); ``None``: the plain gradient (queries).
    DataError when a gradient block has no moments of its size (another adapter's moments).
    """
    out = {}
    for block, g in grads.items():
        if moments is not None:
            m, v = moments.exp_avg.get(block), moments.exp_avg_sq.get(block)
            if m is None or v is None or m.numel() != g.shape[1]:
                raise DataError(
                    f"the adapter's saved AdamW moments do not fit gradient block {block} "
                    f"(width {g.shape[1]}); {HOW_TO_GET}"
                )
            g = adam_direction(g, m, v, moments)
        out[block] = projection.apply(block, g.to(torch.float32))
    return out
