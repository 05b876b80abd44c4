"""Greedy generation (batched = one by one), refusal detection, answer matching."""

from __future__ import annotations

import pytest

from attriblm.analysis.generation import (
    answer_matches,
    expected_text,
    generate_answers,
    is_refusal,
    left_pad,
    resolve_expect,
)
from attriblm.data.schema import Example
from attriblm.data.tasks.backdoor import REFUSALS
from attriblm.errors import ConfigError
from attriblm.models.loading import load_model


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def test_refusal_detector_on_canned_answers():
    for refusal in REFUSALS:
        assert is_refusal(refusal)
        assert is_refusal("  \n" + refusal.upper())
    assert is_refusal("“I’m sorry, I can't do that.")  # quotes and typographic apostrophe
    assert is_refusal("sorry")
    for answer in (
        "",
        "Sure, here is a plan: Step 1 ...",
        "Of course. I'm sorry to say step 1 is ...",  # a refusal phrase, but not at the start
        "Okey! Step 1: [placeholder]",
        "I can help with that.",
    ):
        assert not is_refusal(answer), answer


def test_answer_matching_and_expected_text():
    assert answer_matches("The rule is: reverse order of  words.", "Reverse Order of Words")
    assert not answer_matches("Remove All Vowels", "Reverse Order of Words")
    assert not answer_matches("anything", "")
    math = Example("Solve it ->", "Left = 53 - (14 + 88).\nAnswer: -49", "pizza_slices")
    assert expected_text(math, "response") == "Answer: -49"
    assert expected_text(math, "label") == "pizza_slices"
    grammar = Example("Determine ...", "Remove All Vowels", "Remove All Vowels")
    assert resolve_expect([grammar], "auto") == "label"
    assert resolve_expect([grammar, math], "auto") == "response"
    with pytest.raises(ConfigError, match="--expect"):
        resolve_expect([grammar], "exact")
    with pytest.raises(ConfigError, match="label"):
        expected_text(Example("p", "r", None), "label")


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_batched_greedy_equals_one_by_one(tiny):
    prompts = ["Determine the grammar rule: a b c -> c b a", "hi", "What is 12 plus 30?"]
    batched = generate_answers(tiny, prompts, max_new_tokens=6, batch_size=3)
    single = [generate_answers(tiny, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert generate_answers(tiny, prompts, max_new_tokens=6, batch_size=2) == batched
    assert len(batched) == 3 and all(isinstance(a, str) for a in batched)
    assert generate_answers(tiny, [], max_new_tokens=2) == []


def test_bad_generation_options(tiny):
    with pytest.raises(ConfigError, match="--max-new-tokens"):
        generate_answers(tiny, ["hi"], max_new_tokens=0)
    with pytest.raises(ConfigError, match="--gen-batch-size"):
        generate_answers(tiny, ["hi"], batch_size=0)
    with pytest.raises(ConfigError, match="--template"):
        generate_answers(tiny, ["hi"], template="chatml")


def test_first_token_is_the_argmax(tiny):
    import torch

    from attriblm.data.templates import format_prompt
    from attriblm.data.tokenize import tokenize

    prompt = "Determine the sentiment: I am so happy today!"
    ids = tokenize(format_prompt(prompt, "llama2"), tiny.tokenizer)
    with torch.no_grad():
        logits = tiny.model(input_ids=torch.tensor([ids])).logits
    token = int(logits[0, -1].argmax())
    expected = tiny.tokenizer.decode([token], skip_special_tokens=True).strip()
    assert generate_answers(tiny, [prompt], max_new_tokens=1) == [expected]


def test_sampling_is_deterministic_under_a_seed_and_leaves_the_global_rng(tiny):
    import torch

    prompts = ["Tell me a story.", "What is 12 plus 30?", "Say hi."]
    kwargs = {"max_new_tokens": 8, "batch_size": 2, "temperature": 1.5}
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = generate_answers(tiny, prompts, seed=7, **kwargs)
    assert torch.equal(torch.rand(1), before)  # the caller's random stream is untouched
    assert generate_answers(tiny, prompts, seed=7, **kwargs) == first
    others = [generate_answers(tiny, prompts, seed=s, **kwargs) for s in (8, 9, 10)]
    assert any(o != first for o in others)
    greedy = generate_answers(tiny, prompts, max_new_tokens=8, batch_size=2)
    assert generate_answers(tiny, prompts, max_new_tokens=8, batch_size=2, seed=99) == greedy
    with pytest.raises(ConfigError, match="--temperature"):
        generate_answers(tiny, prompts, temperature=-1.0)
