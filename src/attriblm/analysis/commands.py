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
    ANALYSIS,
    FIELDS,
    INPUT,
    METHOD_OPTIONS,
    MODEL,
    PROJECTION,
    QUERIES,
    STORE,
    TRAIN,
    ConfigOpt,
    QuietOpt,
    attribute_settings,
    claim_out,
    load_data,
    load_model_from,
    with_options,
    write_command_config,
)
from attriblm.errors import ConfigError

analyze_app = typer.Typer(
    no_args_is_help=True,
    help="Diagnoses: theorem1, ihvp-error, convergence, delta-theta, subset-retrain, "
    "counterfactual, layer-sweep. Each writes OUT/<name>.json, OUT/<name>.png and "
    "OUT/config.yaml.",
)
console = Console()

OutOpt = Annotated[
    Path, typer.Option(help="Output directory (JSON + PNG).", callback=claim_out("analyze"))
]
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


@analyze_app.command("theorem1")
@with_options(MODEL, INPUT, STORE, PROJECTION, METHOD_OPTIONS, FIELDS, exclude=("model",))
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
    n_vectors: Annotated[
        int, typer.Option(help="Simulated vectors of each kind (random, in range(H)) per n.")
    ] = 32,
    model: Annotated[
        str | None,
        typer.Option(
            help="Also measure on a fine-tuned model's query gradients (with --train and "
            "--queries): 'default', 'tiny' or a local HF dir. Default: 'default'."
        ),
    ] = None,
    train: Annotated[
        str | None, typer.Option(help="Training data for the real-gradient check.")
    ] = None,
    queries: Annotated[
        str | None, typer.Option(help="Query data for the real-gradient check.")
    ] = None,
    grad_damping: Annotated[
        float, typer.Option(help="Real-gradient check: λ factor or value (as attribute's).")
    ] = 0.1,
    grad_damping_mode: Annotated[
        str, typer.Option(help="Real-gradient check: relative | absolute (as attribute's).")
    ] = "relative",
    quiet: QuietOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Theorem 1: ‖(H+λI)⁻¹ − I/λ‖ relative error, as matrices and on vectors, vs r/n and λ.

    With --train and --queries (and --model/--adapter) the vector error is also measured on the
    fine-tuned model's query gradients.
    """
    from attriblm.analysis.theorem1 import run_theorem1
    from attriblm.progress import stage_progress

    loaded, train_examples, query_examples, settings = _theorem1_gradient_inputs(ctx.params)
    real = loaded is not None
    with stage_progress(real and not quiet) as progress:
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
            n_vectors=n_vectors,
            loaded=loaded,
            train=train_examples,
            queries=query_examples,
            settings=settings,
            sources={"train": train, "queries": queries} if real else None,
            progress=progress,
        )
    write_command_config(out, ctx)
    _print_theorem1(out, report, damping)


def _theorem1_gradient_inputs(p: dict) -> tuple:
    """``(loaded, train, queries, settings)`` of theorem1's real-gradient check (all ``None``
    without --train/--queries); ConfigError for an incomplete or bad set of its options."""
    from attriblm.methods.damping import Damping

    train, queries = p["train"], p["queries"]
    real = train is not None or queries is not None
    if real and (train is None or queries is None):
        missing = "--queries" if queries is None else "--train"
        raise ConfigError(f"theorem1: the real-gradient check needs {missing} too")
    if not real:
        if p["model"] is not None or p["adapter"] is not None:
            raise ConfigError("theorem1: --model/--adapter need --train and --queries")
        return None, None, None, None
    Damping(p["grad_damping_mode"], p["grad_damping"])  # checks, before loading
    if p["grad_damping_mode"] == "eigen_mean":
        raise ConfigError("--grad-damping-mode: use relative or absolute (exact's λ rule)")
    settings = attribute_settings(
        p, methods=["exact"], damping_mode=p["grad_damping_mode"], damping=p["grad_damping"]
    )
    train_examples, query_examples = load_data(p, "train", "queries")
    loaded = load_model_from(p, model=p["model"] or "default")
    return loaded, train_examples, query_examples, settings


def _print_theorem1(out: Path, report: dict, damping: float) -> None:
    """theorem1's summary lines: bound check, the main row, the query-gradient errors."""
    console.print(
        f"wrote {out}/theorem1.json and .png · all within bound: {report['all_within_bound']} · "
        f"closed form vs simulated: max |Δ| {report['max_abs_diff_closed_vs_simulated']:.2e}"
    )
    main = [
        row
        for row in report["lambda_sweep"]
        if row["n"] == max(report["settings"]["dims"]) and row["lambda"] == damping
    ]
    if main:
        row = main[0]
        console.print(
            f"n={row['n']}, r/n={row['ratio']:.3g}, λ={damping:g}: matrix error "
            f"{row['error']:.3g} · random v {row['vector_error_random']:.3g} · v in range(H) "
            f"{row['vector_error_range']:.3g}"
        )
    if report["gradients"] is not None:
        q = report["gradients"]["queries_summary"]
        console.print(
            f"query gradients: error {_fmt(q['error_mean'])} (mean) · in range(H) "
            f"{_fmt(q['error_in_range_mean'])} · share in range(H) {_fmt(q['range_share_mean'])}"
            f" · block matrix error {_fmt(q['matrix_error_mean_over_blocks'])} (mean)"
        )


