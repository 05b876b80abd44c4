from __future__ import annotations

import pytest
import torch

from attriblm.errors import ConfigError
from attriblm.methods import FeatureSet, create_method


def test_less_is_the_cosine_over_all_blocks(make_features):
    train, queries = make_features(seed=4, n=8, m=3)
    out = create_method("less").score(
        FeatureSet(adam_grads=train.grads), FeatureSet(adam_grads=queries.grads)
    )
    t = torch.cat([train.grads[b] for b in train.grads], dim=1).double()
    q = torch.cat([queries.grads[b] for b in train.grads], dim=1).double()
    ref = torch.nn.functional.cosine_similarity(q[:, None, :], t[None, :, :], dim=2)
    torch.testing.assert_close(out.scores.double(), ref, rtol=1e-5, atol=1e-6)
    assert out.info["width"] == t.shape[1]


def test_less_without_its_features_is_a_config_error(make_features):
    train, queries = make_features(seed=4, n=8, m=3)
    with pytest.raises(ConfigError, match="Adam-update gradient features"):
        create_method("less").score(train, queries)
