"""iHVP error on the real model (docs/DESIGN.md §7.2): each method's ``Ĥ⁻¹v`` vs the exact solve.

Every gradient method that is a :class:`~attriblm.methods.base.PreconditionedGradientMethod`
exposes its preconditioned query vectors through :meth:`preconditioned` (``{block: [m, d_b]}``
float64), and its scores are exactly ``s = Σ_b u_b · g_b`` of those vectors, so the vectors
compared here are the ones that produce the method's scores:

* ``gradsim``: ``u = v`` (``Ĥ = I``, no damping);
* ``datainf``: DataInf's closed form ``(1/λ)(v − C G / n)``;
* ``lissa-paper``: the reference recursion's ``u_T`` as it is used for scoring (no final
  ``1/scale``), ``≈ (T+1) v`` on small gradients — so its plain relative error is dominated by
  scale, and ``cosine`` / ``rel_error_scaled`` are the informative numbers;
* ``lissa``: ``u_T / σ``; ``kfac`` / ``ekfac``: ``Q_S((Q_Sᵀ V Q_A)/(Λ + λ))Q_Aᵀ``;
  ``cg``: CG's ``u``.

The reference is ``exact``'s ``x = (H_b + λ_b I)⁻¹ v`` with ``H_b = G_bᵀG_b/n`` and the same
``λ_b`` rule as every damped method. Per query ``q`` and block ``b`` (and over all blocks
concatenated, ``overall``):

* ``rel_error = ‖û − x‖ / ‖x‖``;
* ``cosine = ûᵀx / (‖û‖ ‖x‖)`` (0 when either is zero);
* ``rel_error_scaled = min_{c ≥ 0} ‖c û − x‖ / ‖x‖``: the error left after the best *positive*
  rescaling of ``û`` (rankings ignore a positive scale, and only a positive one). It is
  ``√(1 − cosine²)`` when ``cosine ≥ 0`` and 1 when ``cosine < 0`` (then ``c = 0`` is best): a
  reversed direction (``cosine = −1``, ranking reversed) scores 1, the worst, not 0 as
  ``√(1 − cosine²)`` alone would. It lies in ``[0, 1]``, 1 also for ``û = 0``.

These are averaged over queries (queries whose ``x`` is zero are skipped). ``spearman`` is the
mean over queries of the Spearman rank correlation between the method's score row
``s_q = Σ_b û_{q,b} G_bᵀ`` and exact's (``scipy.stats.spearmanr``; constant rows skipped).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attriblm.analysis._common import json_float, output_dir, pyplot, save_figure
from attriblm.data.schema import Example
from attriblm.io import write_json
from attriblm.methods.base import FeatureSet, PreconditionedGradientMethod
from attriblm.methods.damping import Damping
from attriblm.methods.registry import (
    available_methods,
    get_method_class,
)
from attriblm.models.loading import LoadedModel
from attriblm.pipeline.plan import create_methods
from attriblm.pipeline.plan import resolve_methods as resolve
from attriblm.pipeline.scoring import prepare_features
from attriblm.pipeline.settings import AttributeSettings
from attriblm.progress import StageProgress, no_progress

NAME = "ihvp_error"
REFERENCE = "exact"
DEFAULT_METHODS = ("datainf", "lissa-paper", "lissa", "kfac", "ekfac", "gradsim")


def preconditioned_methods() -> list[str]:
    """Registered methods whose scores are ``Σ_b (Ĥ_b⁻¹ v_b) · g_b`` (comparable here)."""
    return [
        m
        for m in available_methods()
        if issubclass(get_method_class(m), PreconditionedGradientMethod)
    ]


def resolve_methods(methods: Sequence[str]) -> list[str]:
    """Expand ``all`` and validate: ConfigError for a method without ``Ĥ⁻¹v`` vectors."""
    return resolve(
        methods,
        accept=lambda cls: issubclass(cls, PreconditionedGradientMethod),
        refuse=lambda bad: (
            f"method(s) {bad} do not precondition query gradients, so they have no Ĥ⁻¹v to "
            f"compare; choose from: {', '.join(preconditioned_methods())}"
        ),
    )


def _row_stats(u: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-query pieces ``(‖u − x‖², ‖x‖², uᵀx, ‖u‖²)``, each ``[m]``; they add over blocks."""
    diff_sq = (u - x).square().sum(dim=1)
    return diff_sq, x.square().sum(dim=1), (u * x).sum(dim=1), u.square().sum(dim=1)


def positive_rescaled_error(cosine: Tensor) -> Tensor:
    """``min_{c ≥ 0} ‖c û − x‖ / ‖x‖`` from ``cosine(û, x)`` (any shape): ``√(1 − cos²)`` where
    ``cos ≥ 0``, else 1 (a reversed direction is the worst, not a perfect, match)."""
    orthogonal = (1.0 - cosine.square()).clamp_min(0.0).sqrt()
    return torch.where(cosine >= 0, orthogonal, torch.ones_like(cosine))


