"""Store-streamed gradsim / datainf equal the in-memory methods, shard size regardless."""

from __future__ import annotations

import pytest
import torch

from attriblm.features.store import FeatureStore
from attriblm.methods.base import FeatureSet
from attriblm.methods.damping import Damping
from attriblm.methods.datainf import DataInf
from attriblm.methods.gradsim import GradSim
from attriblm.methods.streaming import block_dampings, stream_datainf, stream_gradsim

WIDTHS = {"a": 12, "b": 5}


def _grads(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {b: torch.randn(n, w, generator=g) * (1 + i) for i, (b, w) in enumerate(WIDTHS.items())}


def _stored(tmp_path, train: dict[str, torch.Tensor], shard: int) -> FeatureStore:
    store = FeatureStore(tmp_path / "store", {"test": 1})
    n = next(iter(train.values())).shape[0]
    store.begin("grads:train", n_rows=n)
    for start in range(0, n, shard):
        stop = min(start + shard, n)
        store.write("grads:train", start, stop, {b: t[start:stop] for b, t in train.items()})
    return store


@pytest.mark.parametrize("shard", [1, 7, 30])
def test_streamed_scores_equal_in_memory_methods(tmp_path, shard):
    train, queries = _grads(30, 0), _grads(4, 1)
    store = _stored(tmp_path, train, shard)
    expected_gradsim = GradSim().score(FeatureSet(grads=train), FeatureSet(grads=queries)).scores
    got = stream_gradsim(store, "grads:train", queries)
    torch.testing.assert_close(got, expected_gradsim, rtol=1e-6, atol=1e-6)
    for damping in (Damping("relative", 0.1), Damping("absolute", 0.5)):
        method = DataInf(damping)
        expected = method.score(FeatureSet(grads=train), FeatureSet(grads=queries)).scores
        got = stream_datainf(store, "grads:train", queries, damping)
        assert got.shape == (4, 30)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_streamed_dampings_match_lambda_for(tmp_path):
    train = _grads(30, 2)
    store = _stored(tmp_path, train, 8)
    damping = Damping()
    streamed = block_dampings(store, "grads:train", damping)
    for b, g in train.items():
        assert streamed[b] == pytest.approx(damping.lambda_for(g, b), rel=1e-12)


def test_streamed_scores_reject_other_blocks(tmp_path):
    store = _stored(tmp_path, _grads(10, 3), 4)
    with pytest.raises(ValueError, match="differ"):
        stream_gradsim(store, "grads:train", {"a": torch.zeros(2, 12)})