@analyze_app.command("ihvp-error")
@with_options(MODEL, TRAIN, QUERIES, ANALYSIS, FIELDS)
def ihvp_error(
    ctx: typer.Context,
    method: MethodOpt = None,
    out: OutOpt = ...,
    quiet: QuietOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Each method's Ĥ⁻¹v vs exact's: relative error, cosine, Spearman of scores.

    Default methods: datainf, lissa-paper, lissa, kfac, ekfac, gradsim.
    """
    from attriblm.analysis.ihvp_error import DEFAULT_METHODS, resolve_methods, run_ihvp_error
    from attriblm.progress import stage_progress

    p = ctx.params
    names = resolve_methods(method or DEFAULT_METHODS)
    settings = attribute_settings(p, methods=names)
    train_examples, query_examples = load_data(p, "train", "queries")
    loaded = load_model_from(p)
    with stage_progress(not quiet) as progress:
        report = run_ihvp_error(
            loaded,
            train_examples,
            query_examples,
            out,
            methods=names,
            settings=settings,
            sources={"train": p["train"], "queries": p["queries"]},
            progress=progress,
        )
    write_command_config(out, ctx)
    for name, row in report["methods"].items():
        console.print(
            f"{name:12s} rel. error {_fmt(row['rel_error'])} · after positive rescaling "
            f"{_fmt(row['rel_error_scaled'])} · cosine {_fmt(row['cosine'])} · "
            f"Spearman {_fmt(row['spearman']['mean'])}"
        )
    console.print(f"wrote {out}/ihvp_error.json and .png")


@analyze_app.command("convergence")
@with_options(
    MODEL,
    TRAIN,
    QUERIES,
    ANALYSIS,
    FIELDS,
    exclude=("adapter", "template", "loss_mask", "max_length"),
)
def convergence(
    ctx: typer.Context,
    finetune: Annotated[
        Path, typer.Option(help="Fine-tune directory (checkpoints/epoch-NNN, train_log.json).")
    ] = ...,
    adapter: Annotated[
        Path | None, typer.Option(help="Adapter to load (default: FINETUNE/adapter).")
    ] = None,
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
    from attriblm.progress import stage_progress

    p = ctx.params
    names = resolve_methods(method or DEFAULT_METHODS)
    fine_tunes = default_settings(finetune)  # template, loss mask, max length of the fine-tune
    settings = attribute_settings(
        p,
        methods=names,
        template=template if template is not None else fine_tunes.template,
        loss_mask=loss_mask if loss_mask is not None else fine_tunes.loss_mask,
        max_length=max_length if max_length is not None else fine_tunes.max_length,
    )
    train_examples, query_examples = load_data(p, "train", "queries")
    adapter_dir = adapter if adapter is not None else finetune_adapter(finetune)
    loaded = load_model_from(p, adapter=adapter_dir)
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
            sources={"train": p["train"], "queries": p["queries"]},
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


EpochsOpt = Annotated[int, typer.Option(help="Training epochs of every fine-tune.")]
LrOpt = Annotated[float, typer.Option(help="AdamW learning rate (linear decay).")]
TrainBatchOpt = Annotated[int, typer.Option(help="Examples per optimiser step (fine-tuning).")]
TrainSeedOpt = Annotated[int, typer.Option(help="Seed for LoRA init and shuffling.")]
MaxNewTokensOpt = Annotated[int, typer.Option(help="Greedy generation: most new tokens.")]
GenBatchOpt = Annotated[int, typer.Option(help="Prompts per generate call (left-padded).")]


def _train_settings(p: dict):
    """:class:`TrainSettings` from the analyze commands' fine-tuning flags (``--epochs``,
    ``--lr``, ``--train-batch-size``, ``--seed``, ``--max-length``, ``--loss-mask``,
    ``--template``; LoRA: the study's)."""
    from attriblm.train.finetune import TrainSettings

    return TrainSettings(
        epochs=p["epochs"],
        lr=p["lr"],
        batch_size=p["train_batch_size"],
        max_length=p["max_length"],
        seed=p["seed"],
        loss_mask=p["loss_mask"],
        template=p["template"],
    )


@analyze_app.command("delta-theta")
@with_options(MODEL, INPUT, exclude=("adapter", "batch_size"))
def delta_theta(
    ctx: typer.Context,
    out: OutOpt = ...,
    vary: Annotated[
        str, typer.Option(help="poison (poisoned fraction) | epochs: what sets the strength.")
    ] = "poison",
    values: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated strengths: fractions in [0, 1) (default 0.05,0.1,0.25,0.5) "
            "or epochs >= 0 (default 1,2,3)."
        ),
    ] = None,
    task: Annotated[str, typer.Option(help="backdoor-1 | backdoor-3 | backdoor-5.")] = (
        "backdoor-1"
    ),
    preset: Annotated[str, typer.Option(help="Task size preset: quick | paper.")] = "quick",
    n_train_per_class: Annotated[
        int | None, typer.Option(help="Override the preset's train rows per class.")
    ] = None,
    n_test_per_class: Annotated[
        int | None, typer.Option(help="Override the preset's held-out rows per class.")
    ] = None,
    poison_fraction: Annotated[
        float | None, typer.Option(help="--vary epochs: poisoned fraction (default: all rows).")
    ] = None,
    data_seed: Annotated[int, typer.Option(help="Seed of the task builder and subsample.")] = 42,
    epochs: EpochsOpt = 10,
    lr: LrOpt = 5e-5,
    train_batch_size: TrainBatchOpt = 24,
    seed: TrainSeedOpt = 42,
    max_new_tokens: MaxNewTokensOpt = 32,
    gen_batch_size: GenBatchOpt = 16,
    quiet: QuietOpt = False,
    config: ConfigOpt = None,
) -> None:
    """‖Δθ‖ vs attack success across backdoor fine-tunes of different strength.

    One fresh adapter per strength; attack success = share of triggered held-out requests
    whose greedy answer is not a refusal (refusal-prefix rule, not a classifier).
    """
    from attriblm.analysis.delta_theta import check_strengths, run_delta_theta
    from attriblm.progress import stage_progress

    strengths = check_strengths(vary, _numbers(values, "--values"))
    settings = _train_settings(ctx.params)
    loaded = load_model_from(ctx.params)
    with stage_progress(not quiet) as progress:
        report = run_delta_theta(
            loaded,
            out,
            vary=vary,
            values=strengths,
            task=task,
            preset=preset,
            n_train_per_class=n_train_per_class,
            n_test_per_class=n_test_per_class,
            poison_fraction=poison_fraction,
            train_settings=settings,
            max_new_tokens=max_new_tokens,
            gen_batch_size=gen_batch_size,
            data_seed=data_seed,
            progress=progress,
        )
    write_command_config(out, ctx)
    for row in report["runs"]:
        console.print(
            f"{row['label']:14s} ‖Δθ‖ {row['delta_norm']['mean']:.3g} · attack success "
            f"{_fmt(row['attack_success'])} · clean refusal {_fmt(row['clean_refusal_rate'])}"
        )
    console.print(f"wrote {out}/delta_theta.json and .png")