def _summaries(diff_sq: Tensor, x_sq: Tensor, dot: Tensor, u_sq: Tensor) -> dict[str, Any]:
    """Means over queries of relative error, cosine and scaled error (rows with ``x = 0`` out)."""
    keep = x_sq > 0
    if not bool(keep.any()):
        return {"rel_error": None, "cosine": None, "rel_error_scaled": None, "n_used": 0}
    rel = (diff_sq[keep] / x_sq[keep]).sqrt()
    denom = (u_sq[keep] * x_sq[keep]).sqrt()
    cos = torch.where(denom > 0, dot[keep] / denom.clamp_min(1e-300), 0.0).clamp(-1.0, 1.0)
    scaled = positive_rescaled_error(cos)
    return {
        "rel_error": float(rel.mean()),
        "rel_error_max": float(rel.max()),
        "cosine": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "rel_error_scaled": float(scaled.mean()),
        "n_used": int(keep.sum()),
    }


def _scores(u: dict[str, Tensor], train: FeatureSet) -> Tensor:
    """``Σ_b u_b G_bᵀ`` ``[m, n]`` float64."""
    total = None
    for b, ub in u.items():
        part = ub @ train.grads[b].to(device=ub.device, dtype=torch.float64).T
        total = part if total is None else total + part
    assert total is not None
    return total


def mean_spearman(scores: Tensor, reference: Tensor) -> dict[str, Any]:
    """Mean over rows of the Spearman correlation of ``scores [m, n]`` with ``reference``."""
    from scipy.stats import spearmanr

    a = scores.detach().cpu().double().numpy()
    b = reference.detach().cpu().double().numpy()
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row_a, row_b in zip(a, b, strict=True):
            rho = float(spearmanr(row_a, row_b).statistic)
            if math.isfinite(rho):
                values.append(rho)
    return {
        "mean": float(np.mean(values)) if values else None,
        "min": float(np.min(values)) if values else None,
        "n_used": len(values),
        "n_query": int(a.shape[0]),
    }


def compare_ihvp(
    train: FeatureSet,
    queries: FeatureSet,
    methods: Sequence[str] = DEFAULT_METHODS,
    damping: Damping | None = None,
    *,
    settings: AttributeSettings | None = None,
) -> dict[str, Any]:
    """Compare each method's preconditioned query vectors with ``exact``'s (no files written).

    ``train`` needs per-example gradients (and K-FAC factors for ``kfac`` / ``ekfac``),
    ``queries`` per-example gradients with the same blocks. The methods are built from
    ``settings`` (damping, factors, options; default :class:`AttributeSettings`), ``damping``
    overriding its damping rule. Returns ``{"methods": {name: {..., "blocks": {block:
    {...}}}}, "reference": "exact", "lambda": {block: λ_b}, ...}``.
    """
    names = resolve_methods(methods)
    settings = settings if settings is not None else AttributeSettings()
    if damping is not None:
        settings = replace(settings, damping_mode=damping.mode, damping=damping.value)
    reference = create_methods([REFERENCE], settings)[REFERENCE].fit(train)
    x, ref_info = reference.preconditioned(queries)
    ref_scores = _scores(x, train)
    results: dict[str, Any] = {}
    for name, method in create_methods(names, settings).items():
        start = time.perf_counter()
        u, info = method.fit(train).preconditioned(queries)
        seconds = time.perf_counter() - start
        totals = None
        blocks: dict[str, Any] = {}
        for b, xb in x.items():
            ub = u[b].to(device=xb.device, dtype=torch.float64)
            stats = _row_stats(ub, xb)
            blocks[b] = _summaries(*stats)
            if totals is None:
                totals = stats
            else:
                totals = tuple(t + s for t, s in zip(totals, stats, strict=True))
        assert totals is not None
        results[name] = {
            **_summaries(*totals),
            "spearman": mean_spearman(_scores(u, train), ref_scores),
            "seconds": seconds,
            "lambda": info.get("lambda"),
            "options": info.get("options"),
            "blocks": blocks,
        }
    return {
        "reference": REFERENCE,
        "reference_max_residual": ref_info.get("max_residual"),
        "damping": settings.damping_rule().to_dict(),
        "lambda": ref_info.get("lambda"),
        "n_train": train.n,
        "n_query": queries.n,
        "blocks": {b: int(t.shape[1]) for b, t in x.items()},
        "methods": results,
    }


