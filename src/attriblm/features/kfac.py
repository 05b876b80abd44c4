"""Kronecker factors of the empirical Fisher of each LoRA linear (for ``kfac`` / ``ekfac``).

For a LoRA ``nn.Linear`` with weight ``W [out, in]`` and one example ``i``, the per-example
gradient is ``G_i = Σ_t δ_t a_tᵀ`` where ``a_t [in]`` is the layer input at token ``t`` and
``δ_t [out]`` the gradient of ``L_i`` (:func:`attriblm.models.loss.per_example_loss`, the
token-mean loss of example ``i``, so ``δ_t`` carries the ``1 / #loss tokens`` factor) with respect
to the layer output. Row-major flattening gives ``vec(G_i) = Σ_t δ_t ⊗ a_t``, the layout of the
gradient blocks of :mod:`attriblm.features.gradients`.

Factors (conventions of this module):

* ``A = (1 / N_tok) Σ_tokens a aᵀ`` ``[in, in]``: mean over counted tokens.
* ``S = (1 / n) Σ_i Σ_{t ∈ T_i} δ_t δ_tᵀ`` ``[out, out]``: summed over an example's tokens,
  averaged over examples.

so that ``H_b = (1/n) Σ_i vec(G_i) vec(G_i)ᵀ ≈ S ⊗ A`` on the same scale as the empirical Fisher
(exact when every example has one token and inputs and output gradients are independent; with
one token per example ``A ⊗ S`` is the usual K-FAC pair).

Counted tokens ``T_i``: positions ``t`` of example ``i`` with ``t < t_last``, where ``t_last`` is
the last position whose label is in the loss. Exactly these positions can carry gradient: the
output at ``t`` only influences the losses of labels ``t+1, …``; later positions (the final EOS
under the ``response`` / ``full`` masks) and the batch's right padding have ``δ = 0`` and are
excluded from ``A`` as well as ``S``. Under the ``paper`` mask, whose labels include the EOS
padding in front of each example's text, those pad positions carry gradient and are counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from attriblm.data.tokenize import EncodedExample, collate
from attriblm.errors import AttriblmError
from attriblm.models.lora import lora_linears
from attriblm.models.loss import IGNORE_INDEX, model_per_example_loss

ProgressFn = Callable[[int], None]


@dataclass
class KFACFactors:
    """Kronecker factors of one LoRA linear (float64).

    Attributes:
        A: ``[in, in]`` mean over counted tokens of ``a aᵀ``.
        S: ``[out, out]`` mean over examples of ``Σ_t δ_t δ_tᵀ``.
        n_tokens: tokens counted in ``A``.
        n_examples: examples counted in ``S``.
    """

    A: torch.Tensor
    S: torch.Tensor
    n_tokens: int
    n_examples: int

    @property
    def shape(self) -> tuple[int, int]:
        """The weight shape ``(out, in)``; a gradient block row is its row-major flatten."""
        return int(self.S.shape[0]), int(self.A.shape[0])


def token_mask(labels: torch.Tensor) -> torch.Tensor:
    """``[b, T]`` bool: positions that can carry gradient (``t < last loss-label position``).

    Labels are unshifted (label ``t`` is predicted from position ``t−1``); a row without loss
    labels has no counted position.
    """
    b, t = labels.shape
    positions = torch.arange(t, device=labels.device).expand(b, t)
    in_loss = labels != IGNORE_INDEX
    in_loss[:, 0] = False  # a label at position 0 is never predicted
    last = torch.where(in_loss, positions, torch.full_like(positions, -1)).amax(dim=1)
    return positions < last[:, None]


class _FactorRecorder:
    """Hooks on one LoRA linear accumulating ``Σ a aᵀ`` and ``Σ δ δᵀ`` over counted tokens."""

    def __init__(self, module: torch.nn.Linear, collector: KFACCollector) -> None:
        self.collector = collector
        out_f, in_f = module.weight.shape
        self.a_sum = torch.zeros(in_f, in_f, dtype=torch.float64)
        self.s_sum = torch.zeros(out_f, out_f, dtype=torch.float64)
        self._handle = module.register_forward_hook(self._on_forward)

    def _on_forward(self, module, args, output: torch.Tensor) -> None:
        mask = self.collector.mask
        if mask is None or not output.requires_grad:
            return
        a = args[0].detach()[mask].double()  # [N, in]
        self.a_sum += (a.T @ a).cpu()
        output.register_hook(lambda grad: self._on_backward(grad, mask))

    def _on_backward(self, grad_output: torch.Tensor, mask: torch.Tensor) -> None:
        d = grad_output.detach()[mask].double()  # [N, out]
        self.s_sum += (d.T @ d).cpu()

    def remove(self) -> None:
        self._handle.remove()


class KFACCollector:
    """Accumulates :class:`KFACFactors` for every LoRA linear while gradients are computed.

    Use as a context manager around forward/backward passes of ``Σ_i L_i``; call
    :meth:`set_batch` with each batch's labels before its forward pass.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.mask: torch.Tensor | None = None
        self.n_tokens = 0
        self.n_examples = 0
        linears = lora_linears(model)
        if not linears:
            raise AttriblmError("the model has no LoRA layers: load or train an adapter first")
        self.recorders = {name: _FactorRecorder(module, self) for name, module in linears}

    def set_batch(self, batch: dict[str, torch.Tensor]) -> None:
        """Count the batch's tokens (:func:`token_mask` of ``batch["labels"]``)."""
        self.mask = token_mask(batch["labels"])
        self.n_tokens += int(self.mask.sum())
        self.n_examples += int(self.mask.shape[0])

    def factors(self) -> dict[str, KFACFactors]:
        """Block name → factors (module order), normalised as in the module docstring."""
        if self.n_tokens == 0:
            raise AttriblmError("no tokens carried gradient: cannot fit K-FAC factors")
        return {
            name: KFACFactors(
                A=r.a_sum / self.n_tokens,
                S=r.s_sum / self.n_examples,
                n_tokens=self.n_tokens,
                n_examples=self.n_examples,
            )
            for name, r in self.recorders.items()
        }

    def take_sums(self) -> dict[str, torch.Tensor]:
        """The unnormalised sums since the last call, then reset them.

        Returns ``A/<block>`` ``[in, in]`` and ``S/<block>`` ``[out, out]`` float64 sums over
        counted tokens, and ``n_tokens`` / ``n_examples`` int64 scalars. Sums taken per batch (or
        per shard, or per rank) add up: :func:`factors_from_sums` of their total, added in batch
        order, equals :meth:`factors` of one collector that saw every batch, bit for bit.
        """
        sums: dict[str, torch.Tensor] = {}
        for name, r in self.recorders.items():
            sums[f"A/{name}"], r.a_sum = r.a_sum, torch.zeros_like(r.a_sum)
            sums[f"S/{name}"], r.s_sum = r.s_sum, torch.zeros_like(r.s_sum)
        sums["n_tokens"] = torch.tensor(self.n_tokens, dtype=torch.int64)
        sums["n_examples"] = torch.tensor(self.n_examples, dtype=torch.int64)
        self.n_tokens = self.n_examples = 0
        return sums

    def close(self) -> None:
        for recorder in self.recorders.values():
            recorder.remove()
        self.mask = None

    def __enter__(self) -> KFACCollector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def factors_from_sums(sums: dict[str, torch.Tensor]) -> dict[str, KFACFactors]:
    """Factors from summed :meth:`KFACCollector.take_sums` outputs (block order = key order)."""
    n_tokens, n_examples = int(sums["n_tokens"]), int(sums["n_examples"])
    if n_tokens == 0:
        raise AttriblmError("no tokens carried gradient: cannot fit K-FAC factors")
    return {
        key[2:]: KFACFactors(
            A=sums[key] / n_tokens,
            S=sums[f"S/{key[2:]}"] / n_examples,
            n_tokens=n_tokens,
            n_examples=n_examples,
        )
        for key in sums
        if key.startswith("A/")
    }


