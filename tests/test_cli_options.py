"""Shared option declarations (attriblm.cli_options): one declaration per flag, --option parsing
and its config-file forms. No model is loaded here."""

from __future__ import annotations

import functools

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from attriblm.cli_options import (
    ANALYSIS,
    ATTRIBUTION,
    METHOD_OPTIONS,
    ConfigOpt,
    attribute_settings,
    format_scalar,
    method_options,
    parse_method_option,
    parse_scalar,
    with_options,
)
from attriblm.errors import ConfigError


@functools.cache
def _commands() -> dict:
    from attriblm.cli import app

    root = get_command(app)
    commands = {name: c for name, c in root.commands.items() if name != "analyze"}
    commands.update({f"analyze {n}": c for n, c in root.commands["analyze"].commands.items()})
    return commands


def _declaration(param) -> tuple:
    kind = param.type_descriptor.annotation
    return (tuple(param.opts), param.default, getattr(param, "help", None), str(kind))


def test_a_shared_option_is_the_same_flag_in_every_command():
    declared: dict[str, dict[str, tuple]] = {}
    for command, click_command in _commands().items():
        for param in click_command.params:
            declared.setdefault(param.name, {})[command] = _declaration(param)
    own = {  # commands that declare their own variant of a flag (different meaning or default)
        "finetune": ("batch_size",),
        "theorem1": ("damping",),
        "convergence": ("template", "loss_mask", "max_length"),
    }
    for shared in ATTRIBUTION:
        variants = {
            d
            for c, d in declared[shared.name].items()
            if shared.name not in own.get(c.removeprefix("analyze "), ())
        }
        assert len(variants) == 1, (shared.name, declared[shared.name])


ATTRIBUTING = {
    "attribute": ATTRIBUTION,
    "trace": ATTRIBUTION,
    "analyze ihvp-error": ANALYSIS,
    "analyze subset-retrain": ANALYSIS,
    "analyze counterfactual": ANALYSIS,
}


@pytest.mark.parametrize("command", sorted(ATTRIBUTING))
def test_attributing_commands_take_every_attribution_setting(command):
    names = {p.name for p in _commands()[command].params}
    assert {o.name for o in ATTRIBUTING[command]} <= names
    assert {"store", "store_dtype", "proj_dim", "repsim_layer", "factors", "option"} <= names


def test_convergence_and_theorem1_keep_their_own_variants():
    commands = _commands()
    convergence = {p.name: p for p in commands["analyze convergence"].params}
    assert convergence["template"].default is None  # the fine-tune's
    assert {"store", "proj_dim", "option", "factors"} <= set(convergence)
    theorem1 = {p.name: p for p in commands["analyze theorem1"].params}
    assert "λ of the rank sweep" in theorem1["damping"].help
    assert {"grad_damping", "store", "proj_dim", "option"} <= set(theorem1)
    assert theorem1["model"].default is None


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1000000", 1000000),
        ("1e6", 1000000),
        ("1e-6", 1e-6),
        ("1.5", 1.5),
        ("true", True),
        ("auto", "auto"),
        ("'123'", "123"),
        ("null", None),
    ],
)
def test_values_are_yaml_scalars(text, value):
    parsed = parse_scalar(text, "--option x.y")
    assert parsed == value and type(parsed) is type(value)
    assert parse_scalar(format_scalar(parsed), "") == parsed  # config options: round trip


@pytest.mark.parametrize("text", ["lissa", "lissa=1", ".tol=1", "lissa.=1", "lissa.tol=[1, 2]"])
def test_a_malformed_option_names_itself(text):
    with pytest.raises(ConfigError, match="--option"):
        parse_method_option(text)


def test_a_later_option_wins():
    options = method_options(["lissa.tol=1e-3", "lissa.max_iter=5", "lissa.tol=1e-4"])
    assert options == {"lissa": {"tol": 1e-4, "max_iter": 5}}


def test_attribute_settings_carries_the_options():
    params = {"batch_size": 4, "option": ["lissa.max_iter=7"], "store": None, "train": "x"}
    settings = attribute_settings(params, methods=["lissa"])
    assert settings.options == {"lissa": {"max_iter": 7}} and settings.batch_size == 4
    with pytest.raises(ConfigError, match="--option lissa.max_iter"):
        attribute_settings({"option": ["lissa.max_iter=7"]}, methods=["gradsim"])


def _probe_app() -> typer.Typer:
    """A command with only ``--option`` and ``--config`` that echoes what it got."""
    app = typer.Typer()

    @app.command()
    @with_options(METHOD_OPTIONS)
    def probe(ctx: typer.Context, config: ConfigOpt = None) -> None:
        print(sorted(method_options(ctx.params["option"] or []).items()))

    return app


def test_config_options_mapping_and_list_merge_with_the_command_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "options:\n  lissa: {max_iter: 1000000, path: dense}\noption: [exact.tol=1e-8]\n"
    )
    runner = CliRunner()
    result = runner.invoke(_probe_app(), ["--config", str(config)])
    assert result.exit_code == 0, result.output
    expected = "[('exact', {'tol': 1e-08}), ('lissa', {'max_iter': 1000000, 'path': 'dense'})]"
    assert result.output.strip() == expected
    result = runner.invoke(_probe_app(), ["--config", str(config), "--option", "lissa.path=eigen"])
    assert result.exit_code == 0, result.output
    assert "'path': 'eigen'" in result.output and "'max_iter': 1000000" in result.output
    assert "'tol': 1e-08" in result.output  # the file's other options stay


def test_a_bad_config_options_mapping_names_the_file(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("options: [lissa]\n")
    result = CliRunner().invoke(_probe_app(), ["--config", str(config)])
    assert isinstance(result.exception, ConfigError)
    assert "bad.yaml" in str(result.exception) and "options" in str(result.exception)


def test_with_options_refuses_a_command_that_redeclares_a_shared_option():
    with pytest.raises(TypeError, match="option"):

        @with_options(METHOD_OPTIONS)
        def command(option: str = "") -> None:
            del option
