"""attriblm.io: atomic writes and the only loaders; a damaged file is a one-line error naming it."""

from __future__ import annotations

import pytest

from attriblm.errors import DataError, FileFormatError
from attriblm.io import load_tensors, read_json, read_yaml, write_json, write_yaml


@pytest.mark.parametrize(
    ("name", "content", "reader", "message"),
    [
        ("a.json", b"{truncated", read_json, "not valid JSON"),
        ("b.json", b"\xff\xfe{}", read_json, "not valid JSON"),
        ("c.yaml", b"key: [unclosed\n", read_yaml, "not valid YAML"),
        ("d.yaml", b"\xff: 1\n", read_yaml, "not valid YAML"),
    ],
)
def test_damaged_json_and_yaml_name_the_file(tmp_path, name, content, reader, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(FileFormatError, match=rf"{name}: {message}") as info:
        reader(path)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, DataError) and isinstance(info.value, ValueError)


def test_valid_files_round_trip(tmp_path):
    assert read_json(write_json(tmp_path / "a.json", {"x": [1, 2]})) == {"x": [1, 2]}
    assert read_yaml(write_yaml(tmp_path / "a.yaml", {"x": "é"})) == {"x": "é"}


@pytest.mark.parametrize("content", [b"", b"\x08\x00\x00\x00\x00\x00\x00\x00{}", b"garbage" * 9])
def test_damaged_safetensors_name_the_file(tmp_path, content):
    path = tmp_path / "s.safetensors"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"s\.safetensors: cannot read safetensors file"):
        load_tensors(path)
    with pytest.raises(DataError, match=r"none\.safetensors: no such file"):
        load_tensors(tmp_path / "none.safetensors")
