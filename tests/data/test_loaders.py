"""Loaders: the study's three formats, field remapping and every DataError case."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets
import pytest

from attriblm.data.loaders import load_examples
from attriblm.data.schema import Example, FieldMap
from attriblm.errors import DataError


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict], header: list[str]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def sample_rows(samples: Path, split: str) -> list[dict]:
    text = (samples / f"grammars_small_{split}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


ROW = {"prompts": "p", "response": "r", "variation": "v"}


# ------------------------------------------------------------------ the three formats


@pytest.mark.parametrize(("split", "n_rows"), [("train", 80), ("test", 20)])
def test_three_formats_identical(samples, tmp_path, split, n_rows):
    from_dir = load_examples(f"{samples / 'grammars_small'}:{split}")
    from_jsonl = load_examples(str(samples / f"grammars_small_{split}.jsonl"))
    rows = sample_rows(samples, split)
    csv_path = write_csv(tmp_path / f"{split}.csv", rows, ["prompts", "response", "variation"])
    from_csv = load_examples(str(csv_path))
    assert len(from_dir) == n_rows
    assert from_dir == from_jsonl == from_csv
    first = rows[0]
    assert from_dir[0] == Example(first["prompts"], first["response"], first["variation"])
    assert len({ex.label for ex in from_dir}) == 10


@pytest.mark.parametrize("task", ["grammars", "math"])
def test_study_published_files_load_alike(study_samples_dir, task):
    """The study's own save_to_disk dirs and jsonl copies (skipped without ../shared/samples)."""
    for split, n_rows in (("train", 80), ("test", 20)):
        from_dir = load_examples(f"{study_samples_dir / f'{task}_small'}:{split}")
        from_jsonl = load_examples(str(study_samples_dir / f"{task}_small_{split}.jsonl"))
        assert len(from_dir) == n_rows and from_dir == from_jsonl
        assert len({ex.label for ex in from_dir}) == 10


def test_dict_dir_without_split_lists_splits(samples):
    with pytest.raises(DataError, match=r"grammars_small.*'train'.*'test'|'test'.*'train'"):
        load_examples(str(samples / "grammars_small"))


def test_unknown_split_lists_available(samples):
    with pytest.raises(DataError) as err:
        load_examples(f"{samples / 'grammars_small'}:validation")
    msg = str(err.value)
    assert "grammars_small" in msg and "'validation'" in msg
    assert "'train'" in msg and "'test'" in msg
    assert "\n" not in msg


def test_single_dataset_dir(tmp_path):
    ds = datasets.Dataset.from_dict({"prompts": ["a", "b"], "response": ["x", "y"]})
    ds.save_to_disk(str(tmp_path / "single"))
    assert load_examples(str(tmp_path / "single")) == [Example("a", "x"), Example("b", "y")]
    with pytest.raises(DataError, match="single.*without splits"):
        load_examples(f"{tmp_path / 'single'}:train")


def test_one_split_dict_dir_without_split(tmp_path):
    ds = datasets.Dataset.from_dict({"prompts": ["a"], "response": ["x"], "variation": ["c"]})
    datasets.DatasetDict({"only": ds}).save_to_disk(str(tmp_path / "one"))
    assert load_examples(str(tmp_path / "one")) == [Example("a", "x", "c")]


def test_dir_path_containing_colon(tmp_path, samples):
    odd = tmp_path / "a:b"
    odd.mkdir()
    path = write_jsonl(odd / "d.jsonl", [ROW])
    assert load_examples(str(path)) == [Example("p", "r", "v")]


def test_hf_non_string_column_names_row(tmp_path):
    ds = datasets.Dataset.from_dict({"prompts": ["a", "b"], "response": [1, 2]})
    ds.save_to_disk(str(tmp_path / "ints"))
    with pytest.raises(DataError, match=r"ints: row 1: field 'response' must be a string, got int"):
        load_examples(str(tmp_path / "ints"))


def test_hf_missing_field_names_fields_present(tmp_path):
    ds = datasets.Dataset.from_dict({"question": ["a"], "response": ["x"]})
    ds.save_to_disk(str(tmp_path / "q"))
    with pytest.raises(DataError, match=r"q: row 1: missing field 'prompts'.*\['question'"):
        load_examples(str(tmp_path / "q"))


def test_dir_that_is_not_a_dataset(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="plain"):
        load_examples(str(tmp_path / "plain"))


# ------------------------------------------------------------------ field remapping


def test_field_remap_jsonl_and_csv(tmp_path):
    rows = [{"q": "hello", "a": "world", "cls": "greet"}, {"q": "bye", "a": "now", "cls": "part"}]
    fields = FieldMap(prompt="q", response="a", label="cls")
    expected = [Example("hello", "world", "greet"), Example("bye", "now", "part")]
    assert load_examples(str(write_jsonl(tmp_path / "r.jsonl", rows)), fields) == expected
    assert load_examples(str(write_csv(tmp_path / "r.csv", rows, ["q", "a", "cls"])), fields) == (
        expected
    )
    with pytest.raises(DataError, match="missing field 'prompts'"):
        load_examples(str(tmp_path / "r.jsonl"))


