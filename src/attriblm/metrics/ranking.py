"""Ranking metrics for a score matrix against class labels (docs/DESIGN.md §4).

Conventions:

* ``scores`` is ``[n_query, n_train]`` (torch or numpy); larger = ranked first (docs/DESIGN.md §2).
* A training example is *relevant* to a query when it has the query's label (labels are the
  study's ``variation`` strings).
* **Ties** (rank-based metrics: Acc, Cover, precision@k, recall@k) are broken by the lower train
  index: the ranking is a stable sort on ``-scores``. AUPRC / AUROC use scikit-learn, which
  treats tied scores as tied rather than ordering them.
* Per-query values are averaged over queries; confidence intervals are percentile bootstraps
  over queries. Queries for which a metric is undefined (recall@k with no relevant training
  example; AUPRC / AUROC when the relevance row is all 0 or all 1) are skipped and counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from attriblm.errors import ConfigError, DataError

Labels = Sequence[str | None]

TIE_RULE = "stable sort on -score: equal scores rank the lower train index first"
PAPER_K_RULE = "n_train // n_classes (the paper's)"


def _as_scores(scores: Any) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(f"scores must be a 2-D [n_query, n_train] matrix, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError("scores contain NaN or infinite values; cannot rank")
    return arr


def _encode(
    scores: np.ndarray, query_labels: Labels, train_labels: Labels
) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes for query and train labels (shared vocabulary), and ``n_classes``."""
    for which, labels, size in (
        ("query", query_labels, scores.shape[0]),
        ("train", train_labels, scores.shape[1]),
    ):
        if len(labels) != size:
            raise DataError(
                f"scores have {size} {which} {'rows' if which == 'query' else 'columns'} "
                f"but there are {len(labels)} {which} labels"
            )
        missing = [i for i, label in enumerate(labels) if label is None]
        if missing:
            raise ConfigError(
                f"evaluation needs a label (the 'variation' field) for every example; "
                f"{len(missing)} {which} examples have none (first: row {missing[0] + 1})"
            )
    vocab = {label: i for i, label in enumerate(dict.fromkeys([*train_labels, *query_labels]))}
    q = np.array([vocab[label] for label in query_labels], dtype=np.int64)
    t = np.array([vocab[label] for label in train_labels], dtype=np.int64)
    return q, t, len(set(train_labels))


