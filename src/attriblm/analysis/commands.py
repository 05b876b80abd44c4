"""``attriblm analyze``: the diagnoses as commands (thin wrappers over :mod:`attriblm.analysis`).

Registered in :mod:`attriblm.cli` as the sub-app ``analyze``. Each command writes
``OUT/<name>.json`` and ``OUT/<name>.png``. User errors raise
:class:`~attriblm.errors.AttriblmError`, which the entry point turns into one line and exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from attriblm.cli_options import (
    AdapterOpt,
    BatchOpt,
    ConfigOpt,
    DampingModeOpt,
    DampingOpt,
    DeviceOpt,
    DtypeOpt,
    LabelFieldOpt,
    LossMaskOpt,
    MaxLenOpt,
    ModelOpt,
    PromptFieldOpt,
    QueryDataOpt,
    QuietOpt,
    ResponseFieldOpt,
    TemplateOpt,
    TrainDataOpt,
    write_command_config,
)
from attriblm.errors import ConfigError

analyze_app = typer.Typer(
    no_args_is_help=True,
    help="Diagnoses: Theorem 1 simulation, iHVP error against the exact solve, convergence "
    "over epoch checkpoints. Each writes OUT/<name>.json and OUT/<name>.png.",
)
console = Console()

OutOpt = Annotated[Path, typer.Option(help="Output directory (JSON + PNG).")]
MethodOpt = Annotated[
    list[str] | None,
    typer.Option("--method", "-m", help="Method name (repeatable) or 'all'; default: see help."),
]


def _numbers(value: str | None, option: str, kind: type = float) -> list | None:
    """Parse a comma-separated list (``None`` / empty → ``None``); ConfigError naming the option."""
    if value is None or not value.strip():
        return None
    try:
        return [kind(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated numbers, got {value!r}") from None


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _load(train: str, queries: str, prompt_field: str, response_field: str, label_field: str):
    from attriblm.data.loaders import load_examples
    from attriblm.data.schema import FieldMap

    fields = FieldMap(prompt=prompt_field, response=response_field, label=label_field)
    return load_examples(train, fields), load_examples(queries, fields)


@analyze_app.command("theorem1")
def theorem1(
    ctx: typer.Context,
    out: OutOpt = ...,
    dims: Annotated[str, typer.Option(help="Comma-separated dimensions n.")] = "128,512,2048",
    damping: Annotated[float, typer.Option(help="λ of the rank sweep.")] = 0.1,
    ranks: Annotated[
        str | None, typer.Option(help="Comma-separated ratios r/n in (0, 1); default 2^-7…2^-1.")
    ] = None,
    dampings: Annotated[
        str | None, typer.Option(help="Comma-separated λ values of the λ sweep; default 1e-3…10.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random U and spectrum.")] = 0,
    sweep_ratio: Annotated[float, typer.Option(help="r/n of the λ sweep.")] = 1 / 16,
    heatmap_ratio: Annotated[float, typer.Option(help="r/n of the heat maps (at n = dims[0]).")] = (
        1 / 16
    ),
    simulate_max_n: Annotated[
        int, typer.Option(help="Simulate every row with explicit matrices up to this n.")
    ] = 512,
    config: ConfigOpt = None,
) -> None:
    """Theorem 1: ‖(H+λI)⁻¹ − I/λ‖_F relative error vs r/n and λ for random rank-r H."""
    from attriblm.analysis.theorem1 import run_theorem1

    report = run_theorem1(
        out,
        dims=_numbers(dims, "--dims", int) or [],
        damping=damping,
        ranks=_numbers(ranks, "--ranks"),
        dampings=_numbers(dampings, "--dampings"),
        seed=seed,
        sweep_ratio=sweep_ratio,
        heatmap_ratio=heatmap_ratio,
        simulate_max_n=simulate_max_n,
    )
    write_command_config(out, ctx)
    console.print(
        f"wrote {out}/theorem1.json and .png · all within bound: {report['all_within_bound']} · "
        f"closed form vs simulated: max |Δ| {report['max_abs_diff_closed_vs_simulated']:.2e}"
    )


@analyze_app.command("ihvp-error")
def ihvp_error(
    ctx: typer.Context,
    model: ModelOpt = "default",
    adapter: AdapterOpt = None,
    train: TrainDataOpt = ...,
    queries: QueryDataOpt = ...,
    method: MethodOpt = None,
    out: OutOpt = ...,
    template: TemplateOpt = "llama2",
    loss_mask: LossMaskOpt = "response",
    max_length: MaxLenOpt = 128,
    batch_size: BatchOpt = 16,
    damping: DampingOpt = 0.1,
    damping_mode: DampingModeOpt = "relative",
    prompt_field: PromptFieldOpt = "prompts",
    response_field: ResponseFieldOpt = "response",
    label_field: LabelFieldOpt = "variation",
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "fp32",
    quiet: QuietOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Each method's Ĥ⁻¹v vs exact's: relative error, cosine, Spearman of scores.

    Default methods: datainf, lissa-paper, lissa, kfac, ekfac, gradsim.
    """
    from attriblm.analysis.ihvp_error import DEFAULT_METHODS, resolve_methods, run_ihvp_error
    from attriblm.models.loading import load_model
    from attriblm.pipeline.attribute import AttributeSettings
    from attriblm.progress import stage_progress

    names = resolve_methods(method or DEFAULT_METHODS)
    settings = AttributeSettings(
        methods=names,
        template=template,
        loss_mask=loss_mask,
        max_length=max_length,
        batch_size=batch_size,
        damping_mode=damping_mode,
        damping=damping,
    )
    train_examples, query_examples = _load(
        train, queries, prompt_field, response_field, label_field
    )
    loaded = load_model(model, adapter=adapter, device=device, dtype=dtype)
    with stage_progress(not quiet) as progress:
        report = run_ihvp_error(
            loaded,
            train_examples,
            query_examples,
            out,
            methods=names,
            settings=settings,
            sources={"train": train, "queries": queries},
            progress=progress,
        )
    write_command_config(out, ctx)
    for name, row in report["methods"].items():
        console.print(
            f"{name:12s} rel. error {_fmt(row['rel_error'])} · cosine {_fmt(row['cosine'])} · "
            f"Spearman {_fmt(row['spearman']['mean'])}"
        )
    console.print(f"wrote {out}/ihvp_error.json and .png")


