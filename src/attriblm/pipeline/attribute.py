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

When every requested method can be scored from the store (``gradsim``, ``datainf``:
:mod:`attriblm.methods.streaming`) and the run is a single process, the train gradients are
never loaded whole: they are scored shard by shard, so memory does not grow with
``n_train × d`` (``run.json`` records ``"streamed": true``).
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from attriblm import __version__
from attriblm import validation as check
from attriblm.config import RESOLVED_KEY
from attriblm.data.schema import Example
from attriblm.data.templates import check_same_formatting, check_template
from attriblm.data.tokenize import (
    check_loss_mask,
    encode_examples,
    encode_prompts,
    loss_mask_identity,
)
from attriblm.dist import SINGLE, Dist
from attriblm.dist import current as current_dist
from attriblm.errors import AttriblmError, ConfigError
from attriblm.features.adam import LESS_PROJ_DIM, less_features
from attriblm.features.checkpoints import ADAPTER_FILE, adapter_weights, matches_current_weights
from attriblm.features.gather import gather_rows, gather_stats
from attriblm.features.gradients import per_example_gradients
from attriblm.features.kfac import KFACCollector, factors_from_sums
from attriblm.features.projection import PROJECTION_KINDS, Projection
from attriblm.features.representations import representations
from attriblm.features.rept import n_layers, rept_features, resolve_layer
from attriblm.features.store import (
    FeatureStore,
    batch_ranges,
    check_store_dtype,
    settings_key,
    tensors_digest,
)
from attriblm.io import staged_directory
from attriblm.methods.base import AttributionMethod, FeatureSet, method_needs
from attriblm.methods.damping import Damping
from attriblm.methods.registry import (
    check_method_options,
    create_method,
    expand_method_names,
    get_method_class,
)
from attriblm.methods.streaming import STREAMABLE, streamed_output
from attriblm.metrics.ranking import TIE_RULE, TIE_SEED, rank_train
from attriblm.models.loading import LoadedModel
from attriblm.outputs import RUN, check_output_dir, check_store_dir, output_lock
from attriblm.progress import StageProgress, no_progress
from attriblm.rundir import RunDir, method_file
from attriblm.train.checkpoints import Checkpoint, discover_checkpoints, load_checkpoints
from attriblm.train.optimizer_state import AdamMoments, moments_of


@dataclass
class AttributeSettings:
    """Everything that decides an attribution run's numbers (saved as ``config.yaml``).

    Feature store (:mod:`attriblm.features.store`): ``store`` is its directory (default
    ``OUT.store``, removed after success unless ``keep_store``; an explicit one is kept);
    ``store_dtype`` ``fp32`` | ``bf16`` | ``fp16`` (:mod:`attriblm.features.row_codec`);
    ``proj_dim`` / ``proj_kind`` / ``proj_seed`` project each gradient block wider than
    ``proj_dim`` (:mod:`attriblm.features.projection`); LESS features are projected the same
    way, with ``proj_dim`` defaulting to 8192 for them. ``rept_layer``: RepT's layer, 1-based,
    ``-1`` = the last. ``options``: each method's own constructor options, ``{method: {key:
    value}}`` (``--option METHOD.KEY=VALUE``; :func:`attriblm.methods.registry.accepted_options`).
    """

    methods: list[str] = field(default_factory=lambda: ["all"])
    template: str = "llama2"
    loss_mask: str = "response"
    max_length: int = 128
    batch_size: int = 16
    damping_mode: str = "relative"
    damping: float = 0.1
    repsim_layer: int = -1
    repsim_pooling: str = "last"
    rept_layer: int = -1
    topk: int = 10
    checkpoints: str | None = None
    factors: str | None = None
    store: str | None = None
    keep_store: bool = False
    store_dtype: str = "fp32"
    proj_dim: int | None = None
    proj_kind: str = "gaussian"
    proj_seed: int = 0
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """ConfigError naming the option for a value no run can use (also on construction;
        :func:`attribute` checks again, after any change to the fields)."""
        from attriblm.features.representations import POOLINGS

        if isinstance(self.methods, str) or not all(isinstance(m, str) for m in self.methods):
            raise ConfigError(f"--method: expected a list of method names, got {self.methods!r}")
        check_template(self.template)
        check_loss_mask(self.loss_mask)
        check.integer("max_length", self.max_length, 2)
        check.integer("batch_size", self.batch_size, 1)
        check.integer("topk", self.topk, 1)
        check.integer("repsim_layer", self.repsim_layer)
        check.one_of("repsim_pooling", self.repsim_pooling, POOLINGS)
        Damping(self.damping_mode, self.damping)
        if self.proj_dim is not None:
            check.integer("proj_dim", self.proj_dim, 1)
        check.one_of("proj_kind", self.proj_kind, PROJECTION_KINDS)  # even without --proj-dim
        check.integer("proj_seed", self.proj_seed)
        check_store_options(self)
        check_method_options(self.options, self.methods)

    def projection(self) -> Projection | None:
        """The random projection of gradient blocks (``proj_dim`` set), else ``None``."""
        if self.proj_dim is None:
            return None
        return Projection(dim=int(self.proj_dim), kind=self.proj_kind, seed=int(self.proj_seed))

    def less_projection(self) -> Projection:
        """The projection of LESS features: ``proj_dim`` (default 8192), kind and seed."""
        dim = LESS_PROJ_DIM if self.proj_dim is None else int(self.proj_dim)
        return Projection(dim=dim, kind=self.proj_kind, seed=int(self.proj_seed))


