from __future__ import annotations

import pytest
import torch

from attriblm.errors import ConfigError, DataError
from attriblm.methods import FeatureSet, create_method


def _reprs(seed, n, h=16):
    return torch.randn(n, h, generator=torch.Generator().manual_seed(seed))


def test_matches_cosine_formula():
    train, queries = _reprs(0, 12), _reprs(1, 4)
    out = create_method("repsim").score(FeatureSet(reprs=train), FeatureSet(reprs=queries))
    ref = torch.nn.functional.cosine_similarity(
        queries.double()[:, None, :], train.double()[None, :, :], dim=2
    )
    assert out.scores.shape == (4, 12) and out.scores.dtype == torch.float32
    torch.testing.assert_close(out.scores.double(), ref, rtol=1e-6, atol=1e-7)
    assert create_method("repsim").needs == "representations"


def test_zero_norm_scores_zero():
    train, queries = _reprs(0, 6), _reprs(1, 3)
    train[2] = 0.0
    queries[0] = 0.0
    out = create_method("repsim").score(FeatureSet(reprs=train), FeatureSet(reprs=queries))
    assert torch.equal(out.scores[:, 2], torch.zeros(3))
    assert torch.equal(out.scores[0], torch.zeros(6))
    assert out.info["zero_norm"] == {
        "train": 1,
        "query": 1,
        "rule": "a pair with a zero-norm representation scores 0",
    }


def test_needs_representations(features):
    with pytest.raises(ConfigError, match="needs representations"):
        create_method("repsim").score(*features)


def test_width_mismatch():
    with pytest.raises(DataError, match="width"):
        create_method("repsim").score(
            FeatureSet(reprs=_reprs(0, 5, 8)), FeatureSet(reprs=_reprs(1, 2, 9))
        )
