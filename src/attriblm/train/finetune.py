"""LoRA fine-tuning with one adapter checkpoint per epoch (the study's recipe by default).

Recipe: AdamW over the LoRA matrices only, linear learning-rate decay (no warmup by default),
batches drawn from a permutation of the training set reshuffled every epoch by a
``torch.Generator`` seeded with ``settings.seed``. The objective is the batch mean of
:func:`attriblm.train.loss.per_example_loss` (token-mean loss per example, then mean over
examples) — the same function per-example gradient features differentiate.

Output directory layout::

    checkpoints/epoch-001/ ...   PEFT adapter after each epoch (adapter_model.safetensors + config)
                                 and checkpoint.json (its epoch, steps and TracIn weight η)
    adapter/                     the final adapter (same weights as the last checkpoint) and
                                 the final AdamW moments (:mod:`attriblm.train.optimizer_state`)
    train_log.json               per-step and per-epoch records (see :func:`finetune`)
    config.yaml                  resolved TrainSettings, model identity, data source

Every file and adapter directory is written atomically (temporary sibling, then ``os.replace``).
Re-running into the same directory replaces the previous run's files; any other non-empty
directory, or a file, is refused before any work (:mod:`attriblm.outputs`), and a second
process writing the same directory is refused while the first runs.

Under torchrun (:mod:`attriblm.dist`) every rank draws the same permutation and takes every
``W``-th row of each batch; the loss gradient of ``Σ_{own rows} L_i / B`` is all-reduced (summed),
which is the gradient of the single-process batch mean, so every rank takes the same optimiser
step. Rank 0 writes the outputs. LoRA dropout masks come from each rank's own random stream, so
with ``lora.dropout > 0`` a distributed run is not bit-for-bit the single-process one; with
dropout 0 the adapters agree to float rounding.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from attriblm import validation as check
from attriblm.config import RESOLVED_KEY
from attriblm.data.schema import Example
from attriblm.dist import SINGLE, Dist
from attriblm.dist import current as current_dist
from attriblm.errors import ConfigError, DataError, ModelError
from attriblm.io import read_yaml, staged_directory, write_json, write_yaml
from attriblm.models.loading import LoadedModel
from attriblm.models.lora import LoraSettings, add_lora, has_lora
from attriblm.outputs import FINETUNE, check_output_dir, claim_output_dir, output_lock
from attriblm.train.loss import model_per_example_loss
from attriblm.train.optimizer_state import save_optimizer_state

ProgressFn = Callable[[int, int, float], None]
CHECKPOINT_DIR = "checkpoints"
ADAPTER_DIR = "adapter"
TRAIN_LOG = "train_log.json"
CONFIG_FILE = "config.yaml"
CHECKPOINT_META = "checkpoint.json"


@dataclass
class TrainSettings:
    """Fine-tuning hyper-parameters; defaults are the study's (10 epochs; 50 for harmful mixes)."""

    epochs: int = 10
    lr: float = 5e-5
    batch_size: int = 24
    max_length: int = 128
    seed: int = 42
    loss_mask: str = "response"
    template: str = "llama2"
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lora: LoraSettings = field(default_factory=LoraSettings)

    def to_dict(self) -> dict:
        """Plain, YAML-friendly form (``lora`` as a nested mapping)."""
        data = asdict(self)
        data["lora"] = self.lora.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainSettings:
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown training setting(s) {unknown}; expected some of {sorted(known)}"
            )
        values = dict(data)
        if isinstance(values.get("lora"), dict):
            values["lora"] = LoraSettings.from_dict(values["lora"])
        return cls(**values)

    def validate(self) -> None:
        """ConfigError (naming the CLI option) for values no run can use
        (:mod:`attriblm.validation`, the checks every settings class shares)."""
        from attriblm.data.templates import check_template
        from attriblm.data.tokenize import check_loss_mask

        check.integer("epochs", self.epochs, 1)
        check.integer("batch_size", self.batch_size, 1)
        check.integer("max_length", self.max_length, 2)
        check.integer("seed", self.seed)
        check.integer("warmup_steps", self.warmup_steps, 0)
        check.number("lr", self.lr, positive=True)
        check.number("weight_decay", self.weight_decay, non_negative=True)
        check_template(self.template)
        check_loss_mask(self.loss_mask)
        self.lora.validate()