@dataclass
class AttributionRun:
    """What :func:`attribute` produced: scores per method (``[n_query, n_train]``), run info."""

    out_dir: Path
    scores: dict[str, torch.Tensor]
    info: dict


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {
        "attriblm": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
    }


def encode_with_warning(examples, loaded, settings, source):
    """Encode ``examples`` with ``settings``; warn once with the count truncated to max_length."""
    encoded = encode_examples(
        examples,
        loaded.tokenizer,
        template=settings.template,
        loss_mask=settings.loss_mask,
        max_length=settings.max_length,
        source=source,
    )
    truncated = sum(e.truncated for e in encoded)
    if truncated:
        warnings.warn(
            f"{source}: {truncated} of {len(encoded)} examples truncated to "
            f"max_length={settings.max_length}",
            stacklevel=3,
        )
    return encoded, truncated


def check_store_options(settings: AttributeSettings) -> None:
    """ConfigError naming the option for a bad ``store_dtype`` / ``proj_*`` value."""
    check_store_dtype(settings.store_dtype)
    settings.projection()


def _digest_examples(examples: Sequence[Example]) -> str:
    return settings_key([asdict(e) for e in examples])


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def store_settings(loaded: LoadedModel, settings: AttributeSettings) -> dict:
    """What every stored feature depends on: the store's settings key (JSON-serialisable).

    The model identity, a digest of its LoRA weights (a retrained adapter at the same path is
    another model), and the options that shape batches (template, max length, batch size).
    Data, loss mask, RepSim options and checkpoints enter each kind's own key.
    """
    lora = ((n, p) for n, p in loaded.model.named_parameters() if "lora_" in n)
    return {
        "model": json.loads(json.dumps(loaded.identity, default=str)),
        "lora_weights": tensors_digest(lora),
        "template": settings.template,
        "max_length": settings.max_length,
        "batch_size": settings.batch_size,
    }


Computed = dict[str, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]]


