"""Tokenisation, loss masks and batching.

Conventions:

- ``labels[t]`` is the token at position ``t`` when it is in the loss and ``IGNORE_INDEX``
  (-100) otherwise; the loss shifts internally (label ``t`` is predicted from position ``t-1``),
  so a label at position 0 never counts. "No loss token" means none at positions ``>= 1``.
- Text is tokenised with the tokenizer's default special tokens (e.g. a BOS if it adds one),
  except when the text already starts with the BOS string (chat templates that write it), where
  adding another would double it.
- Truncation is on the right (``ids[:max_length]``) for training examples under ``response`` /
  ``full``, by the tokenizer itself under ``paper`` (as the study's code does), and on the left
  for prompts (so the last prompt token, the one RepSim reads, survives).

Loss masks (:data:`LOSS_MASKS`):

- ``response`` (default): EOS is appended; loss on the response tokens and that EOS. The boundary
  comes from character offsets of one tokenisation of the full text (fast tokenizers): a token
  is a response token when it ends after the prompt text's last character. Tokenizers without
  offsets fall back to "the first ``len(tokenize(prompt_text))`` tokens are the prompt".
- ``full``: EOS is appended; loss on every real token.
- ``paper``: the study's reference tokenisation, which sets ``padding_side = 'left'`` and
  ``pad_token = eos_token`` and calls the tokenizer with ``padding='max_length'``,
  ``truncation=True``, ``max_length``, keeping ``labels = input_ids``. Here: the text is
  tokenised by the tokenizer itself with ``truncation=True, max_length=max_length`` (its own
  truncation side and special tokens, so a BOS where it adds one), no EOS is appended, and EOS
  pads are put *before* the text up to exactly ``max_length`` tokens; attention is 0 on the pads
  and ``labels = input_ids`` everywhere, pads included. The model is then called without
  ``position_ids``, as the reference does, so positions are the model's default ``0 … T-1``
  across pads and text (HF Llama: ``arange``); with rotary embeddings the offset does not change
  how real tokens attend to each other. The pad positions are in the loss: their outputs are
  whatever the model's attention implementation makes of a fully masked row.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from attriblm.data.schema import Example
from attriblm.data.templates import check_template, format_example, format_prompt
from attriblm.errors import ConfigError, DataError, ModelError
from attriblm.models.loss import IGNORE_INDEX

LOSS_MASKS = ("response", "full", "paper")
# A mask whose tokenisation changed gets a revision; cache keys of fine-tunes and feature stores
# include it (:func:`loss_mask_identity`), so results of an earlier tokenisation are not reused.
LOSS_MASK_REVISIONS = {"paper": "left-padded"}


@dataclass(frozen=True)
class EncodedExample:
    """One tokenised training example (all lists have the same length ``T <= max_length``)."""

    input_ids: list[int]
    attention_mask: list[int]
    labels: list[int]
    truncated: bool


def check_loss_mask(loss_mask: str) -> None:
    """ConfigError unless ``loss_mask`` is one of :data:`LOSS_MASKS`."""
    if loss_mask not in LOSS_MASKS:
        raise ConfigError(
            f"--loss-mask: unknown loss mask {loss_mask!r}; valid values: {', '.join(LOSS_MASKS)}"
        )


def loss_mask_identity(loss_mask: str) -> str:
    """``loss_mask`` plus its revision, if it has one (``paper:left-padded``): for cache keys."""
    revision = LOSS_MASK_REVISIONS.get(loss_mask)
    return loss_mask if revision is None else f"{loss_mask}:{revision}"


def check_max_length(max_length: int, minimum: int) -> None:
    if max_length < minimum:
        raise ConfigError(f"--max-length must be at least {minimum}, got {max_length}")


def eos_token_id(tokenizer: Any) -> int:
    """The tokenizer's EOS id (ModelError if it has none)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ModelError(f"tokenizer {name!r} has no EOS token; attriblm needs one")
    return int(eos)


def encode_examples(
    examples: Sequence[Example],
    tokenizer: Any,
    *,
    template: str = "llama2",
    loss_mask: str = "response",
    max_length: int = 128,
    source: str = "<examples>",
) -> list[EncodedExample]:
    """Tokenise examples for training / gradients under ``loss_mask`` (see the module docstring).

    ``source`` names the data in errors. Examples longer than ``max_length`` are truncated (see
    the module docstring) and flagged ``truncated=True``; DataError if truncation leaves no loss
    token.
    """
    check_template(template)
    check_loss_mask(loss_mask)
    check_max_length(max_length, 2)
    eos = eos_token_id(tokenizer)
    encoded = []
    for row, example in enumerate(examples, start=1):
        prompt_text, full_text = format_example(example, template, tokenizer)
        if loss_mask == "paper":
            item = encode_paper(full_text, tokenizer, max_length, eos)
        else:
            item = encode_masked(prompt_text, full_text, tokenizer, loss_mask, max_length, eos)
        if all(label == IGNORE_INDEX for label in item.labels[1:]):
            raise DataError(
                f"{source}: row {row}: response truncated away at max_length={max_length}"
            )
        encoded.append(item)
    return encoded


def encode_warning_truncated(
    examples: Sequence[Example],
    tokenizer: Any,
    *,
    template: str,
    loss_mask: str,
    max_length: int,
    source: str,
    stacklevel: int = 3,
) -> tuple[list[EncodedExample], int]:
    """:func:`encode_examples`, then one warning with the count truncated to ``max_length``
    (``<source>: 2 of 3 examples truncated to max_length=24``); returns the encoding and count."""
    encoded = encode_examples(
        examples,
        tokenizer,
        template=template,
        loss_mask=loss_mask,
        max_length=max_length,
        source=source,
    )
    truncated = sum(e.truncated for e in encoded)
    if truncated:
        warnings.warn(
            f"{source}: {truncated} of {len(encoded)} examples truncated to "
            f"max_length={max_length}",
            stacklevel=stacklevel,
        )
    return encoded, truncated


