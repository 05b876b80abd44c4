"""Counterfactual ground truth (docs/DESIGN.md §7.6, beyond the study): linear datamodeling score.

On a small run:

1. a fresh adapter is fine-tuned on the whole training set (a copy of the plain base model) and
   every method scores the queries on it (``s [n_query, n_train]``, larger = more supportive);
2. ``n_subsets`` random subsets ``S_j`` of ``round(fraction · n_train)`` rows are drawn (seeded),
   and on each a fresh adapter is fine-tuned ``seeds`` times with the same settings but training
   seeds ``seed, seed + 1, …`` (LoRA init, shuffling, dropout); each query's loss ``L_{j,k}(q)``
   (:func:`attriblm.train.loss.per_example_loss`, the training objective) is measured;
3. **actual** change: ``Δ_j(q) = mean_k L_{j,k}(q) − L_full(q)`` (also reported against the base
   model, ``− L_base(q)``);
4. **predicted** change (linear datamodel): ``p_j(q) = −Σ_{i ∈ S_j} s(q, i)``. Sign: a larger
   score means training on ``i`` lowers the query's loss, so more score mass in the subset
   predicts a *lower* loss, hence the minus;
5. ``LDS = mean over queries of Spearman_j(p_j(q), Δ_j(q))`` (:mod:`attriblm.analysis.lds`).

Subtracting any per-query reference (full model, base model) does not change a Spearman across
subsets, so the LDS is the same for both references. Two baselines are scored the same way:
``random`` (scores i.i.d. N(0, 1), seeded; should sit near 0) and ``same-label`` (``s(q, i) = 1``
when row ``i`` has the query's label, else 0: what "same label" alone predicts). The
**seed-noise ceiling** is the same statistic between two seeds' actual changes
(:func:`attriblm.analysis.lds.seed_agreement`, mean over seed pairs): how well one retraining
predicts another of the same subset.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attriblm.analysis._common import json_float, output_dir, pyplot, save_figure
from attriblm.analysis._retrain import (
    DEFAULT_METHODS,
    check_base,
    fresh_finetune,
    query_losses,
    resolve_methods,
    retrain_settings,
    score_methods,
)
from attriblm.analysis.lds import (
    label_indicator_scores,
    linear_datamodeling_score,
    predicted_loss_change,
    random_scores,
    random_subsets,
    seed_agreement,
    spearman,
)
from attriblm.data.schema import Example
from attriblm.errors import ConfigError
from attriblm.io import write_json
from attriblm.models.loading import LoadedModel
from attriblm.pipeline.attribute import AttributeSettings
from attriblm.progress import StageProgress, no_progress
from attriblm.train.checkpoints import load_checkpoints
from attriblm.train.finetune import CHECKPOINT_DIR, TrainSettings

NAME = "counterfactual"
RANDOM_BASELINE = "random"
LABEL_BASELINE = "same-label"
DEFAULT_SEEDS = 2
# the report's "definitions": what each number is
_DEFINITIONS = {
    "actual": "Δ_j(q) = mean over training seeds k of L_{j,k}(q) − L_full(q), L = "
    "per_example_loss (the training objective) of query q under the model retrained on "
    "subset j with seed k",
    "predicted": "p_j(q) = −Σ_{i∈S_j} s(q, i): larger score = more supportive = lower "
    "loss, hence the minus",
    "lds": "mean over queries of Spearman across subsets of (p_j(q), Δ_j(q)); queries "
    "with constant values skipped; 95% percentile bootstrap over queries",
    "reference": "subtracting L_full or L_base is a per-query constant: the LDS is the "
    "same for both",
    "baseline_random": "scores i.i.d. N(0, 1) from the seed",
    "baseline_label": "s(q, i) = 1 if label_i == label_q else 0",
    "seed_noise_ceiling": "the LDS statistic between two seeds' actual changes "
    "L_{j,a}(q) − L_full(q) and L_{j,b}(q) − L_full(q), per query the mean over seed "
    "pairs: how well one retraining predicts another",
}
__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_SEEDS",
    "check_seeds",
    "label_indicator_scores",
    "linear_datamodeling_score",
    "predicted_loss_change",
    "random_subsets",
    "run_counterfactual",
    "seed_agreement",
    "spearman",
]


def check_seeds(seeds: int) -> int:
    """ConfigError unless ``seeds ≥ 2`` (the noise ceiling needs two retrainings per subset)."""
    if int(seeds) != seeds or seeds < 2:
        raise ConfigError(
            f"--seeds must be an integer of at least 2 (two retrainings per subset give the "
            f"seed-noise ceiling), got {seeds}"
        )
    return int(seeds)


def run_counterfactual(
    base: LoadedModel,
    train: Sequence[Example],
    queries: Sequence[Example],
    out: Path | str,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    n_subsets: int = 20,
    fraction: float = 0.5,
    seeds: int = DEFAULT_SEEDS,
    train_settings: TrainSettings | None = None,
    settings: AttributeSettings | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    loss_batch_size: int = 16,
    sources: dict[str, str] | None = None,
    progress: StageProgress = no_progress,
) -> dict[str, Any]:
    """LDS per method from ``n_subsets × seeds`` retrainings on random subsets (module doc).

    Args:
        base: the plain base model (not modified).
        train, queries: a small run's training rows and queries.
        methods: attribution methods (``all`` allowed; ``tracin`` uses the full fine-tune's
            checkpoints).
        n_subsets, fraction, seed: how many subsets, their share of the training rows, seed.
        seeds: retrainings per subset (≥ 2), with training seeds ``train_settings.seed + k``.
        train_settings: fine-tuning settings of every model (default :class:`TrainSettings`).
        settings: attribution settings (batch size, damping, RepSim options); template, loss
            mask and max length are always ``train_settings``' own.
        n_boot: bootstrap resamples (over queries) for the LDS interval.

    Returns:
        ``{"methods": {name: {"lds", "ci95", "per_query", "n_defined", "n_undefined"}},
        "baseline_random": {...}, "baseline_label": {...}, "seed_noise_ceiling": {...},
        "subsets": [...], "losses": {"full", "base", "subsets", "subsets_per_seed"},
        "actual_change": {"vs_full", "vs_base"}, ...}``; also ``OUT/counterfactual.json`` and
        ``.png``.
    """
    check_base(base)
    names = resolve_methods(methods)
    seeds = check_seeds(seeds)
    if not train or not queries:
        raise ConfigError("counterfactual needs training rows and queries")
    subsets = random_subsets(len(train), n_subsets, fraction, seed)
    train_settings, settings = retrain_settings(train_settings, settings, names)
    sources = {"train": "train", "queries": "queries", **(sources or {})}
    out_path = output_dir(out)
    started = time.perf_counter()
    full_dir = out_path / "finetunes" / "full"
    fit = _FitSettings(train_settings, loss_batch_size, sources["train"], progress)
    loss_full, loss_base, scores = _full_fit(base, train, queries, names, settings, full_dir, fit)
    baselines = _baseline_scores(train, queries, seed)
    train_seeds = [train_settings.seed + k for k in range(seeds)]
    losses_per_seed = _subset_losses(base, train, queries, subsets, train_seeds, fit)
    losses = losses_per_seed.mean(axis=0)
    actual = losses - loss_full.numpy()[None, :]
    results, predicted = _score_rows({**scores, **baselines}, subsets, actual, n_boot, seed)
    baseline_random = results.pop(RANDOM_BASELINE)
    baseline_label = results.pop(LABEL_BASELINE)
    predicted.pop(RANDOM_BASELINE)
    ceiling = seed_agreement(losses_per_seed, n_boot=n_boot, seed=seed)
    ceiling = {"lds": ceiling.pop("value"), **ceiling}
    report: dict[str, Any] = {
        "diagnosis": "counterfactual",
        "model": base.identity.get("spec"),
        "train": sources["train"],
        "queries": sources["queries"],
        "n_train": len(train),
        "n_query": len(queries),
        "methods": results,
        "baseline_random": baseline_random,
        "baseline_label": baseline_label,
        "seed_noise_ceiling": ceiling,
        "settings": {
            "n_subsets": n_subsets,
            "fraction": fraction,
            "subset_size": len(subsets[0]),
            "seeds": seeds,
            "train_seeds": train_seeds,
            "seed": seed,
            "n_boot": n_boot,
            "train": train_settings.to_dict(),
            "batch_size": settings.batch_size,
            "damping_mode": settings.damping_mode,
            "damping": settings.damping,
        },
        "definitions": dict(_DEFINITIONS),
        "subsets": subsets,
        **_loss_fields(loss_full.numpy(), loss_base.numpy(), losses, losses_per_seed),
        "predicted_change": predicted,
        "finetune": str(full_dir),
        "wall_s": time.perf_counter() - started,
    }
    write_json(out_path / f"{NAME}.json", report)
    plot_counterfactual(report, out_path / f"{NAME}.png")
    return report


@dataclass(frozen=True)
class _FitSettings:
    """How every model of a run is fine-tuned and its query losses measured."""

    train: TrainSettings
    loss_batch_size: int
    data_source: str  # the training rows' name, for the fine-tunes' data_source
    progress: StageProgress


def _full_fit(
    base: LoadedModel,
    train: Sequence[Example],
    queries: Sequence[Example],
    names: Sequence[str],
    settings: AttributeSettings,
    full_dir: Path,
    fit: _FitSettings,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Fine-tune on all of ``train`` (kept in ``full_dir``); ``(L_full [n_query], L_base
    [n_query], {method: scores [n_query, n_train]})``, scores on the full fine-tune."""
    full_model, _ = fresh_finetune(
        base,
        train,
        fit.train,
        full_dir,
        data_source=f"{fit.data_source}:full",
        progress=fit.progress,
    )
    loss_full = query_losses(full_model, queries, fit.train, fit.loss_batch_size)
    loss_base = query_losses(base, queries, fit.train, fit.loss_batch_size)
    scores = score_methods(
        full_model,
        train,
        queries,
        names,
        settings,
        checkpoints=load_checkpoints(full_dir / CHECKPOINT_DIR),
        progress=fit.progress,
    )
    return loss_full, loss_base, scores