@dataclass
class FinetuneResult:
    """Where a run's outputs are; ``checkpoint_etas[c]`` weights checkpoint ``c`` in TracIn.

    ``checkpoint_etas[c]`` is ``η_c``, the sum of the learning rates of the optimiser steps since
    the previous checkpoint (for per-epoch checkpoints: the steps of epoch ``c``).
    """

    out_dir: Path
    adapter_dir: Path
    checkpoints: list[Path]
    checkpoint_etas: list[float]
    losses: list[float]


def read_train_config(path: Path | str) -> tuple[TrainSettings, dict]:
    """Read a ``config.yaml`` written by :func:`finetune`: ``(settings, full mapping)``."""
    data = read_yaml(path)
    resolved = data.get(RESOLVED_KEY) if isinstance(data, dict) else None
    if not isinstance(resolved, dict) or "settings" not in resolved:
        raise ConfigError(f"{path} is not a fine-tuning config (no 'resolved: settings' section)")
    return TrainSettings.from_dict(resolved["settings"]), data


def finetune(
    loaded: LoadedModel,
    examples: Sequence[Example],
    settings: TrainSettings,
    out_dir: Path | str,
    *,
    data_source: str = "<examples>",
    progress: ProgressFn | None = None,
    command_options: dict | None = None,
) -> FinetuneResult:
    """Add a LoRA adapter to ``loaded.model`` and train it on ``examples``; see the module doc.

    ``loaded.model`` must be a plain model (ModelError if it already has an adapter); on return
    ``loaded.model`` is the trained ``PeftModel`` in ``eval()`` mode and ``loaded.identity``
    names the final adapter. ``progress(step, total_steps, loss)`` is called after every
    optimiser step (``step`` from 1).

    ``train_log.json``: ``steps`` (``epoch``, ``step``, ``loss`` = batch mean of the per-example
    losses, ``lr`` used by that step), ``epochs`` (``epoch``, ``mean_loss`` over its steps,
    ``lr`` = the learning rate of the epoch's last step, ``lr_next`` = the scheduler's value
    after it, ``lr_sum`` = the sum of the learning rates of the epoch's steps, i.e. the TracIn
    weight ``η`` of its checkpoint, ``first_step`` / ``last_step``, ``wall_s``, ``checkpoint``),
    plus ``n_examples``, ``n_truncated``, ``steps_per_epoch``, ``total_steps``. Each checkpoint
    directory also holds ``checkpoint.json`` with its ``epoch``, ``first_step``, ``last_step``,
    ``lr_sum`` and ``lr_last``, written with the adapter.
    """
    settings.validate()
    if has_lora(loaded.model):
        raise ModelError("finetune needs a plain base model, but the loaded model has an adapter")
    dist = current_dist()
    out = check_output_dir(out_dir, FINETUNE)  # before any work; rank 0 writes it, locked
    with output_lock(out) if dist.is_main else nullcontext():
        return _finetune(
            loaded, examples, settings, out, dist, data_source, progress, command_options
        )