@analyze_app.command("subset-retrain")
@with_options(MODEL, TRAIN, QUERIES, ANALYSIS, FIELDS, exclude=("adapter",))
def subset_retrain(
    ctx: typer.Context,
    method: MethodOpt = None,
    out: OutOpt = ...,
    k: Annotated[int, typer.Option(help="Top-k training rows per query go in the subset.")] = 1,
    expect: Annotated[
        str,
        typer.Option(
            help="What a correct answer contains: label | response (last line of the "
            "reference) | auto (label when every label occurs in its response)."
        ),
    ] = "auto",
    subset_seed: Annotated[int, typer.Option(help="Seed of the random subsets.")] = 0,
    epochs: EpochsOpt = 10,
    lr: LrOpt = 5e-5,
    train_batch_size: TrainBatchOpt = 24,
    seed: TrainSeedOpt = 42,
    max_new_tokens: MaxNewTokensOpt = 32,
    gen_batch_size: GenBatchOpt = 16,
    quiet: QuietOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Retrain on each method's top-k rows per query; validation accuracy vs full and random.

    Default methods: gradsim, datainf, lissa-paper, repsim.
    """
    from attriblm.analysis._retrain import resolve_methods
    from attriblm.analysis.generation import resolve_expect
    from attriblm.analysis.subset_retrain import DEFAULT_METHODS, run_subset_retrain
    from attriblm.progress import stage_progress

    p = ctx.params
    names = resolve_methods(method or DEFAULT_METHODS)
    settings = _train_settings(p)
    settings.validate()
    attribution = attribute_settings(p, methods=names)  # template etc.: the fine-tuning's
    train_examples, query_examples = load_data(p, "train", "queries")
    if k < 1:
        raise ConfigError(f"--k must be at least 1, got {k}")
    expect = resolve_expect(query_examples, expect)
    loaded = load_model_from(p)
    with stage_progress(not quiet) as progress:
        report = run_subset_retrain(
            loaded,
            train_examples,
            query_examples,
            out,
            methods=names,
            k=k,
            train_settings=settings,
            settings=attribution,
            expect=expect,
            max_new_tokens=max_new_tokens,
            gen_batch_size=gen_batch_size,
            seed=subset_seed,
            sources={"train": p["train"], "queries": p["queries"]},
            progress=progress,
        )
    write_command_config(out, ctx)
    console.print(
        f"full set ({report['n_train']} rows): accuracy {_fmt(report['full']['accuracy'])}"
    )
    for name, row in report["methods"].items():
        console.print(
            f"{name:12s} subset {row['subset_size']:4d} · accuracy {_fmt(row['accuracy'])} · "
            f"random {_fmt(row['random_accuracy'])}"
        )
    console.print(f"wrote {out}/subset_retrain.json and .png")


@analyze_app.command("counterfactual")
@with_options(MODEL, TRAIN, QUERIES, ANALYSIS, FIELDS, exclude=("adapter",))
def counterfactual(
    ctx: typer.Context,
    method: MethodOpt = None,
    out: OutOpt = ...,
    n_subsets: Annotated[int, typer.Option(help="Random subsets to retrain on (>= 2).")] = 20,
    fraction: Annotated[float, typer.Option(help="Share of training rows per subset.")] = 0.5,
    seeds: Annotated[
        int,
        typer.Option(
            help="Retrainings per subset (>= 2), training seeds --seed, --seed + 1, …: the "
            "actual change is their mean; two seeds' agreement is the noise ceiling."
        ),
    ] = 2,
    subset_seed: Annotated[int, typer.Option(help="Seed of the subsets.")] = 0,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
    epochs: EpochsOpt = 10,
    lr: LrOpt = 5e-5,
    train_batch_size: TrainBatchOpt = 24,
    seed: TrainSeedOpt = 42,
    quiet: QuietOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Linear datamodeling score: do a method's summed scores predict retrained query losses?

    Default methods: gradsim, datainf, lissa-paper, repsim; the table adds the same-label and
    random baselines and the seed-noise ceiling.
    """
    from attriblm.analysis._retrain import resolve_methods
    from attriblm.analysis.counterfactual import (
        DEFAULT_METHODS,
        check_seeds,
        random_subsets,
        run_counterfactual,
    )
    from attriblm.progress import stage_progress

    p = ctx.params
    names = resolve_methods(method or DEFAULT_METHODS)
    settings = _train_settings(p)
    settings.validate()
    if n_boot < 0:
        raise ConfigError(f"--n-boot must be >= 0, got {n_boot}")
    check_seeds(seeds)
    attribution = attribute_settings(p, methods=names)  # template etc.: the fine-tuning's
    train_examples, query_examples = load_data(p, "train", "queries")
    random_subsets(len(train_examples), n_subsets, fraction, subset_seed)  # checks, before loading
    loaded = load_model_from(p)
    with stage_progress(not quiet) as progress:
        report = run_counterfactual(
            loaded,
            train_examples,
            query_examples,
            out,
            methods=names,
            n_subsets=n_subsets,
            fraction=fraction,
            seeds=seeds,
            train_settings=settings,
            settings=attribution,
            n_boot=n_boot,
            seed=subset_seed,
            sources={"train": p["train"], "queries": p["queries"]},
            progress=progress,
        )
    write_command_config(out, ctx)
    rows = {
        **report["methods"],
        "same-label": report["baseline_label"],
        "random": report["baseline_random"],
        "seed ceiling": report["seed_noise_ceiling"],
    }
    for name, row in rows.items():
        low, high = row["ci95"]
        console.print(f"{name:12s} LDS {_fmt(row['lds'])} [{_fmt(low)}, {_fmt(high)}]")
    console.print(f"wrote {out}/counterfactual.json and .png")


@analyze_app.command("layer-sweep")
@with_options(MODEL, TRAIN, QUERIES, INPUT, STORE, FIELDS, exclude=("loss_mask",))
def layer_sweep(
    ctx: typer.Context,
    out: OutOpt = ...,
    layers: Annotated[
        str | None,
        typer.Option(help="Comma-separated layers, 1-based (-1 = last); default: every layer."),
    ] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 200,
    quiet: QuietOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Acc / Cover / AUPRC of rept and repsim at every layer, from one pass per batch."""
    from attriblm.analysis.layer_sweep import METRICS, run_layer_sweep
    from attriblm.progress import stage_progress

    p = ctx.params
    chosen = _numbers(layers, "--layers", int)
    settings = attribute_settings(p)
    train_examples, query_examples = load_data(p, "train", "queries")
    loaded = load_model_from(p)
    with stage_progress(not quiet) as progress:
        report = run_layer_sweep(
            loaded,
            train_examples,
            query_examples,
            out,
            settings=settings,
            layers=chosen,
            n_boot=n_boot,
            sources={"train": p["train"], "queries": p["queries"]},
            progress=progress,
        )
    write_command_config(out, ctx)
    for row in report["rows"]:
        cells = " · ".join(
            f"{name} " + " ".join(f"{m} {_fmt(row[name][m]['value'])}" for m in METRICS)
            for name in ("rept", "repsim")
        )
        console.print(f"layer {row['layer']:3d}: {cells}")
    best = report["best_layer"]
    console.print(
        f"best layer by AUPRC: rept {best['rept']['auprc']}, repsim {best['repsim']['auprc']}"
    )
    console.print(f"wrote {out}/layer_sweep.json and .png")
