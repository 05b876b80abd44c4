"""Option declarations shared by every ``attriblm`` command, and ``--config`` handling.

Options used by several commands are declared once here, as typed ``Annotated`` aliases and,
for the model, data and attribution options, as :class:`Shared` entries with their default,
gathered in groups (:data:`MODEL`, :data:`ATTRIBUTION`, ...). :func:`with_options` adds groups
to a command; the command reads their values from ``ctx.params``, and
:func:`attribute_settings`, :func:`load_data` and :func:`load_model_from` turn them into the
API's objects.

``--config FILE.yaml`` is an eager option: its keys (the command's flag names) become the
command's option defaults, so flags given on the command line override the file
(:mod:`attriblm.config`). Commands that write a run record their resolved options with
:func:`write_command_config`.

``--option METHOD.KEY=VALUE`` (repeatable) passes a method its own constructor option
(:func:`attriblm.methods.registry.accepted_options`); VALUE is read as a YAML scalar. In a
config file the same is ``option: [METHOD.KEY=VALUE, ...]`` or a mapping
``options: {METHOD: {KEY: VALUE}}``; command-line ``--option`` values are added to the file's
(the command line wins for the same METHOD.KEY).
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from attriblm.errors import ConfigError

OPTIONS_KEY = "options"  # the config file's mapping form of --option


def _apply_config(ctx: typer.Context, _param: typer.CallbackParam, value: Path | None):
    """Eager ``--config`` callback: the file's keys become the command's option defaults."""
    if value is None:
        return value
    from attriblm.config import read_command_config

    allowed = {p.name for p in ctx.command.params if p.name and p.name != "config"}
    takes_options = "option" in allowed
    defaults = read_command_config(value, allowed | ({OPTIONS_KEY} if takes_options else set()))
    if takes_options:
        defaults["option"] = _config_option_list(value, defaults)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _config_option_list(path: Path, defaults: dict[str, Any]) -> list[str]:
    """A config's ``option:`` list and ``options:`` mapping as ``METHOD.KEY=VALUE`` strings
    (popping ``options`` from ``defaults``); ConfigError naming the file for a bad shape."""
    listed = defaults.get("option") or []
    listed = [listed] if isinstance(listed, str) else listed
    if not isinstance(listed, list) or not all(isinstance(v, str) for v in listed):
        raise ConfigError(f"{path}: option: expected a list of METHOD.KEY=VALUE strings")
    mapping = defaults.pop(OPTIONS_KEY, None) or {}
    if not isinstance(mapping, dict) or not all(isinstance(v, dict) for v in mapping.values()):
        raise ConfigError(f"{path}: options: expected a mapping METHOD: {{KEY: VALUE}}")
    out = []
    for method, values in mapping.items():
        for key, scalar in values.items():
            if scalar is not None and not isinstance(scalar, bool | int | float | str):
                raise ConfigError(f"{path}: options.{method}.{key}: expected a scalar value")
            out.append(f"{method}.{key}={format_scalar(scalar)}")
    return out + list(listed)


_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def parse_scalar(text: str, option: str) -> Any:
    """``text`` as a YAML scalar: int, float, bool, null or str (``1e6`` is a number too,
    ``1000000`` an int); ConfigError naming ``option`` for anything else."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"{option}: {text!r} is not a YAML scalar") from None
    if isinstance(value, str) and _NUMBER.fullmatch(text.strip()):  # YAML 1.1 wants 1.0e6
        number = float(value)
        is_int = number.is_integer() and "." not in value
        value = int(number) if is_int else number
    if value is not None and not isinstance(value, bool | int | float | str):
        raise ConfigError(f"{option}: expected a scalar (number, true/false or text), got {text!r}")
    return value


def format_scalar(value: Any) -> str:
    """The text :func:`parse_scalar` reads back as ``value`` (a scalar)."""
    if isinstance(value, str):
        try:
            plain = parse_scalar(value, "") == value
        except ConfigError:
            plain = False
        return value if plain else json.dumps(value)  # a JSON string is a YAML string
    return json.dumps(value)  # true, false, null, ints and floats (1e-06 reads as a number)


