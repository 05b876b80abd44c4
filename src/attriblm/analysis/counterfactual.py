"""Counterfactual ground truth (docs/DESIGN.md §7.6, beyond the study): linear datamodeling score.

On a small run:

1. a fresh adapter is fine-tuned on the whole training set (a copy of the plain base model) and
   every method scores the queries on it (``s [n_query, n_train]``, larger = more supportive);
2. ``n_subsets`` random subsets ``S_j`` of ``round(fraction · n_train)`` rows are drawn (seeded),
   a fresh adapter is fine-tuned on each with the same settings, and each query's loss
   ``L_j(q)`` (:func:`attriblm.train.loss.per_example_loss`, the training objective) is measured;
3. **actual** change: ``Δ_j(q) = L_j(q) − L_full(q)`` (also reported against the base model,
   ``L_j(q) − L_base(q)``);
4. **predicted** change (linear datamodel): ``p_j(q) = −Σ_{i ∈ S_j} s(q, i)``. Sign: a larger
   score means training on ``i`` lowers the query's loss, so more score mass in the subset
   predicts a *lower* loss, hence the minus;
5. ``LDS = mean over queries of Spearman_j(p_j(q), Δ_j(q))`` (Spearman across subsets, average
   ranks for ties), with a percentile bootstrap 95% interval over queries. A query whose
   predicted or actual values are constant across subsets has no Spearman and is skipped
   (counted). Subtracting any per-query reference (full model, base model) does not change a
   Spearman across subsets, so the LDS is the same for both references.

A ``random`` baseline (scores drawn i.i.d. from N(0, 1), seeded) is scored the same way and
should sit near 0.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from attriblm.analysis._common import json_float, output_dir, pyplot, save_figure
from attriblm.analysis._retrain import (
    DEFAULT_METHODS,
    check_base,
    fresh_finetune,
    query_losses,
    resolve_methods,
    score_methods,
)
from attriblm.data.schema import Example
from attriblm.errors import ConfigError
from attriblm.io import write_json
from attriblm.models.loading import LoadedModel
from attriblm.pipeline.attribute import AttributeSettings
from attriblm.progress import StageProgress
from attriblm.train.checkpoints import load_checkpoints
from attriblm.train.finetune import CHECKPOINT_DIR, TrainSettings

NAME = "counterfactual"
RANDOM_BASELINE = "random"
__all__ = [
    "DEFAULT_METHODS",
    "linear_datamodeling_score",
    "predicted_loss_change",
    "random_subsets",
    "run_counterfactual",
    "spearman",
]


def _no_progress(_description: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman correlation (Pearson of average ranks); ``None`` when either side is constant."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"spearman needs two 1-D arrays of one length, got {a.shape}, {b.shape}")
    ra, rb = rankdata(a) - (len(a) + 1) / 2, rankdata(b) - (len(b) + 1) / 2
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    if len(a) < 2 or denom == 0.0:
        return None
    return float(np.clip((ra * rb).sum() / denom, -1.0, 1.0))


def linear_datamodeling_score(
    predicted: Any, actual: Any, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """LDS of ``predicted`` against ``actual``, both ``[n_subsets, n_query]``.

    Returns ``{"value", "ci95", "per_query", "n_defined", "n_undefined"}``: ``value`` = mean
    over queries of the Spearman across subsets (``None`` when no query has one), ``ci95`` = 2.5
    and 97.5 percentiles of that mean over ``n_boot`` resamples of the defined queries
    (``None`` entries when ``n_boot = 0``), ``per_query`` = the Spearmans (``None``: undefined).
    """
    p = np.asarray(predicted, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if p.shape != a.shape or p.ndim != 2:
        raise ValueError(f"predicted {p.shape} and actual {a.shape} must both be [n_subsets, n_q]")
    per_query = [spearman(p[:, q], a[:, q]) for q in range(p.shape[1])]
    defined = np.array([r for r in per_query if r is not None], dtype=np.float64)
    value = float(defined.mean()) if defined.size else None
    ci: list[float | None] = [None, None]
    if defined.size and n_boot > 0:
        rng = np.random.default_rng(seed)
        means = defined[rng.integers(0, defined.size, size=(n_boot, defined.size))].mean(axis=1)
        ci = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
    return {
        "value": value,
        "ci95": ci,
        "per_query": per_query,
        "n_defined": int(defined.size),
        "n_undefined": len(per_query) - int(defined.size),
    }


def predicted_loss_change(scores: torch.Tensor, subsets: Sequence[Sequence[int]]) -> np.ndarray:
    """``[n_subsets, n_query]``: ``−Σ_{i∈S_j} scores[q, i]`` (larger score → lower loss)."""
    s = scores.detach().double().cpu().numpy()
    mask = np.zeros((len(subsets), s.shape[1]), dtype=np.float64)
    for j, rows in enumerate(subsets):
        mask[j, list(rows)] = 1.0
    return -(mask @ s.T)


def random_subsets(n_train: int, n_subsets: int, fraction: float, seed: int) -> list[list[int]]:
    """``n_subsets`` sorted subsets of ``round(fraction · n_train)`` rows, seeded by ``seed``."""
    if n_subsets < 2:
        raise ConfigError(f"--n-subsets must be at least 2, got {n_subsets}")
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"--fraction must be in (0, 1), got {fraction}")
    size = round(fraction * n_train)
    if not 1 <= size < n_train:
        raise ConfigError(
            f"--fraction {fraction} of {n_train} training rows gives subsets of {size} rows; "
            "need at least 1 and fewer than all"
        )
    rng = random.Random(f"counterfactual:{seed}")
    return [sorted(rng.sample(range(n_train), size)) for _ in range(n_subsets)]


def run_counterfactual(
    base: LoadedModel,
    train: Sequence[Example],
    queries: Sequence[Example],
    out: Path | str,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    n_subsets: int = 20,
    fraction: float = 0.5,
    train_settings: TrainSettings | None = None,
    settings: AttributeSettings | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    loss_batch_size: int = 16,
    sources: dict[str, str] | None = None,
    progress: StageProgress = _no_progress,
) -> dict[str, Any]:
    """LDS per method from ``n_subsets`` retrainings on random subsets; see the module doc.

    Args:
        base: the plain base model (not modified).
        train, queries: a small run's training rows and queries.
        methods: attribution methods (``all`` allowed; ``tracin`` uses the full fine-tune's
            checkpoints).
        n_subsets, fraction, seed: how many subsets, their share of the training rows, seed.
        train_settings: fine-tuning settings of every model (default :class:`TrainSettings`).
        settings: attribution settings (batch size, damping, RepSim options); template, loss
            mask and max length are always ``train_settings``' own.
        n_boot: bootstrap resamples (over queries) for the LDS interval.

    Returns:
        ``{"methods": {name: {"lds", "ci95", "per_query", "n_defined", "n_undefined"}},
        "baseline_random": {...}, "subsets": [...], "losses": {"full", "base", "subsets"},
        "actual_change": {"vs_full", "vs_base"}, ...}``; also ``OUT/counterfactual.json`` and
        ``.png``.
    """
    check_base(base)
    names = resolve_methods(methods)
    if not train or not queries:
        raise ConfigError("counterfactual needs training rows and queries")
    subsets = random_subsets(len(train), n_subsets, fraction, seed)
    train_settings = train_settings if train_settings is not None else TrainSettings()
    train_settings.validate()
    settings = replace(
        settings if settings is not None else AttributeSettings(),
        methods=names,
        template=train_settings.template,
        loss_mask=train_settings.loss_mask,
        max_length=train_settings.max_length,
    )
    sources = {"train": "train", "queries": "queries", **(sources or {})}
    out_path = output_dir(out)
    started = time.perf_counter()

    full_dir = out_path / "finetunes" / "full"
    full_model, _ = fresh_finetune(
        base,
        train,
        train_settings,
        full_dir,
        data_source=f"{sources['train']}:full",
        progress=progress,
    )
    loss_full = query_losses(full_model, queries, train_settings, loss_batch_size)
    loss_base = query_losses(base, queries, train_settings, loss_batch_size)
    scores = score_methods(
        full_model,
        train,
        queries,
        names,
        settings,
        checkpoints=load_checkpoints(full_dir / CHECKPOINT_DIR),
        progress=progress,
    )
    del full_model
    generator = torch.Generator().manual_seed(seed)
    scores[RANDOM_BASELINE] = torch.randn(len(queries), len(train), generator=generator)

    tick = progress("retraining on subsets", len(subsets))
    subset_losses = []
    with tempfile.TemporaryDirectory(prefix="attriblm-counterfactual-") as tmp:
        for j, rows in enumerate(subsets):
            loaded, _ = fresh_finetune(
                base,
                [train[i] for i in rows],
                train_settings,
                Path(tmp) / f"subset-{j:03d}",
                data_source=f"{sources['train']}:subset-{j}",
            )
            subset_losses.append(query_losses(loaded, queries, train_settings, loss_batch_size))
            del loaded
            tick(1)
    losses = torch.stack(subset_losses).numpy()  # [n_subsets, n_query]
    actual = losses - loss_full.numpy()[None, :]
    results: dict[str, dict[str, Any]] = {}
    predicted: dict[str, list[list[float]]] = {}
    for name, matrix in scores.items():
        pred = predicted_loss_change(matrix, subsets)
        lds = linear_datamodeling_score(pred, actual, n_boot=n_boot, seed=seed)
        results[name] = {"lds": lds.pop("value"), **lds}
        predicted[name] = pred.tolist()
    baseline = results.pop(RANDOM_BASELINE)
    predicted.pop(RANDOM_BASELINE)

    report: dict[str, Any] = {
        "diagnosis": "counterfactual",
        "model": base.identity.get("spec"),
        "train": sources["train"],
        "queries": sources["queries"],
        "n_train": len(train),
        "n_query": len(queries),
        "methods": results,
        "baseline_random": baseline,
        "settings": {
            "n_subsets": n_subsets,
            "fraction": fraction,
            "subset_size": len(subsets[0]),
            "seed": seed,
            "n_boot": n_boot,
            "train": train_settings.to_dict(),
            "batch_size": settings.batch_size,
            "damping_mode": settings.damping_mode,
            "damping": settings.damping,
        },
        "definitions": {
            "actual": "Δ_j(q) = L_j(q) − L_full(q), L = per_example_loss (the training "
            "objective) of query q under the model retrained on subset j",
            "predicted": "p_j(q) = −Σ_{i∈S_j} s(q, i): larger score = more supportive = lower "
            "loss, hence the minus",
            "lds": "mean over queries of Spearman across subsets of (p_j(q), Δ_j(q)); queries "
            "with constant values skipped; 95% percentile bootstrap over queries",
            "reference": "subtracting L_full or L_base is a per-query constant: the LDS is the "
            "same for both",
            "baseline_random": "scores i.i.d. N(0, 1) from the seed",
        },
        "subsets": subsets,
        "losses": {
            "full": [json_float(v) for v in loss_full.tolist()],
            "base": [json_float(v) for v in loss_base.tolist()],
            "subsets": [[json_float(v) for v in row] for row in losses.tolist()],
        },
        "actual_change": {
            "vs_full": [[json_float(v) for v in row] for row in actual.tolist()],
            "vs_base": [
                [json_float(v) for v in row]
                for row in (losses - loss_base.numpy()[None, :]).tolist()
            ],
            "mean_vs_full": json_float(float(actual.mean())),
            "mean_vs_base": json_float(float((losses - loss_base.numpy()[None, :]).mean())),
        },
        "predicted_change": predicted,
        "finetune": str(full_dir),
        "wall_s": time.perf_counter() - started,
    }
    write_json(out_path / f"{NAME}.json", report)
    plot_counterfactual(report, out_path / f"{NAME}.png")
    return report


def plot_counterfactual(report: dict[str, Any], path: Path) -> Path:
    """LDS bars per method (and the random baseline) with bootstrap 95% intervals."""
    plt = pyplot()
    rows = {**report["methods"], "random (baseline)": report["baseline_random"]}
    names = list(rows)
    values = [rows[n]["lds"] if rows[n]["lds"] is not None else float("nan") for n in names]
    lows = [
        v - c[0] if c[0] is not None else 0.0
        for v, c in zip(values, (rows[n]["ci95"] for n in names), strict=True)
    ]
    highs = [
        c[1] - v if c[1] is not None else 0.0
        for v, c in zip(values, (rows[n]["ci95"] for n in names), strict=True)
    ]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(names) + 2), 4.4))
    colors = ["tab:blue"] * (len(names) - 1) + ["tab:gray"]
    ax.bar(range(len(names)), values, yerr=[lows, highs], capsize=4, color=colors)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("LDS (mean Spearman over queries)")
    s = report["settings"]
    ax.set_title(
        f"linear datamodeling score · {s['n_subsets']} subsets of {s['subset_size']}/"
        f"{report['n_train']} rows\n95% bootstrap CI over queries",
        fontsize=10,
    )
    fig.tight_layout()
    return save_figure(fig, path)