def _baseline_scores(
    train: Sequence[Example], queries: Sequence[Example], seed: int
) -> dict[str, torch.Tensor]:
    """The baselines' score matrices ``[n_query, n_train]`` float32: seeded i.i.d. N(0, 1), and
    1 where the training row has the query's label (else 0)."""
    return {
        RANDOM_BASELINE: random_scores(len(queries), len(train), seed),
        LABEL_BASELINE: label_indicator_scores(
            [e.label for e in train], [e.label for e in queries]
        ),
    }


def _subset_losses(
    base: LoadedModel,
    train: Sequence[Example],
    queries: Sequence[Example],
    subsets: Sequence[Sequence[int]],
    train_seeds: Sequence[int],
    fit: _FitSettings,
) -> np.ndarray:
    """``[n_seeds, n_subsets, n_query]``: each query's loss after fine-tuning on each subset with
    each training seed (adapters in a temporary directory, not kept)."""
    tick = fit.progress("retraining on subsets", len(subsets) * len(train_seeds))
    per_seed = []  # [n_seeds][n_subsets] of [n_query]
    with tempfile.TemporaryDirectory(prefix="attriblm-counterfactual-") as tmp:
        for k, train_seed in enumerate(train_seeds):
            seed_settings = replace(fit.train, seed=train_seed)
            row = []
            for j, rows in enumerate(subsets):
                loaded, _ = fresh_finetune(
                    base,
                    [train[i] for i in rows],
                    seed_settings,
                    Path(tmp) / f"subset-{j:03d}-seed-{k}",
                    data_source=f"{fit.data_source}:subset-{j}:seed-{train_seed}",
                )
                row.append(query_losses(loaded, queries, fit.train, fit.loss_batch_size).numpy())
                del loaded
                tick(1)
            per_seed.append(np.stack(row))
    return np.stack(per_seed)


