"""Option declarations shared by every ``attriblm`` command, and ``--config`` handling.

``--config FILE.yaml`` is an eager option: its keys (the command's flag names) become the
command's option defaults, so flags given on the command line override the file
(:mod:`attriblm.config`). Commands that write a run record their resolved options with
:func:`write_command_config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _apply_config(ctx: typer.Context, _param: typer.CallbackParam, value: Path | None):
    """Eager ``--config`` callback: the file's keys become the command's option defaults."""
    if value is None:
        return value
    from attriblm.config import read_command_config

    allowed = {p.name for p in ctx.command.params if p.name and p.name != "config"}
    ctx.default_map = {**(ctx.default_map or {}), **read_command_config(value, allowed)}
    return value


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