def test_no_label_field_gives_none(tmp_path):
    rows = [{"prompts": "p1", "response": "r1"}, {"prompts": "p2", "response": "r2"}]
    assert [ex.label for ex in load_examples(str(write_jsonl(tmp_path / "n.jsonl", rows)))] == [
        None,
        None,
    ]
    csv_path = write_csv(tmp_path / "n.csv", rows, ["prompts", "response"])
    assert [ex.label for ex in load_examples(str(csv_path))] == [None, None]


# ------------------------------------------------------------------ DataError cases


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file"):
        load_examples(str(tmp_path / "nope.jsonl"))


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.json: unsupported"):
        load_examples(str(path))


def test_not_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    good = json.dumps(ROW).encode() + b"\n"
    path.write_bytes(good + good + b'{"prompts": "caf\xe9", "response": "r"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl: not UTF-8 at line 3"):
        load_examples(str(path))
    csv_path = tmp_path / "latin.csv"
    csv_path.write_bytes(b"prompts,response\nok,fine\ncaf\xe9,r\n")
    with pytest.raises(DataError, match=r"latin\.csv: not UTF-8 at line 3"):
        load_examples(str(csv_path))


def test_malformed_json_line_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROW) + "\n\n" + '{"prompts": "p", \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl: line 3: malformed JSON"):
        load_examples(str(path))


def test_json_line_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "list.jsonl", [ROW])
    path.write_text(path.read_text() + "[1, 2]\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"list\.jsonl: line 2: expected a JSON object"):
        load_examples(str(path))


def test_missing_response_names_field_row_file_and_present(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [ROW, {"prompts": "p", "answer": "a"}])
    with pytest.raises(DataError) as err:
        load_examples(str(path))
    msg = str(err.value)
    assert "m.jsonl" in msg and "line 2" in msg and "'response'" in msg
    assert "['answer', 'prompts']" in msg


def test_missing_field_csv_row(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("prompts,response\na,b\nc,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"m\.csv: row 2: missing field 'response'"):
        load_examples(str(path))


@pytest.mark.parametrize(
    ("field", "value"), [("prompts", 3), ("response", ["a"]), ("variation", 1)]
)
def test_non_string_values(tmp_path, field, value):
    bad = dict(ROW, **{field: value})
    path = write_jsonl(tmp_path / "t.jsonl", [ROW, ROW, bad])
    with pytest.raises(DataError, match=rf"t\.jsonl: line 3: field '{field}' must be a string"):
        load_examples(str(path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.jsonl: no examples"):
        load_examples(str(path))
    csv_path = tmp_path / "empty.csv"
    csv_path.write_text("prompts,response\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.csv: no examples"):
        load_examples(str(csv_path))


def test_empty_split(tmp_path):
    empty = datasets.Dataset.from_dict(
        {"prompts": [], "response": []},
        features=datasets.Features(
            {"prompts": datasets.Value("string"), "response": datasets.Value("string")}
        ),
    )
    saved = datasets.DatasetDict({"train": empty})
    saved.save_to_disk(str(tmp_path / "e"), num_shards={"train": 1})
    with pytest.raises(DataError, match=r"e:train: no examples"):
        load_examples(f"{tmp_path / 'e'}:train")
    # datasets itself cannot reopen an empty split saved with zero shards: still one DataError
    saved.save_to_disk(str(tmp_path / "zero"))
    with pytest.raises(DataError, match=r"zero: cannot load dataset"):
        load_examples(f"{tmp_path / 'zero'}:train")


def test_partial_labels_name_first_unlabelled_row(tmp_path):
    no_label = {"prompts": "p", "response": "r"}
    path = write_jsonl(tmp_path / "l.jsonl", [ROW, no_label, ROW, no_label])
    with pytest.raises(DataError, match=r"l\.jsonl: line 2: label field 'variation' is missing"):
        load_examples(str(path))
    csv_path = tmp_path / "l.csv"
    csv_path.write_text("prompts,response,variation\na,b,\nc,d,e\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"l\.csv: row 1: label field 'variation' is missing"):
        load_examples(str(csv_path))


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "\\ud83d"])
def test_lone_surrogate_names_file_row_and_position(tmp_path, escape):
    path = tmp_path / "s.jsonl"
    path.write_text(
        f'{{"prompts": "ok", "response": "ok"}}\n{{"prompts": "ab{escape}c", "response": "ok"}}\n',
        encoding="utf-8",
    )
    code = escape[2:].upper()
    with pytest.raises(
        DataError,
        match=rf"s\.jsonl: line 2: field 'prompts' holds a lone surrogate U\+{code} at character 3",
    ):
        load_examples(str(path))


def test_a_surrogate_pair_escape_is_valid_text(tmp_path):
    path = tmp_path / "pair.jsonl"
    path.write_text('{"prompts": "\\ud83d\\ude00", "response": "ok"}\n', encoding="utf-8")
    assert load_examples(str(path)) == [Example("\U0001f600", "ok")]
