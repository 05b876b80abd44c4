"""Fitted methods: ``method.fit(train) -> Fitted``, ``Fitted.score(queries)``."""

from __future__ import annotations

import pytest
import torch

from attriblm.features.store import FeatureStore
from attriblm.methods import create_method
from attriblm.methods.base import (
    AttributionMethod,
    FeatureSet,
    Fitted,
    MethodOutput,
    PreconditionedFit,
)
from attriblm.methods.streaming import StreamedFit


class _Dot(AttributionMethod):
    """A method that implements only ``score`` (the extension point), not registered."""

    name = "dot-test"
    needs = "gradients"
    summary = "test"

    def score(self, train: FeatureSet, queries: FeatureSet) -> MethodOutput:
        s = sum(queries.grads[b] @ train.grads[b].T for b in train.grads)
        return MethodOutput(scores=2.0 * s, info={"method": self.name})


def test_a_score_only_method_is_fitted_by_the_default_fit(features):
    train, queries = features
    fitted = _Dot().fit(train)
    assert type(fitted) is Fitted and fitted.save_factors("unused") is None
    expected = create_method("gradsim").score(train, queries).scores
    torch.testing.assert_close(fitted.score(queries).scores, 2.0 * expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["datainf", "exact", "lissa", "gradsim"])
def test_one_fit_scores_many_query_sets_as_score_does(name, make_features):
    train, queries = make_features(seed=3)
    _, other = make_features(seed=4)
    method = create_method(name)
    fitted = method.fit(train)
    assert isinstance(fitted, PreconditionedFit)
    for q in (queries, other, queries):
        got = fitted.score(q)
        want = create_method(name).score(train, q)
        assert torch.equal(got.scores, want.scores)
        assert got.info["blocks"] == want.info["blocks"]  # per-call facts, not accumulated


def test_block_facts_belong_to_the_fit_not_the_method(features):
    train, queries = features
    method = create_method("exact")
    with pytest.raises(RuntimeError, match="no scoring call"):
        method.record("b", x=1)
    fitted = method.fit(train)
    _, info = fitted.preconditioned(queries)
    assert fitted.facts is info["blocks"] and all("residual" in f for f in fitted.facts.values())
    assert not hasattr(method, "_block_info") and method._active is None


def test_kfac_factors_are_fitted_once_and_saved_from_the_fit(tmp_path):
    gen = torch.Generator().manual_seed(0)
    from attriblm.features.kfac import KFACFactors

    a = torch.randn(20, 3, generator=gen)
    s = torch.randn(20, 2, generator=gen)
    factors = {"b": KFACFactors(A=a.T @ a / 20, S=s.T @ s / 20, n_tokens=20, n_examples=10)}
    train = FeatureSet(grads={"b": torch.randn(10, 6, generator=gen)}, kfac=factors)
    queries = FeatureSet(grads={"b": torch.randn(3, 6, generator=gen)})
    fitted = create_method("kfac").fit(train)
    first = fitted.factors
    fitted.score(queries)
    assert fitted.factors is first
    path = fitted.save_factors(tmp_path / "kfac.safetensors")
    again = create_method("kfac", factors=path).fit(FeatureSet(grads=train.grads))
    assert torch.equal(again.score(queries).scores, fitted.score(queries).scores)


def test_streaming_is_a_fit_chosen_by_the_method_class(tmp_path, features):
    train, queries = features
    assert create_method("gradsim").streams and create_method("datainf").streams
    assert not create_method("exact").streams
    with pytest.raises(NotImplementedError):
        create_method("exact").fit_store(FeatureStore(None), "grads:train")
    store = FeatureStore(tmp_path / "s", {"t": 1})
    store.begin("grads:train", n_rows=train.n)
    store.write("grads:train", 0, train.n, train.grads)
    for name in ("gradsim", "datainf"):
        fitted = create_method(name).fit_store(store, "grads:train")
        assert isinstance(fitted, StreamedFit)
        got, want = fitted.score(queries), create_method(name).score(train, queries)
        torch.testing.assert_close(got.scores, want.scores, rtol=1e-5, atol=1e-5)
        if want.info["lambda"] is None:
            assert got.info["lambda"] is None and name == "gradsim"
        else:
            assert got.info["lambda"] == pytest.approx(want.info["lambda"])
