"""Synthetic per-example gradients for the method tests (fixed seeds, several blocks)."""

from __future__ import annotations

import pytest
import torch

from attriblm.methods.base import FeatureSet

N_TRAIN = 24
N_QUERY = 5
# Two blocks wider than n (Woodbury / Gram-basis paths) and two narrower (dense paths).
WIDTHS = {
    "layers.0.q_proj.lora_A": 40,
    "layers.0.q_proj.lora_B": 9,
    "layers.1.v_proj.lora_A": 56,
    "layers.1.v_proj.lora_B": 6,
}


def _make_features(
    seed: int = 0,
    n: int = N_TRAIN,
    m: int = N_QUERY,
    widths: dict[str, int] | None = None,
    scale: float = 1.0,
) -> tuple[FeatureSet, FeatureSet]:
    """Train and query gradients with a decaying spectrum (low rank plus noise) per block.

    Block ``i`` is scaled by ``scale · 10^(i−2)`` (blocks on different scales, like LoRA A/B).
    """
    gen = torch.Generator().manual_seed(seed)
    widths = WIDTHS if widths is None else widths
    train, queries = {}, {}
    for i, (name, d) in enumerate(widths.items()):
        rank = min(4, d)
        basis = torch.randn(rank, d, generator=gen) * torch.linspace(2.0, 0.5, rank)[:, None]
        block_scale = scale * 10.0 ** (i - 2)
        train[name] = block_scale * (
            torch.randn(n, rank, generator=gen) @ basis + 0.3 * torch.randn(n, d, generator=gen)
        )
        queries[name] = block_scale * (
            torch.randn(m, rank, generator=gen) @ basis + 0.3 * torch.randn(m, d, generator=gen)
        )
    return FeatureSet(grads=train), FeatureSet(grads=queries)


def _dense_inverse(g: torch.Tensor, v: torch.Tensor, lam: float) -> torch.Tensor:
    """Reference ``(GᵀG/n + λI)⁻¹ v`` per row by a dense float64 solve."""
    g, v = g.double(), v.double()
    h = g.T @ g / g.shape[0] + lam * torch.eye(g.shape[1], dtype=torch.float64)
    return torch.linalg.solve(h, v.T).T


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture
def features() -> tuple[FeatureSet, FeatureSet]:
    """Default synthetic train / query gradients (seed 0, blocks in ``WIDTHS``)."""
    return _make_features()


@pytest.fixture
def make_features():
    """Factory ``make_features(seed, n, m, widths, scale) -> (train, queries)``."""
    return _make_features


@pytest.fixture
def dense_inverse():
    """Reference ``dense_inverse(g, v, lam)``: dense float64 ``(GᵀG/n + λI)⁻¹ v`` per row."""
    return _dense_inverse


@pytest.fixture
def rel_err():
    """``rel_err(a, b) = ‖a − b‖ / ‖b‖`` in float64."""
    return _rel_err
