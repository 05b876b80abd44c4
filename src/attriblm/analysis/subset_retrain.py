"""Subset retraining (docs/DESIGN.md §7.5): retrain on the rows each method picks, compare accuracy.

1. A fresh adapter is fine-tuned on the whole training set (a copy of the plain base model).
2. On that model each method scores the validation queries (``[n_query, n_train]``, larger =
   more supportive; features computed once, :func:`attriblm.analysis._retrain.score_methods`).
3. Per method the subset is the union over queries of each query's top-``k`` training rows in
   the metrics' ranking (:func:`attriblm.metrics.ranking.rank_train`: equal scores in a seeded
   random order per query, never file order), so its size is at most ``k · n_query`` (and
   ``n_train``).
4. A fresh adapter is fine-tuned on each subset with the same settings (same epochs, so a
   smaller subset takes fewer optimiser steps), and on a seeded random subset of the same size
   (one draw per distinct size, shared by methods with that size).
5. Validation accuracy of every model = share of queries whose greedy answer
   (:func:`attriblm.analysis.generation.generate_answers`) contains the expected text
   (:func:`~attriblm.analysis.generation.answer_matches`, case-insensitive): under
   ``expect="label"`` the query's label, under ``expect="response"`` the last non-empty line of
   its reference response; ``auto`` picks ``label`` when every query's label occurs in its own
   response (grammars, emotion) and ``response`` otherwise (math: the ``Answer: N`` line).

Adapters are kept under ``OUT/finetunes/{full,<method>,random-<size>}/``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attriblm.analysis._common import output_dir, pyplot, save_figure
from attriblm.analysis._retrain import (
    DEFAULT_METHODS,
    check_base,
    fresh_finetune,
    resolve_methods,
    retrain_settings,
    score_methods,
)
from attriblm.analysis.generation import (
    answer_matches,
    expected_text,
    generate_answers,
    resolve_expect,
)
from attriblm.data.schema import Example
from attriblm.errors import ConfigError
from attriblm.io import write_json
from attriblm.metrics.ranking import TIE_RULE, TIE_SEED, rank_train
from attriblm.models.loading import LoadedModel
from attriblm.pipeline.attribute import AttributeSettings
from attriblm.progress import StageProgress, no_progress
from attriblm.train.checkpoints import load_checkpoints
from attriblm.train.finetune import CHECKPOINT_DIR, TrainSettings

NAME = "subset_retrain"
__all__ = ["DEFAULT_METHODS", "run_subset_retrain", "top_k_union", "random_subset"]


def top_k_union(scores: torch.Tensor, k: int, tie_seed: int = TIE_SEED) -> list[int]:
    """Sorted union over queries of each row's top-``k`` columns of ``scores [n_query, n_train]``.

    Ranking is :func:`attriblm.metrics.ranking.rank_train` (score descending; equal scores in
    the per-query permutation seeded by ``tie_seed``).
    """
    if k < 1:
        raise ConfigError(f"--k must be at least 1, got {k}")
    k = min(k, scores.size(1))
    order = rank_train(scores, tie_seed)[:, :k]
    return sorted({int(i) for i in order.flatten().tolist()})


def random_subset(n_train: int, size: int, seed: int) -> list[int]:
    """``size`` distinct rows of ``range(n_train)``, sorted, drawn by ``random.Random`` from
    ``(seed, size)`` (so a size always gets the same rows)."""
    if not 0 <= size <= n_train:
        raise ConfigError(f"random subset size {size} outside [0, {n_train}]")
    return sorted(random.Random(f"subset-retrain:{seed}:{size}").sample(range(n_train), size))


def accuracy(answers: Sequence[str], expected: Sequence[str]) -> float:
    """Share of answers containing their expected text (see :func:`answer_matches`)."""
    if len(answers) != len(expected) or not answers:
        raise ConfigError("accuracy needs one answer per query and at least one query")
    return sum(answer_matches(a, e) for a, e in zip(answers, expected, strict=True)) / len(answers)


def run_subset_retrain(
    base: LoadedModel,
    train: Sequence[Example],
    queries: Sequence[Example],
    out: Path | str,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    k: int = 1,
    train_settings: TrainSettings | None = None,
    settings: AttributeSettings | None = None,
    expect: str = "auto",
    max_new_tokens: int = 32,
    gen_batch_size: int = 16,
    seed: int = 0,
    sources: dict[str, str] | None = None,
    progress: StageProgress = no_progress,
) -> dict[str, Any]:
    """Validation accuracy after retraining on each method's top-``k`` subset; see the module doc.

    Args:
        base: the plain base model (not modified).
        train, queries: training rows and validation queries (with labels / responses).
        methods: attribution methods (``all`` allowed; ``tracin`` uses the full fine-tune's
            checkpoints).
        k: top-``k`` rows per query go into a method's subset.
        train_settings: fine-tuning settings of every model (default :class:`TrainSettings`).
        settings: attribution settings (batch size, damping, RepSim options); template, loss
            mask and max length are always ``train_settings``' own.
        expect: ``auto`` | ``label`` | ``response`` (what a correct answer contains).
        seed: seed of the random subsets.

    Returns:
        ``{"full": {"n_train", "accuracy"}, "methods": {name: {"subset_size", "indices",
        "accuracy", "random_accuracy", "label_counts"}}, "random": {size: {"indices",
        "accuracy"}}, ...}``; also ``OUT/subset_retrain.json`` and ``.png``.
    """
    check_base(base)
    names = resolve_methods(methods)
    if k < 1:
        raise ConfigError(f"--k must be at least 1, got {k}")
    if not train or not queries:
        raise ConfigError("subset-retrain needs training rows and validation queries")
    train_settings, settings = retrain_settings(train_settings, settings, names)
    mode = resolve_expect(queries, expect)
    expected = [expected_text(q, mode) for q in queries]
    sources = {"train": "train", "queries": "queries", **(sources or {})}
    out_path = output_dir(out)
    started = time.perf_counter()
    fits = _Fits(
        base=base,
        train=train,
        queries=queries,
        expected=expected,
        settings=train_settings,
        root=out_path / "finetunes",
        data_source=sources["train"],
        max_new_tokens=max_new_tokens,
        gen_batch_size=gen_batch_size,
        progress=progress,
    )
    full_model, full = fits.train_and_score(list(range(len(train))), "full")
    checkpoints = load_checkpoints(fits.root / "full" / CHECKPOINT_DIR)
    scores = score_methods(
        full_model, train, queries, names, settings, checkpoints=checkpoints, progress=progress
    )
    del full_model
    method_rows, random_runs = _method_rows(fits, scores, k, seed)
    report: dict[str, Any] = {
        "diagnosis": "subset-retrain",
        "model": base.identity.get("spec"),
        "train": sources["train"],
        "queries": sources["queries"],
        "n_train": len(train),
        "n_query": len(queries),
        "methods": method_rows,
        "full": {"n_train": len(train), **full},
        "random": {str(size): row for size, row in sorted(random_runs.items())},
        "settings": {
            "k": k,
            "seed": seed,
            "tie_seed": TIE_SEED,
            "train": train_settings.to_dict(),
            "batch_size": settings.batch_size,
            "damping_mode": settings.damping_mode,
            "damping": settings.damping,
            "max_new_tokens": max_new_tokens,
            "gen_batch_size": gen_batch_size,
            "decoding": "greedy (do_sample=False), left-padded batches",
        },
        "expect": mode,
        "accuracy_rule": _accuracy_rule(mode),
        "subset_rule": f"union over queries of each query's top-{k} training rows by score "
        f"({TIE_RULE}; tie_seed {TIE_SEED}); random = seeded sample of the same size",
        "expected": expected,
        "wall_s": time.perf_counter() - started,
    }
    write_json(out_path / f"{NAME}.json", report)
    plot_subset_retrain(report, out_path / f"{NAME}.png")
    return report


def _accuracy_rule(mode: str) -> str:
    """The report's ``accuracy_rule`` under ``expect = mode`` (``label`` or ``response``)."""
    expected = (
        "the query's label"
        if mode == "label"
        else "the last non-empty line of the query's reference response"
    )
    return (
        "accuracy = share of queries whose greedy answer contains the expected text "
        "(whitespace collapsed, case-insensitive); expected = " + expected
    )


