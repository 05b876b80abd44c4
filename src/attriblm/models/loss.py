"""The training objective, shared by fine-tuning and per-example gradients.

Fine-tuning minimises the batch mean of :func:`per_example_loss`; the per-example gradient of
example ``i`` is the gradient of ``per_example_loss(...)[i]``. One definition keeps
"gradients on the same loss as training" true by construction. Every model pass computes it
with :func:`model_per_example_loss`, which equals ``per_example_loss(model(...).logits, labels)``
but evaluates the output layer only at the positions the loss reads.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from attriblm.models.output_layer import can_select_positions, only_positions

IGNORE_INDEX = -100

# model → whether its selected-position loss matched the full-logit loss on a sample row
_SELECTION_CHECKED: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


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


def model_per_example_loss(
    model: torch.nn.Module, batch: Mapping[str, torch.Tensor], **forward_kwargs
) -> torch.Tensor:
    """``per_example_loss(model(input_ids, attention_mask).logits, labels)``, ``[batch]``.

    ``batch`` holds ``input_ids``, ``attention_mask`` and ``labels`` ``[batch, T]`` (a collated
    batch; moved to the model's device here); ``forward_kwargs`` go to the model's forward.
    Logits are computed only at positions ``t - 1`` of the loss tokens ``t``
    (:mod:`attriblm.models.output_layer`): the same value and gradients for a fraction of the
    output layer's cost. The first call on a model compares both ways on the batch's first
    row (eval mode, no gradient) and keeps full logits, with a warning, if they differ; models
    whose output layer is trainable always use full logits.
    """
    device = next(model.parameters()).device
    input_ids, attention_mask, labels = (
        batch[key].to(device) for key in ("input_ids", "attention_mask", "labels")
    )
    if not _selection_ok(model, input_ids, attention_mask, labels, forward_kwargs):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, **forward_kwargs).logits
        return per_example_loss(logits, labels)
    return _selected_loss(model, input_ids, attention_mask, labels, forward_kwargs)


def _selected_loss(model, input_ids, attention_mask, labels, forward_kwargs) -> torch.Tensor:
    targets = labels[:, 1:]
    rows, positions = (targets != IGNORE_INDEX).nonzero(as_tuple=True)
    with only_positions(model, rows, positions):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, **forward_kwargs).logits
    token_loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), targets[rows, positions], reduction="none"
    )
    n = labels.shape[0]
    sums = token_loss.new_zeros(n).index_add(0, rows, token_loss)
    counts = token_loss.new_zeros(n).index_add(0, rows, torch.ones_like(token_loss))
    return sums / counts


def _selection_ok(model, input_ids, attention_mask, labels, forward_kwargs) -> bool:
    verdict = _SELECTION_CHECKED.get(model)
    if verdict is not None:
        return verdict
    if not can_select_positions(model):
        _SELECTION_CHECKED[model] = False
        return False
    sample = (input_ids[:1], attention_mask[:1], labels[:1])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            full = per_example_loss(
                model(input_ids=sample[0], attention_mask=sample[1], **forward_kwargs).logits,
                sample[2],
            )
            try:
                selected = _selected_loss(model, *sample, forward_kwargs)
            except Exception:  # any model-specific failure: the full-logit path is always valid
                selected = None
    finally:
        model.train(was_training)
    tolerance = 1e-4 if _model_dtype(model) == torch.float32 else 2e-2  # half: rounding
    ok = (
        selected is not None
        and selected.shape == full.shape
        and bool(((selected - full).abs() <= tolerance * (1 + full.abs())).all())
    )
    if not ok:
        warnings.warn(
            f"{type(model).__name__}: the loss at selected output positions differs from the "
            "full-logit loss; computing logits at every position (slower, same values)",
            stacklevel=3,
        )
    _SELECTION_CHECKED[model] = ok
    return ok


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype
