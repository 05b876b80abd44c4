"""Offline tokenizers and sample paths for the data tests (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from attriblm.data.tasks import build_task

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]


def training_corpus() -> list[str]:
    """Fixed strings: builder rows (grammars, math) in the llama2 template plus chat markup."""
    texts = []
    for task in ("grammars", "math"):
        for ex in build_task(task, "quick", seed=0, n_train_per_class=8)["train"]:
            texts.append(f"[INST] {ex.prompt} [/INST] {ex.response}")
    texts += ["user\nassistant\nsystem\n"] * 5
    return texts


def train_bpe(add_bos: bool) -> Tokenizer:
    """A tiny deterministic ByteLevel BPE (every byte is in the vocabulary, so no unknowns)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    if add_bos:
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", bos)]
        )
    return tok


@pytest.fixture(scope="session")
def samples(samples_dir) -> Path:
    """The project-made study-format samples (``samples_dir`` in tests/conftest.py)."""
    return samples_dir


@pytest.fixture(scope="session")
def bos_tokenizer() -> PreTrainedTokenizerFast:
    """Llama-style: adds ``<s>`` in front; eos ``</s>``, pad ``<pad>``."""
    return PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(add_bos=True),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )


@pytest.fixture(scope="session")
def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """GPT2/SmolLM2-style: adds no BOS; eos ``<|im_end|>``; a ChatML chat template."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(add_bos=False),
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
    )
    tok.chat_template = CHATML
    return tok


@pytest.fixture(params=["bos", "gpt2"])
def tokenizer(request, bos_tokenizer, gpt2_tokenizer) -> PreTrainedTokenizerFast:
    """Both offline tokenizers in turn."""
    return bos_tokenizer if request.param == "bos" else gpt2_tokenizer
