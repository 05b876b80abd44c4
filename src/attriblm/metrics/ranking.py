"""Ranking metrics for a score matrix against class labels (docs/DESIGN.md §4).

Conventions:

* ``scores`` is ``[n_query, n_train]`` (torch or numpy); larger = ranked first (docs/DESIGN.md §2).
* A training example is *relevant* to a query when it has the query's label (labels are the
  study's ``variation`` strings).
* **Ranking and ties:** :func:`rank_train` is the one ranking of training rows used everywhere
  (these metrics, ``topk.jsonl``, reports, subset retraining). It sorts by score, descending;
  equal scores are ordered by a seeded random permutation of the train rows drawn per query
  (``numpy.random.default_rng((tie_seed, query))``), never by file order: task builders list the
  target class first, so "lower index first" would turn exact ties into hits and inflate Acc and
  Cover. The seed (default :data:`TIE_SEED`) is recorded with the results, and
  :func:`evaluate_scores` counts the queries whose top-k boundary falls inside a group of equal
  scores (where the seed decides the metric). AUPRC / AUROC use scikit-learn, which handles ties
  its own way without the seed: ``average_precision_score`` and ``roc_auc_score`` put tied
  scores at one threshold (a tied group enters the precision-recall curve as one step, and a
  tied positive-negative pair counts one half in ROC AUC), so they do not depend on any order.
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

TIE_SEED = 0
TIE_RULE = (
    "score descending; equal scores in the order of a random permutation of the train rows "
    "drawn per query from numpy.random.default_rng((tie_seed, query))"
)
AUC_TIE_RULE = "scikit-learn: tied scores share one threshold (no tie-breaking order)"
PAPER_K_RULE = "n_train // n_classes (the paper's)"


def as_scores(scores: Any) -> np.ndarray:
    """``scores`` as a finite float64 ``[n_query, n_train]`` array (DataError otherwise)."""
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


def tie_permutation(n_train: int, query: int, tie_seed: int = TIE_SEED) -> np.ndarray:
    """``[n_train]`` int64: the random order in which query ``query``'s tied rows are ranked."""
    return np.random.default_rng((int(tie_seed), int(query))).permutation(n_train)


def rank_train(
    scores: Any, tie_seed: int = TIE_SEED, *, queries: Sequence[int] | None = None
) -> np.ndarray:
    """Training rows in rank order per query: ``[m, n_train]`` int64, column 0 = top.

    Args:
        scores: ``[m, n_train]`` (torch or numpy); larger = more supportive = ranked first.
        tie_seed: seed of the tie-breaking permutations (see the module docstring).
        queries: the query index of each row of ``scores`` (default ``0 … m-1``), so that ranking
            a single query's row gives the same order as ranking the whole matrix.

    Equal scores follow :func:`tie_permutation` for that query; NaN scores rank last.
    """
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().to("cpu", torch.float64).numpy()
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise DataError(f"scores must be a 2-D [n_query, n_train] matrix, got shape {s.shape}")
    m, n = s.shape
    rows = range(m) if queries is None else [int(q) for q in queries]
    if len(rows) != m:
        raise ValueError(f"rank_train: {len(rows)} query indices for {m} score rows")
    order = np.empty((m, n), dtype=np.int64)
    for i, query in enumerate(rows):
        perm = tie_permutation(n, query, tie_seed)
        order[i] = perm[np.argsort(-s[i, perm], kind="stable")]
    return order


def run_tie_seed(info: dict[str, Any]) -> int:
    """The tie seed a run's ``run.json`` records under ``ranking.tie_seed`` (runs made before it
    was recorded: :data:`TIE_SEED`, the seed they would be re-ranked with)."""
    ranking = info.get("ranking")
    seed = ranking.get("tie_seed") if isinstance(ranking, dict) else None
    return int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else TIE_SEED


