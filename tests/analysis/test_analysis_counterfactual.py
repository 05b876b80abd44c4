"""Counterfactual LDS: the score function on synthetic data, the sign, a tiny end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attriblm.analysis.counterfactual import (
    linear_datamodeling_score,
    predicted_loss_change,
    random_subsets,
    run_counterfactual,
    spearman,
)
from attriblm.data.loaders import load_examples
from attriblm.errors import ConfigError
from attriblm.io import read_json
from attriblm.models.loading import load_model
from attriblm.train.finetune import TrainSettings


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


def test_run(samples_dir, tmp_path):
    train = load_examples(str(samples_dir / "grammars_small_train.jsonl"))[::4]
    queries = load_examples(str(samples_dir / "grammars_small_test.jsonl"))[::2]
    settings = TrainSettings(epochs=2, lr=2e-3, batch_size=10)
    report = run_counterfactual(
        load_model("tiny"),
        train,
        queries,
        tmp_path,
        methods=["gradsim", "datainf"],
        n_subsets=4,
        train_settings=settings,
        n_boot=50,
    )
    assert (tmp_path / "counterfactual.png").read_bytes()[:4] == b"\x89PNG"
    assert read_json(tmp_path / "counterfactual.json")["methods"] == report["methods"]
    assert list(report["methods"]) == ["gradsim", "datainf"]
    for row in [*report["methods"].values(), report["baseline_random"]]:
        assert -1.0 <= row["lds"] <= 1.0
        assert row["ci95"][0] <= row["lds"] <= row["ci95"][1]
        assert row["n_defined"] + row["n_undefined"] == len(queries)
    assert len(report["subsets"]) == 4 and all(len(s) == 10 for s in report["subsets"])
    actual = np.array(report["actual_change"]["vs_full"])
    losses = np.array(report["losses"]["subsets"])
    assert actual.shape == (4, len(queries))
    assert actual == pytest.approx(losses - np.array(report["losses"]["full"])[None, :])
    assert np.array(report["predicted_change"]["gradsim"]).shape == (4, len(queries))
