"""Property tests: any Unicode prompt / response / label survives the writers and the loaders,
and malformed files (wrong types, missing fields, lone surrogates, empty and huge fields, mixed
line endings, cut-off files) meet the error contract."""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attriblm.data.loaders import load_examples
from attriblm.data.schema import Example, FieldMap
from attriblm.data.writers import write_dataset
from attriblm.errors import DataError
from attriblm.io import write_jsonl

# Any code point UTF-8 can encode (lone surrogates cannot be written to a UTF-8 file at all).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
# CSV cannot tell an empty cell from a missing one (the loader reads both as absent).
CSV_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)

FIELDS = FieldMap()
PROPERTIES = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _examples(text: st.SearchStrategy[str]) -> st.SearchStrategy[list[Example]]:
    return st.lists(st.builds(Example, text, text, text), min_size=1, max_size=5)


def _rows(examples: list[Example]) -> list[dict[str, str | None]]:
    return [
        {FIELDS.prompt: e.prompt, FIELDS.response: e.response, FIELDS.label: e.label}
        for e in examples
    ]


@PROPERTIES
@given(_examples(TEXT))
def test_jsonl_round_trip(examples):
    with tempfile.TemporaryDirectory() as tmp:
        path = write_jsonl(Path(tmp) / "data.jsonl", _rows(examples))
        assert load_examples(str(path)) == examples


@PROPERTIES
@given(_examples(CSV_TEXT))
def test_csv_round_trip(examples):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=[FIELDS.prompt, FIELDS.response, "variation"]
            )
            writer.writeheader()
            writer.writerows(_rows(examples))
        assert load_examples(str(path)) == examples


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_examples(TEXT), _examples(TEXT))
def test_dataset_writer_round_trip(train, test):
    """write_dataset's save_to_disk directory and its per-split JSON lines both load back."""
    with tempfile.TemporaryDirectory() as tmp:
        out = write_dataset({"train": train, "test": test}, Path(tmp) / "ds")
        for split, examples in (("train", train), ("test", test)):
            assert load_examples(f"{out}:{split}") == examples
            assert load_examples(str(out / f"{split}.jsonl")) == examples


@PROPERTIES
@given(_examples(TEXT))
def test_unlabelled_rows_round_trip_as_none(examples):
    unlabelled = [Example(e.prompt, e.response) for e in examples]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_jsonl(Path(tmp) / "data.jsonl", _rows(unlabelled))
        assert load_examples(str(path)) == unlabelled


# ---------------------------------------------------------------- malformed files: the contract
#
# A loader either returns examples (every field a str that UTF-8 can encode) or raises one
# DataError whose single-line message starts with the file and names the line / row (or says
# the file has no examples). Never any other exception.

SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
ODD_TEXT = st.one_of(
    TEXT,
    st.builds(lambda a, s, b: a + s + b, TEXT, SURROGATES, TEXT),  # a lone surrogate inside
    st.just(""),
    st.sampled_from(["\u2028", "\u0085", "\r", "\r\n", "\x00", "\ufeff", "\t"]),
    st.integers(1, 3).map(lambda n: "x" * (n * 70_000)),  # beyond csv's 128 KiB default
)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ODD_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=5,
)
FIELD_NAMES = st.sampled_from([FIELDS.prompt, FIELDS.response, FIELDS.label, "prompt", "other"])
MOSTLY_PLAIN = st.one_of(TEXT, TEXT, TEXT, ODD_TEXT)  # so that clean loads are common too
BAD_ROW = st.one_of(
    st.dictionaries(FIELD_NAMES, JSON_VALUE, max_size=4),  # wrong types, missing fields
    JSON_VALUE,  # not an object at all
)
CONTRACT = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))


def _good_row(draw, labelled: bool) -> dict[str, Any]:
    row = {FIELDS.prompt: draw(MOSTLY_PLAIN), FIELDS.response: draw(MOSTLY_PLAIN)}
    if labelled:
        row[FIELDS.label] = draw(MOSTLY_PLAIN)
    return row


