from __future__ import annotations

import json
import warnings

import pytest
import torch

from attriblm.errors import ConfigError
from attriblm.features.kfac import KFACFactors
from attriblm.methods import (
    AttributionMethod,
    FeatureSet,
    available_methods,
    create_method,
    expand_method_names,
    register,
)
from attriblm.methods import registry as registry_module
from attriblm.methods.base import method_needs
from attriblm.methods.damping import Damping

ALL = [
    "gradsim",
    "gradcos",
    "repsim",
    "datainf",
    "lissa-paper",
    "lissa",
    "exact",
    "tracin",
    "cg",
    "kfac",
    "ekfac",
    "rept",
    "less",
]


def test_all_methods_registered_in_order():
    assert available_methods() == ALL


@pytest.mark.parametrize("name", ALL)
def test_create_with_defaults_and_with_damping(name):
    method = create_method(name)
    assert isinstance(method, AttributionMethod)
    assert type(method).name == name
    assert set(method_needs(method)) <= {
        "gradients",
        "representations",
        "kfac",
        "checkpoints",
        "representation-gradients",
        "adam-gradients",
    }
    assert isinstance(method.summary, str) and method.summary
    # the attribute pipeline passes a damping to every method
    assert type(create_method(name, damping=Damping("absolute", 0.5))) is type(method)


def test_paper_variant_is_labelled():
    assert "paper variant" in create_method("lissa-paper").summary


def test_unknown_method_message():
    with pytest.raises(ConfigError) as err:
        create_method("influence")
    assert str(err.value) == ("unknown method 'influence' (--method); available: " + ", ".join(ALL))


def test_unknown_option():
    with pytest.raises(ConfigError, match="does not accept option"):
        create_method("exact", iterations=3)


def test_expand_all_dedup_and_order():
    assert expand_method_names(["all"]) == ALL
    assert expand_method_names(["exact", "all"]) == ["exact", *[m for m in ALL if m != "exact"]]
    assert expand_method_names(["lissa", "gradsim", "lissa"]) == ["lissa", "gradsim"]
    assert expand_method_names("all") == ALL
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        expand_method_names(["gradsim", "nope"])


def test_register_rejects_duplicates(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    class Dup(AttributionMethod):
        name = "gradsim"
        needs = "gradients"
        summary = "duplicate"

        def score(self, train, queries):  # pragma: no cover
            raise NotImplementedError

    with pytest.raises(ValueError, match="already registered"):
        register(Dup)


def test_every_method_scores_with_json_info(make_features):
    train, queries = make_features(seed=2, n=10, m=3)
    gen = torch.Generator().manual_seed(0)
    train.reprs = torch.randn(10, 8, generator=gen)
    queries.reprs = torch.randn(3, 8, generator=gen)
    train.checkpoint_grads, queries.checkpoint_grads = [train.grads] * 2, [queries.grads] * 2
    train.checkpoint_lrs = queries.checkpoint_lrs = [2e-5, 1e-5]
    train.rept = torch.randn(10, 6, generator=gen)
    queries.rept = torch.randn(3, 6, generator=gen)
    train.adam_grads, queries.adam_grads = train.grads, queries.grads
    # K-FAC factors of matching shapes (each block treated as [out, in] = [1, d])
    train.kfac = {
        b: KFACFactors(A=g.T @ g / g.shape[0], S=torch.ones(1, 1), n_tokens=10, n_examples=10)
        for b, g in train.grads.items()
    }
    for name in ALL:
        opts = {"max_iter": 50} if name == "lissa" else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = create_method(name, **opts).score(train, queries)
        assert out.scores.shape == (3, 10), name
        assert out.scores.dtype == torch.float32, name
        assert torch.isfinite(out.scores).all(), name
        json.dumps(out.info, allow_nan=False)
        assert out.info["method"] == name


def test_feature_set_n():
    assert FeatureSet().n == 0
    assert FeatureSet(grads={"a": torch.zeros(4, 2)}).n == 4
    assert FeatureSet(reprs=torch.zeros(3, 2)).n == 3
    assert FeatureSet(rept=torch.zeros(5, 4)).n == 5
    assert FeatureSet(adam_grads={"a": torch.zeros(2, 3)}).n == 2


def test_accepted_options_are_the_constructor_keywords_not_set_from_settings():
    assert registry_module.accepted_options("lissa") == {
        "tol": 1e-6,
        "max_iter": 10_000_000,
        "scale_factor": 1.1,
        "path": "auto",
    }
    assert registry_module.accepted_options("gradsim") == {}
    assert registry_module.accepted_options("kfac") == {}  # damping, factors: from settings
    assert set(registry_module.accepted_options("exact")) == {"solver", "tol", "max_iter"}
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        registry_module.accepted_options("nope")


@pytest.mark.parametrize(
    ("options", "methods", "needle"),
    [
        ({"nope": {"x": 1}}, ["gradsim"], "--option nope.x: unknown method"),
        ({"lissa": {"tol": 1e-3}}, ["gradsim"], "--option lissa.tol: method 'lissa' is not"),
        ({"lissa": {"bogus": 1}}, ["lissa"], "--option lissa.bogus: lissa has no option"),
        ({"lissa": {"damping": 1}}, ["lissa"], "--option lissa.damping"),
        ({"lissa": {"max_iter": "many"}}, ["lissa"], "--option lissa.max_iter: expected an int"),
        ({"lissa": {"max_iter": 1.5}}, ["lissa"], "--option lissa.max_iter: expected an int"),
        ({"lissa": {"tol": True}}, ["lissa"], "--option lissa.tol: expected a number"),
        ({"lissa": {"path": 3}}, ["lissa"], "--option lissa.path: expected text"),
        ({"lissa": 3}, ["lissa"], "--option: expected"),
    ],
)
def test_method_options_are_checked_against_the_methods_run(options, methods, needle):
    with pytest.raises(ConfigError) as error:
        registry_module.check_method_options(options, methods)
    assert needle in str(error.value) and "\n" not in str(error.value)


def test_good_method_options_pass_and_reach_the_method():
    check = registry_module.check_method_options
    check({"lissa": {"max_iter": 1e6, "tol": 1e-3}, "exact": {"max_iter": None}}, ["all"])
    check({}, ["nope-is-not-checked-here"])
    method = create_method("lissa", **{"max_iter": 100, "path": "dense"})
    assert method.options()["max_iter"] == 100 and method.options()["path"] == "dense"
