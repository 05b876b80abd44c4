"""Write examples in the study's format, atomically.

Layout of ``out_dir``: a Hugging Face ``save_to_disk`` DatasetDict (``dataset_dict.json`` and one
folder per split, string columns named by the :class:`FieldMap`) plus ``<split>.jsonl`` per
split with the same rows. The label column is written only for splits where some example has a
label (then every example of that split must have one).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

from attriblm.data.schema import Example, FieldMap
from attriblm.errors import DataError


def write_dataset(
    splits: dict[str, list[Example]], out_dir: Path | str, fields: FieldMap | None = None
) -> Path:
    """Write ``splits`` to ``out_dir`` and return it.

    Atomic: everything is built in a hidden sibling directory that then replaces ``out_dir`` by
    rename; an existing ``out_dir`` is removed only after the new one is complete, and a failure
    at any point leaves no half-written ``out_dir``.
    """
    fields = fields or FieldMap()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling(out_dir, "tmp")
    try:
        build_dataset_dir(splits, tmp, fields)
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def sibling(path: Path, tag: str) -> Path:
    """A fresh hidden path next to ``path`` (same filesystem, so renames are atomic)."""
    return path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex[:12]}"


def split_columns(examples: list[Example], split: str, fields: FieldMap) -> dict[str, list[str]]:
    """Column-wise rows of one split; the label column only if some example has a label."""
    columns = {
        fields.prompt: [ex.prompt for ex in examples],
        fields.response: [ex.response for ex in examples],
    }
    labels = [ex.label for ex in examples]
    if any(label is not None for label in labels):
        if None in labels:
            row = labels.index(None) + 1
            raise DataError(f"split {split!r}: row {row} has no label but other rows do")
        columns[fields.label] = labels
    return columns


def build_dataset_dir(splits: dict[str, list[Example]], path: Path, fields: FieldMap) -> None:
    """Write the DatasetDict and the per-split JSON lines files into the new directory ``path``."""
    import datasets  # lazy: slow to import

    for name in splits:
        if not re.fullmatch(r"\w+", name):
            raise DataError(f"split name {name!r}: use letters, digits and '_' only")
    tables = {name: split_columns(list(rows), name, fields) for name, rows in splits.items()}
    dataset_dict = datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict(
                columns, features=datasets.Features({c: datasets.Value("string") for c in columns})
            )
            for name, columns in tables.items()
        }
    )
    # an empty split saved with zero shards cannot be reopened by datasets: give it one
    empty = {name: 1 for name, split in dataset_dict.items() if len(split) == 0}
    # datasets draws a progress bar per split on stderr; attriblm has its own progress display
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        dataset_dict.save_to_disk(str(path), num_shards=empty or None)
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    for name, columns in tables.items():
        write_jsonl(path / f"{name}.jsonl", columns)


def write_jsonl(path: Path, columns: dict[str, list[str]]) -> None:
    """One JSON object per row, UTF-8, keys in column order."""
    names = list(columns)
    n_rows = len(columns[names[0]]) if names else 0
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n_rows):
            row = {name: columns[name][i] for name in names}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def replace_dir(new: Path, target: Path) -> None:
    """Move the complete directory ``new`` to ``target``, replacing any old ``target``."""
    if not target.exists():
        os.replace(new, target)
        return
    old = sibling(target, "old")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
