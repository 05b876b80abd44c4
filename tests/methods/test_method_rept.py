from __future__ import annotations

import pytest
import torch

from attriblm.errors import ConfigError, DataError
from attriblm.methods import FeatureSet, create_method


def _rows(seed: int, n: int, h: int = 6) -> torch.Tensor:
    return torch.randn(n, 2 * h, generator=torch.Generator().manual_seed(seed))


def test_rept_is_the_cosine_of_the_concatenated_features():
    train, queries = _rows(0, 9), _rows(1, 3)
    out = create_method("rept").score(FeatureSet(rept=train), FeatureSet(rept=queries))
    ref = torch.nn.functional.cosine_similarity(
        queries.double()[:, None, :], train.double()[None, :, :], dim=2
    )
    assert out.scores.shape == (3, 9) and out.scores.dtype == torch.float32
    torch.testing.assert_close(out.scores.double(), ref, rtol=1e-6, atol=1e-7)
    parts = out.info["parts"]
    assert parts["hidden_norm_mean"] == pytest.approx(float(train[:, :6].norm(dim=1).mean()))
    assert parts["gradient_norm_mean"] == pytest.approx(float(train[:, 6:].norm(dim=1).mean()))


def test_rept_needs_its_features_and_matching_widths():
    with pytest.raises(ConfigError, match="needs RepT features"):
        create_method("rept").score(FeatureSet(reprs=_rows(0, 2)), FeatureSet(reprs=_rows(1, 2)))
    with pytest.raises(DataError, match="width"):
        create_method("rept").score(FeatureSet(rept=_rows(0, 2, 3)), FeatureSet(rept=_rows(1, 2)))
