"""LDS statistics: Spearman, the score, the sign of the prediction, baselines, seed agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attriblm.analysis.lds import (
    label_indicator_scores,
    linear_datamodeling_score,
    predicted_loss_change,
    random_scores,
    random_subsets,
    seed_agreement,
    spearman,
)
from attriblm.errors import ConfigError


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 1, 1]) is None
    # average ranks for ties: same as scipy
    from scipy.stats import spearmanr

    x, y = [1, 2, 2, 3, 5], [2, 1, 4, 4, 3]
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)


def test_lds_perfect_reversed_and_undefined():
    rng = np.random.default_rng(0)
    actual = rng.normal(size=(12, 5))
    perfect = linear_datamodeling_score(actual, actual, n_boot=200)
    assert perfect["value"] == pytest.approx(1.0) and perfect["n_defined"] == 5
    assert perfect["ci95"] == pytest.approx([1.0, 1.0])
    # any increasing transform per query keeps Spearman at 1; negation gives -1
    assert linear_datamodeling_score(np.exp(3 * actual) + 7, actual)["value"] == pytest.approx(1.0)
    assert linear_datamodeling_score(-actual, actual)["value"] == pytest.approx(-1.0)
    noise = linear_datamodeling_score(rng.normal(size=(12, 5)), actual, n_boot=200)
    assert -1.0 <= noise["value"] <= 1.0
    assert noise["ci95"][0] <= noise["value"] <= noise["ci95"][1]
    constant = actual.copy()
    constant[:, 2] = 1.0
    result = linear_datamodeling_score(constant, actual, n_boot=0)
    assert result["per_query"][2] is None and result["n_undefined"] == 1
    assert result["ci95"] == [None, None]
    with pytest.raises(ValueError):
        linear_datamodeling_score(actual, actual[:, :3])


def test_predicted_change_sign_and_exact_linear_datamodel():
    scores = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])
    predicted = predicted_loss_change(scores, [[0, 2], [1]])
    assert predicted.tolist() == [[-3.0, -0.0], [-0.0, -3.0]]
    # a world where the loss change is exactly -Σ scores: LDS = 1
    rng = np.random.default_rng(1)
    scores = torch.from_numpy(rng.normal(size=(4, 20)))
    subsets = random_subsets(20, 15, 0.5, seed=3)
    actual = -np.stack([scores[:, s].sum(1).numpy() for s in subsets])
    lds = linear_datamodeling_score(predicted_loss_change(scores, subsets), actual)
    assert lds["value"] == pytest.approx(1.0)


def test_random_subsets():
    subsets = random_subsets(10, 5, 0.5, seed=0)
    assert len(subsets) == 5 and all(len(s) == 5 == len(set(s)) for s in subsets)
    assert random_subsets(10, 5, 0.5, seed=0) == subsets
    assert len({tuple(s) for s in subsets}) > 1
    for args, needle in (
        ((10, 1, 0.5), "--n-subsets"),
        ((10, 4, 1.0), "--fraction"),
        ((2, 4, 0.2), "--fraction"),
    ):
        with pytest.raises(ConfigError, match=needle):
            random_subsets(*args, seed=0)


def _linear_world(n_train: int, n_query: int, n_subsets: int, noise: float, seed: int):
    """Scores, subsets and loss changes from a linear datamodel ``Δ = −Σ_{i∈S} s + noise``."""
    rng = np.random.default_rng(seed)
    true = torch.from_numpy(rng.normal(size=(n_query, n_train)))
    subsets = random_subsets(n_train, n_subsets, 0.5, seed=seed)
    clean = predicted_loss_change(true, subsets)
    return true, subsets, clean + noise * rng.normal(size=clean.shape) * clean.std()


def test_random_scores_get_lds_near_zero_and_the_true_scores_near_one():
    true, subsets, actual = _linear_world(60, 40, 200, noise=0.1, seed=0)
    chance = random_scores(40, 60, seed=0)
    assert chance.shape == (40, 60) and chance.dtype == torch.float32
    assert torch.equal(chance, random_scores(40, 60, seed=0))
    random_lds = linear_datamodeling_score(predicted_loss_change(chance, subsets), actual)
    # 40 queries × 200 subsets: the mean of 40 Spearmans has sd ≈ 1/√(200·40) ≈ 0.01
    assert abs(random_lds["value"]) < 0.05
    assert random_lds["ci95"][0] < 0.0 < random_lds["ci95"][1]
    true_lds = linear_datamodeling_score(predicted_loss_change(true, subsets), actual)
    assert true_lds["value"] > 0.9


def test_label_indicator_scores():
    scores = label_indicator_scores(["a", "b", "a", "c"], ["a", "c", "z"])
    assert scores.dtype == torch.float32
    assert scores.tolist() == [[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]]


def test_label_baseline_wins_when_only_the_label_matters():
    # two classes; a query's loss falls with the number of its class's rows in the subset
    rng = np.random.default_rng(3)
    train_labels = ["x"] * 20 + ["y"] * 20
    query_labels = ["x"] * 6 + ["y"] * 6
    subsets = random_subsets(40, 60, 0.5, seed=1)
    indicator = label_indicator_scores(train_labels, query_labels)
    actual = predicted_loss_change(indicator, subsets) + 0.3 * rng.normal(size=(60, 12))
    label = linear_datamodeling_score(predicted_loss_change(indicator, subsets), actual)
    chance = linear_datamodeling_score(
        predicted_loss_change(random_scores(12, 40, seed=2), subsets), actual
    )
    assert label["value"] > 0.8
    assert abs(chance["value"]) < 0.3
    # a constant row (query label absent from train) predicts nothing: undefined, skipped
    absent = label_indicator_scores(train_labels, ["z"])
    result = linear_datamodeling_score(predicted_loss_change(absent, subsets), actual[:, :1])
    assert result["value"] is None and result["n_undefined"] == 1


def test_seed_agreement_is_one_for_identical_seeds_and_near_zero_for_pure_noise():
    _, _, actual = _linear_world(30, 10, 40, noise=0.0, seed=4)
    same = seed_agreement(np.stack([actual, actual]), n_boot=100)
    assert same["value"] == pytest.approx(1.0) and same["per_pair"] == {"0-1": pytest.approx(1.0)}
    rng = np.random.default_rng(5)
    noise = seed_agreement(rng.normal(size=(3, 200, 30)), n_boot=100)
    assert abs(noise["value"]) < 0.05 and set(noise["per_pair"]) == {"0-1", "0-2", "1-2"}
    assert noise["n_defined"] == 30
    # half signal, half noise: the agreement sits between
    mixed = np.stack([actual + actual.std() * rng.normal(size=actual.shape) for _ in range(2)])
    middle = seed_agreement(mixed, n_boot=0)
    assert 0.2 < middle["value"] < 0.9 and middle["ci95"] == [None, None]
    with pytest.raises(ValueError):
        seed_agreement(actual[None])
