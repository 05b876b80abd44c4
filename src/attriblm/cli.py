"""The ``attriblm`` command line: thin wrappers over the Python API.

Error contract (:func:`main`, docs/RELIABILITY.md): a user error (an
:class:`attriblm.errors.AttriblmError`, or an environment failure such as a full disk or a
read-only directory) is one line on stderr and exit code 2; anything else is a bug in attriblm:
one line with a hint to rerun with ``--debug`` and exit code 1. ``--debug`` (or
``ATTRIBLM_DEBUG=1``) adds the traceback, with the same exit codes.
"""

from __future__ import annotations

import errno
import inspect
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from attriblm.cli_options import (
    ATTRIBUTION,
    FIELDS,
    INPUT,
    MODEL,
    QUERIES,
    TRAIN,
    ConfigOpt,
    ModelOpt,
    QuietOpt,
    TargetLabelOpt,
    attribute_settings,
    format_scalar,
    load_data,
    load_model_from,
    recorded,
    with_options,
    write_command_config,
)
from attriblm.errors import AttriblmError, ConfigError
from attriblm.outputs import BENCH, DATASET, DEMO, FINETUNE, claimed_output

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Which training examples made my fine-tuned language model do this?",
)
console = Console()


def _print_version(value: bool) -> None:
    if value:
        from attriblm import __version__

        print(f"attriblm {__version__}")
        raise typer.Exit()


def _debug_from_env() -> bool:
    return os.environ.get("ATTRIBLM_DEBUG", "") not in ("", "0")


_DEBUG = _debug_from_env()
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an earlier output of this command at --out.")
]


def _single_process() -> bool:
    """Not launched by torchrun (there, each rank takes its own locks once it has joined)."""
    from attriblm.dist import launched_world_size

    return launched_world_size() == 1


