"""Oracle: attriblm's EK-FAC against Kronfluence's on the tiny model (same loss, modules, damping).

Needs the ``oracle`` extra (kronfluence, installed with --no-deps); skipped without it.
"""

from __future__ import annotations

import copy

import pytest
import torch

from attriblm.data.loaders import load_examples
from attriblm.data.tokenize import encode_examples
from attriblm.features.gradients import per_example_gradients
from attriblm.features.kfac import KFACCollector
from attriblm.methods import Damping, FeatureSet, create_method
from attriblm.models.lora import LoraSettings, add_lora, lora_linears
from attriblm.models.tiny import build_tiny_model

pytest.importorskip("kronfluence")
oracle = pytest.importorskip("attriblm.oracle")

N_TRAIN, N_QUERY, PAD = 40, 8, 0


@pytest.fixture(scope="module")
def setup(samples_dir):
    model, tokenizer = build_tiny_model(seed=0)
    model = add_lora(model, LoraSettings(r=2, alpha=4, dropout=0.1), seed=1)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, module in lora_linears(model):
            if name.endswith("lora_B"):
                module.weight.copy_(0.1 * torch.randn(module.weight.shape, generator=gen))
    model.eval()
    spec = str(samples_dir / "grammars_small")
    train = encode_examples(load_examples(f"{spec}:train")[:N_TRAIN], tokenizer)
    queries = encode_examples(load_examples(f"{spec}:test")[:N_QUERY], tokenizer)
    return model, tokenizer.pad_token_id, train, queries


def test_ekfac_matches_kronfluence(setup, tmp_path):
    model, pad_id, train, queries = setup
    kron_model = copy.deepcopy(model)
    with KFACCollector(model) as collector:
        g = per_example_gradients(model, train, pad_token_id=pad_id, on_batch=collector.set_batch)
        factors = collector.factors()
    v = per_example_gradients(model, queries, pad_token_id=pad_id)
    # one absolute λ for every block (Kronfluence's damping_factor is absolute when given)
    lam = 0.1 * float(torch.cat([b.double().square().flatten() for b in g.values()]).mean())
    ours = create_method("ekfac", damping=Damping("absolute", lam)).score(
        FeatureSet(grads=g, kfac=factors), FeatureSet(grads=v)
    )
    theirs, _ = oracle.kronfluence_ekfac_scores(
        kron_model, train, queries, pad_token_id=pad_id, damping=lam, out_dir=tmp_path
    )
    assert theirs.shape == ours.scores.shape == (N_QUERY, N_TRAIN)
    rho = oracle.mean_spearman(ours.scores.double(), theirs)
    assert rho >= 0.95, f"mean per-query Spearman {rho:.4f}"
    # with the same token set and damping the two computations are the same up to rounding
    rel = float((ours.scores.double() - theirs).norm() / theirs.norm())
    assert rel < 1e-3, f"relative difference {rel:.2e}"
