from __future__ import annotations

import pytest
import torch

from attriblm.data.tokenize import encode_prompts
from attriblm.errors import ConfigError
from attriblm.features.representations import representations


def test_last_token_after_final_norm_matches_unbatched(lora_tiny, mixed_length_examples):
    model, tokenizer = lora_tiny
    ids = encode_prompts(mixed_length_examples, tokenizer)
    reps = representations(model, ids, pad_token_id=tokenizer.pad_token_id, batch_size=3)
    assert reps.shape == (len(ids), model.config.hidden_size)
    backbone = model.get_base_model().get_decoder()
    for row, prompt in enumerate(ids):
        with torch.no_grad():
            hidden = backbone(input_ids=torch.tensor([prompt])).last_hidden_state[0, -1]
        assert torch.allclose(reps[row], hidden, atol=1e-5)


def test_final_norm_is_applied(lora_tiny, mixed_length_examples):
    model, tokenizer = lora_tiny
    ids = encode_prompts(mixed_length_examples[:1], tokenizer)
    captured = {}
    norm = model.get_base_model().get_decoder().norm
    handle = norm.register_forward_hook(lambda m, a, out: captured.setdefault("out", out))
    try:
        reps = representations(model, ids, pad_token_id=tokenizer.pad_token_id)
    finally:
        handle.remove()
    assert torch.allclose(reps[0], captured["out"][0, -1], atol=1e-6)


def test_mean_pooling_and_layer_option(lora_tiny, mixed_length_examples):
    model, tokenizer = lora_tiny
    ids = encode_prompts(mixed_length_examples[:2], tokenizer)
    pad = tokenizer.pad_token_id
    mean = representations(model, ids, pad_token_id=pad, pooling="mean")
    last = representations(model, ids, pad_token_id=pad)
    embed = representations(model, ids, pad_token_id=pad, layer=0)
    assert not torch.allclose(mean, last)
    emb_table = model.get_base_model().get_input_embeddings().weight
    assert torch.allclose(embed[0], emb_table[ids[0][-1]], atol=1e-6)


def test_unknown_pooling_is_a_config_error(lora_tiny):
    model, tokenizer = lora_tiny
    with pytest.raises(ConfigError, match="pooling"):
        representations(model, [[1, 2]], pad_token_id=tokenizer.pad_token_id, pooling="max")