def ties_at_boundary(scores: np.ndarray, order: np.ndarray, k: int) -> np.ndarray:
    """``[m]`` bool: the score ranked ``k`` equals the one ranked ``k + 1`` (the top-k set then
    depends on the tie-breaking permutation). Always False when ``k >= n_train``."""
    if k >= scores.shape[1]:
        return np.zeros(scores.shape[0], dtype=bool)
    ranked = np.take_along_axis(scores, order[:, k - 1 : k + 1], axis=1)
    return ranked[:, 0] == ranked[:, 1]


def _ranked_relevance(
    scores: np.ndarray, q: np.ndarray, t: np.ndarray, tie_seed: int = TIE_SEED
) -> np.ndarray:
    """``[m, n]`` bool: is the train example at rank ``r`` (0 = top) relevant to query ``i``."""
    return t[rank_train(scores, tie_seed)] == q[:, None]


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


def top1_accuracy(
    scores: Any, query_labels: Labels, train_labels: Labels, *, tie_seed: int = TIE_SEED
) -> float:
    """Acc: fraction of queries whose top-ranked training example (:func:`rank_train`) has the
    query's label."""
    s = as_scores(scores)
    q, t, _ = _encode(s, query_labels, train_labels)
    return _mean(_per_query_top1(_ranked_relevance(s, q, t, tie_seed)))


def precision_at_k(
    scores: Any,
    query_labels: Labels,
    train_labels: Labels,
    k: int | None = None,
    *,
    tie_seed: int = TIE_SEED,
) -> float:
    """Mean over queries of ``|top-k with the query's label| / k`` (default k: the paper's)."""
    s = as_scores(scores)
    q, t, _ = _encode(s, query_labels, train_labels)
    k = _resolve_k(k, train_labels, s.shape[1])
    return _mean(_per_query_precision(_ranked_relevance(s, q, t, tie_seed), k))


def cover(
    scores: Any,
    query_labels: Labels,
    train_labels: Labels,
    k: int | None = None,
    *,
    tie_seed: int = TIE_SEED,
) -> float:
    """Cover (the paper's): precision@k with ``k = n_train // n_classes`` unless ``k`` is given.

    ``n_classes`` is the number of distinct train labels. ConfigError if ``k`` is outside
    ``[1, n_train]``.
    """
    return precision_at_k(scores, query_labels, train_labels, k, tie_seed=tie_seed)


def recall_at_k(
    scores: Any,
    query_labels: Labels,
    train_labels: Labels,
    k: int | None = None,
    *,
    tie_seed: int = TIE_SEED,
) -> float:
    """Mean over queries of ``|top-k with the query's label| / |train with the query's label|``.

    Queries whose label no training example has are skipped (NaN if all are).
    """
    s = as_scores(scores)
    q, t, _ = _encode(s, query_labels, train_labels)
    k = _resolve_k(k, train_labels, s.shape[1])
    return _mean(_per_query_recall(_ranked_relevance(s, q, t, tie_seed), k))


def auprc(scores: Any, query_labels: Labels, train_labels: Labels) -> float:
    """Mean per-query average precision (sklearn) with relevance = same label.

    Tied scores form one threshold (no tie-breaking order is involved). Queries whose relevance
    row is all 0 or all 1 are skipped (NaN if all are).
    """
    s = as_scores(scores)
    q, t, _ = _encode(s, query_labels, train_labels)
    return _mean(_per_query_curve(s, q, t, average_precision_score))


def auroc(scores: Any, query_labels: Labels, train_labels: Labels) -> float:
    """Mean per-query ROC AUC (sklearn) with relevance = same label; a tied relevant / irrelevant
    pair counts one half. Skips as :func:`auprc`."""
    s = as_scores(scores)
    q, t, _ = _encode(s, query_labels, train_labels)
    return _mean(_per_query_curve(s, q, t, roc_auc_score))


