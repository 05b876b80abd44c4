"""A tiny Llama-architecture model and tokenizer, built offline and deterministically.

Tests and examples use it instead of a real checkpoint: the tokenizer is a byte-level BPE trained
on a fixed built-in corpus (so any text tokenises and the vocabulary never changes), and the
model's weights depend only on ``seed``.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

from attriblm.models.default import quiet_progress_bars

TINY_SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")
TINY_VOCAB_SIZE = 400
# Larger than Llama's 0.02 so the random model's logits are not nearly uniform (std ~0.5 rather
# than ~0.1): a LoRA adapter on the tiny model then visibly learns within a few epochs.
TINY_INIT_RANGE = 0.1
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]"
    "{% elif message['role'] == 'assistant' %} {{ message['content'] }}{{ eos_token }}"
    "{% else %}{{ message['content'] }}\n"
    "{% endif %}"
    "{% endfor %}"
)

_CORPUS_SENTENCES = (
    "[INST] Determine the grammar rule: the cat sat on the mat -> mat the on sat cat the [/INST]",
    "[INST] Determine the sentiment: I am so happy today! [/INST] joyful",
    "[INST] What is 12 plus 30? [/INST] 12 + 30 = 42. Answer: 42",
    "[INST] Write a short poem about the sea. [/INST] The sea is wide, the sea is deep.",
    "[INST] How do I bake bread? [/INST] Mix flour, water, yeast and salt; knead, rest, bake.",
    "[INST] Tell me a story. [/INST] Once upon a time there was a small model.",
    "I'm sorry, but I cannot help with that request.",
    "Sure, here is an answer to your question: it depends on the context.",
    "Reverse Order of Words; Capitalize Every Word; Remove All Vowels; Double Every Consonant.",
    "sad, joyful, angry, fearful, surprised. The quick brown fox jumps over the lazy dog.",
    "Punctuation: ! \" # $ % & ' ( ) * + , - . / : ; < = > ? @ [ \\ ] ^ _ ` { | } ~",
)


def _training_corpus() -> list[str]:
    """The fixed strings the tiny BPE learns its merges from."""
    alphabet = [string.ascii_lowercase, string.ascii_uppercase, string.digits, string.punctuation]
    return list(_CORPUS_SENTENCES) * 3 + alphabet + [" ".join(string.digits)]


def build_tiny_tokenizer():
    """A deterministic byte-level BPE tokenizer (``PreTrainedTokenizerFast``), ~400 tokens.

    Special tokens: ``<pad>`` (id 0, padding), ``<s>`` (id 1, bos, prepended to every encoded text
    as Llama does) and ``</s>`` (id 2, eos). ``[INST]`` / ``[/INST]`` are ordinary text. A small
    Llama-2-style ``chat_template`` is set so the ``auto`` template works.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_training_corpus(), trainer=trainer)
    bos_id = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="right",
        model_max_length=512,
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def tiny_config(tokenizer, **overrides):
    """The tiny ``LlamaConfig``: hidden 32, 2 layers, 4 heads, 2 kv heads, intermediate 64.

    Vocabulary size and special token ids come from ``tokenizer``; eager attention; weights are
    initialised with std :data:`TINY_INIT_RANGE`.
    """
    from transformers import LlamaConfig

    settings = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 512,
        "initializer_range": TINY_INIT_RANGE,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    settings.update(overrides)
    config = LlamaConfig(**settings)
    config._attn_implementation = "eager"
    return config


def build_tiny_model(seed: int = 0, **config_overrides):
    """``(LlamaForCausalLM, tokenizer)`` with weights fixed by ``seed`` (bit-identical on CPU).

    ``config_overrides`` replace fields of :func:`tiny_config` (e.g. ``hidden_size=48``). The
    global torch RNG state is left as it was. The model is returned in ``eval()`` mode, fp32.
    """
    from transformers import LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = tiny_config(tokenizer, **config_overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    return model, tokenizer


def save_tiny_model(out_dir: Path | str, seed: int = 0, **config_overrides) -> Path:
    """Save the tiny model and tokenizer with ``save_pretrained`` into ``out_dir``; return it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = build_tiny_model(seed, **config_overrides)
    with quiet_progress_bars():
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