def _finetune(
    loaded: LoadedModel,
    examples: Sequence[Example],
    settings: TrainSettings,
    out: Path,
    dist: Dist,
    data_source: str,
    progress: ProgressFn | None,
    command_options: dict | None,
) -> FinetuneResult:
    """:func:`finetune` once its output directory is checked and locked."""
    encoded = _encode(examples, loaded.tokenizer, settings, data_source)
    if dist.is_main:  # created only now: a data error above leaves nothing behind
        claim_output_dir(out, FINETUNE)
    out = out.resolve()
    model = add_lora(loaded.model, settings.lora, seed=settings.seed)
    base_name = loaded.identity.get("path") or loaded.identity.get("spec")
    model.peft_config["default"].base_model_name_or_path = base_name
    if dist.is_main:
        _write_config(out, settings, loaded.identity, data_source, len(encoded), command_options)

    batches = _Batches(encoded, settings.batch_size, _pad_token_id(loaded.tokenizer), settings.seed)
    total_steps = batches.steps_per_epoch * settings.epochs
    optimizer, scheduler = _optimizer(model, settings, total_steps)
    log = {
        "n_examples": len(encoded),
        "n_truncated": sum(item.truncated for item in encoded),
        "steps_per_epoch": batches.steps_per_epoch,
        "total_steps": total_steps,
        "loss": "mean over the batch of per-example token-mean cross-entropy",
        "loss_mask": settings.loss_mask,
        "world_size": dist.world_size,
        "steps": [],
        "epochs": [],
    }
    device = next(model.parameters()).device
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(settings.seed)  # LoRA dropout masks
        model.train()
        try:
            for epoch in range(1, settings.epochs + 1):
                started = time.perf_counter()
                lr = _train_epoch(model, batches, optimizer, scheduler, epoch, log, progress, dist)
                checkpoint = out / CHECKPOINT_DIR / f"epoch-{epoch:03d}"
                steps = [entry for entry in log["steps"] if entry["epoch"] == epoch]
                meta = {
                    "epoch": epoch,
                    "first_step": steps[0]["step"],
                    "last_step": steps[-1]["step"],
                    "lr_sum": math.fsum(entry["lr"] for entry in steps),
                    "lr_last": lr,
                }
                if dist.is_main:
                    _save_adapter(model, checkpoint, meta)
                log["epochs"].append(
                    {
                        "epoch": epoch,
                        "mean_loss": sum(entry["loss"] for entry in steps) / len(steps),
                        "lr": lr,
                        "lr_next": scheduler.get_last_lr()[0],
                        "lr_sum": meta["lr_sum"],
                        "first_step": meta["first_step"],
                        "last_step": meta["last_step"],
                        "wall_s": time.perf_counter() - started,
                        "checkpoint": str(checkpoint.relative_to(out)),
                    }
                )
                if dist.is_main:
                    write_json(out / TRAIN_LOG, log)
        finally:
            model.eval()
    adapter_dir = out / ADAPTER_DIR
    if dist.is_main:
        _prune_stale_checkpoints(out / CHECKPOINT_DIR, settings.epochs)
        _save_adapter(model, adapter_dir)
        save_optimizer_state(optimizer, model, adapter_dir)  # LESS reads the final moments
    dist.barrier()  # the adapter is on disk before any rank goes on to use it
    loaded.model = model
    loaded.identity["adapter"] = str(adapter_dir)
    return FinetuneResult(
        out_dir=out,
        adapter_dir=adapter_dir,
        checkpoints=[out / entry["checkpoint"] for entry in log["epochs"]],
        checkpoint_etas=[entry["lr_sum"] for entry in log["epochs"]],
        losses=[entry["loss"] for entry in log["steps"]],
    )


def _encode(examples: Sequence[Example], tokenizer, settings: TrainSettings, source: str) -> list:
    """``encode_examples`` under the run's settings; warns once about truncated examples."""
    from attriblm.data.tokenize import encode_warning_truncated

    if not examples:
        raise DataError(f"{source}: no training examples")
    encoded, _ = encode_warning_truncated(
        examples,
        tokenizer,
        template=settings.template,
        loss_mask=settings.loss_mask,
        max_length=settings.max_length,
        source=source,
        stacklevel=4,
    )
    return encoded


def _train_epoch(
    model, batches, optimizer, scheduler, epoch: int, log: dict, progress, dist: Dist
) -> float:
    """One pass over a fresh permutation; appends step records; returns the last step's lr."""
    device = next(model.parameters()).device
    total_steps = log["total_steps"]
    lr = scheduler.get_last_lr()[0]
    for batch in batches.epoch():
        lr = scheduler.get_last_lr()[0]
        loss = _train_step(model, batch, device, optimizer, scheduler, dist)
        step = len(log["steps"]) + 1
        log["steps"].append({"epoch": epoch, "step": step, "loss": loss, "lr": lr})
        if progress is not None:
            progress(step, total_steps, loss)
    return lr


