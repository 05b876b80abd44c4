"""Linear datamodeling score (LDS) statistics, apart from any retraining.

Arrays are ``[n_subsets, n_query]`` (one column per query, one row per training subset ``S_j``)
unless said otherwise. Scores are ``[n_query, n_train]``, larger = more supportive (training on
``i`` lowers the query's loss), so the predicted loss change of a subset is ``−Σ_{i∈S_j} s``.

* :func:`linear_datamodeling_score`: mean over queries of the Spearman correlation across
  subsets of predicted and actual changes, with a bootstrap interval over queries.
* :func:`seed_agreement`: the same statistic between the actual outcomes of two retraining
  seeds — the ceiling that retraining noise puts on any method's LDS.
* :func:`label_indicator_scores`, :func:`random_scores`: the two baselines.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from attriblm.errors import ConfigError


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


def _summarise(per_query: list[float | None], n_boot: int, seed: int) -> dict[str, Any]:
    """Mean of the defined per-query values and its percentile bootstrap 95% interval."""
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


def _per_query_spearman(p: np.ndarray, a: np.ndarray) -> list[float | None]:
    return [spearman(p[:, q], a[:, q]) for q in range(p.shape[1])]


def _as_2d_pair(predicted: Any, actual: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predicted, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if p.shape != a.shape or p.ndim != 2:
        raise ValueError(f"predicted {p.shape} and actual {a.shape} must both be [n_subsets, n_q]")
    return p, a


def linear_datamodeling_score(
    predicted: Any, actual: Any, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """LDS of ``predicted`` against ``actual``, both ``[n_subsets, n_query]``.

    Returns ``{"value", "ci95", "per_query", "n_defined", "n_undefined"}``: ``value`` = mean
    over queries of the Spearman across subsets (``None`` when no query has one), ``ci95`` = 2.5
    and 97.5 percentiles of that mean over ``n_boot`` resamples of the defined queries
    (``None`` entries when ``n_boot = 0``), ``per_query`` = the Spearmans (``None``: undefined).
    """
    p, a = _as_2d_pair(predicted, actual)
    return _summarise(_per_query_spearman(p, a), n_boot, seed)


def seed_agreement(actual_per_seed: Any, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The LDS statistic between retraining seeds: ``actual_per_seed [n_seeds, n_subsets, n_q]``.

    For every pair of seeds ``(a, b)`` and query ``q``, the Spearman across subsets of
    ``actual_a[:, q]`` and ``actual_b[:, q]``; per query the mean over pairs (pairs where it is
    undefined skipped); then the mean over queries with a bootstrap 95% interval, as in
    :func:`linear_datamodeling_score`. Also ``"per_pair"``: each pair's value. Needs ≥ 2 seeds.
    """
    outcomes = np.asarray(actual_per_seed, dtype=np.float64)
    if outcomes.ndim != 3 or outcomes.shape[0] < 2:
        raise ValueError(f"need [n_seeds >= 2, n_subsets, n_query], got {outcomes.shape}")
    pairs = list(itertools.combinations(range(outcomes.shape[0]), 2))
    per_pair = [_per_query_spearman(outcomes[a], outcomes[b]) for a, b in pairs]
    per_query: list[float | None] = []
    for values in zip(*per_pair, strict=True):
        defined = [v for v in values if v is not None]
        per_query.append(float(np.mean(defined)) if defined else None)
    result = _summarise(per_query, n_boot, seed)
    result["per_pair"] = {
        f"{a}-{b}": _summarise(values, 0, seed)["value"]
        for (a, b), values in zip(pairs, per_pair, strict=True)
    }
    return result


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


def label_indicator_scores(
    train_labels: Sequence[str], query_labels: Sequence[str]
) -> torch.Tensor:
    """``[n_query, n_train]`` float32: 1 where the training row has the query's label, else 0.

    As a score it predicts only "more rows of my label in the subset, lower loss"; a method
    that does not beat it says nothing beyond the label.
    """
    train_ids = {label: k for k, label in enumerate(dict.fromkeys(train_labels))}
    t = torch.tensor([train_ids[label] for label in train_labels])
    q = torch.tensor([train_ids.get(label, -1) for label in query_labels])
    return (q[:, None] == t[None, :]).float()


def random_scores(n_query: int, n_train: int, seed: int) -> torch.Tensor:
    """``[n_query, n_train]`` float32 i.i.d. N(0, 1) from ``seed`` (the chance baseline)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n_query, n_train, generator=generator)
