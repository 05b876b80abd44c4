from __future__ import annotations

import torch

from attriblm.models.tiny import (
    TINY_SPECIAL_TOKENS,
    build_tiny_model,
    build_tiny_tokenizer,
    save_tiny_model,
)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


def test_tokenizer_is_deterministic_and_small():
    first, second = build_tiny_tokenizer(), build_tiny_tokenizer()
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert 300 <= len(first) <= 600
    assert (first.pad_token, first.bos_token, first.eos_token) == ("<pad>", "<s>", "</s>")
    assert first.convert_tokens_to_ids(list(TINY_SPECIAL_TOKENS)) == [0, 1, 2]


def test_tokenizer_is_byte_level_and_prepends_bos():
    tokenizer = build_tiny_tokenizer()
    text = "[INST] Ünïcödé, emoji 🙂 and\ttabs? [/INST] 42!"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # [INST] is short: the corpus teaches the merges.
    assert len(tokenizer("[INST]", add_special_tokens=False)["input_ids"]) <= 3


def test_tokenizer_chat_template():
    tokenizer = build_tiny_tokenizer()
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == "<s>[INST] hi [/INST] yo</s>"


def test_model_config_and_seeded_weights():
    model, tokenizer = build_tiny_model(seed=0)
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (32, 2, 64)
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)
    assert config.vocab_size == len(tokenizer)
    assert config.max_position_embeddings == 512
    assert not model.training

    again, _ = build_tiny_model(seed=0)
    other, _ = build_tiny_model(seed=1)
    a, b, c = _weights(model), _weights(again), _weights(other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_model_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_config_overrides():
    model, _ = build_tiny_model(seed=0, hidden_size=48, num_hidden_layers=1)
    assert model.config.hidden_size == 48
    assert len(model.model.layers) == 1


def test_save_tiny_model(tmp_path):
    out = save_tiny_model(tmp_path / "tiny", seed=0)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