@app.callback()
def _global_options(
    log_json: Annotated[
        bool,
        typer.Option(
            "--log-json", help="Progress as JSON lines on stderr (for scripts) instead of bars."
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_print_version,
            help="Print attriblm's version and exit.",
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the traceback of any error (also ATTRIBLM_DEBUG=1)."),
    ] = False,
    allow_pickle: Annotated[
        bool,
        typer.Option(
            "--allow-pickle",
            help="Also load pickled weights (pytorch_model.bin, adapter_model.bin) of models and "
            "adapters you trust; by default only safetensors are read.",
        ),
    ] = False,
) -> None:
    """Which training examples made my fine-tuned language model do this?"""
    from attriblm.models.loading import set_allow_pickle
    from attriblm.progress import set_log_format

    global _DEBUG
    _DEBUG = debug or _debug_from_env()
    set_log_format("json" if log_json else "text")
    set_allow_pickle(allow_pickle)


def _join_torchrun(device: str):
    """Join the torchrun process group when launched by torchrun (else a single process).

    Ranks other than 0 show no progress, print nothing and do not repeat rank 0's warnings.
    """
    from attriblm.dist import init_from_env

    dist = init_from_env(device)
    if not dist.is_main:
        warnings.simplefilter("ignore")
    return dist


MethodsOpt = Annotated[
    list[str], typer.Option("--method", "-m", help="Method name (repeatable) or 'all'.")
]
RunOutOpt = Annotated[Path, typer.Option(help="Run directory to write.")]


@app.command()
@with_options(MODEL, TRAIN, INPUT, FIELDS, exclude=("adapter", "batch_size"))
def finetune(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Output directory (adapters per epoch, log).")] = ...,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (linear decay).")] = 5e-5,
    batch_size: Annotated[int, typer.Option(help="Examples per optimiser step.")] = 24,
    seed: Annotated[int, typer.Option(help="Seed for LoRA init and shuffling.")] = 42,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 4,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 32,
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.1,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 0,
    lora_targets: Annotated[str, typer.Option(help="Comma-separated target modules.")] = (
        "q_proj,v_proj"
    ),
    quiet: QuietOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Fine-tune a LoRA adapter (the study's recipe by default); saves an adapter per epoch."""
    ctx.with_resource(claimed_output(out, FINETUNE, lock=_single_process()))
    from attriblm.models.lora import LoraSettings
    from attriblm.progress import stage_progress, step_callback
    from attriblm.train.finetune import TrainSettings
    from attriblm.train.finetune import finetune as run_finetune

    p = ctx.params
    (examples,) = load_data(p, "train")
    settings = TrainSettings(
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        max_length=p["max_length"],
        seed=seed,
        loss_mask=p["loss_mask"],
        template=p["template"],
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        lora=LoraSettings(
            r=lora_r,
            alpha=lora_alpha,
            dropout=lora_dropout,
            target_modules=tuple(t.strip() for t in lora_targets.split(",") if t.strip()),
        ),
    )
    settings.validate()  # before loading anything (finetune() checks again)
    dist = _join_torchrun(p["device"])
    loaded = load_model_from(p)
    with stage_progress(not quiet and dist.is_main) as progress:
        result = run_finetune(
            loaded,
            examples,
            settings,
            out,
            data_source=p["train"],
            progress=step_callback(progress, "fine-tuning"),
            command_options=recorded(ctx),
        )
    if dist.is_main:
        console.print(
            f"adapter: {result.adapter_dir}  ·  {len(result.checkpoints)} epoch checkpoints  ·  "
            f"final loss {result.losses[-1]:.4f}"
            + (f"  ·  {dist.world_size} processes" if dist.active else "")
        )


@app.command()
@with_options(MODEL, TRAIN, QUERIES, ATTRIBUTION, FIELDS)
def attribute(
    ctx: typer.Context,
    method: MethodsOpt = ...,
    out: RunOutOpt = ...,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Score every query against every training example; writes RUN/scores/<method>.safetensors.

    --option METHOD.KEY=VALUE passes a method its own options (`attriblm methods` lists them).
    """
    from attriblm.dist import SINGLE
    from attriblm.methods.registry import expand_method_names
    from attriblm.pipeline.attribute import attribute as run_attribute
    from attriblm.pipeline.attribute import claim_outputs
    from attriblm.progress import stage_progress

    p = ctx.params
    settings = attribute_settings(p, methods=expand_method_names(method))
    dist_now = SINGLE if _single_process() else None  # torchrun ranks lock after joining
    ctx.with_resource(claim_outputs(out, settings, overwrite=overwrite, dist=dist_now))
    train_examples, query_examples = load_data(p, "train", "queries")
    dist = _join_torchrun(p["device"])
    loaded = load_model_from(p)
    with stage_progress(not quiet and dist.is_main) as progress:
        run = run_attribute(
            loaded,
            train_examples,
            query_examples,
            settings,
            out,
            sources={"train": p["train"], "queries": p["queries"]},
            progress=progress,
            command_options=recorded(ctx),
            overwrite=overwrite,
        )
    if dist.is_main:
        console.print(
            f"wrote {run.out_dir}: {', '.join(run.scores)} · scores "
            f"[{len(query_examples)} queries × {len(train_examples)} train]"
            + (f" · {dist.world_size} processes" if dist.active else "")
        )


@app.command()
@with_options(MODEL, TRAIN, ATTRIBUTION, FIELDS)
def trace(
    ctx: typer.Context,
    prompts: Annotated[
        str | None,
        typer.Option(
            help="Prompts to answer: FILE.txt (one a line), .jsonl / .csv / DIR:SPLIT with a "
            "prompts field (--prompt-field)."
        ),
    ] = None,
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", help="A prompt to answer (repeatable).")
    ] = None,
    method: MethodsOpt = ...,
    out: RunOutOpt = ...,
    detect: Annotated[
        str,
        typer.Option(
            help="Which generations to trace: all | refusal | no-refusal | contains:TEXT | "
            "regex:PATTERN."
        ),
    ] = "all",
    target_label: TargetLabelOpt = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most new tokens per answer.")] = 64,
    temperature: Annotated[
        float, typer.Option(help="0 = greedy; above 0, seeded sampling at this temperature.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Sampling seed (with --temperature > 0).")] = 0,
    gen_batch_size: Annotated[
        int, typer.Option(help="Prompts per generate call (left-padded).")
    ] = 16,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Generate answers, keep those showing a behaviour (--detect), attribute them to train rows."""
    from attriblm.methods.registry import expand_method_names
    from attriblm.pipeline.attribute import claim_outputs
    from attriblm.pipeline.detect import parse_detector
    from attriblm.pipeline.trace import TraceSettings

    p = ctx.params
    settings = attribute_settings(p, methods=expand_method_names(method))
    ctx.with_resource(claim_outputs(out, settings, overwrite=overwrite))
    parse_detector(detect)
    trace_settings = TraceSettings(
        detect=detect,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        gen_batch_size=gen_batch_size,
        target_label=target_label,
    )
    texts = _trace_prompts(prompts, prompt, p["prompt_field"])
    (train_examples,) = load_data(p, "train")
    loaded = load_model_from(p)
    _run_trace(ctx, loaded, train_examples, texts, settings, trace_settings)


def _trace_prompts(prompts: str | None, prompt: list[str] | None, field: str) -> list[str]:
    """``--prompts FILE`` then each ``--prompt``; ConfigError when there are none."""
    from attriblm.data.prompts import load_prompts

    texts = (load_prompts(prompts, field) if prompts is not None else []) + list(prompt or [])
    if not texts:
        raise ConfigError("trace needs prompts: give --prompts FILE or --prompt TEXT")
    return texts


def _run_trace(ctx: typer.Context, loaded, train_examples, texts, settings, trace_settings):
    """Run :func:`attriblm.pipeline.trace.trace` for the ``trace`` command and print its summary."""
    from attriblm.pipeline.trace import trace as run_trace
    from attriblm.progress import stage_progress
    from attriblm.rundir import GENERATIONS_FILE

    p = ctx.params
    with stage_progress(not p["quiet"]) as progress:
        result = run_trace(
            loaded,
            train_examples,
            texts,
            settings,
            trace_settings,
            p["out"],
            sources={"train": p["train"], "prompts": p["prompts"] or "--prompt"},
            progress=progress,
            log=console.print,
            command_options=recorded(ctx),
            overwrite=p["overwrite"],
        )
    console.print(
        f"wrote {result.out_dir}: {GENERATIONS_FILE} ({len(result.generations)} prompts, "
        f"{result.n_kept} kept) · {', '.join(result.attribution.scores)} · scores "
        f"[{result.n_kept} traces × {len(train_examples)} train]"
    )
    if result.metrics is not None:
        target = trace_settings.target_label
        console.print(metrics_table(result.metrics["methods"], title=f"{p['out']}"))
        console.print(pooled_table(result.metrics["methods"], target))


@app.command()
def evaluate(
    run: Annotated[Path, typer.Option(help="Run directory written by `attribute`.")] = ...,
    k: Annotated[
        int | None, typer.Option(help="Cover's k (default: n_train / n_classes, the study's).")
    ] = None,
    target_label: TargetLabelOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Acc, Cover, AUPRC, AUROC, precision@k, recall@k per method; writes RUN/metrics.json."""
    from attriblm.pipeline.evaluate import evaluate_run

    report = evaluate_run(run, k=k, target_label=target_label)
    console.print(metrics_table(report["methods"], title=f"{run}"))
    if target_label is not None:
        console.print(pooled_table(report["methods"], target_label))


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def metrics_table(methods: dict[str, dict], title: str = "") -> Table:
    """A rich table: method × Acc, Cover (k), AUPRC, AUROC, scoring seconds ('–' = undefined)."""
    table = Table(title=title)
    for column in ("method", "Acc", "Cover", "AUPRC", "AUROC", "time (s)"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, m in methods.items():
        seconds = m.get("seconds")
        table.add_row(
            name,
            _fmt(m["acc"]["value"]),
            f"{_fmt(m['cover']['value'])} (k={m['cover']['k']})",
            _fmt(m["auprc"]["value"]),
            _fmt(m["auroc"]["value"]),
            "–" if seconds is None else f"{seconds:.2f}",
        )
    return table


def pooled_table(methods: dict[str, dict], target: str) -> Table:
    """A rich table: method × pooled P@k and auPRC@k for the target label ('–' = undefined)."""
    first = next(iter(methods.values()))["pooled"]
    ks = list(first["k"])
    table = Table(title=f"pooled top-k, target label {target!r} ({first['n_target']} train rows)")
    table.add_column("method")
    for k in ks:
        table.add_column(f"P@{k}", justify="right")
        table.add_column(f"auPRC@{k}", justify="right")
    for name, m in methods.items():
        cells = []
        for k in ks:
            cells += [_fmt(m["pooled"]["k"][k]["precision"]), _fmt(m["pooled"]["k"][k]["auprc"])]
        table.add_row(name, *cells)
    return table


@app.command()
def build(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(help="Task family, e.g. grammars.")],
    out: Annotated[Path, typer.Option(help="Output directory (save_to_disk + jsonl).")] = ...,
    preset: Annotated[str, typer.Option(help="Size preset: paper | quick | demo.")] = "paper",
    seed: Annotated[int, typer.Option(help="Generation seed.")] = 42,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Generate one of the study's task datasets offline, in the study's format."""
    from attriblm.data.tasks import build_task
    from attriblm.data.writers import write_dataset

    ctx.with_resource(claimed_output(out, DATASET, overwrite=overwrite))
    splits = build_task(task, preset=preset, seed=seed)
    write_dataset(splits, out, overwrite=overwrite)
    sizes = ", ".join(f"{name} {len(rows)}" for name, rows in splits.items())
    console.print(f"wrote {out} ({sizes}); load with --train {out}:train --queries {out}:test")


@app.command()
def methods(config: ConfigOpt = None) -> None:
    """List the attribution methods."""
    from attriblm.methods.base import method_needs
    from attriblm.methods.registry import accepted_options, available_methods, get_method_class

    table = Table("method", "needs", "options (--option)", "summary")
    for name in available_methods():
        cls = get_method_class(name)
        options = ", ".join(
            f"{key}={'(required)' if d is inspect.Parameter.empty else format_scalar(d)}"
            for key, d in accepted_options(name).items()
        )
        table.add_row(name, ", ".join(method_needs(cls)), options or "–", cls.summary)
    console.print(table)


@app.command()
def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Directory for the demo's data, adapter and run.")] = (
        Path("demo-run")
    ),
    model: ModelOpt = "default",
    quiet: QuietOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Build a small grammars task, fine-tune, attribute with every method, evaluate."""
    ctx.with_resource(claimed_output(out, DEMO))
    from attriblm.pipeline.demo import REPORT_FILE, next_steps, run_demo
    from attriblm.progress import stage_progress

    with stage_progress(not quiet) as progress:
        report = run_demo(out, model=model, progress=progress, log=console.print)
    write_command_config(out, ctx)
    console.print(metrics_table(report["methods"], title=f"attriblm demo · {out}"))
    console.print(f"report: {out / REPORT_FILE} (open it in a browser)")
    console.print("next, on your own data (fields prompts, response, variation):")
    for line in next_steps(out):
        console.print(f"  {line}", markup=False, soft_wrap=True)


@app.command()
def bench(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Benchmark directory (cache and results).")] = ...,
    tasks: Annotated[
        str,
        typer.Option(
            help="Comma-separated tasks, or 'all' (the study's nine; with --data-dir, those "
            "whose folder is present)."
        ),
    ] = "all",
    methods: Annotated[str, typer.Option(help="Comma-separated methods, or 'all'.")] = "all",
    preset: Annotated[
        str | None,
        typer.Option(
            help="quick (CPU-sized builders) | paper (the study's sizes and recipe) | study-cpu "
            "(--data-dir subsampled, CPU recipe). Default: quick, or study-cpu with --data-dir."
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Run on the study's published datasets (folders mixedS, mixedM, mixedL, "
            "grammars, math, emotion, backdoor, multibackdoor, multibackdoor5) instead of the "
            "offline builders."
        ),
    ] = None,
    loss_masks: Annotated[
        str, typer.Option(help="Comma-separated loss masks to compare.")
    ] = "response,paper",
    model: ModelOpt = "default",
    seed: Annotated[int, typer.Option(help="Data and training seed.")] = 42,
    quiet: QuietOpt = False,
    config: ConfigOpt = None,
) -> None:
    """The study's grid: fine-tune, attribute and evaluate every task × method × loss mask."""
    ctx.with_resource(claimed_output(out, BENCH))
    from attriblm.pipeline.bench import ALL_TASKS, run_bench
    from attriblm.pipeline.bench_layout import BenchDir
    from attriblm.progress import stage_progress

    def split(value: str) -> list[str]:
        return [part.strip() for part in value.split(",") if part.strip()]

    task_list = list(ALL_TASKS) if tasks == "all" else split(tasks)
    with stage_progress(not quiet) as progress:
        run_bench(
            out,
            tasks=task_list,
            methods=split(methods),
            preset=preset,
            loss_masks=split(loss_masks),
            model=model,
            seed=seed,
            data_dir=data_dir,
            progress=progress,
            log=lambda line: console.print(line, markup=False, soft_wrap=True),
        )
    write_command_config(out, ctx)
    console.print(BenchDir(out).results_md.read_text(encoding="utf-8"), markup=False)


# Commands defined in their own modules ---------------------------------------------------------
# (report/inspect: attriblm.report.commands; analyze: attriblm.analysis.commands)
from attriblm.analysis import commands as _analysis_commands  # noqa: E402

app.add_typer(_analysis_commands.analyze_app, name="analyze")
from attriblm.report import commands as _report_commands  # noqa: E402

app.command("report")(_report_commands.report)
app.command("inspect")(_report_commands.inspect)


# Environment failures the user fixes (disk full, quota, read-only or forbidden path): exit 2.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def environment_error(error: BaseException) -> str | None:
    """The one-line message for an exception that is the user's environment, not a bug:
    an OSError of :data:`ENVIRONMENT_ERRNOS` or running out of (GPU) memory; else ``None``."""
    if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS:
        where = f"{error.filename}: " if error.filename else ""
        hint = " (free some disk space)" if error.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        return f"{where}{error.strerror or error}{hint}"
    torch = sys.modules.get("torch")
    out_of_memory = isinstance(error, MemoryError) or (
        torch is not None and isinstance(error, torch.OutOfMemoryError)
    )
    if out_of_memory:
        first = (str(error).splitlines() or [""])[0][:200]
        return f"out of memory ({first or type(error).__name__}); try a smaller --batch-size"
    return None


def _exit(message: str, code: int) -> None:
    if _DEBUG:
        traceback.print_exc()
    print(f"attriblm: error: {message}", file=sys.stderr)
    sys.exit(code)


def main() -> None:
    """Console-script entry point: the error boundary of every command (module doc).

    AttriblmError and :func:`environment_error` cases → one line on stderr, exit code 2; any
    other exception (a bug) → one line naming it and a hint to rerun with ``--debug``, exit
    code 1. ``--debug`` / ``ATTRIBLM_DEBUG=1`` print the traceback first. Usage errors are
    click's (exit 2), Ctrl-C is click's ``Aborted!`` (exit 1).
    """
    from attriblm.dist import close
    from attriblm.progress import one_line_warnings

    warnings.simplefilter("default")
    one_line_warnings()
    try:
        app()
    except AttriblmError as error:
        _exit(str(error), 2)
    except Exception as error:
        message = environment_error(error)
        if message is not None:
            _exit(message, 2)
        first = (str(error).splitlines() or [""])[0][:300]
        _exit(
            f"internal error: {type(error).__name__}: {first} (a bug in attriblm; rerun with "
            "--debug or ATTRIBLM_DEBUG=1 for the traceback, and please report it)",
            1,
        )
    finally:
        close()
        loading = sys.modules.get("attriblm.models.loading")
        if loading is not None:  # --allow-pickle lasts one command (matters when run in-process)
            loading.set_allow_pickle(False)
