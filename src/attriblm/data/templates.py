"""Chat templates: how an example becomes the text the model is trained on.

``llama2`` is the study's template (DESIGN §5): ``[INST] {prompt} [/INST] {response}``, with the
prompt part ``[INST] {prompt} [/INST]`` (what RepSim reads). ``auto`` uses the tokenizer's own
chat template with one user turn (and one assistant turn for the full text).
"""

from __future__ import annotations

from typing import Any

from attriblm.data.schema import Example
from attriblm.errors import ConfigError, ModelError

TEMPLATES = ("llama2", "auto")


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
