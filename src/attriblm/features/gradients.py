"""Batched per-example gradients, one block per LoRA matrix.

Each LoRA ``lora_A`` / ``lora_B`` is a bias-free ``nn.Linear`` with weight ``W [out, in]``. For a
sequence, ``dL/dW = Σ_t δ_t a_tᵀ`` where ``a_t`` is the layer input at token ``t`` and ``δ_t`` the
gradient of the loss with respect to the layer output. Hooks capture ``a`` on the forward pass and
``δ`` on the backward pass of ``Σ_i L_i`` (``L_i`` = :func:`attriblm.models.loss.per_example_loss`,
computed by :func:`~attriblm.models.loss.model_per_example_loss`),
so row ``i`` of the batch carries exactly example ``i``'s gradient: one forward and one backward
per batch instead of one per example.

Padding is exact either way. Right padding (``response`` / ``full``): with causal attention a pad
token never influences an earlier token, and pads outside the loss get ``δ = 0``. Left padding
(``paper``, every row exactly ``max_length``): the pads are in the loss and carry gradient like
any token; attention never mixes rows of a batch, so each row is still one example's gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch

from attriblm.data.tokenize import EncodedExample, collate
from attriblm.errors import AttriblmError
from attriblm.features.finite import check_finite_rows
from attriblm.models.lora import lora_linears
from attriblm.models.loss import model_per_example_loss

ProgressFn = Callable[[int], None]


class _BlockRecorder:
    """Forward/backward hooks on one LoRA linear that produce ``[batch, out*in]`` gradients."""

    def __init__(self, module: torch.nn.Linear) -> None:
        self.module = module
        self.grads: torch.Tensor | None = None
        self._handle = module.register_forward_hook(self._on_forward)

    def _on_forward(self, module, args, output: torch.Tensor) -> None:
        if output.requires_grad:
            inputs = args[0].detach()
            output.register_hook(lambda grad_output: self._accumulate(inputs, grad_output))

    def _accumulate(self, inputs: torch.Tensor, grad_output: torch.Tensor) -> None:
        # [b, T, out] x [b, T, in] -> [b, out, in], flattened in the weight's row-major order.
        per_example = torch.einsum("bto,bti->boi", grad_output.float(), inputs.float()).flatten(1)
        self.grads = per_example if self.grads is None else self.grads + per_example

    def take(self) -> torch.Tensor:
        grads, self.grads = self.grads, None
        if grads is None:
            raise AttriblmError("a LoRA block received no gradient; is the adapter trainable?")
        return grads

    def remove(self) -> None:
        self._handle.remove()


@contextmanager
def _recording(model: torch.nn.Module):
    recorders = {name: _BlockRecorder(module) for name, module in lora_linears(model)}
    if not recorders:
        raise AttriblmError("the model has no LoRA layers: load or train an adapter first")
    try:
        yield recorders
    finally:
        for recorder in recorders.values():
            recorder.remove()


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def per_example_gradients(
    model: torch.nn.Module,
    encoded: Sequence[EncodedExample],
    *,
    pad_token_id: int,
    batch_size: int = 16,
    progress: ProgressFn | None = None,
    names: Sequence[str] = (),
    on_batch: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-example loss gradients for every LoRA matrix.

    Args:
        model: a PEFT-wrapped causal LM; evaluated in ``eval()`` mode (LoRA dropout off).
        encoded: tokenised examples with loss labels (see :mod:`attriblm.data.tokenize`).
        pad_token_id: id used to right-pad a batch (``paper`` rows are full-length already).
        batch_size: examples per forward/backward pass.
        progress: called with the number of examples finished in each batch.
        names: optional per-example names used in error messages (e.g. ``train.jsonl row 7``).
        on_batch: called with each collated batch (on the model's device) before its forward
            pass, e.g. :meth:`attriblm.features.kfac.KFACCollector.set_batch` to collect K-FAC
            factors in the same pass.

    Returns:
        Block name → ``[n, d_b]`` float32 tensor (``d_b = out·in`` of that matrix, row-major),
        rows in the order of ``encoded``; block order is module order.
    """
    was_training = model.training
    model.eval()
    device = _model_device(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise AttriblmError("no trainable (LoRA) parameters: load the adapter as trainable")
    chunks: dict[str, list[torch.Tensor]] = {}
    try:
        with _recording(model) as recorders:
            for start in range(0, len(encoded), batch_size):
                batch = collate(encoded[start : start + batch_size], pad_token_id)
                batch = {k: v.to(device) for k, v in batch.items()}
                if on_batch is not None:
                    on_batch(batch)
                losses = model_per_example_loss(model, batch)
                torch.autograd.grad(losses.sum(), params, allow_unused=True)
                for name, recorder in recorders.items():
                    block = recorder.take().cpu()
                    check_finite_rows(block, start, names, "gradient", f" in block {name}")
                    chunks.setdefault(name, []).append(block)
                if progress is not None:
                    progress(min(batch_size, len(encoded) - start))
    finally:
        model.train(was_training)
    return {name: torch.cat(parts) for name, parts in chunks.items()}
