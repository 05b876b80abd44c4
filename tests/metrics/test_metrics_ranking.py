from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attriblm.errors import ConfigError, DataError
from attriblm.metrics.ranking import (
    auprc,
    auroc,
    bootstrap_ci,
    cover,
    evaluate_scores,
    per_query_values,
    precision_at_k,
    rank_train,
    recall_at_k,
    tie_permutation,
    ties_at_boundary,
    top1_accuracy,
)

# Hand-worked example: 6 train rows, 3 classes (so the paper's k = 6 // 3 = 2), 2 queries.
TRAIN = ["a", "a", "b", "b", "c", "c"]
QUERY = ["a", "b"]
SCORES = np.array(
    [
        # query "a": ranking 0(a) 2(b) 4(c) 3(b) 1(a) 5(c)
        [0.9, 0.1, 0.8, 0.2, 0.3, 0.05],
        # query "b": ranking 5(c) 4(c) 3(b) 2(b) 1(a) 0(a)
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    ]
)


def test_acc_by_hand():
    # query a: top-1 is row 0 ("a") -> hit; query b: top-1 is row 5 ("c") -> miss
    assert top1_accuracy(SCORES, QUERY, TRAIN) == 0.5


def test_cover_by_hand_with_paper_k():
    # k = 2. query a: top-2 = {0(a), 2(b)} -> 1/2; query b: {5(c), 4(c)} -> 0/2
    assert cover(SCORES, QUERY, TRAIN) == pytest.approx(0.25)
    assert precision_at_k(SCORES, QUERY, TRAIN) == pytest.approx(0.25)


def test_cover_with_explicit_k():
    # k = 3. query a: {0(a), 2(b), 4(c)} -> 1/3; query b: {5, 4, 3(b)} -> 1/3
    assert cover(SCORES, QUERY, TRAIN, k=3) == pytest.approx(1 / 3)
    # k = 1 is Acc
    assert cover(SCORES, QUERY, TRAIN, k=1) == pytest.approx(0.5)


def test_recall_by_hand():
    # 2 relevant rows per query. k = 2: a -> 1/2, b -> 0/2. k = 3: a -> 1/2, b -> 1/2.
    assert recall_at_k(SCORES, QUERY, TRAIN) == pytest.approx(0.25)
    assert recall_at_k(SCORES, QUERY, TRAIN, k=3) == pytest.approx(0.5)
    assert recall_at_k(SCORES, QUERY, TRAIN, k=6) == pytest.approx(1.0)


def test_auprc_by_hand():
    # query a: relevant at ranks 1 and 5 -> AP = (1/1 + 2/5) / 2 = 0.7
    # query b: relevant at ranks 3 and 4 -> AP = (1/3 + 2/4) / 2 = 5/12
    assert auprc(SCORES, QUERY, TRAIN) == pytest.approx((0.7 + 5 / 12) / 2)


def test_auroc_by_hand():
    # query a: positives {0.9, 0.1} vs negatives {0.8, 0.2, 0.3, 0.05}: 4 + 1 = 5 of 8 pairs
    # query b: positives {0.3, 0.4} vs negatives {0.1, 0.2, 0.5, 0.6}: 2 + 2 = 4 of 8 pairs
    assert auroc(SCORES, QUERY, TRAIN) == pytest.approx((5 / 8 + 4 / 8) / 2)


def test_paper_k_rule_is_floor_of_n_train_over_n_classes():
    train = ["a", "a", "a", "b", "b", "c", "c"]  # 7 // 3 = 2
    descending = -np.arange(7.0)[None, :]  # ranking 0, 1, 2, ...
    out = evaluate_scores(descending, ["a"], train, n_boot=10)
    assert out["cover_k"] == 2
    assert out["cover_k_rule"].startswith("n_train // n_classes")
    assert out["n_classes"] == 3
    assert out["cover"]["value"] == 1.0  # rows 0, 1 are both "a"
    explicit = evaluate_scores(descending, ["a"], train, k=4, n_boot=10)
    assert explicit["cover_k"] == 4 and explicit["cover_k_rule"].startswith("explicit")
    assert explicit["cover"]["value"] == pytest.approx(3 / 4)


@pytest.mark.parametrize("k", [0, -1, 7])
def test_k_out_of_range(k):
    with pytest.raises(ConfigError, match="--k"):
        cover(SCORES, QUERY, TRAIN, k=k)
    with pytest.raises(ConfigError, match="--k"):
        evaluate_scores(SCORES, QUERY, TRAIN, k=k)


