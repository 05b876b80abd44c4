"""RepT features: a hidden state and its loss gradient at the last prompt token.

For example ``i`` (templated prompt, then its response) let ``p_i`` be the position of the last
prompt token, the one whose output predicts the first response token, and ``h_ℓ`` the hidden
state of layer ``ℓ``. The feature (docs/METHODS.md, "rept") is::

    r_i = [ h_ℓ[p_i] ; ∂L_i/∂h_ℓ[p_i] ]        shape [2·hidden]

with ``L_i`` the token-mean cross-entropy over the response tokens (and the final EOS):
:func:`attriblm.models.loss.per_example_loss` under the ``response`` loss mask, whatever mask the
fine-tune used. Because ``h_ℓ[p_i]`` depends only on positions ``≤ p_i`` (causal attention) it
is the same vector a forward pass over the prompt alone gives.

Layers follow Hugging Face's ``hidden_states`` tuple, 1-based: ``ℓ = 1 … L`` is the output of
decoder layer ``ℓ``; ``ℓ = L`` is reported after the final norm, so RepT's last layer reads the
same hidden state as RepSim's default. ``-1`` means ``L``.

Batching: one forward pass (``output_hidden_states=True``) and one backward pass of ``Σ_i L_i``
per batch. Rows of a batch never interact (causal attention, attention 0 on the right pads,
per-token norms, ``eval()`` so no dropout), hence ``∂(Σ_j L_j)/∂h_ℓ[i, p_i] = ∂L_i/∂h_ℓ[i, p_i]``.
The input embeddings are marked as requiring grad, so every layer's hidden state is in the
autograd graph even where no LoRA matrix sits below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch

from attriblm.data.tokenize import EncodedExample, collate
from attriblm.errors import ConfigError, DataError, ModelError
from attriblm.features.finite import check_finite_rows
from attriblm.models.loss import IGNORE_INDEX, model_per_example_loss


def n_layers(model: torch.nn.Module) -> int:
    """Number of decoder layers ``L`` of a (PEFT-wrapped) causal LM."""
    config = getattr(model, "config", None)
    count = getattr(config, "num_hidden_layers", None)
    if not isinstance(count, int) or count < 1:
        raise ModelError(f"{type(model).__name__}: cannot tell its number of layers")
    return count


def resolve_layer(layer: int, total: int, option: str = "--rept-layer") -> int:
    """``layer`` as an index into ``hidden_states`` (``1 … total``); ``-1`` → ``total``."""
    if layer == -1:
        return total
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= total:
        raise ConfigError(
            f"{option} must be -1 (the last layer) or between 1 and {total}, got {layer!r}"
        )
    return layer


def last_prompt_positions(
    encoded: Sequence[EncodedExample], names: Sequence[str] = ()
) -> list[int]:
    """Per example, the position just before its first loss token (the last prompt token).

    ``encoded`` must use the ``response`` loss mask (labels mark the response tokens only).
    """
    out = []
    for i, example in enumerate(encoded):
        first = next(
            (t for t, y in enumerate(example.labels) if t >= 1 and y != IGNORE_INDEX), None
        )
        if first is None:
            who = names[i] if i < len(names) else f"example {i + 1}"
            raise DataError(f"{who}: no response token to take a loss on")
        out.append(first - 1)
    return out


@contextmanager
def _capture_hidden_states(model: torch.nn.Module):
    """Record the backbone's ``hidden_states`` of the last forward; embeddings require grad."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = base.get_decoder()
    embeddings = base.get_input_embeddings()
    captured: dict[str, tuple[torch.Tensor, ...]] = {}

    def on_backbone(_module, _args, output) -> None:
        captured["hidden_states"] = output.hidden_states

    def on_embeddings(_module, _args, output: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and not output.requires_grad:
            output.requires_grad_(True)
        return output

    handles = [
        backbone.register_forward_hook(on_backbone),
        embeddings.register_forward_hook(on_embeddings),
    ]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def rept_features(
    model: torch.nn.Module,
    encoded: Sequence[EncodedExample],
    *,
    pad_token_id: int,
    layers: Sequence[int],
    batch_size: int = 16,
    names: Sequence[str] = (),
) -> dict[int, torch.Tensor]:
    """RepT features of ``encoded`` at each of ``layers`` (module docstring).

    Args:
        model: a (PEFT-wrapped) causal LM; evaluated in ``eval()`` mode.
        encoded: examples tokenised with the ``response`` loss mask.
        layers: ``hidden_states`` indices ``1 … L`` (resolve ``-1`` with :func:`resolve_layer`).
        names: optional per-example names used in errors (e.g. ``train.jsonl row 7``).

    Returns:
        Layer → ``[n, 2·hidden]`` float32: the hidden state, then its gradient; rows in order.
    """
    layers = list(dict.fromkeys(layers))
    total = n_layers(model)
    for layer in layers:
        resolve_layer(layer, total)
    if not encoded:
        width = 2 * int(model.config.hidden_size)
        return {layer: torch.zeros(0, width) for layer in layers}
    positions = last_prompt_positions(encoded, names)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    try:
        with _capture_hidden_states(model) as captured:
            for start in range(0, len(encoded), batch_size):
                stop = min(start + batch_size, len(encoded))
                batch = collate(encoded[start:stop], pad_token_id)
                losses = model_per_example_loss(model, batch, output_hidden_states=True)
                hidden = [captured["hidden_states"][layer] for layer in layers]
                grads = torch.autograd.grad(losses.sum(), hidden)
                rows = torch.arange(stop - start, device=device)
                at = torch.tensor(positions[start:stop], device=device)
                for layer, h, g in zip(layers, hidden, grads, strict=True):
                    feature = torch.cat([h[rows, at].detach().float(), g[rows, at].float()], dim=1)
                    check_finite_rows(
                        feature.cpu(), start, names, "RepT feature", f" at layer {layer}"
                    )
                    chunks[layer].append(feature.cpu())
                captured.clear()
    finally:
        model.train(was_training)
    return {layer: torch.cat(parts) for layer, parts in chunks.items()}