@dataclass(frozen=True)
class _Fits:
    """What every retraining of one run shares: the base, the rows, the queries' expected texts,
    the fine-tuning settings, the adapters' folder (``root/<label>/``) and generation limits."""

    base: LoadedModel
    train: Sequence[Example]
    queries: Sequence[Example]
    expected: list[str]
    settings: TrainSettings
    root: Path
    data_source: str
    max_new_tokens: int
    gen_batch_size: int
    progress: StageProgress

    def train_and_score(self, rows: list[int], label: str) -> tuple[LoadedModel, dict[str, Any]]:
        """Fine-tune a fresh adapter on ``train[rows]`` (kept in ``root/label``), answer the
        queries greedily; ``(model, {"accuracy", "train_loss", "answers"})``."""
        loaded, losses = fresh_finetune(
            self.base,
            [self.train[i] for i in rows],
            self.settings,
            self.root / label,
            data_source=f"{self.data_source}:{label}",
            progress=self.progress,
        )
        answers = generate_answers(
            loaded,
            [q.prompt for q in self.queries],
            self.settings.template,
            self.max_new_tokens,
            self.gen_batch_size,
            max_length=self.settings.max_length,
            progress=self.progress(f"generate · {label}", len(self.queries)),
        )
        return loaded, {
            "accuracy": accuracy(answers, self.expected),
            "train_loss": losses[-1] if losses else None,
            "answers": answers,
        }


