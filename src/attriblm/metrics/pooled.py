"""Pooled top-k metrics of the follow-up (Li, Zhao, Li, Sun 2025): one target class, all queries.

A trace asks "are the rows that taught the behaviour at the top?", with one target label ``L``
(e.g. ``planted``, ``harmful``, a trigger) rather than each query's own label. For each ``k``:

* every query contributes its top-``k`` training rows (score order; :data:`TIE_RULE`), giving a
  pool of ``n_query · k`` (query, row) pairs, each with its score and relevance
  ``label(row) == L``;
* ``precision`` = relevant share of the pool (= mean over queries of precision@k);
* ``auprc`` = scikit-learn's average precision of the pooled relevance ranked by the pooled
  scores. Scores of different queries are compared with each other, as in the follow-up; this
  is meaningful for scale-free scores (cosines) and mixes scales for dot products. ``None``
  when the pool holds no relevant pair.

``k`` takes the values 10, 50, 100 capped at ``n_train`` (duplicates after capping dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score

from attriblm.errors import ConfigError, DataError
from attriblm.metrics.ranking import TIE_SEED, as_scores, rank_train

POOLED_KS = (10, 50, 100)
TIE_RULE = "attriblm.metrics.ranking.rank_train: equal scores by the seeded per-query permutation"


def capped_ks(n_train: int, ks: Sequence[int] = POOLED_KS) -> list[int]:
    """``ks`` capped at ``n_train``, sorted, duplicates dropped."""
    return sorted({min(int(k), n_train) for k in ks if int(k) >= 1})


def pooled_topk(
    scores: Any,
    train_labels: Sequence[str | None],
    target: str,
    ks: Sequence[int] = POOLED_KS,
    tie_seed: int = TIE_SEED,
) -> dict[str, Any]:
    """Pooled precision@k and auPRC for target label ``target`` (module docstring).

    Args:
        scores: ``[n_query, n_train]``, larger = more supportive.
        train_labels: one label per training row (column).
        target: the label whose rows count as relevant; ConfigError if no row has it.
        tie_seed: seed of the tie-breaking permutations, as for every ranking metric.

    Returns:
        ``{"target_label", "n_target", "n_train", "n_query", "ties", "auprc_rule",
        "k": {str(k): {"precision", "auprc", "n_pooled", "n_relevant"}}}``.
    """
    s = as_scores(scores)
    n_query, n_train = s.shape
    if len(train_labels) != n_train:
        raise DataError(f"scores have {n_train} train columns but {len(train_labels)} labels")
    relevant = np.array([label == target for label in train_labels])
    if not relevant.any():
        present = sorted({str(label) for label in train_labels})
        raise ConfigError(
            f"--target-label {target!r}: no training row has this label (labels: {present})"
        )
    order = rank_train(s, tie_seed)
    out: dict[str, Any] = {}
    for k in capped_ks(n_train, ks):
        top = order[:, :k]
        pooled_rel = relevant[top].ravel()
        pooled_scores = np.take_along_axis(s, top, axis=1).ravel()
        n_relevant = int(pooled_rel.sum())
        auprc = float(average_precision_score(pooled_rel, pooled_scores)) if n_relevant else None
        out[str(k)] = {
            "precision": float(pooled_rel.mean()),
            "auprc": auprc,
            "n_pooled": int(pooled_rel.size),
            "n_relevant": n_relevant,
        }
    return {
        "target_label": target,
        "n_target": int(relevant.sum()),
        "n_train": n_train,
        "n_query": n_query,
        "ties": TIE_RULE,
        "tie_seed": tie_seed,
        "auprc_rule": "average precision over the pooled top-k (query, row) pairs of all queries",
        "k": out,
    }
