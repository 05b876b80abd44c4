from __future__ import annotations

from pathlib import Path

import pytest

from attriblm.data.loaders import load_examples
from attriblm.models.loading import load_model
from attriblm.train.finetune import TrainSettings, finetune


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, samples_dir) -> Path:
    """A LoRA adapter fine-tuned for one epoch on the grammars sample, on the tiny model."""
    out = tmp_path_factory.mktemp("tiny-finetune")
    train = load_examples(f"{samples_dir / 'grammars_small'}:train")
    result = finetune(
        load_model("tiny"), train, TrainSettings(epochs=1, lr=1e-3, batch_size=16), out
    )
    return result.adapter_dir


BENCH_SIZES = {
    "grammars": {"n_train_per_class": 2, "n_test_per_class": 1},
    "harmful-s": {"n_harmful_train": 4, "n_benign_train": 4, "n_harmful_test": 3},
}
BENCH_METHODS = ("gradsim", "repsim", "lissa-paper", "exact")


@pytest.fixture(scope="session")
def bench_dir(tmp_path_factory) -> Path:
    """A tiny two-task bench (grammars, harmful-s) × both loss masks × four methods."""
    from attriblm.pipeline.bench import run_bench

    out = tmp_path_factory.mktemp("bench")
    run_bench(
        out,
        tasks=list(BENCH_SIZES),
        methods=list(BENCH_METHODS),
        model="tiny",
        epochs=1,
        task_sizes=BENCH_SIZES,
    )
    return out