@contextmanager
def _eval_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def collect_kfac_factors(
    model: torch.nn.Module,
    encoded: Sequence[EncodedExample],
    *,
    pad_token_id: int,
    batch_size: int = 16,
    progress: ProgressFn | None = None,
) -> dict[str, KFACFactors]:
    """K-FAC factors of every LoRA linear over ``encoded`` (one forward/backward per batch).

    The model runs in ``eval()`` mode (LoRA dropout off) on the loss ``Σ_i L_i``. To get the
    factors and the per-example gradients from one pass, pass :meth:`KFACCollector.set_batch`
    as ``on_batch`` to :func:`attriblm.features.gradients.per_example_gradients` instead.
    """
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise AttriblmError("no trainable (LoRA) parameters: load the adapter as trainable")
    with _eval_mode(model), KFACCollector(model) as collector:
        for start in range(0, len(encoded), batch_size):
            batch = collate(encoded[start : start + batch_size], pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            collector.set_batch(batch)
            losses = model_per_example_loss(model, batch)
            torch.autograd.grad(losses.sum(), params, allow_unused=True)
            if progress is not None:
                progress(min(batch_size, len(encoded) - start))
        return collector.factors()


def factors_from_tokens(
    a: torch.Tensor, delta: torch.Tensor, example: torch.Tensor
) -> tuple[KFACFactors, torch.Tensor]:
    """Factors and per-example gradients from explicit tokens (for tests and simulations).

    Args:
        a: ``[N, in]`` inputs of the counted tokens; delta: ``[N, out]`` their output gradients;
        example: ``[N]`` long, the example index (``0..n−1``) of each token.

    Returns:
        ``(factors, grads [n, out*in])`` with ``grads[i] = vec(Σ_{t∈T_i} δ_t a_tᵀ)`` row-major.
    """
    a, delta = a.double(), delta.double()
    n = int(example.max()) + 1
    per_token = torch.einsum("no,ni->noi", delta, a).flatten(1)
    grads = torch.zeros(n, per_token.shape[1], dtype=torch.float64).index_add_(
        0, example, per_token
    )
    factors = KFACFactors(
        A=a.T @ a / a.shape[0], S=delta.T @ delta / n, n_tokens=int(a.shape[0]), n_examples=n
    )
    return factors, grads
