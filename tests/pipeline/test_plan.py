"""FeaturePlan: method needs → features per role, combinations checked once."""

from __future__ import annotations

import pytest

from attriblm.errors import ConfigError
from attriblm.methods.registry import get_method_class
from attriblm.pipeline.plan import Feature, FeaturePlan, create_methods, resolve_methods
from attriblm.pipeline.settings import AttributeSettings


def _plan(names, stream=False, **settings):
    s = AttributeSettings(**settings)
    return FeaturePlan.from_methods({n: get_method_class(n) for n in names}, s, allow_stream=stream)


def test_needs_become_features_per_role():
    plan = _plan(["gradsim", "repsim", "tracin", "rept", "less"])
    expected = {
        Feature.GRADIENTS, Feature.REPRESENTATIONS, Feature.CHECKPOINT_GRADIENTS, Feature.REPT,
        Feature.ADAM,
    }  # fmt: skip
    assert plan.features["train"] == plan.features["queries"] == expected


def test_kfac_statistics_on_the_train_side_unless_factors_are_given():
    plan = _plan(["ekfac"])
    assert plan.features["train"] == {Feature.GRADIENTS, Feature.KFAC_STATS}
    assert plan.features["queries"] == {Feature.GRADIENTS}
    assert plan.kfac_methods == ("ekfac",)
    assert not _plan(["ekfac"], factors="run/factors").needs(Feature.KFAC_STATS)


def test_projection_with_kfac_is_refused_naming_the_methods():
    with pytest.raises(ConfigError, match="--proj-dim: kfac, ekfac"):
        _plan(["gradsim", "kfac", "ekfac"], proj_dim=64)
    assert _plan(["gradsim"], proj_dim=64).needs(Feature.GRADIENTS)


def test_streams_only_when_every_method_streams_and_it_is_allowed():
    assert _plan(["gradsim", "datainf"], stream=True).stream
    assert not _plan(["gradsim", "datainf"]).stream
    assert not _plan(["gradsim", "exact"], stream=True).stream


def test_create_methods_derives_damping_factors_and_options():
    settings = AttributeSettings(damping=0.3, factors="F", options={"lissa": {"max_iter": 7}})
    methods = create_methods(["lissa", "kfac"], settings)
    assert methods["lissa"].max_iter == 7 and methods["lissa"].damping.value == 0.3
    assert str(methods["kfac"].factors_path).endswith("F/kfac.safetensors")


def test_resolve_methods_with_a_diagnosis_rule():
    assert resolve_methods(["gradsim", "gradsim"]) == ["gradsim"]
    with pytest.raises(ConfigError, match="no methods"):
        resolve_methods([])
    rule = {"accept": lambda cls: cls.name != "tracin", "refuse": lambda bad: f"no {bad}"}
    assert "tracin" not in resolve_methods(["all"], **rule)
    with pytest.raises(ConfigError, match=r"no \['tracin'\]"):
        resolve_methods(["tracin"], **rule)