class _Batches:
    """Collated batches of a fresh permutation per epoch, drawn from one seeded generator."""

    def __init__(self, encoded: list, batch_size: int, pad_token_id: int, seed: int) -> None:
        self.encoded = encoded
        self.batch_size = batch_size
        self.pad_token_id = pad_token_id
        self.generator = torch.Generator().manual_seed(seed)
        self.steps_per_epoch = math.ceil(len(encoded) / batch_size)

    def epoch(self) -> Iterator[dict[str, torch.Tensor]]:
        from attriblm.data.tokenize import collate

        order = torch.randperm(len(self.encoded), generator=self.generator).tolist()
        for start in range(0, len(order), self.batch_size):
            rows = [self.encoded[i] for i in order[start : start + self.batch_size]]
            yield collate(rows, self.pad_token_id)


def _pad_token_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    if pad is None:
        raise ModelError("the tokenizer has neither a pad nor an eos token")
    return int(pad)


def _optimizer(model: torch.nn.Module, settings: TrainSettings, total_steps: int):
    """AdamW over the trainable (LoRA) parameters and a linear schedule to zero."""
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ModelError("the LoRA-wrapped model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, settings.warmup_steps, total_steps)
    return optimizer, scheduler


def _train_step(
    model, batch: dict[str, torch.Tensor], device, optimizer, scheduler, dist: Dist = SINGLE
) -> float:
    """One optimiser step on ``mean(per_example_loss)`` over the batch; returns that loss.

    Under torchrun this rank computes rows ``rank, rank + W, …`` and the summed gradients
    (and loss) of all ranks make the step.
    """
    if dist.active:
        loss = _distributed_backward(model, batch, device, dist)
    else:
        loss = model_per_example_loss(model, batch, use_cache=False).mean()
        loss.backward()
    if not torch.isfinite(loss):  # before the step: the weights stay as they were
        raise ModelError(f"training loss became {loss.item()}; try a lower learning rate")
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _distributed_backward(model, batch, device, dist: Dist) -> torch.Tensor:
    """Backward of this rank's share of the batch mean; gradients and loss summed over ranks."""
    n_batch = batch["input_ids"].shape[0]
    params = [p for p in model.parameters() if p.requires_grad]
    rows = {k: v[dist.rank :: dist.world_size] for k, v in batch.items()}
    local = torch.zeros((), device=device)
    if rows["input_ids"].shape[0]:
        local = model_per_example_loss(model, rows, use_cache=False).sum() / n_batch
        local.backward()
    flat = torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
            for p in params
        ]
        + [local.detach().reshape(1).float()]
    )
    flat = dist.all_reduce_sum(flat)
    loss = flat[-1]
    offset = 0
    for p in params:
        size = p.numel()
        p.grad = flat[offset : offset + size].view_as(p).to(p.dtype)
        offset += size
    return loss


def _save_adapter(model, final: Path, meta: dict | None = None) -> Path:
    """``save_pretrained`` the adapter (and ``meta`` as ``checkpoint.json``) into a temporary
    sibling, then move it onto ``final``."""
    with staged_directory(final) as staging:
        model.save_pretrained(staging, safe_serialization=True, save_embedding_layers=False)
        if meta is not None:
            write_json(staging / CHECKPOINT_META, meta)
    return final


def _prune_stale_checkpoints(checkpoint_dir: Path, epochs: int) -> None:
    """Remove ``epoch-NNN`` directories beyond ``epochs`` left by an earlier, longer run."""
    for path in checkpoint_dir.glob("epoch-*"):
        suffix = path.name.removeprefix("epoch-")
        if suffix.isdigit() and int(suffix) > epochs and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def _write_config(
    out: Path,
    settings: TrainSettings,
    identity: dict,
    source: str,
    n: int,
    command_options: dict | None,
) -> None:
    """``config.yaml``: the `finetune` command's flags (so ``--config`` repeats the run) and,
    under ``resolved``, the settings, model identity and data size."""
    flags = {
        "model": identity.get("spec"),
        "train": source,
        "out": str(out),
        **{k: v for k, v in settings.to_dict().items() if k != "lora"},
        "lora_r": settings.lora.r,
        "lora_alpha": settings.lora.alpha,
        "lora_dropout": settings.lora.dropout,
        "lora_targets": ",".join(settings.lora.target_modules),
        **(command_options or {}),
    }
    flags[RESOLVED_KEY] = {
        "settings": settings.to_dict(),
        "model": dict(identity),
        "data": {"source": source, "n_examples": n},
    }
    write_yaml(out / CONFIG_FILE, flags)