def _fill(
    store: FeatureStore,
    kinds: dict[str, str],
    n_rows: int,
    batch_size: int,
    compute: Callable[[int, int], Computed],
    progress: StageProgress,
    description: str,
    counts: dict[str, dict[str, int]],
    project: Sequence[str] = (),
    dist: Dist = SINGLE,
) -> None:
    """Compute this rank's batches of ``kinds`` (kind → data key) missing from ``store``.

    ``compute(start, stop)`` returns kind → ``(rows, stats)`` for rows ``[start, stop)``; it is
    called only for batches some kind lacks, with the same batch boundaries as an
    uninterrupted single-process run (one shard per batch). Under torchrun a rank owns batches
    ``rank, rank + W, …`` (:meth:`Dist.mine`). The progress bar counts the rank's rows: reused
    ones first, then each computed batch after its shards are written.
    """
    for kind, key in kinds.items():
        store.begin(kind, n_rows=n_rows, key=key, project=kind in project)
    owned = dist.mine(batch_ranges(n_rows, batch_size))
    pending = [r for r in store.pending(list(kinds), batch_size) if r in owned]
    computed = sum(stop - start for start, stop in pending)
    reused = sum(stop - start for start, stop in owned) - computed
    for kind in kinds:
        counts[kind] = {"reused": reused, "computed": computed}
    if dist.active:
        description = f"{description} · rank {dist.rank} of {dist.world_size}"
    advance = progress(description, reused + computed)
    if reused:
        advance(reused)
    for start, stop in pending:
        out = compute(start, stop)
        for kind in kinds:
            rows, stats = out[kind]
            store.write(kind, start, stop, rows, stats)
        advance(stop - start)
    store.compact()  # the manifest lists every shard again; the journal is gone


