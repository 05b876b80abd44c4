"""Representations for RepSim: a hidden state of the fine-tuned model at one token.

Default (docs/DESIGN.md §3): the last layer's hidden state after the final norm (the backbone's
``last_hidden_state``) at the last token of the templated prompt without the response.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from attriblm.data.tokenize import collate_prompts
from attriblm.errors import ConfigError
from attriblm.features.finite import check_finite_rows

POOLINGS = ("last", "mean")


def _backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack (embeddings → layers → final norm) under any PEFT / LM-head wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder()


@torch.no_grad()
def representations(
    model: torch.nn.Module,
    prompt_ids: Sequence[list[int]],
    *,
    pad_token_id: int,
    layer: int = -1,
    pooling: str = "last",
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
    names: Sequence[str] = (),
) -> torch.Tensor:
    """Hidden-state vectors of prompts.

    Args:
        prompt_ids: token ids of each templated prompt (no response).
        layer: ``-1`` = last layer after the final norm; ``k ≥ 0`` = output of the k-th entry of
            ``hidden_states`` (0 = embeddings, no final norm).
        pooling: ``last`` (the last real token) or ``mean`` (mean over real tokens).
        names: optional per-prompt names used in errors (e.g. ``train.jsonl row 7``).

    Returns:
        ``[n, hidden]`` float32, rows in the order of ``prompt_ids``.

    Raises:
        ModelError: a representation holds NaN or inf (the message names the first such row).
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling '{pooling}' (--repsim-pooling); choose {POOLINGS}")
    was_training = model.training
    model.eval()
    backbone = _backbone(model)
    device = next(model.parameters()).device
    rows: list[torch.Tensor] = []
    try:
        for start in range(0, len(prompt_ids), batch_size):
            batch = collate_prompts(prompt_ids[start : start + batch_size], pad_token_id)
            mask = batch["attention_mask"].to(device)
            out = backbone(
                input_ids=batch["input_ids"].to(device),
                attention_mask=mask,
                output_hidden_states=layer != -1,
            )
            hidden = out.last_hidden_state if layer == -1 else out.hidden_states[layer]
            rows.append(_pool(hidden.float(), mask, batch["last_index"].to(device), pooling).cpu())
            check_finite_rows(rows[-1], start, names, "representation")
            if progress is not None:
                progress(len(rows[-1]))
    finally:
        model.train(was_training)
    return torch.cat(rows)


def _pool(
    hidden: torch.Tensor, mask: torch.Tensor, last_index: torch.Tensor, pooling: str
) -> torch.Tensor:
    """``[b, T, h]`` → ``[b, h]`` at the last real token, or the mean over real tokens."""
    if pooling == "last":
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last_index]
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1)
