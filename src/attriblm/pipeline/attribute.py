"""Attribute queries to training examples with one or more methods and write a run directory.

Run directory (docs/DESIGN.md §2)::

    config.yaml                  resolved settings, enough to repeat the run
    run.json                     versions, wall time per stage, per-method info (λ per block)
    scores/<method>.safetensors  tensor ``scores`` [n_query, n_train] float32, larger = supportive
    factors/<method>.safetensors fitted K-FAC / EK-FAC eigenbases and eigenvalues (train side;
                                 reuse with ``AttributeSettings.factors`` / ``--factors``)
    topk.jsonl                   per method and query: the top-k training rows (index, score, label)
                                 in the metrics' ranking (ties: ``run.json`` ``ranking``)
    data/{train,queries}.jsonl   the examples in file order (labels for ``evaluate``)

The directory is built in a temporary sibling and moved into place only when complete.

Features are computed batch by batch into a :class:`~attriblm.features.store.FeatureStore`
(``AttributeSettings.store``; default ``OUT.store/`` beside the run directory), one shard per
batch. A run that is killed leaves that store; rerunning the same command resumes from it,
computing only the missing batches, and gives bit-identical scores. The default store is removed
after a successful run (unless ``keep_store``) and after a user error; a ``store`` given
explicitly is never removed.

When every requested method can be scored from the store (methods with ``streams = True``,
``gradsim`` and ``datainf``: :mod:`attriblm.methods.streaming`) and the run is a single process,
the train gradients are never loaded whole: they are scored shard by shard, so memory does not
grow with ``n_train × d`` (``run.json`` records ``"streamed": true``).

The steps (:func:`attribute`): settings checked (:mod:`attriblm.pipeline.settings`), a feature
plan (:mod:`attriblm.pipeline.plan`), the store opened, train and query features built
(:mod:`attriblm.pipeline.features`), each method fitted and scored
(:mod:`attriblm.pipeline.scoring`), the run information assembled
(:mod:`attriblm.pipeline.run_info`), the directory written, the store cleaned up.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from attriblm.data.schema import Example
from attriblm.dist import SINGLE, Dist
from attriblm.dist import current as current_dist
from attriblm.errors import AttriblmError
from attriblm.features.store import FeatureStore
from attriblm.io import staged_directory
from attriblm.models.loading import LoadedModel
from attriblm.outputs import RUN, check_output_dir, check_store_dir, output_lock
from attriblm.pipeline.features import (  # noqa: F401  (re-exported)
    FeatureBuilder,
    encode_with_warning,
    open_store,
    plan_inputs,
    resolve_checkpoints,
    store_settings,
)
from attriblm.pipeline.plan import FeaturePlan, create_methods, resolve_methods
from attriblm.pipeline.run_info import example_rows, feature_info, run_config, run_info, topk_rows
from attriblm.pipeline.scoring import Scored, fit_and_score
from attriblm.pipeline.settings import AttributeSettings, check_store_options  # noqa: F401
from attriblm.progress import StageProgress, no_progress
from attriblm.rundir import RunDir


@dataclass
class AttributionRun:
    """What :func:`attribute` produced: scores per method (``[n_query, n_train]``), run info."""

    out_dir: Path
    scores: dict[str, torch.Tensor]
    info: dict


def attribute(
    loaded: LoadedModel,
    train: Sequence[Example],
    queries: Sequence[Example],
    settings: AttributeSettings,
    out_dir: Path | str,
    *,
    sources: dict[str, str] | None = None,
    progress: StageProgress = no_progress,
    command_options: dict | None = None,
    finalize: Callable[[Path], None] | None = None,
    overwrite: bool = False,
) -> AttributionRun:
    """Score every query against every training example with each method in ``settings``.

    Args:
        loaded: the fine-tuned model (a PEFT LoRA model) and its tokenizer.
        train, queries: examples in file order; columns / rows of the score matrices follow it.
        sources: names of the data (e.g. ``{"train": "data.jsonl", "queries": ...}``), recorded
            in ``config.yaml`` and used in messages.
        command_options: the `attribute` command's resolved flags, recorded in ``config.yaml``
            so that ``attriblm attribute --config RUN/config.yaml`` repeats the run.
        finalize: called with the staged run directory once every file is in it, before it
            is moved into place (e.g. ``trace`` adds its generations and its own config).
        overwrite: replace ``out_dir`` when it holds an earlier run (else OutputError).

    The run directory and the feature store are checked before any work
    (:mod:`attriblm.outputs`: never a file or a directory attriblm did not write) and locked
    against a second writer for the whole call.

    Returns:
        The scores per method (``[n_query, n_train]`` float32, larger = more supportive) and
        the run information written to ``run.json``.
    """
    settings.validate()  # again: the fields may have changed since construction
    with claim_outputs(out_dir, settings, overwrite=overwrite, dist=current_dist()):
        return _attribute(
            loaded,
            train,
            queries,
            settings,
            Path(out_dir).expanduser(),
            sources=sources,
            progress=progress,
            command_options=command_options,
            finalize=finalize,
        )


@contextmanager
def claim_outputs(
    out_dir: Path | str,
    settings: AttributeSettings,
    *,
    overwrite: bool = False,
    dist: Dist | None = SINGLE,
) -> Iterator[None]:
    """Check the run directory and feature store (OutputError naming them), then lock them.

    ``dist`` is this process's place in a torchrun group: rank 0 locks the run directory and
    every rank its own store; ``None`` checks only (before the group exists).
    """
    out_dir = check_output_dir(out_dir, RUN, overwrite=overwrite)
    explicit = settings.store is not None
    store_dir = Path(settings.store).expanduser() if explicit else default_store_dir(out_dir)
    store_option = "--store" if explicit else "feature store"
    check_store_dir(store_dir, option=store_option)  # under torchrun: holds rank-R-of-W/
    if dist is not None and dist.active:
        check_store_dir(rank_store_dir(store_dir, dist), option=store_option)
    with ExitStack() as stack:
        if dist is not None:
            if dist.is_main:
                stack.enter_context(output_lock(out_dir))
            stack.enter_context(output_lock(rank_store_dir(store_dir, dist), option=store_option))
        yield


def _attribute(
    loaded: LoadedModel,
    train: Sequence[Example],
    queries: Sequence[Example],
    settings: AttributeSettings,
    out_dir: Path,
    *,
    sources: dict[str, str] | None,
    progress: StageProgress,
    command_options: dict | None,
    finalize: Callable[[Path], None] | None,
) -> AttributionRun:
    """:func:`attribute` once its outputs are checked and locked: the steps in order."""
    sources = {"train": "train", "queries": "queries", **(sources or {})}
    settings.check_data(sources, train, queries)
    dist = current_dist()
    names = resolve_methods(settings.methods)
    methods = create_methods(names, settings)
    plan = FeaturePlan.from_methods(methods, settings, allow_stream=not dist.active)
    explicit = settings.store is not None
    store_dir = Path(settings.store) if explicit else default_store_dir(out_dir)
    keep = explicit or settings.keep_store
    checkpoints, moments = plan_inputs(loaded, settings, plan)  # their errors before any work
    features = feature_info(loaded, settings, plan, moments)  # checks RepT's layer
    store = open_store(rank_store_dir(store_dir, dist), loaded, settings)
    builder = FeatureBuilder(
        loaded, settings, store, plan, checkpoints=checkpoints, moments=moments,
        progress=progress, dist=dist,
    )  # fmt: skip
    try:
        total_start = time.perf_counter()
        # K-FAC statistics come from the training rows only
        train_f, train_truncated = builder.build("train", train, sources["train"])
        query_f, query_truncated = builder.build("queries", queries, sources["queries"])
        if not dist.is_main:  # every rank holds the features now; rank 0 scores and writes
            if not keep:
                store.remove()
            return AttributionRun(out_dir=out_dir, scores={}, info={"rank": dist.rank})
        timings = builder.timings
        scored = fit_and_score(
            methods,
            train_f,
            query_f,
            plan,
            store=store,
            timings=timings,
            progress=progress,
            options=settings.options,
        )
        info = run_info(
            loaded=loaded, settings=settings, n={"train": len(train), "queries": len(queries)},
            truncated={"train": train_truncated, "queries": query_truncated}, train=train_f,
            plan=plan, features=features, methods=scored.info, checkpoints=builder.checkpoints,
            timings=timings, store=store, store_rows=builder.counts, kept=keep, dist=dist,
        )  # fmt: skip
        config = run_config(loaded, settings, names, sources, out_dir, len(train), command_options)
        info = _write_run(
            out_dir, scored, info, config, train, queries, settings.topk, total_start, finalize
        )
        run = AttributionRun(out_dir=out_dir, scores=scored.scores, info=info)
    except AttriblmError:
        if not explicit:  # a user error would recur on resume: leave no output behind
            _remove_store(store, store_dir, dist)
        raise
    if not keep:
        _remove_store(store, store_dir, dist)
    return run


def _write_run(
    out_dir: Path,
    scored: Scored,
    info: dict,
    config: dict,
    train: Sequence[Example],
    queries: Sequence[Example],
    topk: int,
    total_start: float,
    finalize: Callable[[Path], None] | None,
) -> dict:
    """Write the run directory (:class:`~attriblm.rundir.RunDir`) in a staging sibling and move
    it into place when complete; returns the run information as written."""
    with staged_directory(out_dir) as staging:
        run_dir = RunDir(staging).create()
        for name, matrix in scored.scores.items():
            run_dir.write_scores(name, matrix)
        for name, fitted in scored.fits.items():
            fitted.save_factors(run_dir.factors_file(name))
        rows = [row for name, m in scored.scores.items() for row in topk_rows(name, m, train, topk)]
        run_dir.write_topk(rows)
        run_dir.write_data("train", example_rows(train))
        run_dir.write_data("queries", example_rows(queries))
        info["timings_seconds"]["total"] = time.perf_counter() - total_start
        info = run_dir.write_info(info)
        run_dir.write_config(config)
        if finalize is not None:
            finalize(staging)
    return info


def rank_store_dir(store_dir: Path, dist: Dist) -> Path:
    """The store of this process: ``store_dir`` itself, or ``store_dir/rank-R-of-W`` under
    torchrun (each rank stores and resumes its own batches; no shared filesystem needed)."""
    if not dist.active:
        return store_dir
    return store_dir / f"rank-{dist.rank}-of-{dist.world_size}"


def _remove_store(store: FeatureStore, store_dir: Path, dist: Dist) -> None:
    store.remove()
    if dist.active and dist.is_main:
        shutil.rmtree(store_dir, ignore_errors=True)  # the other ranks' leftovers, if any


def default_store_dir(out_dir: Path | str) -> Path:
    """``OUT.store``: the feature store beside run directory ``OUT`` (kept when a run is killed)."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f"{out_dir.name}.store")