def _score_rows(
    scores: dict[str, torch.Tensor],
    subsets: Sequence[Sequence[int]],
    actual: np.ndarray,
    n_boot: int,
    seed: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[list[float]]]]:
    """Per score matrix ``[n_query, n_train]``: its LDS row against ``actual [n_subsets,
    n_query]`` and its predicted changes ``[n_subsets][n_query]``."""
    results: dict[str, dict[str, Any]] = {}
    predicted: dict[str, list[list[float]]] = {}
    for name, matrix in scores.items():
        pred = predicted_loss_change(matrix, subsets)
        lds = linear_datamodeling_score(pred, actual, n_boot=n_boot, seed=seed)
        results[name] = {"lds": lds.pop("value"), **lds}
        predicted[name] = pred.tolist()
    return results, predicted


def _nested(array: np.ndarray) -> list:
    """``array`` as nested lists of JSON-safe floats (NaN and ±inf → ``None``)."""
    return [_nested(a) for a in array] if array.ndim > 1 else [json_float(v) for v in array]


def _loss_fields(
    loss_full: np.ndarray, loss_base: np.ndarray, losses: np.ndarray, per_seed: np.ndarray
) -> dict[str, Any]:
    """The report's ``losses`` and ``actual_change``: ``L_full``, ``L_base`` ``[n_query]``, the
    seed-mean subset losses ``[n_subsets, n_query]`` and those per seed, and the changes."""
    actual = losses - loss_full[None, :]
    vs_base = losses - loss_base[None, :]
    return {
        "losses": {
            "full": [json_float(v) for v in loss_full.tolist()],
            "base": [json_float(v) for v in loss_base.tolist()],
            "subsets": _nested(losses),
            "subsets_per_seed": _nested(per_seed),
        },
        "actual_change": {
            "vs_full": _nested(actual),
            "vs_base": _nested(vs_base),
            "mean_vs_full": json_float(float(actual.mean())),
            "mean_vs_base": json_float(float(vs_base.mean())),
        },
    }


