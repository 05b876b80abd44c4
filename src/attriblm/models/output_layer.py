"""Feed a causal LM's output layer only the positions the loss reads.

The output layer (``get_output_embeddings()``, weight ``[vocab, hidden]``) maps every position's
hidden state to vocabulary logits, but the training loss reads only the positions ``t - 1`` of
its loss tokens ``t``. With a 49k vocabulary and short responses that projection, its softmax
and their backward are about a quarter of a forward+backward pass (docs/PERFORMANCE.md).

:func:`only_positions` installs a forward pre-hook that replaces the layer's input
``[batch, T, hidden]`` by the selected rows ``[1, n_tok, hidden]``, so the model's ``logits``
come back as ``[1, n_tok, vocab]`` and whatever the model's own forward does after the layer
(logit scaling, soft-capping) still applies. Gradients flow through the gather unchanged.

:func:`can_select_positions` says when this is safe: the layer must exist and hold no trainable
parameter (a LoRA on the output layer needs per-row tokens for per-example gradients).
:func:`attriblm.models.loss.model_per_example_loss` also checks the result numerically once per
model and falls back to full logits where it differs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def output_layer(model: torch.nn.Module) -> torch.nn.Module | None:
    """The module that maps hidden states to logits, or ``None`` when the model has none."""
    getter = getattr(model, "get_output_embeddings", None)
    return getter() if callable(getter) else None


def can_select_positions(model: torch.nn.Module) -> bool:
    """Whether the output layer exists and holds no trainable parameter (e.g. no LoRA)."""
    layer = output_layer(model)
    if layer is None:
        return False
    return not any(p.requires_grad for p in layer.parameters())


@contextmanager
def only_positions(
    model: torch.nn.Module, rows: torch.Tensor, positions: torch.Tensor
) -> Iterator[None]:
    """Within the block the output layer sees only ``hidden[rows, positions]``.

    Args:
        rows, positions: ``[n_tok]`` long tensors on the model's device; the model's logits
            become ``[1, n_tok, vocab]`` in that order.
    """
    layer = output_layer(model)
    if layer is None:
        raise ValueError("the model has no output layer (get_output_embeddings() is None)")

    def select(module: torch.nn.Module, args: tuple) -> tuple:
        hidden = args[0]
        return (hidden[rows, positions].unsqueeze(0), *args[1:])

    handle = layer.register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()
