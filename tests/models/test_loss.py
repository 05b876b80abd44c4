from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from attriblm.data.schema import Example
from attriblm.data.tokenize import collate, encode_examples
from attriblm.models.lora import LoraSettings, add_lora, lora_linears
from attriblm.models.loss import model_per_example_loss, per_example_loss
from attriblm.models.tiny import build_tiny_model

EXAMPLES = [
    Example("Say hi.", "hi", "a"),
    Example("Write the word 'apple' three times in a row please.", "apple apple apple", "b"),
    Example("2+2?", "4", "a"),
    Example("Spell cat backwards.", "tac", "a"),
]


def _lora_model(targets=("q_proj", "v_proj")):
    model, tokenizer = build_tiny_model(seed=0)
    model = add_lora(model, LoraSettings(r=2, alpha=4, dropout=0.0, target_modules=targets), seed=1)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, module in lora_linears(model):
            if name.endswith("lora_B"):
                module.weight.copy_(0.1 * torch.randn(module.weight.shape, generator=generator))
    return model.eval(), tokenizer


def _batch(tokenizer, loss_mask="response"):
    encoded = encode_examples(EXAMPLES, tokenizer, loss_mask=loss_mask, max_length=48)
    return collate(encoded, tokenizer.pad_token_id)


def _output_layer_inputs(model) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    model.get_output_embeddings().register_forward_hook(
        lambda module, args, output: shapes.append(tuple(args[0].shape))
    )
    return shapes


def _loss_and_grads(model, batch, selected: bool):
    params = [p for p in model.parameters() if p.requires_grad]
    if selected:
        losses = model_per_example_loss(model, batch)
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        losses = per_example_loss(logits, batch["labels"])
    # weights make the gradient check sensitive to each row's own loss
    weights = torch.arange(1, len(losses) + 1, dtype=losses.dtype)
    grads = torch.autograd.grad((losses * weights).sum(), params)
    return losses.detach(), grads


@pytest.mark.parametrize("loss_mask", ["response", "full", "paper"])
def test_selected_positions_equal_full_logits(loss_mask):
    model, tokenizer = _lora_model()
    batch = _batch(tokenizer, loss_mask)
    full_loss, full_grads = _loss_and_grads(model, batch, selected=False)
    shapes = _output_layer_inputs(model)
    loss, grads = _loss_and_grads(model, batch, selected=True)
    n_tok = int((batch["labels"][:, 1:] != -100).sum())
    assert shapes[-1][:2] == (1, n_tok), "the output layer must see only the loss positions"
    torch.testing.assert_close(loss, full_loss, rtol=1e-5, atol=1e-6)
    for got, expected in zip(grads, full_grads, strict=True):
        assert expected.norm() > 0
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)


def test_trainable_output_layer_keeps_full_logits():
    model, tokenizer = _lora_model(targets=("q_proj", "lm_head"))
    assert any("lm_head" in name for name, _ in lora_linears(model))
    batch = _batch(tokenizer)
    shapes = _output_layer_inputs(model)
    loss = model_per_example_loss(model, batch)
    assert shapes and all(s[:2] == tuple(batch["input_ids"].shape) for s in shapes)
    full = per_example_loss(
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
        batch["labels"],
    )
    torch.testing.assert_close(loss, full)


class _LengthScaledLogits(torch.nn.Module):
    """A causal LM whose logits scale with the sequence length: position selection changes them."""

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.lm.get_output_embeddings()

    def forward(self, input_ids, attention_mask, **kwargs):
        logits = self.lm(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
        return SimpleNamespace(logits=logits * logits.shape[1])


class _ReshapedLogits(_LengthScaledLogits):
    """A causal LM that reshapes its logits to ``[batch, T, vocab]``: selection cannot run."""

    def forward(self, input_ids, attention_mask, **kwargs):
        logits = self.lm(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
        return SimpleNamespace(logits=logits.view(*input_ids.shape, -1))


@pytest.mark.parametrize("wrapper", [_LengthScaledLogits, _ReshapedLogits])
def test_model_that_breaks_selection_falls_back_with_a_warning(wrapper):
    lm, tokenizer = _lora_model()
    model = wrapper(lm)
    batch = _batch(tokenizer)
    with pytest.warns(UserWarning, match="computing logits at every position"):
        loss = model_per_example_loss(model, batch)
    full = per_example_loss(
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
        batch["labels"],
    )
    torch.testing.assert_close(loss, full)
    shapes = _output_layer_inputs(lm)
    model_per_example_loss(model, batch)
    assert len(shapes) == 1 and shapes[0][:2] == tuple(batch["input_ids"].shape), (
        "the verdict is kept: later calls run one full-logit forward and no second check"
    )


def test_check_restores_training_mode():
    model, tokenizer = _lora_model()
    model.train()
    batch = _batch(tokenizer)
    model_per_example_loss(model, batch)
    assert model.training


def test_paper_batch_loss_is_the_models_own_loss_on_left_pads():
    """The study trains on ``model(input_ids, attention_mask, labels=input_ids).loss``.

    Under ``paper`` every row has ``max_length`` tokens, all in the loss, so the mean of the
    per-example losses is that batch token-mean; both run with the model's default positions.
    """
    model, tokenizer = _lora_model()
    batch = _batch(tokenizer, "paper")
    assert (batch["attention_mask"][:, 0] == 0).any(), "some rows must start with pads"
    assert (batch["attention_mask"][:, -1] == 1).all(), "rows must end with text"
    with torch.no_grad():
        ours = model_per_example_loss(model, batch)
        hf = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        ).loss
        rows = [
            model(input_ids=ids[None], attention_mask=mask[None], labels=ids[None]).loss
            for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
        ]
    torch.testing.assert_close(ours.mean(), hf, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours, torch.stack(rows), rtol=1e-5, atol=1e-6)


def test_train_loss_re_exports_the_models_objective():
    """Training code imports the objective from attriblm.train.loss: the same functions."""
    from attriblm.models import loss as models_loss
    from attriblm.train import loss as train_loss

    assert train_loss.per_example_loss is models_loss.per_example_loss
    assert train_loss.model_per_example_loss is models_loss.model_per_example_loss
    assert train_loss.IGNORE_INDEX == models_loss.IGNORE_INDEX == -100