def per_query_values(
    scores: Any,
    query_labels: Labels,
    train_labels: Labels,
    *,
    k: int | None = None,
    tie_seed: int = TIE_SEED,
) -> dict[str, np.ndarray]:
    """Each query's own Acc (0/1), Cover (precision at Cover's ``k``), AUPRC and AUROC.

    Returns ``{"acc", "cover", "auprc", "auroc"}`` → ``[n_query]`` float64, NaN where a value is
    undefined for that query (as :func:`auprc`); the NaN-skipping mean of each is the value
    :func:`evaluate_scores` reports with the same ``k`` and ``tie_seed``. For bootstraps that
    resample queries of several methods together.
    """
    s = as_scores(scores)
    q, t, _ = _encode(s, query_labels, train_labels)
    rel = _ranked_relevance(s, q, t, tie_seed)
    return {
        "acc": _per_query_top1(rel),
        "cover": _per_query_precision(rel, _resolve_k(k, train_labels, s.shape[1])),
        "auprc": _per_query_curve(s, q, t, average_precision_score),
        "auroc": _per_query_curve(s, q, t, roc_auc_score),
    }


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
    tie_seed: int = TIE_SEED,
) -> dict[str, Any]:
    """Every ranking metric of one score matrix, JSON-serialisable.

    Returns a dict with ``acc``, ``cover``, ``precision_at_k``, ``recall_at_k``, ``auprc``,
    ``auroc`` (each ``{"value", "ci95": [lo, hi], "n_used", "skipped"}``, the rank-based ones
    also ``"k"`` and ``"ties_at_k"``: how many queries have equal scores across their top-k
    boundary, so that the tie-breaking permutation decides part of the value), ``cover@<name>``
    for each ``extra_k`` entry (e.g. ``{"n_harmful": 20}``), ``cover_k`` and ``cover_k_rule``,
    ``n_query``, ``n_train``, ``n_classes``, ``ties`` (``{"rule", "tie_seed", "auc"}``) and the
    bootstrap settings (``seed`` seeds the bootstrap, ``tie_seed`` the ranking:
    :func:`rank_train`). ``precision_at_k`` uses Cover's k, so it equals ``cover`` (Cover *is*
    precision@k with the paper's k); ``recall_at_k`` uses the same k. Undefined values are
    ``None``.
    """
    s = as_scores(scores)
    q, t, n_classes = _encode(s, query_labels, train_labels)
    n_query, n_train = s.shape
    cover_k = _resolve_k(k, train_labels, n_train)
    extra = {
        name: _check_k(value, n_train, f"k for cover@{name}")
        for name, value in (extra_k or {}).items()
    }
    order = rank_train(s, tie_seed)
    rel = t[order] == q[:, None]
    boot = {"n_boot": n_boot, "seed": seed}

    def at_k(values: np.ndarray, k_used: int) -> dict[str, Any]:
        tied = int(ties_at_boundary(s, order, k_used).sum())
        return _summary(values, **boot, k=k_used, ties_at_k=tied)

    precision = at_k(_per_query_precision(rel, cover_k), cover_k)
    out: dict[str, Any] = {
        "n_query": n_query,
        "n_train": n_train,
        "n_classes": n_classes,
        "cover_k": cover_k,
        "cover_k_rule": PAPER_K_RULE if k is None else "explicit (--k)",
        "acc": at_k(_per_query_top1(rel), 1),
        "cover": {**precision, "ci95": list(precision["ci95"])},
        "precision_at_k": precision,
        "recall_at_k": at_k(_per_query_recall(rel, cover_k), cover_k),
        "auprc": _summary(_per_query_curve(s, q, t, average_precision_score), **boot),
        "auroc": _summary(_per_query_curve(s, q, t, roc_auc_score), **boot),
    }
    for name, value in extra.items():
        out[f"cover@{name}"] = at_k(_per_query_precision(rel, value), value)
    out["ties"] = {"rule": TIE_RULE, "tie_seed": int(tie_seed), "auc": AUC_TIE_RULE}
    out["bootstrap"] = {"n_boot": n_boot, "seed": seed, "level": 0.95, "unit": "query"}
    return out
