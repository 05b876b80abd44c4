"""The training objective, shared by fine-tuning and per-example gradients.

Fine-tuning minimises the batch mean of :func:`per_example_loss`; the per-example gradient of
example ``i`` is the gradient of ``per_example_loss(...)[i]``. One definition keeps
"gradients on the same loss as training" true by construction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each sequence over its loss tokens.

    Args:
        logits: ``[batch, seq, vocab]`` model outputs.
        labels: ``[batch, seq]`` token ids; ``IGNORE_INDEX`` (-100) marks tokens outside the loss.
            Label at position ``t`` is predicted from logits at ``t - 1`` (causal shift).

    Returns:
        ``[batch]`` float tensor, each row's token-mean loss. A row with no loss token is an error
        upstream (the tokeniser rejects it), so its value here would be NaN.
    """
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    token_loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    mask = (shift_labels != IGNORE_INDEX).to(token_loss.dtype)
    return (token_loss * mask).sum(dim=1) / mask.sum(dim=1)