def _ranked_relevance(scores: np.ndarray, q: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``[m, n]`` bool: is the train example at rank ``r`` (0 = top) relevant to query ``i``."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return t[order] == q[:, None]


def default_k(train_labels: Labels) -> int:
    """The paper's Cover k: ``n_train // n_classes`` (``n_classes`` = distinct train labels)."""
    n_classes = len(set(train_labels))
    return len(train_labels) // n_classes if n_classes else 0


def _check_k(k: int, n_train: int, option: str = "--k") -> int:
    if isinstance(k, bool) or int(k) != k:
        raise ConfigError(f"{option} must be an integer, got {k!r}")
    k = int(k)
    if k < 1 or k > n_train:
        raise ConfigError(f"{option} must be between 1 and n_train = {n_train}, got {k}")
    return k


def _resolve_k(k: int | None, train_labels: Labels, n_train: int) -> int:
    return _check_k(default_k(train_labels) if k is None else k, n_train)


# ---- per-query values (NaN = undefined for that query) -----------------------------------


def _per_query_top1(rel: np.ndarray) -> np.ndarray:
    return rel[:, 0].astype(np.float64)


def _per_query_precision(rel: np.ndarray, k: int) -> np.ndarray:
    return rel[:, :k].sum(axis=1) / k


def _per_query_recall(rel: np.ndarray, k: int) -> np.ndarray:
    n_rel = rel.sum(axis=1)
    hits = rel[:, :k].sum(axis=1).astype(np.float64)
    out = np.full(rel.shape[0], np.nan)
    np.divide(hits, n_rel, out=out, where=n_rel > 0)
    return out


def _per_query_curve(scores: np.ndarray, q: np.ndarray, t: np.ndarray, fn) -> np.ndarray:
    relevant = t[None, :] == q[:, None]
    n_rel = relevant.sum(axis=1)
    out = np.full(scores.shape[0], np.nan)
    for i in np.flatnonzero((n_rel > 0) & (n_rel < relevant.shape[1])):
        out[i] = fn(relevant[i], scores[i])
    return out


def _mean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


# ---- public metrics ----------------------------------------------------------------------


def top1_accuracy(scores: Any, query_labels: Labels, train_labels: Labels) -> float:
    """Acc: fraction of queries whose top-ranked training example has the query's label."""
    s = _as_scores(scores)
    q, t, _ = _encode(s, query_labels, train_labels)
    return _mean(_per_query_top1(_ranked_relevance(s, q, t)))


def precision_at_k(
    scores: Any, query_labels: Labels, train_labels: Labels, k: int | None = None
) -> float:
    """Mean over queries of ``|top-k with the query's label| / k`` (default k: the paper's)."""
    s = _as_scores(scores)
    q, t, _ = _encode(s, query_labels, train_labels)
    k = _resolve_k(k, train_labels, s.shape[1])
    return _mean(_per_query_precision(_ranked_relevance(s, q, t), k))


def cover(scores: Any, query_labels: Labels, train_labels: Labels, k: int | None = None) -> float:
    """Cover (the paper's): precision@k with ``k = n_train // n_classes`` unless ``k`` is given.

    ``n_classes`` is the number of distinct train labels. ConfigError if ``k`` is outside
    ``[1, n_train]``.
    """
    return precision_at_k(scores, query_labels, train_labels, k)


def recall_at_k(
    scores: Any, query_labels: Labels, train_labels: Labels, k: int | None = None
) -> float:
    """Mean over queries of ``|top-k with the query's label| / |train with the query's label|``.

    Queries whose label no training example has are skipped (NaN if all are).
    """
    s = _as_scores(scores)
    q, t, _ = _encode(s, query_labels, train_labels)
    k = _resolve_k(k, train_labels, s.shape[1])
    return _mean(_per_query_recall(_ranked_relevance(s, q, t), k))


def auprc(scores: Any, query_labels: Labels, train_labels: Labels) -> float:
    """Mean per-query average precision (sklearn) with relevance = same label.

    Queries whose relevance row is all 0 or all 1 are skipped (NaN if all are).
    """
    s = _as_scores(scores)
    q, t, _ = _encode(s, query_labels, train_labels)
    return _mean(_per_query_curve(s, q, t, average_precision_score))


def auroc(scores: Any, query_labels: Labels, train_labels: Labels) -> float:
    """Mean per-query ROC AUC (sklearn) with relevance = same label; skips as :func:`auprc`."""
    s = _as_scores(scores)
    q, t, _ = _encode(s, query_labels, train_labels)
    return _mean(_per_query_curve(s, q, t, roc_auc_score))


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (one value per query).

    Resamples queries with replacement ``n_boot`` times (``numpy.random.default_rng(seed)``);
    returns the ``alpha/2`` and ``1 − alpha/2`` quantiles of the resampled means. NaN values are
    dropped first; with no values left the interval is ``(nan, nan)``.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0 or n_boot < 1:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _summary(values: np.ndarray, n_boot: int, seed: int, **extra: Any) -> dict[str, Any]:
    kept = ~np.isnan(values)
    lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return {
        "value": _json_float(_mean(values)),
        "ci95": [_json_float(lo), _json_float(hi)],
        "n_used": int(kept.sum()),
        "skipped": int((~kept).sum()),
        **extra,
    }


def evaluate_scores(
    scores: Any,
    query_labels: Labels,
    train_labels: Labels,
    *,
    k: int | None = None,
    extra_k: dict[str, int] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every ranking metric of one score matrix, JSON-serialisable.

    Returns a dict with ``acc``, ``cover``, ``precision_at_k``, ``recall_at_k``, ``auprc``,
    ``auroc`` (each ``{"value", "ci95": [lo, hi], "n_used", "skipped"}``, the k-based ones also
    ``"k"``), ``cover@<name>`` for each ``extra_k`` entry (e.g. ``{"n_harmful": 20}``),
    ``cover_k`` and ``cover_k_rule``, ``n_query``, ``n_train``, ``n_classes``, and the tie and
    bootstrap settings. ``precision_at_k`` uses Cover's k, so it equals ``cover`` (Cover *is*
    precision@k with the paper's k); ``recall_at_k`` uses the same k. Undefined values are
    ``None``.
    """
    s = _as_scores(scores)
    q, t, n_classes = _encode(s, query_labels, train_labels)
    n_query, n_train = s.shape
    cover_k = _resolve_k(k, train_labels, n_train)
    extra = {
        name: _check_k(value, n_train, f"k for cover@{name}")
        for name, value in (extra_k or {}).items()
    }
    rel = _ranked_relevance(s, q, t)
    boot = {"n_boot": n_boot, "seed": seed}
    precision = _summary(_per_query_precision(rel, cover_k), **boot, k=cover_k)
    out: dict[str, Any] = {
        "n_query": n_query,
        "n_train": n_train,
        "n_classes": n_classes,
        "cover_k": cover_k,
        "cover_k_rule": PAPER_K_RULE if k is None else "explicit (--k)",
        "acc": _summary(_per_query_top1(rel), **boot),
        "cover": {**precision, "ci95": list(precision["ci95"])},
        "precision_at_k": precision,
        "recall_at_k": _summary(_per_query_recall(rel, cover_k), **boot, k=cover_k),
        "auprc": _summary(_per_query_curve(s, q, t, average_precision_score), **boot),
        "auroc": _summary(_per_query_curve(s, q, t, roc_auc_score), **boot),
    }
    for name, value in extra.items():
        out[f"cover@{name}"] = _summary(_per_query_precision(rel, value), **boot, k=value)
    out["ties"] = TIE_RULE
    out["bootstrap"] = {"n_boot": n_boot, "seed": seed, "level": 0.95, "unit": "query"}
    return out
