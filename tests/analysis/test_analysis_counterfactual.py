"""Counterfactual LDS: a tiny end-to-end run with two seeds per subset and both baselines."""

from __future__ import annotations

import numpy as np
import pytest

from attriblm.analysis.counterfactual import check_seeds, run_counterfactual
from attriblm.data.loaders import load_examples
from attriblm.errors import ConfigError
from attriblm.io import read_json
from attriblm.models.loading import load_model
from attriblm.train.finetune import TrainSettings


def test_check_seeds():
    assert check_seeds(2) == 2 and check_seeds(5) == 5
    for bad in (1, 0, 2.5):
        with pytest.raises(ConfigError, match="--seeds"):
            check_seeds(bad)


def test_run(samples_dir, tmp_path):
    train = load_examples(str(samples_dir / "grammars_small_train.jsonl"))[::4]
    queries = load_examples(str(samples_dir / "grammars_small_test.jsonl"))[::2]
    settings = TrainSettings(epochs=2, lr=2e-3, batch_size=10, seed=7)
    report = run_counterfactual(
        load_model("tiny"),
        train,
        queries,
        tmp_path,
        methods=["gradsim", "datainf"],
        n_subsets=3,
        train_settings=settings,
        n_boot=50,
    )  # 3 subsets × 2 seeds (the default) + the full fine-tune
    assert (tmp_path / "counterfactual.png").read_bytes()[:4] == b"\x89PNG"
    saved = read_json(tmp_path / "counterfactual.json")
    assert saved["methods"] == report["methods"]
    assert list(report["methods"]) == ["gradsim", "datainf"]
    rows = [*report["methods"].values(), report["baseline_random"], report["baseline_label"]]
    for row in rows:
        assert -1.0 <= row["lds"] <= 1.0
        assert row["ci95"][0] <= row["lds"] <= row["ci95"][1]
        assert row["n_defined"] + row["n_undefined"] == len(queries)
    assert saved["baseline_label"] == report["baseline_label"]
    assert "same-label" not in report["methods"] and "random" not in report["methods"]
    # the label baseline's prediction is minus the count of the query's label in the subset
    label_pred = np.array(report["predicted_change"]["same-label"])
    labels = [e.label for e in train]
    for j, subset in enumerate(report["subsets"]):
        for q, query in enumerate(queries):
            assert label_pred[j, q] == -sum(labels[i] == query.label for i in subset)
    assert report["settings"]["seeds"] == 2 and report["settings"]["train_seeds"] == [7, 8]
    per_seed = np.array(report["losses"]["subsets_per_seed"])
    assert per_seed.shape == (2, 3, len(queries))
    assert not np.allclose(per_seed[0], per_seed[1])  # the seeds are different retrainings
    losses = np.array(report["losses"]["subsets"])
    assert losses == pytest.approx(per_seed.mean(axis=0))
    actual = np.array(report["actual_change"]["vs_full"])
    assert actual.shape == (3, len(queries))
    assert actual == pytest.approx(losses - np.array(report["losses"]["full"])[None, :])
    ceiling = report["seed_noise_ceiling"]
    assert -1.0 <= ceiling["lds"] <= 1.0 and set(ceiling["per_pair"]) == {"0-1"}
    assert np.array(report["predicted_change"]["gradsim"]).shape == (3, len(queries))


def test_run_rejects_one_seed(samples_dir, tmp_path):
    train = load_examples(str(samples_dir / "grammars_small_train.jsonl"))[::4]
    with pytest.raises(ConfigError, match="--seeds"):
        run_counterfactual(load_model("tiny"), train, train[:2], tmp_path, seeds=1)
    assert not (tmp_path / "counterfactual.json").exists()
