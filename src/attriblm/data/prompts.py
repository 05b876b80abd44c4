"""Load bare prompts (no responses) for ``trace``: the model writes the responses itself.

Forms of ``spec``: ``FILE.txt`` (one prompt a line; blank lines skipped, each line kept as it
is apart from its line ending), ``FILE.jsonl`` / ``FILE.csv`` / ``DIR`` / ``DIR:SPLIT`` (the
formats of :mod:`attriblm.data.loaders`) with a prompt field (``prompts`` by default; other
fields are ignored). Errors are one line naming the file and row.
"""

from __future__ import annotations

from attriblm.data.loaders import (
    parse_spec,
    read_csv_rows,
    read_jsonl_rows,
    read_saved_rows,
    read_text,
    required_field,
)
from attriblm.errors import DataError

PROMPT_SUFFIXES = (".txt", ".jsonl", ".csv")


def load_prompts(spec: str, field: str = "prompts") -> list[str]:
    """The prompts of ``spec`` in file order (see the module docstring)."""
    spec = str(spec)
    path, split = parse_spec(spec)
    suffix = path.suffix.lower()
    if suffix == ".txt" and split is None:
        lines = (line.removesuffix("\r") for line in read_text(path).split("\n"))
        prompts = [line for line in lines if line.strip()]
        source = str(path)
    else:
        if suffix == ".jsonl" and split is None:
            source, rows = str(path), read_jsonl_rows(path)
        elif suffix == ".csv" and split is None:
            source, rows = str(path), read_csv_rows(path)
        elif path.is_dir():
            source, rows = read_saved_rows(path, split)
        else:
            raise DataError(
                f"{spec}: unsupported prompt source (expected a file ending in "
                f"{', '.join(PROMPT_SUFFIXES)}, a save_to_disk directory or DIR:SPLIT)"
            )
        prompts = [required_field(row, field, where, source) for where, row in rows]
    if not prompts:
        raise DataError(f"{source}: no prompts")
    return prompts