def compute_features(
    loaded: LoadedModel,
    examples: Sequence[Example],
    settings: AttributeSettings,
    *,
    need_grads: bool,
    need_reprs: bool,
    source: str,
    need_kfac: bool = False,
    checkpoints: Sequence[Checkpoint] | None = None,
    progress: StageProgress = no_progress,
    timings: dict[str, float] | None = None,
    store: FeatureStore | None = None,
    role: str = "features",
    counts: dict[str, dict[str, int]] | None = None,
    dist: Dist = SINGLE,
    load_grads: bool = True,
    need_rept: bool = False,
    need_adam: bool = False,
    adam_moments: AdamMoments | None = None,
) -> tuple[FeatureSet, int]:
    """Per-example LoRA gradients, K-FAC factors, per-checkpoint gradients, representations,
    RepT and LESS features.

    ``need_kfac`` collects the K-FAC factors (:mod:`attriblm.features.kfac`) in the same
    forward/backward pass as the gradients (so it implies gradients); ``checkpoints`` adds one
    gradient set per checkpoint and their learning rates (TracIn). Returns the feature set and
    the number of truncated examples.

    Features are computed one batch at a time into ``store`` (kinds ``grads:<role>``,
    ``kfac:<role>`` with per-batch K-FAC sums, ``ckpt-<c>:<role>``, ``reprs:<role>``); batches
    the store already holds are skipped (resume). Without a store they are kept in memory.
    ``counts`` receives kind → ``{"reused": rows, "computed": rows}``. Under torchrun
    (``dist``) each rank computes its own batches into its own store and every rank gets the
    whole feature set (:mod:`attriblm.features.gather`). ``load_grads=False`` leaves the
    gradients in the store only (``grads`` is ``None``; scored by streaming).

    ``need_rept``: RepT features at ``settings.rept_layer`` (kind ``rept:<role>``, one more
    forward/backward pass on the response loss). ``need_adam``: LESS features (kind
    ``adam:<role>``) from the gradient pass's unprojected gradients, Adam-transformed with
    ``adam_moments`` when given (the train side) and plain otherwise (queries).
    """
    timings = {} if timings is None else timings
    counts = {} if counts is None else counts
    if need_kfac and settings.proj_dim is not None:
        raise ConfigError("--proj-dim: K-FAC factors need unprojected gradients; drop --proj-dim")
    store = FeatureStore(None, projection=settings.projection()) if store is None else store
    model, bs = loaded.model, settings.batch_size
    pad_id = loaded.tokenizer.pad_token_id
    grads, reprs, truncated, kfac = None, None, 0, None
    ckpt_grads, ckpt_lrs = None, None
    encoded = None
    row_names = [f"{source} row {i + 1}" for i in range(len(examples))]
    data = _digest_examples(examples)
    if need_grads or need_kfac or need_adam or checkpoints:
        encoded, truncated = encode_with_warning(examples, loaded, settings, source)
    grad_key = settings_key({"data": data, "loss_mask": loss_mask_identity(settings.loss_mask)})

    def gradients(start: int, stop: int, on_batch=None) -> dict[str, torch.Tensor]:
        return per_example_gradients(
            model,
            encoded[start:stop],
            pad_token_id=pad_id,
            batch_size=bs,
            names=row_names[start:stop],
            on_batch=on_batch,
        )

    adam_grads = None
    if need_grads or need_kfac or need_adam:
        start = time.perf_counter()
        grads_kind, kfac_kind, adam_kind = f"grads:{role}", f"kfac:{role}", f"adam:{role}"
        kinds = {grads_kind: grad_key} if need_grads or need_kfac else {}
        if need_kfac:
            kinds[kfac_kind] = grad_key
        less_projection = settings.less_projection()
        if need_adam:
            kinds[adam_kind] = settings_key(
                {
                    "data": data,
                    "loss_mask": loss_mask_identity(settings.loss_mask),
                    "moments": None if adam_moments is None else adam_moments.digest,
                    "projection": less_projection.to_json(),
                }
            )
        collector = KFACCollector(model) if need_kfac else None

        def grads_and_sums(lo: int, hi: int) -> Computed:
            if collector is not None:
                collector.take_sums()  # drop anything a failed batch left behind
            block_grads = gradients(lo, hi, None if collector is None else collector.set_batch)
            out: Computed = {grads_kind: (block_grads, None)} if grads_kind in kinds else {}
            if collector is not None:
                out[kfac_kind] = ({}, collector.take_sums())
            if need_adam:
                rows = less_features(block_grads, adam_moments, less_projection)
                out[adam_kind] = (rows, None)
            return out

        try:
            _fill(
                store, kinds, len(encoded), bs, grads_and_sums, progress,
                f"gradients · {source}", counts, [grads_kind], dist,
            )  # fmt: skip
        finally:
            if collector is not None:
                collector.close()
        if load_grads and grads_kind in kinds:
            grads = gather_rows(store, grads_kind, len(encoded), dist)
        if need_adam:
            adam_grads = gather_rows(store, adam_kind, len(encoded), dist)
        if need_kfac:
            kfac = factors_from_sums(gather_stats(store, kfac_kind, dist))
        timings[f"gradients:{source}"] = time.perf_counter() - start
    if checkpoints:
        start = time.perf_counter()
        ckpt_grads = []
        for c, ckpt in enumerate(checkpoints):
            if grads is not None and matches_current_weights(model, ckpt.path):
                ckpt_grads.append(grads)  # the same weights: identical values, no second pass
                continue
            kind = f"ckpt-{c}:{role}"
            key = settings_key(
                {
                    "data": data,
                    "loss_mask": settings.loss_mask,
                    "checkpoint": str(ckpt.path),
                    "weights": _file_digest(Path(ckpt.path) / ADAPTER_FILE),
                }
            )
            with adapter_weights(model, ckpt.path):
                _fill(
                    store,
                    {kind: key},
                    len(encoded),
                    bs,
                    lambda lo, hi, kind=kind: {kind: (gradients(lo, hi), None)},
                    progress,
                    f"checkpoint {c + 1}/{len(checkpoints)} gradients · {source}",
                    counts,
                    [kind],
                    dist,
                )
            ckpt_grads.append(gather_rows(store, kind, len(encoded), dist))
        ckpt_lrs = [c.eta for c in checkpoints]
        timings[f"checkpoint_gradients:{source}"] = time.perf_counter() - start
    if need_reprs:
        # one token over the limit shows which prompts get left-truncated (never silently)
        prompt_ids = encode_prompts(
            examples,
            loaded.tokenizer,
            template=settings.template,
            max_length=settings.max_length + 1,
        )
        long_prompts = sum(len(ids) > settings.max_length for ids in prompt_ids)
        prompt_ids = [ids[-settings.max_length :] for ids in prompt_ids]
        if long_prompts and encoded is None:  # with gradients, the warning above counted them
            truncated = long_prompts
            warnings.warn(
                f"{source}: {long_prompts} of {len(prompt_ids)} prompts left-truncated to "
                f"max_length={settings.max_length} for representations",
                stacklevel=2,
            )
        start = time.perf_counter()
        kind = f"reprs:{role}"
        key = settings_key(
            {"data": data, "layer": settings.repsim_layer, "pooling": settings.repsim_pooling}
        )

        def reprs_batch(lo: int, hi: int) -> Computed:
            rows = representations(
                model,
                prompt_ids[lo:hi],
                pad_token_id=pad_id,
                layer=settings.repsim_layer,
                pooling=settings.repsim_pooling,
                batch_size=bs,
                names=row_names[lo:hi],
            )
            return {kind: ({"reprs": rows}, None)}

        _fill(
            store, {kind: key}, len(prompt_ids), bs, reprs_batch, progress,
            f"representations · {source}", counts, dist=dist,
        )  # fmt: skip
        reprs = gather_rows(store, kind, len(prompt_ids), dist)["reprs"]
        timings[f"representations:{source}"] = time.perf_counter() - start
    rept = None
    if need_rept:
        start = time.perf_counter()
        response = replace(settings, loss_mask="response")  # RepT's loss, whatever the mask
        if encoded is None:
            rept_encoded, truncated = encode_with_warning(examples, loaded, response, source)
        elif settings.loss_mask == "response":
            rept_encoded = encoded
        else:  # truncation was counted (and warned about) with the gradients
            rept_encoded = encode_examples(
                examples,
                loaded.tokenizer,
                template=settings.template,
                max_length=settings.max_length,
                source=source,
            )
        rept = _rept_rows(
            loaded, rept_encoded, settings, data, source, role, store, progress, counts, dist
        )
        timings[f"rept:{source}"] = time.perf_counter() - start
    features = FeatureSet(
        grads=grads,
        reprs=reprs,
        checkpoint_grads=ckpt_grads,
        checkpoint_lrs=ckpt_lrs,
        kfac=kfac,
        rept=rept,
        adam_grads=adam_grads,
    )
    return features, truncated