def test_rank_train_sorts_by_score_and_breaks_ties_by_the_seeded_permutation():
    scores = np.array([[0.5, 2.0, 0.5, 0.5, 1.0, 0.5], [3.0, 2.0, 1.0, 0.0, -1.0, -2.0]])
    order = rank_train(scores, tie_seed=7)
    assert order.dtype == np.int64 and order.shape == (2, 6)
    assert order[1].tolist() == [0, 1, 2, 3, 4, 5]  # no ties: plain descending order
    assert order[0, :2].tolist() == [1, 4]
    tied = {0, 2, 3, 5}
    perm = tie_permutation(6, 0, tie_seed=7).tolist()
    assert order[0, 2:].tolist() == [i for i in perm if i in tied]  # the permutation's order
    assert (rank_train(torch.tensor(scores), tie_seed=7) == order).all()  # torch input, seeded
    # one query's row alone ranks as it does inside the matrix
    assert (rank_train(scores[:1], tie_seed=7, queries=[0]) == order[:1]).all()
    assert (rank_train(scores[1:], tie_seed=7, queries=[1]) == order[1:]).all()


def test_tie_order_differs_between_queries_and_seeds():
    flat = np.zeros((2, 40))
    order = rank_train(flat, tie_seed=0)
    assert sorted(order[0].tolist()) == list(range(40))
    assert order[0].tolist() != order[1].tolist()  # drawn per query
    assert rank_train(flat, tie_seed=1)[0].tolist() != order[0].tolist()
    assert order[0].tolist() != list(range(40))  # never file order


def test_equal_scores_give_chance_level_acc_and_cover():
    """Builders list the target class first; exact ties must not turn into hits.

    20 target + 80 other rows, every score equal: each query's top-1 is a target row with
    probability 0.2 and its top-k (k = 100 // 2 = 50) holds 20 · 50 / 100 = 10 target rows on
    average, so Acc and Cover are near 0.2 (a lower-index-first rule gives 1.0 and 0.4). 2000
    queries put the standard error of Acc at 0.009 and of Cover below 0.003.
    """
    train = ["target"] * 20 + ["other"] * 80
    queries = ["target"] * 2000
    flat = np.zeros((len(queries), len(train)))
    assert top1_accuracy(flat, queries, train) == pytest.approx(0.2, abs=0.04)
    assert cover(flat, queries, train) == pytest.approx(0.2, abs=0.015)
    # evaluate_scores ranks the same way and says that every query was decided by the seed
    out = evaluate_scores(flat[:50], queries[:50], train, n_boot=20)
    assert out["acc"]["value"] == top1_accuracy(flat[:50], queries[:50], train)
    assert out["cover"]["k"] == 50
    assert out["acc"]["ties_at_k"] == out["cover"]["ties_at_k"] == 50
    assert out["ties"]["tie_seed"] == 0 and "permutation" in out["ties"]["rule"]


def test_ties_at_the_boundary_are_counted():
    train = ["a", "a", "b", "b"]
    scores = np.array(
        [
            [1.0, 1.0, 0.0, 0.0],  # tie across the top-1 boundary, none across top-2
            [3.0, 2.0, 1.0, 1.0],  # no tie at top-1 or top-2 (the tie sits at ranks 3-4)
            [0.0, 5.0, 0.0, 0.0],  # tie across top-2 only
        ]
    )
    out = evaluate_scores(scores, ["a", "a", "b"], train, k=2, n_boot=10)
    assert out["acc"]["ties_at_k"] == 1
    assert out["cover"]["ties_at_k"] == out["recall_at_k"]["ties_at_k"] == 1
    assert ties_at_boundary(scores, rank_train(scores), 2).tolist() == [False, False, True]
    assert ties_at_boundary(scores, rank_train(scores), 4).tolist() == [False] * 3


def test_perfect_scores_give_one():
    train = ["x"] * 4 + ["y"] * 4 + ["z"] * 4
    queries = ["y", "x", "z", "z"]
    scores = np.array([[1.0 if t == q else 0.0 for t in train] for q in queries])
    scores += np.random.default_rng(0).uniform(0, 0.1, scores.shape)  # no ties needed
    out = evaluate_scores(scores, queries, train, n_boot=50)
    for name in ("acc", "cover", "auprc", "auroc", "precision_at_k", "recall_at_k"):
        assert out[name]["value"] == pytest.approx(1.0), name
        assert out[name]["ci95"] == [pytest.approx(1.0), pytest.approx(1.0)]


def test_skipped_queries_are_counted():
    train = ["a", "a", "b"]
    scores = np.array([[0.3, 0.2, 0.1], [0.1, 0.2, 0.3]])
    out = evaluate_scores(scores, ["a", "zzz"], train, n_boot=20)  # "zzz" has no train row
    assert out["recall_at_k"]["skipped"] == 1 and out["recall_at_k"]["n_used"] == 1
    assert out["auprc"]["skipped"] == 1 and out["auroc"]["skipped"] == 1
    assert out["acc"]["skipped"] == 0 and out["acc"]["value"] == 0.5
    assert out["auroc"]["value"] == 1.0  # query "a": both "a" rows above the "b" row
    # single-class train: relevance all 1 -> AUPRC / AUROC undefined for every query
    only = evaluate_scores(np.ones((2, 3)), ["a", "a"], ["a"] * 3, n_boot=20)
    assert only["auroc"]["value"] is None and only["auroc"]["skipped"] == 2
    assert math.isnan(auroc(np.ones((2, 3)), ["a", "a"], ["a"] * 3))
    json.dumps(only, allow_nan=False)


