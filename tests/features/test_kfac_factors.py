from __future__ import annotations

import torch

from attriblm.data.tokenize import encode_examples
from attriblm.features.gradients import per_example_gradients
from attriblm.features.kfac import (
    KFACCollector,
    collect_kfac_factors,
    factors_from_sums,
    token_mask,
)
from attriblm.models.lora import lora_linears
from attriblm.train.loss import IGNORE_INDEX


def test_token_mask_counts_positions_before_the_last_loss_label():
    x = IGNORE_INDEX
    labels = torch.tensor([[5, x, 7, 8, x], [5, 6, x, x, x], [1, x, x, x, x]])
    assert token_mask(labels).tolist() == [
        [True, True, True, False, False],  # last loss label at 3: positions 0..2 carry gradient
        [True, False, False, False, False],
        [False, False, False, False, False],  # a label at position 0 is never predicted
    ]


def _encoded(lora_tiny, mixed_length_examples):
    _, tokenizer = lora_tiny
    return encode_examples(mixed_length_examples, tokenizer), tokenizer.pad_token_id


def test_factors_do_not_depend_on_padding(lora_tiny, mixed_length_examples):
    model, _ = lora_tiny
    encoded, pad = _encoded(lora_tiny, mixed_length_examples)
    one = collect_kfac_factors(model, encoded, pad_token_id=pad, batch_size=1)
    padded = collect_kfac_factors(model, encoded, pad_token_id=pad, batch_size=5)
    assert list(one) == [name for name, _ in lora_linears(model)]
    expected_tokens = sum(int(token_mask(torch.tensor([e.labels])).sum()) for e in encoded)
    for name, f in one.items():
        g = padded[name]
        assert f.n_tokens == g.n_tokens == expected_tokens
        assert f.n_examples == g.n_examples == len(encoded)
        # same up to float32 rounding of the model's activations and gradients
        assert (f.A - g.A).norm() / g.A.norm() < 1e-5
        assert (f.S - g.S).norm() / g.S.norm() < 1e-5
        out_f, in_f = dict(lora_linears(model))[name].weight.shape
        assert f.A.shape == (in_f, in_f) and f.S.shape == (out_f, out_f)
        assert f.A.dtype == f.S.dtype == torch.float64
        assert torch.allclose(f.A, f.A.T) and torch.linalg.eigvalsh(f.A).min() > -1e-10
        assert torch.linalg.eigvalsh(f.S).min() > -1e-14


def test_one_pass_with_gradients_gives_the_same_factors(lora_tiny, mixed_length_examples):
    model, _ = lora_tiny
    encoded, pad = _encoded(lora_tiny, mixed_length_examples)
    alone = collect_kfac_factors(model, encoded, pad_token_id=pad, batch_size=2)
    with KFACCollector(model) as collector:
        grads = per_example_gradients(
            model, encoded, pad_token_id=pad, batch_size=2, on_batch=collector.set_batch
        )
        together = collector.factors()
    plain = per_example_gradients(model, encoded, pad_token_id=pad, batch_size=2)
    for name in alone:
        assert torch.allclose(alone[name].A, together[name].A)
        assert torch.allclose(alone[name].S, together[name].S)
        assert torch.equal(grads[name], plain[name])  # the collector does not change gradients


def test_single_token_example_factor_is_the_gradient_outer_product(lora_tiny):
    """With one counted token, ``S ⊗ A`` = ``vec(G) vec(G)ᵀ`` exactly (G = δ aᵀ)."""
    model, tokenizer = lora_tiny
    from attriblm.data.tokenize import EncodedExample

    item = EncodedExample([1, 40, 50], [1, 1, 1], [IGNORE_INDEX, 50, IGNORE_INDEX], False)
    pad = tokenizer.pad_token_id
    factors = collect_kfac_factors(model, [item], pad_token_id=pad)
    grads = per_example_gradients(model, [item], pad_token_id=pad)
    for name, f in factors.items():
        assert f.n_tokens == 1
        g = grads[name].double()
        outer = g.T @ g
        assert torch.allclose(torch.kron(f.S, f.A), outer, rtol=1e-4, atol=1e-12)


def test_per_batch_partial_sums_add_up_to_the_same_factors(lora_tiny, mixed_length_examples):
    """What the feature store keeps per shard (and an all-reduce would add) loses nothing."""
    model, _ = lora_tiny
    encoded, pad = _encoded(lora_tiny, mixed_length_examples)
    whole = collect_kfac_factors(model, encoded, pad_token_id=pad, batch_size=2)
    total: dict[str, torch.Tensor] = {}
    with KFACCollector(model) as collector:
        for start in range(0, len(encoded), 2):
            per_example_gradients(
                model, encoded[start : start + 2], pad_token_id=pad, on_batch=collector.set_batch
            )
            for key, value in collector.take_sums().items():
                total[key] = value.clone() if key not in total else total[key] + value
        assert int(collector.take_sums()["n_tokens"]) == 0  # taking resets
    summed = factors_from_sums(total)
    assert list(summed) == list(whole)
    for name, f in whole.items():
        assert torch.equal(summed[name].A, f.A) and torch.equal(summed[name].S, f.S)
        assert (summed[name].n_tokens, summed[name].n_examples) == (f.n_tokens, f.n_examples)
