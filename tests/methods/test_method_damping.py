from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from attriblm.errors import ConfigError
from attriblm.methods import FeatureSet, create_method
from attriblm.methods.damping import Damping

DAMPED = ["datainf", "lissa-paper", "lissa", "exact"]


def test_relative_is_factor_times_mean_square():
    g = torch.tensor([[1.0, -2.0], [3.0, 0.0], [0.5, 0.5]])
    # mean of squares = (1 + 4 + 9 + 0 + 0.25 + 0.25) / 6 = 14.5 / 6
    assert Damping().lambda_for(g) == pytest.approx(0.1 * 14.5 / 6, rel=1e-12)
    assert Damping("relative", 0.5).lambda_for(g) == pytest.approx(0.5 * 14.5 / 6, rel=1e-12)


def test_relative_matches_numpy_in_float64():
    g = torch.randn(13, 29, generator=torch.Generator().manual_seed(3))
    expected = 0.1 * np.mean(g.double().numpy() ** 2)
    assert Damping().lambda_for(g) == pytest.approx(expected, rel=1e-12)


def test_absolute_ignores_gradients():
    assert Damping("absolute", 0.25).lambda_for(torch.zeros(4, 3)) == 0.25


def test_zero_gradients_get_the_lambda_floor():
    assert Damping().lambda_for(torch.zeros(5, 7), block="layers.3.q_proj.lora_B") == 0.1
    assert Damping("relative", 0.5).lambda_for(torch.zeros(2, 3)) == 0.5


def test_non_finite_gradients_raise_naming_the_block():
    g = torch.tensor([[1.0, float("inf")]])
    with pytest.raises(ConfigError, match="layers.3.q_proj.lora_B"):
        Damping().lambda_for(g, block="layers.3.q_proj.lora_B")


@pytest.mark.parametrize(
    "mode,value",
    [
        ("nope", 0.1),
        ("relative", 0.0),
        ("absolute", -1.0),
        ("relative", float("nan")),
        ("absolute", "x"),
    ],
)
def test_invalid_settings(mode, value):
    with pytest.raises(ConfigError):
        Damping(mode, value)


@pytest.mark.parametrize("name", DAMPED)
def test_zero_block_adds_nothing_and_is_floored(name, features):
    train, queries = features
    grads = {**train.grads, "dead.block": torch.zeros(train.n, 3)}
    qgrads = {**queries.grads, "dead.block": torch.ones(queries.n, 3)}
    opts = {"max_iter": 50} if name == "lissa" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        base = create_method(name, **opts).score(train, queries)
        with pytest.warns(UserWarning, match="1 of 5 gradient blocks .*first: dead.block"):
            out = create_method(name, **opts).score(
                FeatureSet(grads=grads), FeatureSet(grads=qgrads)
            )
    assert out.info["lambda"]["dead.block"] == 0.1
    assert out.info["blocks"]["dead.block"]["zero_gradients"] is True
    assert torch.isfinite(out.scores).all()
    torch.testing.assert_close(out.scores, base.scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", DAMPED)
def test_lambda_reported_per_block(name, features):
    train, queries = features
    info = create_method(name).score(train, queries).info
    assert info["damping"] == {"mode": "relative", "value": 0.1}
    assert set(info["lambda"]) == set(train.grads)
    for block, g in train.grads.items():
        assert info["lambda"][block] == pytest.approx(0.1 * g.double().square().mean().item())


@pytest.mark.parametrize("name", DAMPED)
def test_absolute_damping_reaches_the_method(name, features):
    train, queries = features
    opts = {"max_iter": 5} if name == "lissa" else {}  # only λ matters here, not convergence
    method = create_method(name, damping=Damping("absolute", 0.03), **opts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        info = method.score(train, queries).info
    assert info["lambda"] == dict.fromkeys(train.grads, 0.03)


@pytest.mark.parametrize("name", ["gradsim", "gradcos"])
def test_undamped_methods_say_so(name, features):
    info = create_method(name, damping=Damping()).score(*features).info
    assert info["lambda"] is None
    assert "not" in info["damping"] or "none" in info["damping"]
