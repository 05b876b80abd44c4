from __future__ import annotations

from pathlib import Path

import pytest

from attriblm.config import read_command_config, recorded_options
from attriblm.errors import ConfigError


def test_keys_are_normalised_and_resolved_is_ignored(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("loss-mask: paper\nbatch_size: 4\nresolved: {anything: 1}\n")
    assert read_command_config(path, {"loss_mask", "batch_size"}) == {
        "loss_mask": "paper",
        "batch_size": 4,
    }


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\nb: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: line \d+ not valid YAML"):
        read_command_config(path, {"a", "b"})


def test_empty_file_is_no_options(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("")
    assert read_command_config(path, {"a"}) == {}


def test_recorded_options_drop_config_and_quiet_and_stringify_paths():
    params = {"out": Path("/x/y"), "config": Path("c.yaml"), "quiet": True, "method": ("a",)}
    assert recorded_options(params) == {"out": "/x/y", "method": ["a"]}
