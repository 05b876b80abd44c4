"""Write examples in the study's format, atomically.

Layout of ``out_dir``: a Hugging Face ``save_to_disk`` DatasetDict (``dataset_dict.json`` and one
folder per split, string columns named by the :class:`FieldMap`) plus ``<split>.jsonl`` per
split with the same rows. The label column is written only for splits where some example has a
label (then every example of that split must have one).
"""

from __future__ import annotations

import re
from pathlib import Path

from attriblm.data.schema import Example, FieldMap
from attriblm.errors import DataError
from attriblm.io import staged_directory, write_jsonl
from attriblm.outputs import DATASET, check_output_dir, output_lock, write_marker


def write_dataset(
    splits: dict[str, list[Example]],
    out_dir: Path | str,
    fields: FieldMap | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``splits`` to ``out_dir`` and return it.

    Atomic (:func:`attriblm.io.staged_directory`): everything is built in a hidden sibling
    directory that then replaces ``out_dir`` by rename; a failure at any point leaves no
    half-written ``out_dir``. ``out_dir`` must be new, empty, or (with ``overwrite``) an earlier
    attriblm dataset, which is removed only after the new one is complete; anything else is an
    :class:`~attriblm.errors.OutputError` before any work (:mod:`attriblm.outputs`).
    """
    fields = fields or FieldMap()
    out_dir = check_output_dir(out_dir, DATASET, overwrite=overwrite)
    with output_lock(out_dir), staged_directory(out_dir) as staging:
        build_dataset_dir(splits, staging, fields)
        write_marker(staging, DATASET)
    return out_dir


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
        n_rows = len(next(iter(columns.values())))
        rows = ({c: values[i] for c, values in columns.items()} for i in range(n_rows))
        write_jsonl(path / f"{name}.jsonl", rows)
