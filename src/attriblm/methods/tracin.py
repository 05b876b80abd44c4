"""TracIn (Pruthi et al. 2020) over saved checkpoints: ``s = Σ_c η_c · v^{(c)} · g^{(c)}``.

``η_c`` is the sum of the learning rates of the optimiser steps since the previous checkpoint
(why, and where it is read from: :mod:`attriblm.train.checkpoints`).
"""

from __future__ import annotations

from typing import Any

import torch

from attriblm.errors import ConfigError, DataError
from attriblm.methods.base import (
    AttributionMethod,
    FeatureSet,
    MethodOutput,
    check_gradients,
)
from attriblm.methods.damping import Damping
from attriblm.methods.registry import register


@register
class TracIn(AttributionMethod):
    """``s(q, i) = Σ_c η_c Σ_b v^{(c)}_{q,b} · g^{(c)}_{i,b}``: scores ``[m, n]`` float32.

    ``c`` runs over the checkpoints the fine-tune saved (one per epoch), ``η_c`` is the sum of
    the learning rates of the optimiser steps between checkpoint ``c − 1`` and ``c`` (the steps
    of epoch ``c``), and ``v^{(c)}``, ``g^{(c)}`` are the query / train loss gradients at that
    checkpoint's weights (features ``checkpoint_grads`` and ``checkpoint_lrs``). Larger = more
    supportive. No curvature, no damping (``damping`` is accepted for a uniform interface and
    not used). ``info["checkpoint_etas"]`` lists the ``η_c`` used.
    """

    name = "tracin"
    needs = "checkpoints"
    summary = "TracIn: Σ_c η_c v·g over the per-epoch checkpoints (η_c = summed step lr)"

    def __init__(self, damping: Damping | None = None) -> None:
        del damping

    def score(self, train: FeatureSet, queries: FeatureSet) -> MethodOutput:
        for which, fs in (("train", train), ("query", queries)):
            if not fs.checkpoint_grads or fs.checkpoint_lrs is None:
                raise ConfigError(
                    f"method 'tracin' needs per-checkpoint gradients, but the {which} features "
                    "have none (fine-tune checkpoints not found: pass --checkpoints DIR)"
                )
        lrs = [float(lr) for lr in train.checkpoint_lrs]
        if len(train.checkpoint_grads) != len(lrs) or len(queries.checkpoint_grads) != len(lrs):
            raise DataError(
                f"tracin: {len(train.checkpoint_grads)} train / {len(queries.checkpoint_grads)} "
                f"query checkpoint gradient sets for {len(lrs)} learning rates"
            )
        if [float(x) for x in queries.checkpoint_lrs] != lrs:
            raise DataError("tracin: train and query checkpoints have different learning rates")
        scores = None
        for c, (lr, g, v) in enumerate(
            zip(lrs, train.checkpoint_grads, queries.checkpoint_grads, strict=True)
        ):
            blocks = check_gradients(
                f"tracin (checkpoint {c + 1})", FeatureSet(grads=g), FeatureSet(grads=v)
            )
            dots = sum(v[b].double() @ g[b].double().T for b in blocks)
            scores = lr * dots if scores is None else scores + lr * dots
        info: dict[str, Any] = self._base_info(train, queries)
        info["damping"] = "none: tracin does not damp (Ĥ = I)"
        info["lambda"] = None
        info["n_checkpoints"] = len(lrs)
        info["checkpoint_etas"] = lrs
        info["eta"] = (
            "sum of the learning rates of the optimiser steps since the previous checkpoint"
        )
        return MethodOutput(scores=torch.as_tensor(scores).float(), info=info)
