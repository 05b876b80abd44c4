from __future__ import annotations

import pytest
import torch

from attriblm.data.tokenize import collate, encode_examples
from attriblm.features.gradients import per_example_gradients
from attriblm.features.kfac import (
    KFACCollector,
    collect_kfac_factors,
    factors_from_sums,
    token_mask,
)
from attriblm.models.lora import lora_linears
from attriblm.models.loss import IGNORE_INDEX, model_per_example_loss


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


def _token_level(model, encoded, pad):
    """Per example, alone (no padding): counted-token inputs ``a [T_i, in]``, output gradients
    ``δ [T_i, out]`` and autograd's ``dL_i/dW`` of every LoRA linear (float64)."""
    linears = dict(lora_linears(model))
    names = list(linears)
    out = {name: {"a": [], "delta": [], "grad": []} for name in names}
    seen: dict[str, tuple] = {}  # name → (layer input, layer output) of the last forward

    def keep(name):
        return lambda module, args, output: seen.__setitem__(name, (args[0], output))

    handles = [linears[name].register_forward_hook(keep(name)) for name in names]
    try:
        for item in encoded:
            batch = collate([item], pad)
            mask = token_mask(batch["labels"])[0]
            loss = model_per_example_loss(model, batch).sum()
            grads = torch.autograd.grad(
                loss, [linears[n].weight for n in names] + [seen[n][1] for n in names]
            )
            for k, name in enumerate(names):
                delta = grads[len(names) + k][0].double()
                assert not delta[~mask].any()  # uncounted positions carry no gradient
                out[name]["a"].append(seen[name][0][0][mask].detach().double())
                out[name]["delta"].append(delta[mask])
                out[name]["grad"].append(grads[k].double().flatten())
    finally:
        for h in handles:
            h.remove()
    return out


def test_multi_token_factors_match_a_dense_kronecker_reference(lora_tiny, mixed_length_examples):
    """Factors from explicit tokens; ``S ⊗ A`` densely vs the per-example gradients' ``H``."""
    from attriblm.methods import FeatureSet, create_method

    model, _ = lora_tiny
    encoded, pad = _encoded(lora_tiny, mixed_length_examples)
    n = len(encoded)
    factors = collect_kfac_factors(model, encoded, pad_token_id=pad, batch_size=5)
    grads = per_example_gradients(model, encoded, pad_token_id=pad, batch_size=5)
    ref = _token_level(model, encoded, pad)
    info = create_method("kfac").preconditioned(
        FeatureSet(grads=grads, kfac=factors), FeatureSet(grads=grads)
    )[1]
    for name, r in ref.items():
        assert min(len(a) for a in r["a"]) > 1  # several counted tokens per example
        a, delta = torch.cat(r["a"]), r["delta"]
        a_ref = a.T @ a / a.shape[0]
        s_ref = sum(d.T @ d for d in delta) / n
        f = factors[name]
        assert (f.A - a_ref).norm() / a_ref.norm() < 1e-5, name
        assert (f.S - s_ref).norm() / s_ref.norm() < 1e-5, name
        g = torch.stack(r["grad"])  # autograd: vec(Σ_t δ_t a_tᵀ)
        per_token = torch.stack([(d.T @ x).flatten() for d, x in zip(delta, r["a"], strict=True)])
        assert (per_token - g).norm() / g.norm() < 1e-5, name
        assert (grads[name].double() - g).norm() / g.norm() < 1e-5, name
        h = g.T @ g / n
        kron = torch.kron(s_ref, a_ref)
        assert (kron - h).norm() / h.norm() > 0.05, name  # no cross-token terms in S ⊗ A
        ratio = float(torch.trace(kron) / torch.trace(h))
        assert info["blocks"][name]["trace_ratio"] == pytest.approx(ratio, rel=1e-4), name