def test_evaluate_scores_structure_and_extra_k():
    out = evaluate_scores(torch.tensor(SCORES), QUERY, TRAIN, extra_k={"n_harmful": 3}, n_boot=100)
    json.dumps(out, allow_nan=False)
    assert (out["n_query"], out["n_train"], out["n_classes"]) == (2, 6, 3)
    assert out["acc"]["value"] == 0.5
    assert out["cover"]["value"] == pytest.approx(0.25) and out["cover"]["k"] == 2
    assert out["precision_at_k"]["value"] == pytest.approx(0.25)
    assert out["recall_at_k"]["value"] == pytest.approx(0.25)
    assert out["auprc"]["value"] == pytest.approx((0.7 + 5 / 12) / 2)
    assert out["auroc"]["value"] == pytest.approx(0.5625)
    assert out["cover@n_harmful"]["value"] == pytest.approx(1 / 3)
    assert out["cover@n_harmful"]["k"] == 3
    for name in ("acc", "cover", "auprc", "auroc", "precision_at_k", "recall_at_k"):
        lo, hi = out[name]["ci95"]
        assert lo <= out[name]["value"] <= hi
    with pytest.raises(ConfigError, match="n_harmful"):
        evaluate_scores(SCORES, QUERY, TRAIN, extra_k={"n_harmful": 99})


def test_per_query_values_average_to_the_reported_metrics():
    values = per_query_values(SCORES, QUERY, TRAIN, k=3)
    out = evaluate_scores(SCORES, QUERY, TRAIN, k=3, n_boot=10)
    assert values["acc"].tolist() == [1.0, 0.0]
    assert values["cover"].tolist() == pytest.approx([1 / 3, 1 / 3])
    assert values["auprc"].tolist() == pytest.approx([0.7, 5 / 12])
    for name in ("acc", "cover", "auprc", "auroc"):
        assert values[name].mean() == pytest.approx(out[name]["value"]), name


def test_missing_labels_and_shape_mismatch():
    with pytest.raises(ConfigError, match="needs a label"):
        evaluate_scores(SCORES, ["a", None], TRAIN)
    with pytest.raises(ConfigError, match="needs a label"):
        top1_accuracy(SCORES, QUERY, ["a", "a", None, "b", "c", "c"])
    with pytest.raises(DataError, match="labels"):
        evaluate_scores(SCORES, ["a"], TRAIN)
    with pytest.raises(DataError, match="NaN"):
        evaluate_scores(np.full((2, 6), np.nan), QUERY, TRAIN)


def test_bootstrap_ci():
    assert bootstrap_ci(np.full(10, 0.5)) == (0.5, 0.5)
    values = np.random.default_rng(1).uniform(size=200)
    lo, hi = bootstrap_ci(values, n_boot=500, seed=3)
    assert lo < values.mean() < hi and hi - lo < 0.2
    assert bootstrap_ci(values, n_boot=500, seed=3) == (lo, hi)  # seeded
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([])))


@st.composite
def _problem(draw, distinct: bool):
    n_train = draw(st.integers(2, 12))
    n_query = draw(st.integers(1, 5))
    classes = ["c0", "c1", "c2", "c3"][: draw(st.integers(1, 4))]
    train = draw(st.lists(st.sampled_from(classes), min_size=n_train, max_size=n_train))
    queries = draw(st.lists(st.sampled_from(classes), min_size=n_query, max_size=n_query))
    if distinct:  # distinct scores per row, so no tie-breaking is involved
        rows = [draw(st.permutations(range(n_train))) for _ in range(n_query)]
        scores = np.array(rows, dtype=np.float64)
    else:  # few values: many ties
        values = st.sampled_from([-1.0, 0.0, 0.5, 2.0])
        rows = [draw(st.lists(values, min_size=n_train, max_size=n_train)) for _ in range(n_query)]
        scores = np.array(rows)
    perm = np.array(draw(st.permutations(range(n_train))))
    return scores, queries, train, perm


METRICS = ("acc", "cover", "precision_at_k", "recall_at_k", "auprc", "auroc")


@settings(max_examples=40, deadline=None)
@given(_problem(distinct=True))
def test_invariant_to_permuting_train_with_labels(problem):
    scores, queries, train, perm = problem
    a = evaluate_scores(scores, queries, train, n_boot=5)
    b = evaluate_scores(scores[:, perm], queries, [train[i] for i in perm], n_boot=5)
    for name in METRICS:
        assert a[name]["value"] == pytest.approx(b[name]["value"], nan_ok=True), name


@settings(max_examples=40, deadline=None)
@given(_problem(distinct=False))
def test_all_metrics_in_unit_interval(problem):
    scores, queries, train, _ = problem
    out = evaluate_scores(scores, queries, train, n_boot=5)
    for name in METRICS:
        value = out[name]["value"]
        assert value is None or 0.0 <= value <= 1.0, name
        lo, hi = out[name]["ci95"]
        assert lo is None or 0.0 <= lo <= hi <= 1.0, name