def _method_rows(
    fits: _Fits, scores: dict[str, torch.Tensor], k: int, seed: int
) -> tuple[dict[str, dict[str, Any]], dict[int, dict[str, Any]]]:
    """Retrain on each method's top-``k`` union and on one seeded random subset per distinct
    size (in method order); ``(rows per method, random runs per size)``."""
    train = fits.train
    random_runs: dict[int, dict[str, Any]] = {}
    method_rows: dict[str, dict[str, Any]] = {}
    for name, matrix in scores.items():
        rows = top_k_union(matrix, k)
        _, result = fits.train_and_score(rows, name)
        size = len(rows)
        if size not in random_runs:
            r_rows = random_subset(len(train), size, seed)
            _, r_result = fits.train_and_score(r_rows, f"random-{size}")
            random_runs[size] = {"indices": r_rows, **r_result}
        labels = [train[i].label for i in rows]
        method_rows[name] = {
            "subset_size": size,
            "indices": rows,
            "label_counts": {str(lab): labels.count(lab) for lab in dict.fromkeys(labels)},
            "accuracy": result["accuracy"],
            "random_accuracy": random_runs[size]["accuracy"],
            "train_loss": result["train_loss"],
            "answers": result["answers"],
        }
    return method_rows, random_runs


def plot_subset_retrain(report: dict[str, Any], path: Path) -> Path:
    """Bars: accuracy of the full set, each method's subset and its same-size random subset."""
    plt = pyplot()
    names = list(report["methods"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(names) + 3), 4.6))
    width = 0.38
    xs = list(range(len(names)))
    rows = [report["methods"][n] for n in names]
    ax.bar([x - width / 2 for x in xs], [r["accuracy"] for r in rows], width, label="method subset")
    ax.bar(
        [x + width / 2 for x in xs],
        [r["random_accuracy"] for r in rows],
        width,
        label="random subset (same size)",
        color="tab:gray",
    )
    ax.axhline(report["full"]["accuracy"], color="black", linestyle="--", label="full train set")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{n}\n(n={r['subset_size']})" for n, r in zip(names, rows, strict=True)])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"validation accuracy (contains {report['expect']})")
    ax.set_title(
        f"retraining on top-{report['settings']['k']} subsets · full set n={report['n_train']}"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