@st.composite
def jsonl_files(draw) -> tuple[bytes, list[str]]:
    """Raw bytes of a JSON lines file and its lines (split at ``\n``, as the loader does):
    mostly well-formed rows, some with odd text, a wrong type, a missing field, a cut-off line,
    a non-object, a row unlike the others' labelling, blank lines, any line endings, a BOM."""
    labelled = draw(st.booleans())
    ascii_only = draw(st.booleans())
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            lines.append(draw(st.sampled_from(["", "  ", "\t"])))
            continue
        if kind == 1:
            row = draw(BAD_ROW)
        else:
            row = _good_row(draw, labelled if kind != 2 else not labelled)
        text = json.dumps(row, ensure_ascii=ascii_only)
        lines.append(text[: len(text) // 2] if kind == 3 else text)
    endings = [draw(st.sampled_from(["\n", "\n", "\r\n", "\r\n", "\r"])) for _ in lines]
    text = "".join(line + end for line, end in zip(lines, endings, strict=True))
    text = draw(st.sampled_from(["", "\ufeff"])) + text
    return text.encode("utf-8", errors="surrogatepass"), text.split("\n")


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def expected_jsonl(data: bytes, lines: list[str]) -> list[Example] | None:
    """The examples a well-formed file holds, or ``None`` when it must be a DataError."""
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if lines and lines[0].startswith("\ufeff"):
        lines = [lines[0][1:], *lines[1:]]
    examples = []
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            return None
        if not isinstance(row, dict):
            return None
        prompt, response = row.get(FIELDS.prompt), row.get(FIELDS.response)
        label = row.get(FIELDS.label)
        values = [prompt, response] + ([] if label is None else [label])
        if not all(isinstance(v, str) and _utf8(v) for v in values):
            return None
        examples.append(Example(prompt, response, label))
    labelled = [e.label is not None for e in examples]
    if not examples or (any(labelled) and not all(labelled)):
        return None
    return examples


def assert_error_contract(error: DataError, path: Path, unit: str) -> None:
    message = str(error)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    assert re.search(rf"\b({unit}|line) \d+\b", message) or message.endswith("no examples"), message


@CONTRACT
@given(jsonl_files())
def test_malformed_jsonl_meets_the_error_contract(file):
    data, lines = file
    expected = expected_jsonl(data, lines)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        path.write_bytes(data)
        try:
            loaded = load_examples(str(path))
        except DataError as error:
            assert expected is None, (str(error), expected)
            assert_error_contract(error, path, "line")
            return
    assert loaded == expected


CSV_CELL = st.one_of(ODD_TEXT, st.sampled_from(['"', '""', ",", "a,b", '"quoted"', "\n", "x\r\ny"]))


@st.composite
def csv_files(draw) -> bytes:
    """Raw bytes of a CSV file: a header (sometimes lacking or renaming a field), rows of odd
    cells (some short or long), ``\\n`` / ``\\r\\n`` / ``\\r`` line endings, sometimes cut off."""
    full = [FIELDS.prompt, FIELDS.response, FIELDS.label]
    header = draw(
        st.one_of(st.just(full), st.just(full[:2]), st.lists(FIELD_NAMES, min_size=1, max_size=4))
    )
    width = st.integers(len(header), len(header)) | st.integers(0, len(header) + 1)
    rows = [[draw(CSV_CELL) for _ in range(draw(width))] for _ in range(draw(st.integers(1, 4)))]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"])))
    writer.writerow(header)
    writer.writerows(rows)
    text = buffer.getvalue()
    if draw(st.integers(0, 3)) == 0:  # cut off mid-file (e.g. inside a quote)
        text = text[: draw(st.integers(0, len(text)))]
    return text.encode("utf-8", errors="surrogatepass")


@CONTRACT
@given(csv_files())
def test_malformed_csv_meets_the_error_contract(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.csv"
        path.write_bytes(data)
        try:
            loaded = load_examples(str(path))
        except DataError as error:
            assert_error_contract(error, path, "row")
            return
    assert loaded, "a clean load has examples"
    for example in loaded:
        for value in (example.prompt, example.response, example.label):
            assert value is None or (isinstance(value, str) and _utf8(value))
        assert example.prompt is not None and example.response is not None


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(st.builds(Example, CSV_TEXT, CSV_TEXT, CSV_TEXT), min_size=1, max_size=3),
    st.integers(1, 3),
    st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_huge_fields_and_any_line_ending_load_cleanly(examples, size, ending):
    """Fields past the csv module's 128 KiB default and every line ending round-trip."""
    huge = Example("p" * (size * 70_000), examples[0].response, examples[0].label)
    examples = [huge, *examples[1:]]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            # QUOTE_ALL: the csv module quotes a minimal field only for the characters of *its*
            # line terminator, so a bare "\r" cell written with "\n" endings would be unquoted,
            # and any CSV reader takes an unquoted "\r" for a line break.
            writer = csv.writer(handle, lineterminator=ending, quoting=csv.QUOTE_ALL)
            writer.writerow([FIELDS.prompt, FIELDS.response, FIELDS.label])
            writer.writerows([e.prompt, e.response, e.label] for e in examples)
        assert load_examples(str(path)) == examples
        jsonl = write_jsonl(Path(tmp) / "data.jsonl", _rows(examples))
        assert load_examples(str(jsonl)) == examples
