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
