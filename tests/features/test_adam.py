from __future__ import annotations

import math

import pytest
import torch

from attriblm.errors import DataError
from attriblm.features.adam import adam_direction, less_features
from attriblm.features.projection import Projection, projection_matrix
from attriblm.train.optimizer_state import AdamMoments


def _moments(**blocks: tuple[list[float], list[float]]) -> AdamMoments:
    return AdamMoments(
        exp_avg={b: torch.tensor(m) for b, (m, _) in blocks.items()},
        exp_avg_sq={b: torch.tensor(v) for b, (_, v) in blocks.items()},
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        step=7,
    )


def test_adam_direction_matches_a_hand_computation():
    moments = _moments(a=([0.1, 0.2, 0.0], [0.01, 0.04, 0.0]))
    g = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]])
    out = adam_direction(g, moments.exp_avg["a"], moments.exp_avg_sq["a"], moments)
    expected = []
    for row in ([1.0, -2.0, 0.5], [0.0, 0.0, 0.0]):
        values = []
        for gi, mi, vi in zip(row, [0.1, 0.2, 0.0], [0.01, 0.04, 0.0], strict=True):
            m_new = 0.9 * mi + 0.1 * gi
            v_new = 0.999 * vi + 0.001 * gi * gi
            values.append(m_new / (math.sqrt(v_new) + 1e-8))
        expected.append(values)
    torch.testing.assert_close(out, torch.tensor(expected), rtol=1e-6, atol=0.0)
    assert out[0, 0] == pytest.approx(0.19 / math.sqrt(0.01099), rel=1e-6)
    assert out[1, 2] == 0.0  # no gradient, no moment: no direction


def test_queries_keep_their_plain_gradient_and_both_sides_share_the_projection():
    gen = torch.Generator().manual_seed(0)
    grads = {"wide": torch.randn(3, 20, generator=gen), "narrow": torch.randn(3, 4, generator=gen)}
    projection = Projection(dim=8, seed=3)
    plain = less_features(grads, None, projection)
    matrix = projection_matrix("gaussian", 3, "wide", 20, 8)
    torch.testing.assert_close(plain["wide"], grads["wide"] @ matrix)
    assert torch.equal(plain["narrow"], grads["narrow"])  # narrower than dim: exact
    moments = AdamMoments(
        exp_avg={b: torch.full((g.shape[1],), 0.01) for b, g in grads.items()},
        exp_avg_sq={b: torch.full((g.shape[1],), 1e-4) for b, g in grads.items()},
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        step=1,
    )
    adam = less_features(grads, moments, projection)
    direction = adam_direction(
        grads["wide"], moments.exp_avg["wide"], moments.exp_avg_sq["wide"], moments
    )
    torch.testing.assert_close(adam["wide"], direction @ matrix)


def test_moments_of_another_adapter_are_a_data_error():
    moments = _moments(a=([0.1, 0.2], [0.01, 0.04]))
    with pytest.raises(DataError, match="block b"):
        less_features({"b": torch.ones(1, 2)}, moments, Projection(dim=8))
    with pytest.raises(DataError, match="block a"):
        less_features({"a": torch.ones(1, 3)}, moments, Projection(dim=8))