def _rept_rows(loaded, encoded, settings, data, source, role, store, progress, counts, dist):
    """RepT features ``[n, 2h]`` at ``settings.rept_layer`` of ``encoded`` (response-masked;
    :mod:`attriblm.features.rept`), batch by batch through ``store`` (kind ``rept:<role>``)."""
    layer = resolve_layer(settings.rept_layer, n_layers(loaded.model))
    kind = f"rept:{role}"
    key = settings_key({"data": data, "layer": layer, "loss_mask": "response"})

    def batch(lo: int, hi: int) -> Computed:
        rows = rept_features(
            loaded.model,
            encoded[lo:hi],
            pad_token_id=loaded.tokenizer.pad_token_id,
            layers=[layer],
            batch_size=settings.batch_size,
            names=[f"{source} row {i + 1}" for i in range(lo, hi)],
        )[layer]
        return {kind: ({"rept": rows}, None)}

    _fill(
        store, {kind: key}, len(encoded), settings.batch_size, batch, progress,
        f"RepT features · {source}", counts, dist=dist,
    )  # fmt: skip
    return gather_rows(store, kind, len(encoded), dist)["rept"]


def resolve_checkpoints(loaded: LoadedModel, settings: AttributeSettings) -> list[Checkpoint]:
    """The fine-tune checkpoints for TracIn: ``settings.checkpoints``, else beside the adapter."""
    if settings.checkpoints is not None:
        return load_checkpoints(settings.checkpoints)
    found = discover_checkpoints(loaded.identity.get("adapter"))
    if not found:
        raise ConfigError(
            "method 'tracin' needs the fine-tune's per-epoch checkpoints, but none were found "
            f"beside the adapter ({loaded.identity.get('adapter')}); pass --checkpoints DIR"
        )
    return found


def _create(name: str, settings: AttributeSettings) -> AttributionMethod:
    options: dict = {"damping": Damping(settings.damping_mode, settings.damping)}
    if settings.factors is not None and "kfac" in method_needs(get_method_class(name)):
        options["factors"] = str(Path(settings.factors) / method_file(name))
    return create_method(name, **options, **settings.options.get(name, {}))


