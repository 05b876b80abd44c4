"""`attriblm demo`: the whole pipeline on the offline default model in a few minutes on a CPU.

Builds a small grammars task (10 rewrite rules), fine-tunes LoRA, attributes the test queries
with every method, and evaluates. The demo departs from the study's recipe only where a laptop
needs it, and says so in ``demo.json``: fewer rows, fewer epochs, a larger learning rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from attriblm.data.tasks import build_task
from attriblm.data.writers import write_dataset
from attriblm.io import write_json
from attriblm.models.loading import load_model
from attriblm.outputs import DEMO, check_output_dir, claim_output_dir, output_lock
from attriblm.pipeline.attribute import AttributeSettings, attribute
from attriblm.pipeline.evaluate import evaluate_run
from attriblm.progress import StageProgress, no_progress, step_callback
from attriblm.report.html import render_report
from attriblm.train.finetune import TrainSettings, finetune

REPORT_FILE = "report.html"


def next_steps(out_dir: Path | str) -> list[str]:
    """The commands a newcomer tries after the demo: the same pipeline on their own data."""
    out_dir = Path(out_dir)
    return [
        f"attriblm inspect {out_dir / 'run'} --query 1 --method exact   # one query, here",
        "attriblm finetune --model default --train mydata.jsonl --out ft --epochs 3",
        "attriblm attribute --model default --adapter ft --train mydata.jsonl "
        "--queries myqueries.jsonl -m all --out run && attriblm evaluate --run run",
    ]


@dataclass
class DemoSettings:
    """The demo's sizes and recipe (the study's LoRA settings; shorter, hotter training)."""

    task: str = "grammars"
    preset: str = "demo"
    seed: int = 42
    train: TrainSettings = field(
        default_factory=lambda: TrainSettings(epochs=4, lr=5e-4, batch_size=8)
    )
    attribute: AttributeSettings = field(default_factory=AttributeSettings)


def run_demo(
    out_dir: Path | str,
    *,
    model: str = "default",
    settings: DemoSettings | None = None,
    progress: StageProgress = no_progress,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict:
    """Run build → finetune → attribute → evaluate under ``out_dir``; returns the metrics report.

    Layout: ``out_dir/data`` (the task), ``out_dir/finetune`` (adapters, log), ``out_dir/run``
    (the attribution run directory), ``out_dir/report.html`` (the run's HTML report),
    ``out_dir/demo.json`` (settings and wall time per stage).
    ``out_dir`` must be new, empty or an earlier demo's (:mod:`attriblm.outputs`), whose parts
    a rerun replaces.
    """
    settings = settings or DemoSettings()
    out_dir = check_output_dir(out_dir, DEMO)
    with output_lock(out_dir):
        return _run_demo(out_dir, model, settings, progress, log)


def _run_demo(
    out_dir: Path,
    model: str,
    settings: DemoSettings,
    progress: StageProgress,
    log: Callable[[str], None],
) -> dict:
    timings: dict[str, float] = {}
    start = time.perf_counter()

    stage = time.perf_counter()
    base = load_model(model)  # first: a bad --model leaves nothing behind
    timings["load_model"] = time.perf_counter() - stage

    stage = time.perf_counter()
    splits = build_task(settings.task, preset=settings.preset, seed=settings.seed)
    claim_output_dir(out_dir, DEMO)
    write_dataset(splits, out_dir / "data", overwrite=True)
    log(f"task {settings.task}: {len(splits['train'])} train, {len(splits['test'])} queries")
    timings["build"] = time.perf_counter() - stage

    stage = time.perf_counter()
    result = finetune(
        base,
        splits["train"],
        settings.train,
        out_dir / "finetune",
        data_source=f"{out_dir / 'data'}:train",
        progress=step_callback(progress, "fine-tuning"),
    )
    timings["finetune"] = time.perf_counter() - stage
    log(f"fine-tuned: loss {result.losses[0]:.3f} → {result.losses[-1]:.3f}")

    stage = time.perf_counter()
    tuned = load_model(model, adapter=result.adapter_dir)
    attribute_settings = settings.attribute
    attribute_settings.template = settings.train.template
    attribute_settings.loss_mask = settings.train.loss_mask
    attribute_settings.max_length = settings.train.max_length
    attribute(
        tuned,
        splits["train"],
        splits["test"],
        attribute_settings,
        out_dir / "run",
        sources={"train": f"{out_dir / 'data'}:train", "queries": f"{out_dir / 'data'}:test"},
        progress=progress,
        overwrite=True,
    )
    timings["attribute"] = time.perf_counter() - stage

    report = evaluate_run(out_dir / "run")
    render_report(out_dir / "run", out_dir / REPORT_FILE, k=5)
    timings["total"] = time.perf_counter() - start
    write_json(
        out_dir / "demo.json",
        {"model": model, "settings": asdict(settings), "timings_seconds": timings},
    )
    return report
