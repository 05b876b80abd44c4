"""Property tests of the ranking metrics: range, train-order invariance, perfect scores.

(``test_metrics_ranking.py`` checks the same range and invariance on ``evaluate_scores``; these
check the public per-metric functions, with ties for the tie-aware AUPRC / AUROC.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attriblm.metrics.ranking import auprc, auroc, cover, precision_at_k, top1_accuracy

PROPERTIES = settings(max_examples=50, deadline=None)
CLASSES = ("a", "b", "c", "d")


@st.composite
def problems(draw, *, ties: bool) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    """``(scores [m, n], query labels, train labels, permutation of the train columns)``.

    Every query label occurs in the train set and every class in it has at least one query, so
    Cover's default k (n_train // n_classes) is at least 1.
    """
    n_classes = draw(st.integers(1, len(CLASSES)))
    classes = list(CLASSES[:n_classes])
    train = classes + draw(st.lists(st.sampled_from(classes), max_size=10))
    queries = draw(st.lists(st.sampled_from(classes), min_size=1, max_size=5))
    n = len(train)
    if ties:
        cell = st.sampled_from([-1.0, 0.0, 0.5, 3.0])
    else:
        cell = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
    scores = np.array(
        [draw(st.lists(cell, min_size=n, max_size=n, unique=not ties)) for _ in queries]
    )
    perm = np.array(draw(st.permutations(range(n))))
    return scores, queries, train, perm


def _values(scores, queries, train) -> dict[str, float]:
    return {
        "acc": top1_accuracy(scores, queries, train),
        "cover": cover(scores, queries, train),
        "precision@1": precision_at_k(scores, queries, train, k=1),
        "auprc": auprc(scores, queries, train),
        "auroc": auroc(scores, queries, train),
    }


@PROPERTIES
@given(problems(ties=True))
def test_metrics_lie_in_the_unit_interval(problem):
    scores, queries, train, _ = problem
    for name, value in _values(scores, queries, train).items():
        assert math.isnan(value) or 0.0 <= value <= 1.0, name  # NaN: undefined for every query


@PROPERTIES
@given(problems(ties=False))
def test_permuting_train_with_its_labels_changes_nothing(problem):
    scores, queries, train, perm = problem
    before = _values(scores, queries, train)
    after = _values(scores[:, perm], queries, [train[i] for i in perm])
    for name in before:
        assert after[name] == pytest.approx(before[name], nan_ok=True), name


@PROPERTIES
@given(problems(ties=True))
def test_tie_aware_curves_are_permutation_invariant_even_with_ties(problem):
    scores, queries, train, perm = problem
    permuted = (scores[:, perm], queries, [train[i] for i in perm])
    assert auprc(*permuted) == pytest.approx(auprc(scores, queries, train), nan_ok=True)
    assert auroc(*permuted) == pytest.approx(auroc(scores, queries, train), nan_ok=True)


@PROPERTIES
@given(problems(ties=True))
def test_perfect_scores_give_one(problem):
    """Scores that put every same-label training example above every other one."""
    _, queries, train, perm = problem
    train = [train[i] for i in perm]
    perfect = np.array([[float(t == q) for t in train] for q in queries])
    assert top1_accuracy(perfect, queries, train) == 1.0
    assert precision_at_k(perfect, queries, train, k=1) == 1.0
    # Cover's k = n_train // n_classes can exceed a query class's size when classes are
    # unbalanced; then even perfect scores must put other labels in the top k.
    k = len(train) // len(set(train))
    if all(train.count(q) >= k for q in queries):
        assert cover(perfect, queries, train) == 1.0
    for curve in (auprc, auroc):
        value = curve(perfect, queries, train)
        assert math.isnan(value) or value == 1.0  # NaN only when every train label is the same