def parse_method_option(text: str) -> tuple[str, str, Any]:
    """``METHOD.KEY=VALUE`` → ``(method, key, value)``; ConfigError naming the option."""
    target, sep, raw = text.partition("=")
    method, dot, key = target.strip().partition(".")
    if not sep or not dot or not method or not key.isidentifier():
        raise ConfigError(
            f"--option {text!r}: expected METHOD.KEY=VALUE, e.g. lissa.max_iter=1000000"
        )
    return method, key, parse_scalar(raw, f"--option {target.strip()}")


def method_options(texts: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--option`` values → ``{method: {key: value}}`` (a later METHOD.KEY wins)."""
    options: dict[str, dict[str, Any]] = {}
    for text in texts:
        method, key, value = parse_method_option(text)
        options.setdefault(method, {})[key] = value
    return options


def _merge_option_values(ctx: typer.Context, param: typer.CallbackParam, value):
    """``--option`` callback: add command-line values to the config file's, the command line
    winning for the same METHOD.KEY. Their form is checked later (:func:`attribute_settings`),
    inside the command, so that a bad value cannot leave an output lock behind."""
    if ctx.resilient_parsing:
        return value
    values = list(value or [])
    source = ctx.get_parameter_source(param.name)
    if source is not None and source.name == "COMMANDLINE":
        values = list((ctx.default_map or {}).get(param.name) or []) + values
    latest: dict[str, str] = {}
    for text in values:
        target = text.partition("=")[0].strip()
        latest.pop(target, None)  # the last one wins, in its place
        latest[target] = text
    return list(latest.values())


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        is_eager=True,
        callback=_apply_config,
        help="YAML file of this command's options (keys = flag names); flags override it. "
        "A run's config.yaml repeats that run.",
    ),
]
ModelOpt = Annotated[
    str,
    typer.Option(
        "--model", help="'default' (SmolLM2-135M-Instruct, offline), 'tiny', or a local HF dir."
    ),
]
AdapterOpt = Annotated[
    Path | None,
    typer.Option(help="PEFT LoRA adapter directory, or a `finetune --out` dir (its `adapter/`)."),
]
TrainDataOpt = Annotated[str, typer.Option(help="Training data: DIR:SPLIT, .jsonl or .csv.")]
QueryDataOpt = Annotated[str, typer.Option(help="Query data, same formats as --train.")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda")]
DtypeOpt = Annotated[str, typer.Option(help="Model dtype: fp32 | bf16 | fp16.")]
TemplateOpt = Annotated[
    str, typer.Option(help="Chat template: llama2 (\\[INST] … \\[/INST]) | auto.")
]
LossMaskOpt = Annotated[
    str,
    typer.Option(
        help="Tokens in the loss: response | full | paper (the study's: EOS pads on the left "
        "to --max-length, loss on every token incl. pads)."
    ),
]
MaxLenOpt = Annotated[int, typer.Option(help="Maximum tokens per example (longer: truncated).")]
BatchOpt = Annotated[int, typer.Option(help="Examples per gradient pass.")]
DampingOpt = Annotated[float, typer.Option(help="λ: a factor (relative) or a value.")]
DampingModeOpt = Annotated[
    str,
    typer.Option(
        help="relative: λ_b = damping · mean(g²) per block | absolute | eigen_mean: "
        "damping · mean curvature eigenvalue (kfac, ekfac only)"
    ),
]
PromptFieldOpt = Annotated[str, typer.Option(help="Prompt field name in the data.")]
ResponseFieldOpt = Annotated[str, typer.Option(help="Response field name in the data.")]
LabelFieldOpt = Annotated[str, typer.Option(help="Label (behaviour class) field name.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
TargetLabelOpt = Annotated[
    str | None,
    typer.Option(
        help="Also report pooled precision@k / auPRC (k = 10, 50, 100) with relevance = train "
        "label == this."
    ),
]
ReptLayerOpt = Annotated[
    int, typer.Option(help="RepT's layer, 1-based; -1 = the last (after the final norm).")
]


RepsimLayerOpt = Annotated[int, typer.Option(help="-1 = last layer after final norm.")]
RepsimPoolingOpt = Annotated[str, typer.Option(help="last | mean token.")]
TopkOpt = Annotated[int, typer.Option(help="Training rows per query in topk.jsonl.")]
CheckpointsOpt = Annotated[
    Path | None,
    typer.Option(
        help="Fine-tune directory (or its checkpoints/) for tracin; default: found beside "
        "--adapter."
    ),
]
FactorsOpt = Annotated[
    Path | None,
    typer.Option(
        help="Reuse K-FAC/EK-FAC factors: a directory of <method>.safetensors (RUN/factors)."
    ),
]
StoreOpt = Annotated[
    Path | None,
    typer.Option(
        help="Feature store directory, kept and reused by runs with the same settings. "
        "Default: OUT.store, resumed after a kill, removed after success."
    ),
]
KeepStoreOpt = Annotated[bool, typer.Option(help="Keep the default OUT.store.")]
StoreDtypeOpt = Annotated[
    str,
    typer.Option(
        help="Stored feature dtype: fp32 (exact) | bf16 | fp16 (row-scaled); "
        "bf16 and fp16 halve the disk."
    ),
]
ProjDimOpt = Annotated[
    int | None,
    typer.Option(
        help="Randomly project gradient blocks wider than this (not kfac/ekfac); "
        "less projects its features so, default 8192."
    ),
]
ProjKindOpt = Annotated[str, typer.Option(help="Projection: gaussian | rademacher.")]
ProjSeedOpt = Annotated[int, typer.Option(help="Projection seed (one matrix per block).")]
MethodOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        callback=_merge_option_values,
        help="A method's own option, METHOD.KEY=VALUE (repeatable; VALUE a YAML scalar), e.g. "
        "lissa.max_iter=1000000; `attriblm methods` lists each method's options.",
    ),
]


@dataclass(frozen=True)
class Shared:
    """One option declared once for several commands: parameter name, annotated type, default."""

    name: str
    annotation: Any
    default: Any

    def parameter(self) -> inspect.Parameter:
        return inspect.Parameter(
            self.name, inspect.Parameter.KEYWORD_ONLY, default=self.default,
            annotation=self.annotation,
        )  # fmt: skip


Group = tuple[Shared, ...]
MODEL: Group = (
    Shared("model", ModelOpt, "default"),
    Shared("adapter", AdapterOpt, None),
    Shared("device", DeviceOpt, "auto"),
    Shared("dtype", DtypeOpt, "fp32"),
)
TRAIN: Group = (Shared("train", TrainDataOpt, ...),)
QUERIES: Group = (Shared("queries", QueryDataOpt, ...),)
FIELDS: Group = (
    Shared("prompt_field", PromptFieldOpt, "prompts"),
    Shared("response_field", ResponseFieldOpt, "response"),
    Shared("label_field", LabelFieldOpt, "variation"),
)
# Attribution settings (the fields of attriblm.pipeline.attribute.AttributeSettings)
INPUT: Group = (
    Shared("template", TemplateOpt, "llama2"),
    Shared("loss_mask", LossMaskOpt, "response"),
    Shared("max_length", MaxLenOpt, 128),
    Shared("batch_size", BatchOpt, 16),
)
DAMPING: Group = (
    Shared("damping", DampingOpt, 0.1),
    Shared("damping_mode", DampingModeOpt, "relative"),
)
METHOD_SETTINGS: Group = (
    Shared("checkpoints", CheckpointsOpt, None),
    Shared("factors", FactorsOpt, None),
    Shared("repsim_layer", RepsimLayerOpt, -1),
    Shared("repsim_pooling", RepsimPoolingOpt, "last"),
    Shared("rept_layer", ReptLayerOpt, -1),
)
METHOD_OPTIONS: Group = (Shared("option", MethodOptionOpt, None),)
TOPK: Group = (Shared("topk", TopkOpt, 10),)
STORE: Group = (
    Shared("store", StoreOpt, None),
    Shared("keep_store", KeepStoreOpt, False),
    Shared("store_dtype", StoreDtypeOpt, "fp32"),
)
PROJECTION: Group = (
    Shared("proj_dim", ProjDimOpt, None),
    Shared("proj_kind", ProjKindOpt, "gaussian"),
    Shared("proj_seed", ProjSeedOpt, 0),
)
# every attribution setting but topk (analyze commands write no topk.jsonl)
ANALYSIS: Group = INPUT + DAMPING + METHOD_SETTINGS + METHOD_OPTIONS + STORE + PROJECTION
ATTRIBUTION: Group = INPUT + DAMPING + METHOD_SETTINGS + TOPK + STORE + PROJECTION + METHOD_OPTIONS

# A command's own options that stay last in --help, after the shared ones
TRAILING = ("quiet", "overwrite", "config")


def with_options(*groups: Group, exclude: Collection[str] = ()) -> Callable:
    """Decorator (below ``@app.command()``): add the options of ``groups`` to a command.

    The command function declares only its own options (and ``ctx: typer.Context``); typer
    parses the shared ones like those and the function reads them from ``ctx.params``.
    ``exclude`` drops shared options by name (a command that declares its own variant). In
    ``--help`` the shared options follow the command's own, before its :data:`TRAILING` ones.
    """
    shared = [o.parameter() for group in groups for o in group if o.name not in exclude]
    names = {p.name for p in shared}

    def decorate(func: Callable) -> Callable:
        own = inspect.signature(func, eval_str=True)
        clash = names & set(own.parameters)
        if clash:
            raise TypeError(f"{func.__name__} declares shared option(s) {sorted(clash)} itself")
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own.parameters.values()]
        cut = next((i for i, p in enumerate(params) if p.name in TRAILING), len(params))

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            return func(**{k: v for k, v in kwargs.items() if k not in names})

        command.__signature__ = own.replace(parameters=params[:cut] + shared + params[cut:])
        return command

    return decorate


def attribute_settings(params: Mapping[str, Any], **overrides: Any):
    """:class:`~attriblm.pipeline.attribute.AttributeSettings` from a command's parsed options
    (every settings field present in ``params``; paths as strings; ``option`` → ``options``),
    then ``overrides`` (e.g. ``methods=``). ConfigError naming the option for a bad value."""
    from dataclasses import fields

    from attriblm.pipeline.attribute import AttributeSettings

    values = {f.name: params[f.name] for f in fields(AttributeSettings) if f.name in params}
    for name, value in values.items():
        if isinstance(value, Path):
            values[name] = str(value)
    if "option" in params:
        values["options"] = method_options(params["option"] or [])
    return AttributeSettings(**{**values, **overrides})


def data_fields(params: Mapping[str, Any]):
    """The :class:`~attriblm.data.schema.FieldMap` of ``--prompt-field`` and the others."""
    from attriblm.data.schema import FieldMap

    return FieldMap(
        prompt=params["prompt_field"],
        response=params["response_field"],
        label=params["label_field"],
    )


def load_data(params: Mapping[str, Any], *names: str) -> list:
    """The examples of the data options ``names`` (e.g. ``"train", "queries"``), one list
    each, read with the command's field names."""
    from attriblm.data.loaders import load_examples

    fields = data_fields(params)
    return [load_examples(params[name], fields) for name in names]


def load_model_from(params: Mapping[str, Any], **overrides: Any):
    """The model of ``--model`` (and ``--adapter`` where the command has it), on ``--device``
    in ``--dtype``; ``overrides`` replace those (e.g. ``adapter=``)."""
    from attriblm.models.loading import load_model

    values = {k: params.get(k) for k in ("model", "adapter", "device", "dtype")}
    values.update(overrides)
    spec = values.pop("model")
    return load_model(spec, **values)


def claim_out(kind: str):
    """A ``--out`` callback: check the directory for command kind ``kind`` (a key of
    :data:`attriblm.outputs.KINDS`) before any work and lock it while the command runs."""

    def callback(ctx: typer.Context, _param: typer.CallbackParam, value: Path | None):
        if value is None or ctx.resilient_parsing:
            return value
        from attriblm.outputs import KINDS, claimed_output

        ctx.with_resource(claimed_output(value, KINDS[kind]))
        return value

    return callback


def recorded(ctx: typer.Context) -> dict:
    """The command's resolved options, as written to a run's ``config.yaml``."""
    from attriblm.config import recorded_options

    return recorded_options(ctx.params)


def write_command_config(out: Path, ctx: typer.Context) -> None:
    """``OUT/config.yaml``: this command's options, so ``--config OUT/config.yaml`` repeats it."""
    from attriblm.io import write_yaml

    write_yaml(Path(out) / "config.yaml", recorded(ctx))
