"""Detecting prompts that already carry a chat template, and train / query formatting checks."""

from __future__ import annotations

import pytest

from attriblm.data.schema import Example
from attriblm.data.templates import check_same_formatting, detect_template
from attriblm.errors import DataError


@pytest.mark.parametrize(
    ("prompt", "family"),
    [
        ("Determine the grammar rule: a -> b", None),
        ("Explain [INST] tokens to me", None),  # markup only counts at the start
        ("[INST] hi [/INST]", "llama2"),
        ("  <s>[INST] hi [/INST]", "llama2"),
        ("<|im_start|>user\nhi<|im_end|>", "chatml"),
        ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>", "llama3"),
        ("<start_of_turn>user\nhi<end_of_turn>", "gemma"),
        ("<|user|>\nhi</s>", "zephyr"),
    ],
)
def test_detect_template(prompt, family):
    assert detect_template(prompt) == family


def test_same_formatting_returns_the_family():
    raw = [Example("a", "b"), Example("c", "d")]
    templated = [Example("[INST] a [/INST]", "b")]
    assert check_same_formatting([("train", raw), ("queries", raw)]) is None
    assert check_same_formatting([("t", templated), ("q", templated)]) == "llama2"
    assert check_same_formatting([]) is None


def test_mismatch_names_both_sources_and_rows():
    raw = [Example("a", "b"), Example("c", "d")]
    templated = [Example("<|im_start|>user\na<|im_end|>", "b")]
    with pytest.raises(DataError) as info:
        check_same_formatting([("t.jsonl", raw), ("q.jsonl", raw + templated)])
    message = str(info.value)
    assert message.startswith("q.jsonl: row 3: prompt already starts with chatml")
    assert "t.jsonl row 1 is a raw prompt" in message and "\n" not in message
