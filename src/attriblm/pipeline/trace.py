"""Trace a behaviour: generate answers, keep the ones that show it, attribute those answers.

The workflow of the study authors' follow-up (Li, Zhao, Li, Sun 2025):

1. *generate*: the fine-tuned model answers every prompt through the training template
   (:func:`attriblm.analysis.generation.generate_answers`; greedy unless ``temperature > 0``,
   then seeded sampling; batched and left-padded);
2. *detect*: a :class:`~attriblm.pipeline.detect.Detector` keeps the generations that show the
   behaviour (none kept is a user error: there is nothing to trace);
3. *attribute*: each kept ``(prompt, generation)`` pair is a query of an ordinary
   :func:`attriblm.pipeline.attribute.attribute` run, the generation as its response, with the
   target label (if given) as its label.

The run directory is an attribute run (``scores/``, ``topk.jsonl``, ``data/queries.jsonl`` =
the kept pairs, ``run.json``, ``config.yaml``) plus ``generations.jsonl``: one line per prompt,
in order, ``{"index", "prompt", "generation", "kept", "query"}`` (``query`` = the row of the
kept pair in the score matrices, ``None`` if not kept). ``run.json["trace"]`` records the
generation and detection settings and counts; ``config.yaml`` holds the ``trace`` command's
options (``attriblm trace --config RUN/config.yaml`` repeats the run). With a target label the
run is then evaluated (``metrics.json``; relevance = train label == target, including the
pooled top-k metrics of :mod:`attriblm.metrics.pooled`). Everything is written atomically; a
user error leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from attriblm.analysis.generation import generate_answers
from attriblm.config import RESOLVED_KEY
from attriblm.data.schema import Example
from attriblm.data.templates import check_template
from attriblm.dist import current as current_dist
from attriblm.errors import ConfigError, DataError
from attriblm.io import read_yaml
from attriblm.methods.registry import expand_method_names
from attriblm.models.loading import LoadedModel
from attriblm.outputs import RUN, check_output_dir
from attriblm.pipeline.attribute import AttributeSettings, AttributionRun, attribute
from attriblm.pipeline.detect import parse_detector
from attriblm.pipeline.evaluate import evaluate_run
from attriblm.progress import StageProgress, no_progress
from attriblm.rundir import GENERATIONS_FILE, RunDir


@dataclass
class TraceSettings:
    """Generation and detection settings of a trace (recorded in ``run.json["trace"]``)."""

    detect: str = "all"
    max_new_tokens: int = 64
    temperature: float = 0.0
    seed: int = 0
    gen_batch_size: int = 16
    target_label: str | None = None


@dataclass
class TraceRun:
    """What :func:`trace` produced: every generation with its verdict, and the attribution."""

    out_dir: Path
    generations: list[dict]
    attribution: AttributionRun
    metrics: dict | None

    @property
    def n_kept(self) -> int:
        return sum(g["kept"] for g in self.generations)


def _snippet(text: str, width: int = 60) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= width else one_line[: width - 1] + "…"


def trace(
    loaded: LoadedModel,
    train: Sequence[Example],
    prompts: Sequence[str],
    settings: AttributeSettings,
    trace_settings: TraceSettings,
    out_dir: Path | str,
    *,
    sources: dict[str, str] | None = None,
    progress: StageProgress = no_progress,
    log: Callable[[str], None] = lambda _line: None,
    command_options: dict | None = None,
    overwrite: bool = False,
) -> TraceRun:
    """Generate, detect and attribute (module docstring); writes the run directory ``out_dir``.

    Args:
        loaded: the fine-tuned model (LoRA adapter loaded) and its tokenizer.
        train: the training examples (columns of the score matrices, in file order).
        prompts: raw prompts (the template is applied here), in order.
        sources: ``{"train": ..., "prompts": ...}`` names for messages and ``config.yaml``.
        log: receives one line after detection (how many generations were kept).
        command_options: the ``trace`` command's resolved flags, for ``config.yaml``.
        overwrite: replace ``out_dir`` when it holds an earlier run (else OutputError); the
            run directory is checked before anything is generated.

    Returns:
        Every generation with its verdict, the attribution run (scores ``[n_kept, n_train]``,
        larger = more supportive) and, with a target label, the metrics.
    """
    sources = {"train": "train", "prompts": "prompts", **(sources or {})}
    check_output_dir(out_dir, RUN, overwrite=overwrite)  # before generating anything
    detector = parse_detector(trace_settings.detect)
    _check_inputs(train, prompts, settings, trace_settings.target_label, sources["train"])
    target = trace_settings.target_label
    advance = progress("generating", len(prompts))
    answers = generate_answers(
        loaded,
        list(prompts),
        template=settings.template,
        max_new_tokens=trace_settings.max_new_tokens,
        batch_size=trace_settings.gen_batch_size,
        max_length=settings.max_length,
        progress=advance,
        temperature=trace_settings.temperature,
        seed=trace_settings.seed,
    )
    tick = progress(f"detecting · {detector.spec}", len(answers))
    records, queries = _detect(detector, prompts, answers, target, tick)
    log(f"detect {detector.spec}: kept {len(queries)} of {len(records)} generations")
    if not queries:
        raise DataError(
            f"--detect {detector.spec}: kept 0 of {len(records)} generations, nothing to trace "
            f"(first generation: {_snippet(answers[0])!r}); loosen --detect or check --adapter"
        )
    trace_info = {
        **asdict(trace_settings),
        "detector_rule": detector.rule,
        "decoding": "greedy" if trace_settings.temperature == 0 else "sampled (seeded)",
        "n_prompts": len(records),
        "n_kept": len(queries),
        "prompts": sources["prompts"],
    }

    def finalize(staging: Path) -> None:
        run_dir = RunDir(staging)
        run_dir.write_generations(records)
        run_dir.write_info({**run_dir.read_info(), "trace": trace_info})
        config = _trace_config(
            read_yaml(run_dir.config_yaml), trace_settings, prompts, command_options, trace_info
        )
        run_dir.write_config(config)

    run = attribute(
        loaded,
        train,
        queries,
        settings,
        out_dir,
        sources={"train": sources["train"], "queries": f"{GENERATIONS_FILE} (kept)"},
        progress=progress,
        finalize=finalize,
        overwrite=overwrite,
    )
    if not current_dist().is_main:  # under torchrun rank 0 writes and evaluates the run
        return TraceRun(out_dir=Path(out_dir), generations=records, attribution=run, metrics=None)
    metrics = evaluate_run(out_dir, target_label=target) if target is not None else None
    return TraceRun(out_dir=Path(out_dir), generations=records, attribution=run, metrics=metrics)


def _check_inputs(
    train: Sequence[Example],
    prompts: Sequence[str],
    settings: AttributeSettings,
    target: str | None,
    train_source: str,
) -> None:
    """ConfigError for a run that cannot work, before anything is generated."""
    check_template(settings.template)
    expand_method_names(settings.methods)
    if not prompts:
        raise ConfigError("nothing to trace: give prompts (--prompts FILE or --prompt TEXT)")
    if target is not None and not any(e.label == target for e in train):
        present = sorted({str(e.label) for e in train})
        raise ConfigError(
            f"--target-label {target!r}: no row of {train_source} has this label "
            f"(labels: {present})"
        )


def _detect(
    detector, prompts: Sequence[str], answers: Sequence[str], target: str | None, tick
) -> tuple[list[dict], list[Example]]:
    """Every generation's record (``generations.jsonl`` rows) and the kept ones as queries."""
    records: list[dict] = []
    queries: list[Example] = []
    for index, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        kept = detector(answer)
        records.append(
            {
                "index": index,
                "prompt": prompt,
                "generation": answer,
                "kept": kept,
                "query": len(queries) if kept else None,
            }
        )
        if kept:
            queries.append(Example(prompt=prompt, response=answer, label=target))
        tick(1)
    return records, queries


def _trace_config(
    attribute_config: dict,
    trace_settings: TraceSettings,
    prompts: Sequence[str],
    command_options: dict | None,
    trace_info: dict,
) -> dict:
    """``config.yaml`` of a trace: the ``trace`` command's options (so ``--config`` repeats it)."""
    config = {k: v for k, v in attribute_config.items() if k not in ("queries", RESOLVED_KEY)}
    if command_options is not None:
        config.update(command_options)
    else:  # the Python API: the prompts themselves stand in for --prompts / --prompt
        config.update(asdict(trace_settings))
        config["prompt"] = list(prompts)
    config["method"] = attribute_config["method"]
    config[RESOLVED_KEY] = {**attribute_config.get(RESOLVED_KEY, {}), "trace": trace_info}
    return config
