"""Chat templates: how an example becomes the text the model is trained on.

``llama2`` is the study's template (docs/DESIGN.md §5):
``[INST] {prompt} [/INST] {response}``, with the prompt part ``[INST] {prompt} [/INST]``
(what RepSim reads). ``auto`` uses the tokenizer's own chat template with one user turn (and
one assistant turn for the full text).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from attriblm.data.schema import Example
from attriblm.errors import ConfigError, DataError, ModelError

TEMPLATES = ("llama2", "auto")

# Markup that a rendered chat template puts at the start of a prompt, per template family. Used
# only to detect data whose prompts were templated already (attriblm applies --template itself).
TEMPLATE_MARKERS: dict[str, tuple[str, ...]] = {
    "llama2": ("[INST]", "<s>[INST]", "<s> [INST]"),
    "chatml": ("<|im_start|>",),
    "llama3": ("<|begin_of_text|>", "<|start_header_id|>"),
    "gemma": ("<start_of_turn>", "<bos><start_of_turn>"),
    "zephyr": ("<|user|>", "<|system|>"),
}


def check_template(template: str) -> None:
    """ConfigError unless ``template`` is one of :data:`TEMPLATES`."""
    if template not in TEMPLATES:
        raise ConfigError(
            f"--template: unknown template {template!r}; valid values: {', '.join(TEMPLATES)}"
        )


def format_prompt(prompt: str, template: str, tokenizer: Any = None) -> str:
    """The templated text up to where the response starts (no response, no end token)."""
    check_template(template)
    if template == "llama2":
        return f"[INST] {prompt} [/INST]"
    return render_chat(tokenizer, [{"role": "user", "content": prompt}], generation_prompt=True)


def format_example(example: Example, template: str, tokenizer: Any = None) -> tuple[str, str]:
    """``(prompt_text, full_text)`` for one example; ``full_text`` starts with ``prompt_text``.

    ``auto``: the full text is the rendered user + assistant conversation with trailing
    whitespace removed (so it ends with the template's end-of-turn marker, if it has one). If
    the rendering does not start with the rendered prompt (some templates re-render earlier
    turns), the full text falls back to ``prompt_text + response``.
    """
    prompt_text = format_prompt(example.prompt, template, tokenizer)
    if template == "llama2":
        return prompt_text, f"{prompt_text} {example.response}"
    messages = [
        {"role": "user", "content": example.prompt},
        {"role": "assistant", "content": example.response},
    ]
    full_text = render_chat(tokenizer, messages, generation_prompt=False).rstrip()
    if not full_text.startswith(prompt_text):
        full_text = prompt_text + example.response
    return prompt_text, full_text


def render_chat(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
    """Render ``messages`` with the tokenizer's chat template (ModelError if it has none)."""
    if tokenizer is None:
        raise ModelError("--template auto needs a tokenizer with a chat template; none was given")
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ModelError(
            f"tokenizer {name!r} has no chat template; use --template llama2 instead of auto"
        )
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )


def detect_template(prompt: str) -> str | None:
    """The chat-template family whose markup ``prompt`` starts with, or ``None`` (a raw prompt)."""
    text = prompt.lstrip()
    for family, markers in TEMPLATE_MARKERS.items():
        if text.startswith(markers):
            return family
    return None


def _formatting(family: str | None) -> str:
    if family is None:
        return "is a raw prompt (no chat-template markup)"
    return f"already starts with {family} chat-template markup ({TEMPLATE_MARKERS[family][0]!r})"


def check_same_formatting(sets: Iterable[tuple[str, Sequence[Example]]]) -> str | None:
    """DataError unless every prompt of every set is formatted the same way; returns the family.

    ``sets`` holds ``(source name, examples)`` pairs (e.g. the train file and its examples).
    Train and query prompts must all be raw, or all carry the same chat template's markup
    (:func:`detect_template`): mixing them would score queries against training text the model
    saw in another format. The message names both sources and rows.
    """
    first: tuple[str, int, str | None] | None = None
    for source, examples in sets:
        for row, example in enumerate(examples, start=1):
            family = detect_template(example.prompt)
            if first is None:
                first = (source, row, family)
            elif family != first[2]:
                raise DataError(
                    f"{source}: row {row}: prompt {_formatting(family)}, but {first[0]} row "
                    f"{first[1]} {_formatting(first[2])}; train and queries must be formatted the "
                    "same way (give raw prompts: attriblm applies --template itself)"
                )
    return None if first is None else first[2]