def run_ihvp_error(
    loaded: LoadedModel,
    train: Sequence[Example],
    queries: Sequence[Example],
    out: Path | str,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    settings: AttributeSettings | None = None,
    sources: dict[str, str] | None = None,
    progress: StageProgress = no_progress,
) -> dict[str, Any]:
    """Features once on the fine-tuned model, then :func:`compare_ihvp`; writes JSON + PNG.

    Mirrors :func:`attriblm.pipeline.attribute.attribute`: ``loaded`` is the fine-tuned (LoRA)
    model, ``train`` / ``queries`` the examples; ``settings`` supplies the template, loss mask,
    max length, batch size and damping (its ``methods`` field is ignored in favour of
    ``methods``). Writes ``OUT/ihvp_error.json`` and ``OUT/ihvp_error.png``; returns the JSON.
    """
    settings = settings if settings is not None else AttributeSettings()
    names = resolve_methods(methods)
    sources = {"train": "train", "queries": "queries", **(sources or {})}
    out_path = output_dir(out)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    # gradients (and K-FAC statistics) for the methods and the exact reference
    prepared = prepare_features(
        loaded, train, queries, [REFERENCE, *names], settings, sources=sources,
        progress=progress, timings=timings,
    )  # fmt: skip
    report = compare_ihvp(prepared.train, prepared.queries, names, settings=settings)
    report = {
        "diagnosis": "ihvp_error",
        "model": loaded.identity.get("spec"),
        "adapter": loaded.identity.get("adapter"),
        "train": sources["train"],
        "queries": sources["queries"],
        "loss_mask": settings.loss_mask,
        "template": settings.template,
        **report,
        "timings_seconds": {**timings, "total": time.perf_counter() - started},
    }
    write_ihvp_report(report, out_path)
    return report


def write_ihvp_report(report: dict[str, Any], out: Path | str) -> Path:
    """Write ``OUT/ihvp_error.json`` and ``OUT/ihvp_error.png``; returns the JSON path."""
    out_path = output_dir(out)
    path = write_json(out_path / f"{NAME}.json", report)
    plot_ihvp_error(report, out_path / f"{NAME}.png")
    return path


def plot_ihvp_error(report: dict[str, Any], path: Path) -> Path:
    """Bars of relative error (log) and cosine per method; per-block relative error per method."""
    plt = pyplot()
    methods = list(report["methods"])
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    x = np.arange(len(methods))
    width = 0.4

    def values(key: str) -> list[float]:
        out = []
        for m in methods:
            v = json_float(report["methods"][m].get(key))
            out.append(float("nan") if v is None else v)
        return out

    ax = axes[0]
    rel = [max(v, 1e-16) for v in values("rel_error")]
    scaled = [max(v, 1e-16) for v in values("rel_error_scaled")]
    ax.bar(x - width / 2, rel, width, label="‖û − x‖/‖x‖")
    ax.bar(x + width / 2, scaled, width, label="after best positive rescaling (1 if cos < 0)")
    ax.set_yscale("log")
    ax.set_xticks(x, methods, rotation=30, ha="right")
    ax.set_title("relative error vs exact (mean over queries; 0 drawn at 1e-16)")
    ax.legend(fontsize=8)
    ax = axes[1]
    spearman = [
        float("nan")
        if report["methods"][m]["spearman"]["mean"] is None
        else report["methods"][m]["spearman"]["mean"]
        for m in methods
    ]
    ax.bar(x - width / 2, values("cosine"), width, label="cosine(û, x)")
    ax.bar(x + width / 2, spearman, width, label="Spearman of scores")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylim(min([-0.05, *[v for v in values("cosine") + spearman if math.isfinite(v)]]), 1.05)
    ax.set_xticks(x, methods, rotation=30, ha="right")
    ax.set_title("agreement with exact (mean over queries)")
    ax.legend(fontsize=8)
    ax = axes[2]
    blocks = list(report["blocks"])
    for m in methods:
        per_block = [json_float(report["methods"][m]["blocks"][b].get("rel_error")) for b in blocks]
        ys = [float("nan") if v is None else max(v, 1e-16) for v in per_block]
        ax.plot(range(len(blocks)), ys, "o-", ms=3, label=m)
    ax.set_yscale("log")
    ax.set_xlabel("block (LoRA matrix, module order)")
    ax.set_ylabel("‖û − x‖/‖x‖")
    ax.set_title("relative error per block")
    if len(blocks) <= 16:
        ax.set_xticks(range(len(blocks)), [_short(b) for b in blocks], rotation=60, ha="right")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _short(block: str) -> str:
    """``layers.0.self_attn.q_proj.lora_A`` → ``0.q_proj.A``."""
    parts = block.split(".")
    layer = next((p for p in parts if p.isdigit()), "")
    module = next((p for p in parts if p.endswith("_proj")), parts[-2] if len(parts) > 1 else "")
    kind = parts[-1].replace("lora_", "")
    return ".".join(p for p in (layer, module, kind) if p)
