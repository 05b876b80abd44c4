from __future__ import annotations

import pytest
import torch

from attriblm.data.tokenize import collate, encode_examples
from attriblm.features.gradients import per_example_gradients
from attriblm.models.lora import LoraSettings, add_lora, lora_linears
from attriblm.models.loss import per_example_loss
from attriblm.models.tiny import build_tiny_model


def _loop_gradients(model, encoded, pad_id) -> dict[str, torch.Tensor]:
    """Reference: one forward/backward per example (batch size 1), read from .grad."""
    modules = lora_linears(model)
    rows: dict[str, list[torch.Tensor]] = {name: [] for name, _ in modules}
    for example in encoded:
        batch = collate([example], pad_id)
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        per_example_loss(logits, batch["labels"]).sum().backward()
        for name, module in modules:
            rows[name].append(module.weight.grad.detach().flatten().clone())
    model.zero_grad(set_to_none=True)
    return {name: torch.stack(r) for name, r in rows.items()}


@pytest.mark.parametrize("loss_mask", ["response", "full", "paper"])
def test_batched_equals_batch_size_one_loop(lora_tiny, mixed_length_examples, loss_mask):
    model, tokenizer = lora_tiny
    encoded = encode_examples(mixed_length_examples, tokenizer, loss_mask=loss_mask, max_length=48)
    lengths = {sum(e.attention_mask) for e in encoded}
    assert len(lengths) > 1, "the batch must contain padding"
    pad = tokenizer.pad_token_id
    batched = per_example_gradients(model, encoded, pad_token_id=pad, batch_size=4)
    reference = _loop_gradients(model, encoded, pad)
    assert list(batched) == list(reference)
    for name, expected in reference.items():
        got = batched[name]
        assert got.shape == expected.shape == (len(encoded), expected.shape[1])
        assert expected.norm() > 0, f"{name}: reference gradient is zero; test would be vacuous"
        rel = (got - expected).norm() / expected.norm()
        assert rel < 1e-4, f"{name}: relative error {rel:.2e}"


def test_lora_on_the_output_layer_gets_per_example_rows(mixed_length_examples):
    """A trainable output layer needs per-row tokens: the loss keeps full logits there."""
    model, tokenizer = build_tiny_model(seed=0)
    settings = LoraSettings(r=2, alpha=4, dropout=0.0, target_modules=("v_proj", "lm_head"))
    model = add_lora(model, settings, seed=1).eval()
    with torch.no_grad():
        for name, module in lora_linears(model):
            if name.endswith("lora_B"):
                module.weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(4))
    encoded = encode_examples(mixed_length_examples, tokenizer, max_length=48)
    pad = tokenizer.pad_token_id
    batched = per_example_gradients(model, encoded, pad_token_id=pad, batch_size=4)
    reference = _loop_gradients(model, encoded, pad)
    assert any("lm_head" in name for name in reference)
    for name, expected in reference.items():
        assert batched[name].shape == expected.shape
        rel = (batched[name] - expected).norm() / expected.norm()
        assert rel < 1e-4, f"{name}: relative error {rel:.2e}"


def test_blocks_follow_module_order_and_shapes(lora_tiny, mixed_length_examples):
    model, tokenizer = lora_tiny
    encoded = encode_examples(mixed_length_examples[:2], tokenizer)
    grads = per_example_gradients(model, encoded, pad_token_id=tokenizer.pad_token_id)
    modules = lora_linears(model)
    assert list(grads) == [name for name, _ in modules]
    for name, module in modules:
        assert grads[name].shape == (2, module.weight.numel())
        assert grads[name].dtype == torch.float32


def test_gradients_leave_no_param_grads_and_restore_mode(lora_tiny, mixed_length_examples):
    model, tokenizer = lora_tiny
    model.train()
    encoded = encode_examples(mixed_length_examples[:2], tokenizer)
    per_example_gradients(model, encoded, pad_token_id=tokenizer.pad_token_id)
    assert model.training
    model.eval()
    assert all(p.grad is None for p in model.parameters())


def test_dropout_is_off_during_gradients(lora_tiny, mixed_length_examples):
    model, tokenizer = lora_tiny
    model.train()
    encoded = encode_examples(mixed_length_examples, tokenizer)
    first = per_example_gradients(model, encoded, pad_token_id=tokenizer.pad_token_id)
    second = per_example_gradients(model, encoded, pad_token_id=tokenizer.pad_token_id)
    model.eval()
    for name in first:
        assert torch.equal(first[name], second[name])
