from __future__ import annotations

import pytest
import torch

from attriblm.data.tokenize import encode_examples, encode_prompts
from attriblm.errors import ConfigError
from attriblm.features.representations import representations
from attriblm.features.rept import last_prompt_positions, rept_features, resolve_layer
from attriblm.models.loss import per_example_loss


def _reference(model, example, layer: int) -> torch.Tensor:
    """One example alone (no padding), plain autograd: [h_ℓ[p] ; ∂L/∂h_ℓ[p]]."""
    ids = torch.tensor([example.input_ids])
    labels = torch.tensor([example.labels])
    out = model(input_ids=ids, output_hidden_states=True)
    hidden = out.hidden_states[layer]
    hidden.retain_grad()
    per_example_loss(out.logits, labels)[0].backward()
    p = next(t for t, y in enumerate(example.labels) if t >= 1 and y != -100) - 1
    model.zero_grad(set_to_none=True)
    return torch.cat([hidden[0, p].detach(), hidden.grad[0, p]])


@pytest.mark.parametrize("layer", [1, 2])
def test_batched_features_equal_a_batch_size_one_autograd_loop(
    lora_tiny, mixed_length_examples, layer
):
    model, tokenizer = lora_tiny
    encoded = encode_examples(mixed_length_examples, tokenizer)
    assert len({len(e.input_ids) for e in encoded}) > 1  # every batch carries right padding
    pad = tokenizer.pad_token_id
    batched = rept_features(model, encoded, pad_token_id=pad, layers=[layer], batch_size=3)[layer]
    assert batched.shape == (len(encoded), 2 * model.config.hidden_size)
    for i, example in enumerate(encoded):
        expected = _reference(model, example, layer)
        assert torch.allclose(batched[i], expected, atol=1e-5, rtol=1e-4), i
    assert batched[:, model.config.hidden_size :].abs().sum() > 0  # gradients are not all zero


def test_all_layers_in_one_pass_match_one_layer_at_a_time(lora_tiny, mixed_length_examples):
    model, tokenizer = lora_tiny
    encoded = encode_examples(mixed_length_examples, tokenizer)
    pad = tokenizer.pad_token_id
    both = rept_features(model, encoded, pad_token_id=pad, layers=[1, 2], batch_size=2)
    for layer in (1, 2):
        alone = rept_features(model, encoded, pad_token_id=pad, layers=[layer], batch_size=5)
        assert torch.allclose(both[layer], alone[layer], atol=1e-6)
    assert not torch.allclose(both[1], both[2])


def test_last_layer_hidden_half_is_the_repsim_representation(lora_tiny, mixed_length_examples):
    model, tokenizer = lora_tiny
    encoded = encode_examples(mixed_length_examples, tokenizer)
    pad = tokenizer.pad_token_id
    last = resolve_layer(-1, model.config.num_hidden_layers)
    feats = rept_features(model, encoded, pad_token_id=pad, layers=[last])[last]
    reps = representations(
        model, encode_prompts(mixed_length_examples, tokenizer), pad_token_id=pad
    )
    assert torch.allclose(feats[:, : model.config.hidden_size], reps, atol=1e-5)


def test_last_prompt_position_is_before_the_first_response_token(lora_tiny, mixed_length_examples):
    _, tokenizer = lora_tiny
    encoded = encode_examples(mixed_length_examples, tokenizer)
    prompts = encode_prompts(mixed_length_examples, tokenizer)
    assert last_prompt_positions(encoded) == [len(p) - 1 for p in prompts]


def test_layers_are_one_based_with_minus_one_for_the_last():
    assert resolve_layer(-1, 30) == 30 and resolve_layer(1, 30) == 1
    for bad in (0, 31, -2):
        with pytest.raises(ConfigError, match="--rept-layer"):
            resolve_layer(bad, 30)


def test_model_is_left_in_its_mode_and_without_parameter_grads(lora_tiny, mixed_length_examples):
    model, tokenizer = lora_tiny
    encoded = encode_examples(mixed_length_examples[:2], tokenizer)
    model.train()
    try:
        rept_features(model, encoded, pad_token_id=tokenizer.pad_token_id, layers=[1])
        assert model.training
    finally:
        model.eval()
    assert all(p.grad is None for p in model.parameters())
