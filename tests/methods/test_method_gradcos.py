from __future__ import annotations

import torch

from attriblm.methods import FeatureSet, create_method


def _cat(fs: FeatureSet) -> torch.Tensor:
    return torch.cat([g.double() for g in fs.grads.values()], dim=1)


def test_matches_cosine_of_concatenated_gradients(features):
    train, queries = features
    out = create_method("gradcos").score(train, queries)
    t, q = _cat(train), _cat(queries)
    ref = (q / q.norm(dim=1, keepdim=True)) @ (t / t.norm(dim=1, keepdim=True)).T
    assert out.scores.shape == (queries.n, train.n) and out.scores.dtype == torch.float32
    torch.testing.assert_close(out.scores.double(), ref, rtol=1e-6, atol=1e-7)
    assert out.scores.abs().max() <= 1.0 + 1e-6


def test_scale_invariant_per_example(features):
    train, queries = features
    scaled = FeatureSet(grads={b: 7.5 * g for b, g in train.grads.items()})
    a = create_method("gradcos").score(train, queries).scores
    b = create_method("gradcos").score(scaled, queries).scores
    torch.testing.assert_close(a, b)


def test_zero_norm_scores_zero(features):
    train, queries = features
    tg = {b: g.clone() for b, g in train.grads.items()}
    qg = {b: v.clone() for b, v in queries.grads.items()}
    for g in tg.values():
        g[3] = 0.0
    for v in qg.values():
        v[1] = 0.0
    out = create_method("gradcos").score(FeatureSet(grads=tg), FeatureSet(grads=qg))
    assert torch.equal(out.scores[:, 3], torch.zeros(queries.n))
    assert torch.equal(out.scores[1], torch.zeros(train.n))
    assert torch.isfinite(out.scores).all()
    assert out.info["zero_norm"]["train"] == 1 and out.info["zero_norm"]["query"] == 1


def test_identical_example_scores_one(features):
    train, _ = features
    queries = FeatureSet(grads={b: g[[5]] for b, g in train.grads.items()})
    out = create_method("gradcos").score(train, queries)
    assert abs(out.scores[0, 5].item() - 1.0) < 1e-6
    assert out.scores.argmax().item() == 5
