"""Greedy answers of a (fine-tuned) model, refusal detection, and answer matching.

Used by the Δθ-vs-behaviour and subset-retraining diagnoses (docs/DESIGN.md §7.4, §7.5).

* :func:`generate_answers`: each prompt is templated exactly as in training (``format_prompt``,
  tokenised with the tokenizer's default special tokens, left-truncated to ``max_length``),
  batches are **left**-padded with the pad token (attention 0 on pads) and decoded greedily
  (``do_sample=False``, no sampling state, so the output depends only on the weights), or,
  with ``temperature > 0``, sampled from the temperature-scaled softmax (no top-k / top-p cut)
  with torch's generator seeded by ``seed`` (the global RNG state is restored afterwards; the
  result depends on the seed and the batching). The answer is the decoded new tokens, special
  tokens skipped, surrounding whitespace stripped. Generation stops at EOS or after
  ``max_new_tokens``.
* :func:`is_refusal`: an answer is a refusal when, after leading whitespace and quotes, it
  starts (case-insensitively) with one of the backdoor tasks' refusal openings
  (:data:`attriblm.data.tasks.backdoor.REFUSAL_OPENINGS`) or full refusals
  (:data:`~attriblm.data.tasks.backdoor.REFUSALS`); the paper used a harmfulness classifier
  instead (docs/DESIGN.md §6).
* :func:`answer_matches`: whether a generated answer contains an expected text (whitespace
  collapsed, case-insensitive).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch

from attriblm.data.schema import Example
from attriblm.data.tasks.backdoor import REFUSAL_OPENINGS, REFUSALS
from attriblm.data.templates import check_template, format_prompt
from attriblm.data.tokenize import tokenize
from attriblm.errors import ConfigError
from attriblm.models.loading import LoadedModel

REFUSAL_PREFIXES: tuple[str, ...] = tuple(dict.fromkeys((*REFUSAL_OPENINGS, *REFUSALS)))
REFUSAL_RULE = (
    "refusal = the answer (leading whitespace and quotes stripped) starts, case-insensitively, "
    "with one of the backdoor builder's REFUSAL_OPENINGS or REFUSALS"
)
EXPECT_MODES = ("auto", "label", "response")


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else None
    pad = pad if pad is not None else tokenizer.eos_token_id
    if pad is None:
        raise ConfigError("generation needs a tokenizer with a pad or an EOS token")
    return int(pad)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both ``[b, T]`` long, rows left-padded to the longest."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.as_tensor(list(row), dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


@torch.no_grad()
def generate_answers(
    loaded: LoadedModel,
    prompts: Sequence[str],
    template: str = "llama2",
    max_new_tokens: int = 32,
    batch_size: int = 16,
    *,
    max_length: int = 128,
    progress: Callable[[int], None] | None = None,
    temperature: float = 0.0,
    seed: int = 0,
) -> list[str]:
    """Greedy answers to ``prompts`` (raw prompts; the template is applied here), in order.

    Args:
        loaded: model and tokenizer (a LoRA model or a plain one); put in ``eval()`` mode.
        prompts: ``n`` raw prompts (no chat markup).
        template: chat template, as in training (``llama2`` | ``auto``).
        max_new_tokens: at most this many generated tokens per answer (≥ 1).
        batch_size: prompts per ``generate`` call (left-padded together).
        max_length: templated prompts longer than this are left-truncated.
        progress: called with the number of prompts finished after each batch.
        temperature: 0 = greedy; above 0, sampling at that temperature.
        seed: the sampling seed (unused when greedy).

    Returns:
        ``n`` strings: the decoded new tokens (special tokens skipped), stripped.
    """
    check_template(template)
    if max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ConfigError(f"--gen-batch-size must be at least 1, got {batch_size}")
    if not temperature >= 0:
        raise ConfigError(f"--temperature must be >= 0 (0 = greedy), got {temperature}")
    tokenizer = loaded.tokenizer
    pad_id = _pad_id(tokenizer)
    eos_id = tokenizer.eos_token_id
    model = loaded.model
    model.eval()
    device = next(model.parameters()).device
    encoded = [tokenize(format_prompt(p, template, tokenizer), tokenizer) for p in prompts]
    encoded = [ids[-max_length:] for ids in encoded]
    decoding = (
        {"do_sample": True, "temperature": float(temperature), "top_k": 0, "top_p": 1.0}
        if temperature > 0
        else {"do_sample": False}
    )
    answers: list[str] = []
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        for start in range(0, len(encoded), batch_size):
            rows = encoded[start : start + batch_size]
            input_ids, attention_mask = left_pad(rows, pad_id)
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens,
                num_beams=1,
                pad_token_id=pad_id,
                eos_token_id=eos_id,
                **decoding,
            )
            new_tokens = output[:, input_ids.size(1) :].cpu()
            for row in new_tokens:
                answers.append(tokenizer.decode(row.tolist(), skip_special_tokens=True).strip())
            if progress is not None:
                progress(len(rows))
    return answers


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def is_refusal(answer: str, prefixes: Sequence[str] = REFUSAL_PREFIXES) -> bool:
    """Whether ``answer`` opens with a refusal prefix (see the module docstring)."""
    text = _normalise(answer).lstrip("\"'“‘ ")
    # typographic apostrophes count as plain ones ("I’m sorry")
    text = text.replace("’", "'")
    return any(text.startswith(_normalise(p)) for p in prefixes)


def expected_text(example: Example, expect: str) -> str:
    """The text a correct answer to ``example`` must contain under ``expect``.

    ``label``: the example's label. ``response``: the last non-empty line of its reference
    response (the ``Answer: N`` line of a math problem; the whole response when it is one line).
    """
    if expect == "label":
        if not example.label:
            raise ConfigError("--expect label needs a label (the 'variation' field) on every query")
        return example.label
    if expect == "response":
        lines = [line.strip() for line in example.response.splitlines() if line.strip()]
        if not lines:
            raise ConfigError("--expect response needs a non-empty reference response per query")
        return lines[-1]
    raise ConfigError(f"--expect: unknown mode {expect!r}; valid values: {', '.join(EXPECT_MODES)}")


def resolve_expect(queries: Sequence[Example], expect: str) -> str:
    """``auto`` → ``label`` when every query's label occurs in its own response, else
    ``response``; other modes are checked and returned."""
    if expect not in EXPECT_MODES:
        raise ConfigError(
            f"--expect: unknown mode {expect!r}; valid values: {', '.join(EXPECT_MODES)}"
        )
    if expect != "auto":
        return expect
    in_response = all(e.label and _normalise(e.label) in _normalise(e.response) for e in queries)
    return "label" if in_response else "response"


def answer_matches(answer: str, expected: str) -> bool:
    """Whether ``answer`` contains ``expected`` (whitespace collapsed, case-insensitive)."""
    target = _normalise(expected)
    return bool(target) and target in _normalise(answer)