def _feature_info(
    loaded: LoadedModel, settings: AttributeSettings, needs: set[str], moments: AdamMoments | None
) -> dict:
    """What the RepT and LESS features were made with (``run.json["features"]``)."""
    info: dict = {}
    if "representation-gradients" in needs:
        layer = resolve_layer(settings.rept_layer, n_layers(loaded.model))
        info["rept"] = {"layer": layer, "position": "last prompt token", "loss_mask": "response"}
    if moments is not None:
        info["less"] = {
            "projection": settings.less_projection().to_json(),
            "betas": [moments.beta1, moments.beta2],
            "eps": moments.eps,
            "step": moments.step,
            "moments_sha256": moments.digest,
        }
    return info


def _topk_rows(
    method: str, scores: torch.Tensor, train: Sequence[Example], k: int, tie_seed: int = TIE_SEED
) -> list[dict]:
    """Per query the top-``k`` training rows of ``scores [n_query, n_train]`` in the metrics'
    ranking (:func:`attriblm.metrics.ranking.rank_train`, ties by the seeded permutation)."""
    k = min(k, scores.size(1))
    order = rank_train(scores, tie_seed)[:, :k]
    values = scores.detach().cpu()
    rows = []
    for q in range(scores.size(0)):
        top = [
            {
                "rank": r + 1,
                "index": int(i),
                "score": float(values[q, i]),
                "label": train[int(i)].label,
            }
            for r, i in enumerate(order[q])
        ]
        rows.append({"method": method, "query": q, "top": top})
    return rows


