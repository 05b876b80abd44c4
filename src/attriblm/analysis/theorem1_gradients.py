"""Theorem 1 on real gradients: is ``(H_b + λ_b I)⁻¹ v`` close to ``v/λ_b`` for query gradients?

The simulation (:mod:`attriblm.analysis.theorem1`) measures the matrix error, which the
null space of ``H`` dominates. What scores use is the inverse applied to a query gradient ``v``
and then dotted with training gradients, which lie in ``range(H_b)`` (``H_b = G_bᵀG_b/n``).
So per LoRA block ``b`` and query ``q``, with ``x = (H_b + λ_b I)⁻¹ v`` (``exact``'s solve, the
same ``λ_b`` rule as every damped method):

* ``error = ‖x − v/λ_b‖ / ‖x‖`` (the vector form of Theorem 1's claim);
* ``error_in_range = ‖P(x − v/λ_b)‖ / ‖P x‖``, ``P`` the orthogonal projector onto
  ``range(H_b)`` (the part of the difference a score ``x·g_i`` can see);
* ``range_share = ‖P v‖ / ‖v‖`` (how much of the query gradient lives in ``range(H_b)``);
* ``matrix_error``: the block's own ``‖(H_b+λ_bI)⁻¹ − I/λ_b‖_F / ‖(H_b+λ_bI)⁻¹‖_F`` from its
  eigenvalues (the simulation's ``error`` on the real spectrum), with ``rank`` and ``d``.

``overall`` concatenates the blocks (block-diagonal ``H``, ``v/λ_b`` per block); ``cosine`` is
``cos(x, [v_b/λ_b]_b)`` over the concatenation. Means over queries skip queries whose ``x`` is 0.
``range(H_b)`` comes from an SVD of ``G_b`` in float64 (singular values above
``σ_max · max(n, d) · ε`` kept).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from attriblm.analysis.theorem1 import closed_form_errors
from attriblm.data.schema import Example
from attriblm.methods.base import AttributionMethod, FeatureSet
from attriblm.methods.damping import Damping
from attriblm.methods.registry import create_method
from attriblm.models.loading import LoadedModel
from attriblm.pipeline.scoring import prepare_features
from attriblm.pipeline.settings import AttributeSettings
from attriblm.progress import StageProgress, no_progress


def range_basis(grads: Tensor) -> tuple[Tensor, Tensor]:
    """``(eigenvalues [r], Q [d, r])`` of ``H = GᵀG/n`` for ``grads = G [n, d]`` (float64):
    the nonzero eigenvalues and an orthonormal basis of ``range(H)``."""
    g = grads.detach().double()
    n = g.shape[0]
    basis, sv, _ = torch.linalg.svd(g.T, full_matrices=False)  # [d, min(n, d)]
    if sv.numel() == 0 or float(sv.max()) == 0.0:
        return sv[:0], basis[:, :0]
    keep = sv > float(sv.max()) * max(g.shape) * torch.finfo(torch.float64).eps
    return sv[keep].square() / n, basis[:, keep]


def _mean(values: Tensor) -> float | None:
    return float(values.mean()) if values.numel() else None


def gradient_errors(
    train: FeatureSet,
    queries: FeatureSet,
    damping: Damping | None = None,
    *,
    exact: AttributionMethod | None = None,
) -> dict[str, Any]:
    """The vector errors of the module docstring for ``queries``' gradients (no files written).

    ``range_share`` in the summary is over the concatenated blocks (``‖Pv‖/‖v‖`` with ``P`` the
    block-diagonal projector), like ``error``.

    ``train`` and ``queries`` need per-example gradients with the same blocks. Returns
    ``{"blocks": {block: {...}}, "queries_summary": {...}, "per_query": {...}, "lambda": ...}``.
    ``exact``: the reference method already built (e.g. with the run's options); default
    ``exact`` with ``damping``.
    """
    damping = damping if damping is not None else Damping()
    exact = exact if exact is not None else create_method("exact", damping=damping)
    x, info = exact.fit(train).preconditioned(queries)
    lambdas = info["lambda"]
    m = queries.n
    keys = ("d", "x", "dr", "xr", "dot", "w", "v", "vr")
    acc = {k: torch.zeros(m, dtype=torch.float64) for k in keys}
    blocks: dict[str, Any] = {}
    for b, xb in x.items():
        xb = xb.double().cpu()
        v = queries.grads[b].double().cpu()
        lam = float(lambdas[b])
        eigenvalues, basis = range_basis(train.grads[b])
        w = v / lam  # I/λ applied to v
        diff = xb - w
        d_sq, x_sq = diff.square().sum(1), xb.square().sum(1)
        dr_sq, xr_sq = (diff @ basis).square().sum(1), (xb @ basis).square().sum(1)
        v_sq, vr_sq = v.square().sum(1), (v @ basis).square().sum(1)
        parts = (d_sq, x_sq, dr_sq, xr_sq, (xb * w).sum(1), w.square().sum(1), v_sq, vr_sq)
        for key, value in zip(keys, parts, strict=True):
            acc[key] += value
        keep, keep_r, keep_v = x_sq > 0, xr_sq > 0, v_sq > 0
        d = int(xb.shape[1])
        blocks[b] = {
            "d": d,
            "rank": int(eigenvalues.numel()),
            "lambda": lam,
            "error": _mean((d_sq[keep] / x_sq[keep]).sqrt()),
            "error_in_range": _mean((dr_sq[keep_r] / xr_sq[keep_r]).sqrt()),
            "range_share": _mean((vr_sq[keep_v] / v_sq[keep_v]).sqrt()),
            "matrix_error": closed_form_errors(eigenvalues, d, lam)["error"]
            if eigenvalues.numel()
            else 0.0,
        }
    keep = acc["x"] > 0
    error = (acc["d"][keep] / acc["x"][keep]).sqrt()
    keep_r = acc["xr"] > 0
    error_in_range = (acc["dr"][keep_r] / acc["xr"][keep_r]).sqrt()
    denom = (acc["x"] * acc["w"]).sqrt()
    cosine = torch.where(denom > 0, acc["dot"] / denom.clamp_min(1e-300), 0.0)[keep]
    keep_v = acc["v"] > 0
    share = (acc["vr"][keep_v] / acc["v"][keep_v]).sqrt()
    matrix = [blk["matrix_error"] for blk in blocks.values()]
    summary = {
        "error_mean": _mean(error),
        "error_median": float(error.median()) if error.numel() else None,
        "error_min": float(error.min()) if error.numel() else None,
        "error_max": float(error.max()) if error.numel() else None,
        "error_in_range_mean": _mean(error_in_range),
        "cosine_mean": _mean(cosine),
        "range_share_mean": _mean(share),
        "matrix_error_mean_over_blocks": statistics.fmean(matrix) if matrix else None,
        "matrix_error_max_over_blocks": max(matrix) if matrix else None,
        "n_used": int(keep.sum()),
    }
    return {
        "reference": "exact",
        "reference_max_residual": info.get("max_residual"),
        "damping": damping.to_dict(),
        "lambda": lambdas,
        "n_train": train.n,
        "n_query": m,
        "queries_summary": summary,
        "per_query": {
            key: [math.sqrt(float(a / b)) if b > 0 else None for a, b in zip(num, den, strict=True)]
            for key, num, den in (
                ("error", acc["d"], acc["x"]),
                ("error_in_range", acc["dr"], acc["xr"]),
                ("range_share", acc["vr"], acc["v"]),
            )
        },
        "blocks": blocks,
    }


def measure_gradients(
    loaded: LoadedModel,
    train: Sequence[Example],
    queries: Sequence[Example],
    *,
    settings: AttributeSettings | None = None,
    sources: dict[str, str] | None = None,
    progress: StageProgress = no_progress,
) -> dict[str, Any]:
    """Per-example gradients on the fine-tuned ``loaded`` model, then :func:`gradient_errors`.

    ``settings`` supplies template, loss mask, max length, batch size and the damping rule
    (default :class:`AttributeSettings`: relative, 0.1).
    """
    settings = settings if settings is not None else AttributeSettings()
    sources = {"train": "train", "queries": "queries", **(sources or {})}
    timings: dict[str, float] = {}
    started = time.perf_counter()
    prepared = prepare_features(
        loaded, train, queries, ["exact"], settings, sources=sources, progress=progress,
        timings=timings,
    )  # fmt: skip
    result = gradient_errors(
        prepared.train, prepared.queries, settings.damping_rule(), exact=prepared.methods["exact"]
    )
    return {
        "model": loaded.identity.get("spec"),
        "adapter": loaded.identity.get("adapter"),
        "train": sources["train"],
        "queries": sources["queries"],
        "loss_mask": settings.loss_mask,
        "template": settings.template,
        **result,
        "timings_seconds": {**timings, "total": time.perf_counter() - started},
    }
