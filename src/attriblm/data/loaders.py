"""Load examples from the study's formats: HF ``save_to_disk`` directories, JSON lines and CSV.

Every loader returns ``list[Example]`` in file order. Any problem with the data is a
:class:`~attriblm.errors.DataError` whose one-line message names the file and, where it
applies, the 1-based row (``line N`` for JSON lines, ``row N`` for CSV data rows and dataset
splits).

Label convention: the label field is optional. If no row has it (absent or null; an empty CSV
cell counts as absent), every label is ``None``; if only some rows have it, that is an error
naming the first row without it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from attriblm.data.schema import Example, FieldMap
from attriblm.errors import DataError

FILE_SUFFIXES = (".jsonl", ".csv")

# (row description such as "line 3", row dict) pairs, in file order.
Rows = Iterable[tuple[str, dict[str, Any]]]


def load_examples(spec: str, fields: FieldMap | None = None) -> list[Example]:
    """Load examples from ``spec``.

    Forms of ``spec``: ``DIR:SPLIT`` (a saved ``DatasetDict`` and a split name), ``DIR`` (a saved
    ``Dataset``, or a ``DatasetDict`` with exactly one split), ``FILE.jsonl`` or ``FILE.csv``.
    ``fields`` names the prompt / response / label fields (the study's names by default).
    """
    fields = fields or FieldMap()
    spec = str(spec)
    path, split = parse_spec(spec)
    if path.suffix.lower() == ".jsonl" and split is None:
        return rows_to_examples(read_jsonl_rows(path), fields, str(path))
    if path.suffix.lower() == ".csv" and split is None:
        return rows_to_examples(read_csv_rows(path), fields, str(path))
    if path.is_dir():
        source, rows = read_saved_rows(path, split)
        return rows_to_examples(rows, fields, source)
    raise DataError(
        f"{spec}: unsupported data source (expected a save_to_disk directory, DIR:SPLIT, "
        f"or a file ending in {' or '.join(FILE_SUFFIXES)})"
    )


def parse_spec(spec: str) -> tuple[Path, str | None]:
    """Split ``spec`` into a path and an optional split name; DataError if the path is missing.

    The split is what follows the last ``:`` when the part before it is an existing directory
    (so a path that itself contains ``:`` still works when given without a split).
    """
    path = Path(spec)
    if path.exists():
        return path, None
    head, sep, split = spec.rpartition(":")
    if sep and head and split and Path(head).is_dir():
        return Path(head), split
    raise DataError(f"{spec}: no such file or directory")


# ---------------------------------------------------------------- readers (rows in file order)


def read_text(path: Path) -> str:
    """The file's text, decoded as strict UTF-8 (a leading BOM is dropped)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not UTF-8 at line {line} (byte {err.start}); re-save the file as UTF-8"
        ) from None


def read_jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``("line N", row)`` for each non-blank line of a JSON lines file.

    Lines end at ``\n`` only (a ``\r`` before it is JSON whitespace): ``str.splitlines`` would
    also split at U+0085, U+2028 and U+2029, which JSON writers leave unescaped inside strings.
    """
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {number}: malformed JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(
                f"{path}: line {number}: expected a JSON object, got {type(row).__name__}"
            )
        yield f"line {number}", row


def read_csv_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``("row N", row)`` for each data row of a CSV file with a header line.

    Empty cells become ``None`` (CSV cannot tell an empty value from a missing one). A cell may
    be as long as the file (the csv module's default limit, 128 KiB, is lifted while reading).
    """
    text = read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    limit = csv.field_size_limit()
    try:
        csv.field_size_limit(max(limit, len(text) + 1))
        for number, raw in enumerate(reader, start=1):
            row = {k: (v if v != "" else None) for k, v in raw.items() if k is not None}
            yield f"row {number}", row
    except csv.Error as err:
        raise DataError(f"{path}: malformed CSV near line {reader.line_num} ({err})") from None
    finally:
        csv.field_size_limit(limit)


def read_saved_rows(path: Path, split: str | None) -> tuple[str, Rows]:
    """Open a ``save_to_disk`` directory; return ``(source name, rows)`` of the chosen split."""
    import datasets  # lazy: slow to import

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: not a Hugging Face save_to_disk dataset directory") from None
    except Exception as err:  # corrupt or foreign files raise many exception types
        raise DataError(f"{path}: cannot load dataset ({type(err).__name__}: {err})") from None
    dataset, split = select_split(loaded, path, split)
    source = str(path) if split is None else f"{path}:{split}"
    rows = ((f"row {i}", row) for i, row in enumerate(dataset, start=1))
    return source, rows


def select_split(loaded: Any, path: Path, split: str | None) -> tuple[Any, str | None]:
    """``(Dataset, split name)`` chosen by ``split``; DataError listing the splits if unknown.

    A ``DatasetDict`` with exactly one split may be given without a split name.
    """
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        if split is None:
            if len(names) == 1:
                return loaded[names[0]], names[0]
            raise DataError(
                f"{path}: holds splits {names}; choose one as {path}:SPLIT (e.g. {path}:{names[0]})"
            )
        if split not in loaded:
            raise DataError(f"{path}: no split {split!r}; available splits: {names}")
        return loaded[split], split
    if split is not None:
        raise DataError(f"{path}: is a single dataset without splits; drop ':{split}'")
    return loaded, None


# ---------------------------------------------------------------- rows -> examples


def rows_to_examples(rows: Rows, fields: FieldMap, source: str) -> list[Example]:
    """Validate rows and build examples (see the module docstring for the label rule)."""
    examples: list[Example] = []
    first_unlabelled: str | None = None
    for where, row in rows:
        prompt = required_field(row, fields.prompt, where, source)
        response = required_field(row, fields.response, where, source)
        label = optional_field(row, fields.label, where, source)
        if label is None and first_unlabelled is None:
            first_unlabelled = where
        examples.append(Example(prompt=prompt, response=response, label=label))
    if not examples:
        raise DataError(f"{source}: no examples")
    labelled = any(ex.label is not None for ex in examples)
    if labelled and first_unlabelled is not None:
        raise DataError(
            f"{source}: {first_unlabelled}: label field {fields.label!r} is missing, "
            "but other rows have it (give every row a label or none)"
        )
    return examples


def required_field(row: dict[str, Any], name: str, where: str, source: str) -> str:
    """The string value of ``row[name]``; DataError naming field, row, file and present fields."""
    if row.get(name) is None:
        present = sorted(k for k, v in row.items() if v is not None)
        raise DataError(f"{source}: {where}: missing field {name!r} (fields present: {present})")
    return string_value(row[name], name, where, source)


def optional_field(row: dict[str, Any], name: str, where: str, source: str) -> str | None:
    """The string value of ``row[name]``, or ``None`` when absent or null."""
    value = row.get(name)
    return None if value is None else string_value(value, name, where, source)


def string_value(value: Any, name: str, where: str, source: str) -> str:
    """``value`` when it is a string of valid Unicode text; DataError naming the row otherwise.

    JSON can spell a lone UTF-16 surrogate (``"\\ud800"``), which Python decodes to a string no
    tokenizer or UTF-8 writer accepts; it is rejected here, with the character position.
    """
    if not isinstance(value, str):
        raise DataError(
            f"{source}: {where}: field {name!r} must be a string, got {type(value).__name__}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(value[err.start])
        raise DataError(
            f"{source}: {where}: field {name!r} holds a lone surrogate U+{code:04X} at "
            f"character {err.start + 1}, which is not valid Unicode text (a broken \\u escape?)"
        ) from None
    return value
