"""Chat templates: the study's llama2 format and the tokenizer's own (auto)."""

from __future__ import annotations

import pytest

from attriblm.data.schema import Example
from attriblm.data.templates import TEMPLATES, format_example, format_prompt
from attriblm.errors import ConfigError, ModelError

EX = Example("Determine the grammar rule: a b. -> b. a", "Reverse Order of Words", "x")


def test_llama2_prompt_and_full():
    assert format_prompt("hi there", "llama2") == "[INST] hi there [/INST]"
    prompt_text, full_text = format_example(EX, "llama2")
    assert prompt_text == f"[INST] {EX.prompt} [/INST]"
    assert full_text == f"[INST] {EX.prompt} [/INST] Reverse Order of Words"


def test_auto_uses_chat_template(gpt2_tokenizer):
    prompt_text, full_text = format_example(EX, "auto", gpt2_tokenizer)
    assert prompt_text == f"<|im_start|>user\n{EX.prompt}<|im_end|>\n<|im_start|>assistant\n"
    assert full_text == prompt_text + "Reverse Order of Words<|im_end|>"
    assert format_prompt(EX.prompt, "auto", gpt2_tokenizer) == prompt_text


class OddChat:
    """A tokenizer whose full rendering does not extend its generation prompt."""

    chat_template = "odd"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False
        return "ASK: " + messages[0]["content"] if add_generation_prompt else "CONVERSATION"


def test_auto_falls_back_to_prompt_plus_response():
    prompt_text, full_text = format_example(EX, "auto", OddChat())
    assert prompt_text == "ASK: " + EX.prompt
    assert full_text == prompt_text + EX.response


def test_auto_without_chat_template(bos_tokenizer):
    assert not bos_tokenizer.chat_template
    with pytest.raises(ModelError, match="no chat template"):
        format_prompt("hi", "auto", bos_tokenizer)
    with pytest.raises(ModelError, match="needs a tokenizer"):
        format_example(EX, "auto", None)


@pytest.mark.parametrize("call", [format_prompt, format_example])
def test_unknown_template(call):
    arg = "hi" if call is format_prompt else EX
    with pytest.raises(ConfigError) as err:
        call(arg, "chatml")
    msg = str(err.value)
    assert "--template" in msg and "'chatml'" in msg
    assert all(name in msg for name in TEMPLATES)
