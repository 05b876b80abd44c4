"""Subset retraining: top-k unions, same-size random subsets, accuracy in [0, 1]."""

from __future__ import annotations

import pytest
import torch

from attriblm.analysis.subset_retrain import (
    accuracy,
    random_subset,
    run_subset_retrain,
    top_k_union,
)
from attriblm.data.loaders import load_examples
from attriblm.errors import ConfigError
from attriblm.io import read_json
from attriblm.metrics.ranking import rank_train
from attriblm.models.loading import load_model
from attriblm.models.lora import has_lora
from attriblm.train.finetune import TrainSettings


def test_top_k_union():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9], [0.8, 0.0, 0.7, 0.1], [0.2, 0.3, 0.1, 0.0]])
    # tie 0.9 at rows 1 and 3: the metrics' ranking picks one, by the seeded permutation
    top1 = rank_train(scores)[:, 0].tolist()
    assert top1[1:] == [0, 1] and top1[0] in (1, 3)
    assert top_k_union(scores, 1) == sorted(set(top1))
    assert top_k_union(scores, 2) == [0, 1, 2, 3]
    assert top_k_union(scores, 10) == [0, 1, 2, 3]
    assert len(top_k_union(torch.randn(5, 40), 3)) <= 15
    # a full tie is not resolved by file order: 30 queries pick many different top-1 rows
    assert len(top_k_union(torch.zeros(30, 50), 1)) > 10
    with pytest.raises(ConfigError, match="--k"):
        top_k_union(scores, 0)


def test_random_subset_is_seeded_and_sized():
    a = random_subset(30, 7, seed=0)
    assert len(a) == len(set(a)) == 7 and a == sorted(a) and all(0 <= i < 30 for i in a)
    assert random_subset(30, 7, seed=0) == a
    assert random_subset(30, 7, seed=1) != a
    with pytest.raises(ConfigError):
        random_subset(3, 4, seed=0)


def test_accuracy_rule():
    assert accuracy(["it is Remove All Vowels", "joyful"], ["remove all vowels", "sad"]) == 0.5
    with pytest.raises(ConfigError):
        accuracy([], [])


def test_run(samples_dir, tmp_path):
    train = load_examples(str(samples_dir / "grammars_small_train.jsonl"))[::4]
    queries = load_examples(str(samples_dir / "grammars_small_test.jsonl"))[::2]
    base = load_model("tiny")
    settings = TrainSettings(epochs=2, lr=2e-3, batch_size=10)
    report = run_subset_retrain(
        base,
        train,
        queries,
        tmp_path,
        methods=["gradsim", "repsim"],
        k=1,
        train_settings=settings,
        max_new_tokens=4,
    )
    assert (tmp_path / "subset_retrain.png").read_bytes()[:4] == b"\x89PNG"
    assert read_json(tmp_path / "subset_retrain.json")["methods"] == report["methods"]
    assert report["expect"] == "label"  # grammars: the label is the response
    assert 0.0 <= report["full"]["accuracy"] <= 1.0
    assert report["full"]["n_train"] == len(train)
    for name, row in report["methods"].items():
        assert 1 <= row["subset_size"] <= min(len(queries), len(train)), name
        assert row["subset_size"] == len(row["indices"]) == sum(row["label_counts"].values())
        random_row = report["random"][str(row["subset_size"])]
        assert len(random_row["indices"]) == row["subset_size"]
        assert row["random_accuracy"] == random_row["accuracy"]
        assert 0.0 <= row["accuracy"] <= 1.0 and len(row["answers"]) == len(queries)
        assert (tmp_path / "finetunes" / name / "adapter" / "adapter_config.json").is_file()
    assert not has_lora(base.model)
    with pytest.raises(ConfigError, match="no --adapter"):
        run_subset_retrain(
            load_model("tiny", adapter=tmp_path / "finetunes" / "full" / "adapter"),
            train,
            queries,
            tmp_path / "x",
        )
