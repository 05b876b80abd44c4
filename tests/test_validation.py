"""Settings validated in one place (attriblm.validation) for CLI, API and config files."""

from __future__ import annotations

import math

import pytest

from attriblm import validation
from attriblm.errors import ConfigError
from attriblm.pipeline.attribute import AttributeSettings
from attriblm.train.finetune import TrainSettings


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", 0, "--batch-size must be at least 1, got 0"),
        ("batch_size", 2.5, "--batch-size must be an integer, got 2.5"),
        ("batch_size", True, "--batch-size must be an integer"),
        ("topk", -1, "--topk must be at least 1, got -1"),
        ("topk", 0, "--topk must be at least 1"),
        ("max_length", 1, "--max-length must be at least 2"),
        ("max_length", "128", "--max-length must be an integer, got '128'"),
        ("damping", -1.0, "--damping"),
        ("damping", math.nan, "--damping"),
        ("damping_mode", "huge", "--damping-mode"),
        ("repsim_pooling", "max", "--repsim-pooling: unknown value 'max'"),
        ("repsim_layer", 1.5, "--repsim-layer must be an integer"),
        ("template", "chatml", "--template"),
        ("loss_mask", "tokens", "--loss-mask"),
        ("store_dtype", "int8", "--store-dtype"),
        ("proj_dim", 0, "--proj-dim must be at least 1"),
        ("proj_kind", "sparse", "--proj-kind"),
        ("methods", "gradsim", "--method: expected a list"),
    ],
)
def test_attribute_settings_name_the_option(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        AttributeSettings(**{field: value})


def test_attribute_settings_defaults_are_valid():
    AttributeSettings().validate()


def test_a_field_changed_after_construction_is_caught_by_validate():
    settings = AttributeSettings()
    settings.topk = 0
    with pytest.raises(ConfigError, match="--topk"):
        settings.validate()


@pytest.mark.parametrize(
    ("field", "value"), [("batch_size", 0), ("max_length", 1), ("loss_mask", "tokens")]
)
def test_finetune_and_attribute_share_one_check(field, value):
    """The same bad value gives the same message in both settings classes."""
    with pytest.raises(ConfigError) as attribute_error:
        AttributeSettings(**{field: value})
    with pytest.raises(ConfigError) as train_error:
        TrainSettings(**{field: value}).validate()
    assert str(attribute_error.value) == str(train_error.value)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 0, "--epochs must be at least 1"),
        ("lr", 0.0, "--lr must be positive"),
        ("lr", math.inf, "--lr must be a finite number"),
        ("weight_decay", -0.1, "--weight-decay must be non-negative"),
        ("warmup_steps", -1, "--warmup-steps must be at least 0"),
        ("template", "chatml", "--template"),
    ],
)
def test_train_settings_name_the_option(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainSettings(**{field: value}).validate()


def test_the_api_validates_options_before_any_work(tmp_path):
    import attriblm

    with pytest.raises(ConfigError, match="--batch-size"):
        attriblm.attribute(None, [], [], tmp_path / "run", batch_size=0)
    assert list(tmp_path.iterdir()) == []


def test_checks_accept_what_they_should():
    validation.integer("batch_size", 1, 1)
    validation.number("lr", 1, positive=True)
    validation.one_of("repsim_pooling", "last", ("last", "mean"))
    assert validation.option("max_length") == "--max-length"
