"""`rept` and `less` through the attribute pipeline on the tiny model, against direct references."""

from __future__ import annotations

import shutil

import pytest
import torch

from attriblm.data.loaders import load_examples
from attriblm.data.tokenize import encode_examples
from attriblm.errors import ConfigError
from attriblm.features.adam import adam_direction
from attriblm.features.gradients import per_example_gradients
from attriblm.features.projection import projection_matrix
from attriblm.features.rept import rept_features
from attriblm.io import read_json
from attriblm.models.loading import load_model
from attriblm.pipeline.attribute import AttributeSettings, attribute
from attriblm.train.optimizer_state import STATE_INFO, load_optimizer_state


def _cosine(q: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    q, t = q.double(), t.double()
    return torch.nn.functional.cosine_similarity(q[:, None, :], t[None, :, :], dim=2)


@pytest.fixture(scope="module")
def data(samples_dir):
    spec = str(samples_dir / "grammars_small")
    return load_examples(f"{spec}:train")[::4], load_examples(f"{spec}:test")[::4]


@pytest.fixture(scope="module")
def loaded(tiny_adapter):
    return load_model("tiny", adapter=tiny_adapter)


def test_rept_scores_are_the_cosine_of_the_layer_features(loaded, data, tmp_path):
    train, queries = data
    run = attribute(
        loaded, train, queries, AttributeSettings(methods=["rept"], rept_layer=1), tmp_path / "r"
    )
    pad = loaded.tokenizer.pad_token_id
    t = rept_features(
        loaded.model, encode_examples(train, loaded.tokenizer), pad_token_id=pad, layers=[1]
    )[1]
    q = rept_features(
        loaded.model, encode_examples(queries, loaded.tokenizer), pad_token_id=pad, layers=[1]
    )[1]
    torch.testing.assert_close(run.scores["rept"].double(), _cosine(q, t), atol=1e-5, rtol=1e-4)
    info = read_json(tmp_path / "r" / "run.json")
    assert info["features"]["rept"]["layer"] == 1
    last = attribute(loaded, train, queries, AttributeSettings(methods=["rept"]), tmp_path / "l")
    assert read_json(tmp_path / "l" / "run.json")["features"]["rept"]["layer"] == 2
    assert not torch.allclose(last.scores["rept"], run.scores["rept"])


@pytest.mark.parametrize("proj_dim", [None, 16])
def test_less_scores_match_a_hand_built_reference(loaded, data, tiny_adapter, tmp_path, proj_dim):
    train, queries = data
    settings = AttributeSettings(methods=["less", "gradsim"], proj_dim=proj_dim, proj_seed=2)
    run = attribute(loaded, train, queries, settings, tmp_path / "run")
    moments = load_optimizer_state(tiny_adapter)
    pad = loaded.tokenizer.pad_token_id
    g = per_example_gradients(
        loaded.model, encode_examples(train, loaded.tokenizer), pad_token_id=pad
    )
    v = per_example_gradients(
        loaded.model, encode_examples(queries, loaded.tokenizer), pad_token_id=pad
    )
    t_parts, q_parts, projected = [], [], 0
    for block in g:
        m, s = moments.exp_avg[block].double(), moments.exp_avg_sq[block].double()
        direction = (0.9 * m + 0.1 * g[block].double()) / (
            (0.999 * s + 0.001 * g[block].double().square()).sqrt() + 1e-8
        )
        torch.testing.assert_close(direction.float(), adam_direction(g[block], m, s, moments))
        query = v[block].double()
        width = g[block].shape[1]
        if proj_dim is not None and width > proj_dim:
            matrix = projection_matrix("gaussian", 2, block, width, proj_dim).double()
            direction, query, projected = direction @ matrix, query @ matrix, projected + 1
        t_parts.append(direction)
        q_parts.append(query)
    expected = _cosine(torch.cat(q_parts, dim=1), torch.cat(t_parts, dim=1))
    torch.testing.assert_close(run.scores["less"].double(), expected, atol=1e-5, rtol=1e-4)
    assert (projected > 0) == (proj_dim is not None)
    less = read_json(tmp_path / "run" / "run.json")["features"]["less"]
    assert less["projection"]["dim"] == (8192 if proj_dim is None else proj_dim)
    assert less["step"] == moments.step and less["moments_sha256"] == moments.digest


def test_less_without_saved_moments_is_a_one_line_error(loaded, data, tiny_adapter, tmp_path):
    bare = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, bare)
    (bare / STATE_INFO).unlink()
    train, queries = data
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="re-run `attriblm finetune`") as err:
        attribute(
            load_model("tiny", adapter=bare),
            train,
            queries,
            AttributeSettings(methods=["less"]),
            out,
        )
    assert "\n" not in str(err.value)
    assert not out.exists() and not out.with_name("run.store").exists()


def test_rept_layer_out_of_range_fails_before_any_work(loaded, data, tmp_path):
    train, queries = data
    with pytest.raises(ConfigError, match="--rept-layer must be -1 .* between 1 and 2"):
        attribute(
            loaded,
            train,
            queries,
            AttributeSettings(methods=["rept"], rept_layer=3),
            tmp_path / "r",
        )
    assert list(tmp_path.iterdir()) == []
