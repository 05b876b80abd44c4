from __future__ import annotations

import pytest
import torch

from attriblm.data.schema import Example
from attriblm.models.lora import LoraSettings, add_lora, lora_linears
from attriblm.models.tiny import build_tiny_model


@pytest.fixture(scope="module")
def lora_tiny():
    """A tiny Llama with LoRA whose B matrices are non-zero (so A blocks get gradients)."""
    model, tokenizer = build_tiny_model(seed=0)
    model = add_lora(model, LoraSettings(r=2, alpha=4, dropout=0.1), seed=1)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, module in lora_linears(model):
            if name.endswith("lora_B"):
                module.weight.copy_(0.1 * torch.randn(module.weight.shape, generator=generator))
    model.eval()
    return model, tokenizer


@pytest.fixture(scope="module")
def mixed_length_examples() -> list[Example]:
    """Examples of clearly different lengths so that every batch carries padding."""
    return [
        Example("Say hi.", "hi", "a"),
        Example("Write the word 'apple' three times in a row please.", "apple apple apple", "b"),
        Example("2+2?", "4", "a"),
        Example("Name a colour that is the colour of the sky on a clear day.", "blue", "b"),
        Example("Spell cat backwards.", "tac", "a"),
    ]
