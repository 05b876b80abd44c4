from __future__ import annotations

import json

import pytest

from attriblm.data.prompts import load_prompts
from attriblm.data.schema import Example
from attriblm.data.writers import write_dataset
from attriblm.errors import DataError


def test_text_file_one_prompt_a_line(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"What is gold's symbol?\r\n\n  Name a colour.  \nlast line")
    assert load_prompts(str(path)) == ["What is gold's symbol?", "  Name a colour.  ", "last line"]


def test_jsonl_csv_and_saved_dataset_read_the_prompt_field(tmp_path):
    rows = [{"prompts": "a?", "response": "x"}, {"prompts": "b?", "other": 1}]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_prompts(str(jsonl)) == ["a?", "b?"]
    csv = tmp_path / "p.csv"
    csv.write_text("question,extra\nc?,1\nd?,2\n")
    assert load_prompts(str(csv), field="question") == ["c?", "d?"]
    write_dataset({"test": [Example("e?", "r", "l")]}, tmp_path / "ds")
    assert load_prompts(f"{tmp_path / 'ds'}:test") == ["e?"]


def test_errors_name_the_file_and_row(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompts": "a?"}\n{"question": "b?"}\n')
    with pytest.raises(DataError, match=r"p\.jsonl: line 2: missing field 'prompts'"):
        load_prompts(str(jsonl))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="no prompts"):
        load_prompts(str(empty))
    other = tmp_path / "p.md"
    other.write_text("x")
    with pytest.raises(DataError, match="unsupported prompt source"):
        load_prompts(str(other))
