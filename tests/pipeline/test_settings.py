"""AttributeSettings as a settings object: checks, to_dict / from_dict."""

from __future__ import annotations

import pytest

from attriblm.errors import ConfigError
from attriblm.pipeline.attribute import AttributeSettings as Reexported
from attriblm.pipeline.settings import AttributeSettings


def test_re_exported_from_attribute():
    assert Reexported is AttributeSettings


def test_to_dict_from_dict_round_trip():
    settings = AttributeSettings(
        methods=["gradsim", "lissa"], loss_mask="paper", proj_dim=64, store_dtype="bf16",
        options={"lissa": {"max_iter": 1000}},
    )  # fmt: skip
    data = settings.to_dict()
    assert data["options"] == {"lissa": {"max_iter": 1000}} and data["proj_dim"] == 64
    again = AttributeSettings.from_dict(data)
    assert again == settings
    data["methods"].append("exact")  # a deep copy: the settings do not change
    assert settings.methods == ["gradsim", "lissa"]


def test_from_dict_names_an_unknown_key():
    with pytest.raises(ConfigError, match="'dampng'"):
        AttributeSettings.from_dict({"dampng": 0.1})


def test_from_dict_checks_values():
    with pytest.raises(ConfigError, match="--batch-size"):
        AttributeSettings.from_dict({"batch_size": 0})


def test_the_last_field_is_options():
    from dataclasses import fields

    assert [f.name for f in fields(AttributeSettings)][-1] == "options"
    assert AttributeSettings().options == {}
