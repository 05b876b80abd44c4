from __future__ import annotations

import pytest
import torch

from attriblm.errors import ConfigError, DataError
from attriblm.methods import FeatureSet, create_method


def _checkpointed(make_features, lrs):
    sets = [make_features(seed=s, n=7, m=3) for s in range(len(lrs))]
    train = FeatureSet(checkpoint_grads=[t.grads for t, _ in sets], checkpoint_lrs=list(lrs))
    queries = FeatureSet(checkpoint_grads=[q.grads for _, q in sets], checkpoint_lrs=list(lrs))
    return train, queries, sets


def test_tracin_is_the_lr_weighted_sum_of_dot_products(make_features):
    lrs = [3e-4, 2e-4, 1e-4]
    train, queries, sets = _checkpointed(make_features, lrs)
    out = create_method("tracin").score(train, queries)
    expected = sum(
        lr * create_method("gradsim").score(t, q).scores.double()
        for lr, (t, q) in zip(lrs, sets, strict=True)
    )
    assert out.scores.shape == (3, 7) and out.scores.dtype == torch.float32
    assert torch.allclose(out.scores.double(), expected, rtol=1e-5, atol=1e-9)
    assert out.info["checkpoint_etas"] == lrs and out.info["n_checkpoints"] == 3
    assert "sum of the learning rates" in out.info["eta"]
    assert out.info["lambda"] is None


def test_tracin_one_checkpoint_is_scaled_gradsim(make_features):
    train, queries, sets = _checkpointed(make_features, [0.5])
    out = create_method("tracin").score(train, queries)
    gradsim = create_method("gradsim").score(*sets[0]).scores
    assert torch.allclose(out.scores, 0.5 * gradsim, rtol=1e-5)


def test_tracin_without_checkpoints_is_a_config_error(features):
    train, queries = features
    with pytest.raises(ConfigError, match="checkpoint"):
        create_method("tracin").score(train, queries)


def test_tracin_rejects_mismatched_checkpoints(make_features):
    train, queries, _ = _checkpointed(make_features, [1.0, 0.5])
    queries.checkpoint_grads = queries.checkpoint_grads[:1]
    with pytest.raises(DataError):
        create_method("tracin").score(train, queries)