def _example_rows(examples: Sequence[Example]) -> list[dict]:
    return [asdict(e) for e in examples]


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
    """:func:`attribute` once its outputs are checked and locked."""
    sources = {"train": "train", "queries": "queries", **(sources or {})}
    check_template(settings.template)  # before any work, whichever methods run
    check_loss_mask(settings.loss_mask)
    check_store_options(settings)
    family = check_same_formatting([(sources["train"], train), (sources["queries"], queries)])
    if family is not None:
        warnings.warn(
            f"{sources['train']}: prompts already carry {family} chat-template markup and "
            f"--template {settings.template} wraps them again; give raw prompts",
            stacklevel=2,
        )
    names = expand_method_names(settings.methods)
    methods = {name: _create(name, settings) for name in names}
    needs = {kind for m in methods.values() for kind in method_needs(m)}
    need_grads = "gradients" in needs
    need_reprs = "representations" in needs
    need_kfac = "kfac" in needs and settings.factors is None
    checkpoints = resolve_checkpoints(loaded, settings) if "checkpoints" in needs else None
    adam_moments = moments_of(loaded.identity) if "adam-gradients" in needs else None
    feature_info = _feature_info(loaded, settings, needs, adam_moments)  # checks the layer
    projection = settings.projection()
    if projection is not None and "kfac" in needs:
        kfac_methods = [n for n, m in methods.items() if "kfac" in method_needs(m)]
        raise ConfigError(
            f"--proj-dim: {', '.join(kfac_methods)} need unprojected gradients (K-FAC factors "
            "live in the full LoRA space); drop --proj-dim or those methods"
        )
    out_dir = Path(out_dir)
    explicit = settings.store is not None
    store_dir = Path(settings.store) if explicit else default_store_dir(out_dir)
    keep = explicit or settings.keep_store
    dist = current_dist()
    store = FeatureStore(
        rank_store_dir(store_dir, dist),
        store_settings(loaded, settings),
        dtype=settings.store_dtype,
        projection=projection,
    )
    if store.reset_reason is not None:
        warnings.warn(
            f"{store_dir}: feature store made with {store.reset_reason}; starting it afresh",
            stacklevel=2,
        )
    counts: dict[str, dict[str, int]] = {}
    try:
        timings: dict[str, float] = {}
        total_start = time.perf_counter()

        shared = {
            "need_grads": need_grads,
            "need_reprs": need_reprs,
            "need_rept": "representation-gradients" in needs,
            "need_adam": adam_moments is not None,
            "checkpoints": checkpoints,
            "store": store,
            "counts": counts,
            "progress": progress,
            "timings": timings,
            "dist": dist,
        }
        # the train matrix stays in the store when every method can be scored from it
        streamed = not dist.active and set(names) <= set(STREAMABLE)
        # K-FAC factors come from the training rows only
        train_features, train_truncated = compute_features(
            loaded, train, settings, need_kfac=need_kfac, source=sources["train"], role="train",
            load_grads=not streamed, adam_moments=adam_moments, **shared,
        )  # fmt: skip
        query_features, query_truncated = compute_features(
            loaded, queries, settings, source=sources["queries"], role="queries", **shared
        )
        if not dist.is_main:  # every rank holds the features now; rank 0 scores and writes
            if not keep:
                store.remove()
            return AttributionRun(out_dir=out_dir, scores={}, info={"rank": dist.rank})

        scores: dict[str, torch.Tensor] = {}
        method_info: dict[str, dict] = {}
        tick = progress("scoring", len(methods))
        for name, method in methods.items():
            start = time.perf_counter()
            if streamed:
                output = streamed_output(method, store, "grads:train", query_features.grads)
            else:
                output = method.score(train_features, query_features)
            timings[f"method:{name}"] = time.perf_counter() - start
            scores[name] = output.scores.float()
            method_info[name] = {"seconds": timings[f"method:{name}"], **output.info}
            method_info[name]["options"] = {  # the user's, where the method reports fewer
                **settings.options.get(name, {}),
                **output.info.get("options", {}),
            }
            tick(1)

        info = {
            "versions": _versions(),
            "model": loaded.identity,
            "n_train": len(train),
            "n_query": len(queries),
            "loss_mask": settings.loss_mask,
            "template": settings.template,
            "ranking": {"ties": TIE_RULE, "tie_seed": TIE_SEED},
            "truncated": {"train": train_truncated, "queries": query_truncated},
            "blocks": (
                {b: list(g.shape[1:]) for b, g in train_features.grads.items()}
                if train_features.grads is not None
                else {b: [w] for b, w in store.blocks("grads:train").items()}
                if streamed
                else {}
            ),
            "streamed": streamed,
            "features": feature_info,
            "methods": method_info,
            "checkpoints": ([c.to_json() for c in checkpoints] if checkpoints else None),
            "timings_seconds": timings,
            "store": {**store.summary(), "rows": counts, "kept": keep},
            "distributed": {"world_size": dist.world_size, "backend_device": str(dist.device)},
        }
        with staged_directory(out_dir) as staging:
            run_dir = RunDir(staging).create()
            for name, matrix in scores.items():
                run_dir.write_scores(name, matrix)
            for name, method in methods.items():
                if getattr(method, "fitted", None) is not None:
                    method.save_factors(run_dir.factors_file(name))
            topk = [
                row
                for name in names
                for row in _topk_rows(name, scores[name], train, settings.topk)
            ]
            run_dir.write_topk(topk)
            run_dir.write_data("train", _example_rows(train))
            run_dir.write_data("queries", _example_rows(queries))
            info["timings_seconds"]["total"] = time.perf_counter() - total_start
            info = run_dir.write_info(info)
            config = {
                "model": loaded.identity.get("spec"),
                "adapter": loaded.identity.get("adapter"),
                "train": sources["train"],
                "queries": sources["queries"],
                "out": str(out_dir),
                **{k: v for k, v in asdict(settings).items() if k != "methods"},
                **(command_options or {}),
                "method": names,
                RESOLVED_KEY: {"model": dict(loaded.identity), "n_train": len(train)},
            }
            run_dir.write_config(config)
            if finalize is not None:
                finalize(staging)
        run = AttributionRun(out_dir=out_dir, scores=scores, info=info)
    except AttriblmError:
        if not explicit:  # a user error would recur on resume: leave no output behind
            _remove_store(store, store_dir, dist)
        raise
    if not keep:
        _remove_store(store, store_dir, dist)
    return run


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