@analyze_app.command("convergence")
def convergence(
    ctx: typer.Context,
    model: ModelOpt = "default",
    finetune: Annotated[
        Path, typer.Option(help="Fine-tune directory (checkpoints/epoch-NNN, train_log.json).")
    ] = ...,
    adapter: Annotated[
        Path | None, typer.Option(help="Adapter to load (default: FINETUNE/adapter).")
    ] = None,
    train: TrainDataOpt = ...,
    queries: QueryDataOpt = ...,
    method: MethodOpt = None,
    out: OutOpt = ...,
    init: Annotated[
        bool, typer.Option("--init/--no-init", help="Include epoch 0 (before training).")
    ] = True,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 200,
    template: Annotated[
        str | None, typer.Option(help="Chat template (default: the fine-tune's).")
    ] = None,
    loss_mask: Annotated[
        str | None, typer.Option(help="response | full | paper (default: the fine-tune's).")
    ] = None,
    max_length: Annotated[
        int | None, typer.Option(help="Maximum tokens (default: the fine-tune's).")
    ] = None,
    batch_size: BatchOpt = 16,
    damping: DampingOpt = 0.1,
    damping_mode: DampingModeOpt = "relative",
    prompt_field: PromptFieldOpt = "prompts",
    response_field: ResponseFieldOpt = "response",
    label_field: LabelFieldOpt = "variation",
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "fp32",
    quiet: QuietOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Acc / Cover / AUPRC per method and ‖Δθ‖ at every epoch checkpoint of a fine-tune.

    Default methods: gradsim, datainf, lissa-paper, repsim.
    """
    from attriblm.analysis.convergence import (
        DEFAULT_METHODS,
        default_settings,
        resolve_methods,
        run_convergence,
    )
    from attriblm.models.loading import load_model
    from attriblm.progress import stage_progress

    names = resolve_methods(method or DEFAULT_METHODS)
    settings = default_settings(finetune)
    settings.methods = names
    settings.template = template if template is not None else settings.template
    settings.loss_mask = loss_mask if loss_mask is not None else settings.loss_mask
    settings.max_length = max_length if max_length is not None else settings.max_length
    settings.batch_size = batch_size
    settings.damping = damping
    settings.damping_mode = damping_mode
    train_examples, query_examples = _load(
        train, queries, prompt_field, response_field, label_field
    )
    adapter_dir = adapter if adapter is not None else finetune_adapter(finetune)
    loaded = load_model(model, adapter=adapter_dir, device=device, dtype=dtype)
    with stage_progress(not quiet) as progress:
        report = run_convergence(
            loaded,
            finetune,
            train_examples,
            query_examples,
            out,
            methods=names,
            settings=settings,
            include_init=init,
            n_boot=n_boot,
            sources={"train": train, "queries": queries},
            progress=progress,
        )
    write_command_config(out, ctx)
    for row in report["epochs"]:
        accs = ", ".join(f"{m} {v['acc']['value']:.2f}" for m, v in row["methods"].items())
        console.print(f"epoch {row['epoch']}: ‖Δθ‖ {row['delta_norm']['mean']:.3g} · Acc: {accs}")
    console.print(f"wrote {out}/convergence.json and .png")


def finetune_adapter(finetune_dir: Path) -> Path:
    """``FINETUNE/adapter``; ConfigError when the fine-tune has no final adapter."""
    from attriblm.train.finetune import ADAPTER_DIR

    root = Path(finetune_dir)
    if root.name == "checkpoints":
        root = root.parent
    adapter = root / ADAPTER_DIR
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"--finetune {finetune_dir}: no adapter at {adapter}; pass --adapter")
    return adapter