def encode_masked(
    prompt_text: str, full_text: str, tokenizer: Any, loss_mask: str, max_length: int, eos: int
) -> EncodedExample:
    """``response`` / ``full`` masks: tokens + EOS, right-truncated, no padding."""
    ids, in_response = tokens_and_response_flags(full_text, len(prompt_text), tokenizer)
    if not ids or ids[-1] != eos:
        ids.append(eos)
        in_response.append(True)
    in_response[-1] = True  # the final EOS is always a loss token
    truncated = len(ids) > max_length
    ids, in_response = ids[:max_length], in_response[:max_length]
    if loss_mask == "full":
        labels = list(ids)
    else:
        labels = [t if r else IGNORE_INDEX for t, r in zip(ids, in_response, strict=True)]
    return EncodedExample(ids, [1] * len(ids), labels, truncated)


def encode_paper(full_text: str, tokenizer: Any, max_length: int, eos: int) -> EncodedExample:
    """``paper`` mask: the study's left EOS padding to ``max_length``, labels = input_ids.

    Returns lists of exactly ``max_length`` tokens: ``[eos] * n_pad + ids`` with attention
    ``[0] * n_pad + [1] * len(ids)``; ``ids`` is the tokenizer's own truncated encoding.
    """
    add = add_special_tokens_for(full_text, tokenizer)
    ids = list(
        tokenizer(full_text, add_special_tokens=add, truncation=True, max_length=max_length)[
            "input_ids"
        ]
    )
    truncated = len(tokenize(full_text, tokenizer)) > max_length
    n_pad = max_length - len(ids)
    input_ids = [eos] * n_pad + ids
    return EncodedExample(input_ids, [0] * n_pad + [1] * len(ids), list(input_ids), truncated)


def encode_prompts(
    examples: Sequence[Example], tokenizer: Any, *, template: str = "llama2", max_length: int = 128
) -> list[list[int]]:
    """Token ids of each templated prompt without the response; left-truncated to ``max_length``."""
    check_template(template)
    check_max_length(max_length, 1)
    out = []
    for example in examples:
        ids = tokenize(format_prompt(example.prompt, template, tokenizer), tokenizer)
        out.append(ids[-max_length:])
    return out


def add_special_tokens_for(text: str, tokenizer: Any) -> bool:
    """False when ``text`` already starts with the BOS string (a chat template wrote it)."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and text.startswith(bos))


def tokenize(text: str, tokenizer: Any) -> list[int]:
    """Token ids of ``text`` (default special tokens, see :func:`add_special_tokens_for`)."""
    add = add_special_tokens_for(text, tokenizer)
    return list(tokenizer(text, add_special_tokens=add)["input_ids"])


def tokens_and_response_flags(
    full_text: str, boundary: int, tokenizer: Any
) -> tuple[list[int], list[bool]]:
    """Token ids of ``full_text`` and, per token, whether it belongs to the response.

    ``boundary`` is ``len(prompt_text)``. A token is a response token when its character span
    ends after ``boundary``; added special tokens (span ``(0, 0)``) never are.
    """
    if not getattr(tokenizer, "is_fast", False):
        return response_flags_by_prefix(full_text, boundary, tokenizer)
    add = add_special_tokens_for(full_text, tokenizer)
    enc = tokenizer(full_text, add_special_tokens=add, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    flags = [end > boundary for _start, end in enc["offset_mapping"]]
    return ids, flags


def response_flags_by_prefix(
    full_text: str, boundary: int, tokenizer: Any
) -> tuple[list[int], list[bool]]:
    """Fallback without offsets: the first ``len(tokenize(prompt_text))`` tokens are the prompt."""
    ids = tokenize(full_text, tokenizer)
    n_prompt = len(tokenize(full_text[:boundary], tokenizer))
    return ids, [i >= n_prompt for i in range(len(ids))]


def pad_right(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """``[b, T]`` long tensor of ``rows`` right-padded with ``value`` to the longest row."""
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    return out


def collate(encoded: Sequence[EncodedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: ``input_ids`` (pad_token_id), ``attention_mask`` (0), ``labels`` (-100).

    All three are long tensors of shape ``[b, T]`` with ``T`` the longest example in the batch.
    ``paper`` rows are all ``max_length`` long (left-padded already), so they get no extra pad.
    """
    return {
        "input_ids": pad_right([e.input_ids for e in encoded], pad_token_id),
        "attention_mask": pad_right([e.attention_mask for e in encoded], 0),
        "labels": pad_right([e.labels for e in encoded], IGNORE_INDEX),
    }


def collate_prompts(ids: Sequence[list[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad prompt ids: ``input_ids``, ``attention_mask`` ``[b, T]``; ``last_index`` ``[b]``.

    ``last_index[i]`` is the position of row ``i``'s last real token. Rows must be non-empty.
    """
    if any(len(r) == 0 for r in ids):
        raise ValueError("collate_prompts: every prompt needs at least one token")
    return {
        "input_ids": pad_right(ids, pad_token_id),
        "attention_mask": pad_right([[1] * len(r) for r in ids], 0),
        "last_index": torch.tensor([len(r) - 1 for r in ids], dtype=torch.long),
    }
