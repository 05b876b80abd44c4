"""Find the per-epoch adapter checkpoints of a fine-tune and their TracIn weights ``η_c``.

A fine-tune directory (:mod:`attriblm.train.finetune`) holds ``checkpoints/epoch-NNN/`` and
``train_log.json``. ``η_c`` is the sum of the learning rates of the optimiser steps since the
previous checkpoint. Why: TracInCP (Pruthi et al. 2020) weights each checkpoint by the step size
applied over the interval it stands for (their derivation takes it constant within the
interval); under a schedule the total step size of the interval is the sum. With one
checkpoint per epoch every interval has the same number of steps, so the sum is that number
times the interval's mean learning rate (the expected rate at which a training example was
visited in it): the checkpoints' relative weights are the mean rates', and the common factor
scales every score alike. The learning rate of the epoch's last step, used before, gives the
final checkpoint almost nothing under a linear decay to 0.

Where ``η_c`` comes from, in order:

1. ``epochs[c].lr_sum`` in ``train_log.json`` (written by current fine-tunes, and repeated in
   ``epoch-NNN/checkpoint.json``; the two must agree);
2. for fine-tunes made before ``lr_sum`` was recorded: the sum of ``steps[*].lr`` over the
   epoch's steps in ``train_log.json`` (the same value, exactly derived; no warning);
3. otherwise a one-line :class:`~attriblm.errors.ConfigError` (no silent fallback to the
   last step's learning rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from attriblm.errors import ConfigError, DataError
from attriblm.io import read_json
from attriblm.train.finetune import CHECKPOINT_DIR, CHECKPOINT_META, TRAIN_LOG

FROM_LOG = "train_log.json epochs[].lr_sum"
FROM_STEPS = "train_log.json steps[].lr summed over the epoch (fine-tune without lr_sum)"


@dataclass(frozen=True)
class Checkpoint:
    """One saved adapter and its TracIn weight.

    Attributes:
        path: the adapter directory ``<ft>/checkpoints/epoch-NNN``.
        eta: ``η_c``, the summed learning rate of the optimiser steps since the previous
            checkpoint.
        epoch: the epoch after which it was saved (from 1).
        eta_source: where ``eta`` was read (:data:`FROM_LOG` or :data:`FROM_STEPS`).
    """

    path: Path
    eta: float
    epoch: int
    eta_source: str = FROM_LOG

    def to_json(self) -> dict:
        """``{"path", "epoch", "eta", "eta_source"}`` (as ``run.json`` lists it)."""
        return {
            "path": str(self.path),
            "epoch": self.epoch,
            "eta": self.eta,
            "eta_source": self.eta_source,
        }


def _finetune_dir(path: Path) -> Path | None:
    """The fine-tune directory for ``path`` (itself, or its parent for ``checkpoints/``)."""
    for candidate in (path, path.parent):
        if (candidate / CHECKPOINT_DIR).is_dir() and (candidate / TRAIN_LOG).is_file():
            return candidate
    return None


def _eta(log: dict, entry: dict, log_path: Path) -> tuple[float, str]:
    """``(η, source)`` for one ``epochs[]`` entry of the log (module docstring)."""
    if "lr_sum" in entry:
        return float(entry["lr_sum"]), FROM_LOG
    epoch = int(entry["epoch"])
    lrs = [s.get("lr") for s in log.get("steps", []) if s.get("epoch") == epoch]
    if not lrs or any(lr is None for lr in lrs):
        raise ConfigError(
            f"{log_path}: epoch {epoch} has neither lr_sum nor per-step learning rates, so its "
            "TracIn weight (the summed learning rate of its steps) is unknown; re-run "
            "`attriblm finetune`"
        )
    return math.fsum(float(lr) for lr in lrs), FROM_STEPS


def _check_meta(ckpt: Path, eta: float, log_path: Path) -> None:
    """DataError when the checkpoint's own ``checkpoint.json`` disagrees with the log."""
    meta_path = ckpt / CHECKPOINT_META
    if not meta_path.is_file():
        return
    recorded = read_json(meta_path).get("lr_sum")
    if recorded is not None and not math.isclose(float(recorded), eta, rel_tol=1e-9):
        raise DataError(
            f"{meta_path}: lr_sum {recorded} disagrees with {log_path} ({eta}); the checkpoint "
            "comes from another fine-tune"
        )


def load_checkpoints(path: Path | str) -> list[Checkpoint]:
    """Checkpoints of the fine-tune at ``path`` (its output dir or its ``checkpoints/`` dir).

    Ordered by epoch. ConfigError (one line) when the directory, the log, an epoch's adapter or
    its TracIn weight is missing; DataError when a checkpoint's ``checkpoint.json`` disagrees
    with the log.
    """
    path = Path(path).expanduser()
    root = _finetune_dir(path)
    if root is None:
        raise ConfigError(
            f"--checkpoints {path}: no fine-tune checkpoints there (expected {CHECKPOINT_DIR}/"
            f"epoch-NNN/ and {TRAIN_LOG}, as written by `attriblm finetune`)"
        )
    log_path = root / TRAIN_LOG
    log = read_json(log_path)
    out = []
    for entry in log.get("epochs", []):
        ckpt = root / entry["checkpoint"]
        if not (ckpt / "adapter_config.json").is_file():
            raise ConfigError(f"checkpoint {ckpt} listed in {log_path} is missing")
        eta, source = _eta(log, entry, log_path)
        _check_meta(ckpt, eta, log_path)
        out.append(Checkpoint(path=ckpt, eta=eta, epoch=int(entry["epoch"]), eta_source=source))
    if not out:
        raise ConfigError(f"{log_path} lists no epoch checkpoints")
    return sorted(out, key=lambda c: c.epoch)


def discover_checkpoints(adapter: Path | str | None) -> list[Checkpoint] | None:
    """The checkpoints beside an adapter ``<ft>/adapter`` (``None`` if there are none)."""
    if adapter is None:
        return None
    adapter = Path(adapter)
    for root in (adapter.parent, adapter):
        if (root / CHECKPOINT_DIR).is_dir() and (root / TRAIN_LOG).is_file():
            return load_checkpoints(root)
    return None
