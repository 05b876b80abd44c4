from __future__ import annotations

import pytest
import torch

from attriblm.errors import ConfigError, DataError
from attriblm.methods import FeatureSet, create_method


def test_scores_are_blockwise_dot_products(features):
    train, queries = features
    out = create_method("gradsim").score(train, queries)
    ref = sum(queries.grads[b].double() @ g.double().T for b, g in train.grads.items())
    assert out.scores.shape == (queries.n, train.n)
    assert out.scores.dtype == torch.float32
    torch.testing.assert_close(out.scores, ref.float())
    assert out.info["lambda"] is None and out.info["method"] == "gradsim"


def test_preconditioned_vectors_are_the_queries(features):
    train, queries = features
    u, _ = create_method("gradsim").preconditioned(train, queries)
    for b, v in queries.grads.items():
        assert u[b].dtype == torch.float64
        torch.testing.assert_close(u[b], v.double())


def test_identical_train_example_ranks_first():
    """Sign convention: larger = more supportive; a copy of the query tops the ranking."""
    gen = torch.Generator().manual_seed(1)
    train = {"a": torch.randn(30, 200, generator=gen), "b": torch.randn(30, 50, generator=gen)}
    queries = {b: g[[17, 4]].clone() for b, g in train.items()}
    scores = create_method("gradsim").score(FeatureSet(grads=train), FeatureSet(grads=queries))
    assert scores.scores.argmax(dim=1).tolist() == [17, 4]


def test_missing_gradients_is_a_config_error(features):
    train, _ = features
    with pytest.raises(ConfigError, match="needs per-example gradients"):
        create_method("gradsim").score(train, FeatureSet(reprs=torch.ones(2, 3)))


def test_block_mismatch_is_a_data_error(features):
    train, queries = features
    grads = dict(queries.grads)
    dropped = next(iter(grads))
    del grads[dropped]
    with pytest.raises(DataError, match="different blocks"):
        create_method("gradsim").score(train, FeatureSet(grads=grads))
    wrong_width = {b: v[:, :3] for b, v in queries.grads.items()}
    with pytest.raises(DataError, match="width"):
        create_method("gradsim").score(train, FeatureSet(grads=wrong_width))


def test_non_finite_gradients_are_rejected(features):
    train, queries = features
    grads = {b: v.clone() for b, v in queries.grads.items()}
    name = next(iter(grads))
    grads[name][1, 2] = float("nan")
    with pytest.raises(DataError, match=name):
        create_method("gradsim").score(train, FeatureSet(grads=grads))
