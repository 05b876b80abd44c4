"""Property tests: any Unicode prompt / response / label survives the writers and the loaders."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attriblm.data.loaders import load_examples
from attriblm.data.schema import Example, FieldMap
from attriblm.data.writers import write_dataset
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