def plot_counterfactual(report: dict[str, Any], path: Path) -> Path:
    """LDS bars per method and baseline with bootstrap 95% intervals; the seed-noise ceiling as
    a dashed line with its interval shaded."""
    plt = pyplot()
    rows = {**report["methods"]}
    colors = ["tab:blue"] * len(rows)
    if "baseline_label" in report:
        rows["same label (baseline)"] = report["baseline_label"]
        colors.append("tab:orange")
    rows["random (baseline)"] = report["baseline_random"]
    colors.append("tab:gray")
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
    ax.bar(range(len(names)), values, yerr=[lows, highs], capsize=4, color=colors)
    ceiling = report.get("seed_noise_ceiling")
    if ceiling and ceiling["lds"] is not None:
        ax.axhline(ceiling["lds"], color="tab:red", ls="--", lw=1.0, label="seed-noise ceiling")
        if ceiling["ci95"][0] is not None:
            ax.axhspan(*ceiling["ci95"], color="tab:red", alpha=0.12)
        ax.legend(fontsize=8, loc="lower left")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("LDS (mean Spearman over queries)")
    s = report["settings"]
    ax.set_title(
        f"linear datamodeling score · {s['n_subsets']} subsets of {s['subset_size']}/"
        f"{report['n_train']} rows × {s.get('seeds', 1)} seeds\n95% bootstrap CI over queries",
        fontsize=10,
    )
    fig.tight_layout()
    return save_figure(fig, path)
