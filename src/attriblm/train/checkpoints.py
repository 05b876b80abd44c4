"""Find the per-epoch adapter checkpoints of a fine-tune and the learning rate at each (TracIn).

A fine-tune directory (:mod:`attriblm.train.finetune`) holds ``checkpoints/epoch-NNN/`` and
``train_log.json``, whose ``epochs[k].lr`` is the learning rate of epoch ``k``'s last step, the
one in force when its checkpoint was taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from attriblm.errors import ConfigError
from attriblm.io import read_json
from attriblm.train.finetune import CHECKPOINT_DIR, TRAIN_LOG


@dataclass(frozen=True)
class Checkpoint:
    """One saved adapter and the learning rate ``η_c`` in force when it was saved."""

    path: Path
    lr: float
    epoch: int


def _finetune_dir(path: Path) -> Path | None:
    """The fine-tune directory for ``path`` (itself, or its parent for ``checkpoints/``)."""
    for candidate in (path, path.parent):
        if (candidate / CHECKPOINT_DIR).is_dir() and (candidate / TRAIN_LOG).is_file():
            return candidate
    return None


def load_checkpoints(path: Path | str) -> list[Checkpoint]:
    """Checkpoints of the fine-tune at ``path`` (its output dir or its ``checkpoints/`` dir).

    Ordered by epoch. ConfigError (one line) when the directory, the log or an epoch's adapter
    is missing.
    """
    path = Path(path).expanduser()
    root = _finetune_dir(path)
    if root is None:
        raise ConfigError(
            f"--checkpoints {path}: no fine-tune checkpoints there (expected {CHECKPOINT_DIR}/"
            f"epoch-NNN/ and {TRAIN_LOG}, as written by `attriblm finetune`)"
        )
    log = read_json(root / TRAIN_LOG)
    out = []
    for entry in log.get("epochs", []):
        ckpt = root / entry["checkpoint"]
        if not (ckpt / "adapter_config.json").is_file():
            raise ConfigError(f"checkpoint {ckpt} listed in {root / TRAIN_LOG} is missing")
        out.append(Checkpoint(path=ckpt, lr=float(entry["lr"]), epoch=int(entry["epoch"])))
    if not out:
        raise ConfigError(f"{root / TRAIN_LOG} lists no epoch checkpoints")
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
