"""Seeded random projections of per-example feature blocks (Johnson–Lindenstrauss sketches).

A block ``G [n, d]`` wider than ``dim`` is stored as ``G P`` with ``P [d, dim]`` float32 and i.i.d.
entries ``N(0, 1/dim)`` (``gaussian``) or ``±1/√dim`` (``rademacher``). ``E[PPᵀ] = I``, so inner
products are preserved in expectation, ``E[(Pᵀg)·(Pᵀh)] = g·h``, with a relative error of order
``√(2/dim)`` (JL): dot-product methods (GradSim, TracIn) and cosines approximate the unprojected
ones. Curvature methods (DataInf, LiSSA, exact) then solve in the projected space, with
``H' = Pᵀ H P``; relative damping computed there is about ``d/dim`` times the unprojected ``λ``
(a mean over ``dim`` instead of ``d`` coordinates of the same squared norm). K-FAC / EK-FAC need
the unprojected Kronecker structure and refuse projected gradients.

``P`` depends only on ``(kind, seed, block name, d, dim)``: train and query gradients of the same
block get the same matrix in every process (CPU ``torch.Generator``; same torch version).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from attriblm.errors import ConfigError

PROJECTION_KINDS = ("gaussian", "rademacher")
_CACHE_BYTES = 256 * 2**20  # projection matrices kept in memory between batches
_cache: dict[tuple, torch.Tensor] = {}


def _block_seed(kind: str, seed: int, block: str, width: int, dim: int) -> int:
    text = f"{kind}:{seed}:{block}:{width}:{dim}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & (2**63 - 1)


def projection_matrix(kind: str, seed: int, block: str, width: int, dim: int) -> torch.Tensor:
    """``[width, dim]`` float32 projection matrix of one block (deterministic, see module doc)."""
    key = (kind, seed, block, width, dim)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    generator = torch.Generator().manual_seed(_block_seed(*key))
    if kind == "gaussian":
        matrix = torch.randn(width, dim, generator=generator, dtype=torch.float32)
    elif kind == "rademacher":
        matrix = torch.randint(0, 2, (width, dim), generator=generator).to(torch.float32) * 2 - 1
    else:
        raise ConfigError(
            f"unknown projection kind '{kind}' (--proj-kind); choose {PROJECTION_KINDS}"
        )
    matrix /= math.sqrt(dim)
    size = matrix.numel() * matrix.element_size()
    if sum(m.numel() * m.element_size() for m in _cache.values()) + size > _CACHE_BYTES:
        _cache.clear()
    if size <= _CACHE_BYTES:
        _cache[key] = matrix
    return matrix


@dataclass(frozen=True)
class Projection:
    """Project every block wider than ``dim`` to ``dim`` columns (narrower blocks stay as they are).

    Attributes:
        dim: target width (≥ 1).
        kind: ``gaussian`` or ``rademacher``.
        seed: combined with the block name, so each block has its own matrix.
    """

    dim: int
    kind: str = "gaussian"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in PROJECTION_KINDS:
            raise ConfigError(
                f"unknown projection kind '{self.kind}' (--proj-kind); choose {PROJECTION_KINDS}"
            )
        if self.dim < 1:
            raise ConfigError(f"--proj-dim must be at least 1, got {self.dim}")

    def width(self, width: int) -> int:
        """The stored width of a block of ``width`` columns."""
        return min(width, self.dim)

    def apply(self, block: str, rows: torch.Tensor) -> torch.Tensor:
        """``rows [n, d]`` → ``[n, dim]`` float32 when ``d > dim``; otherwise ``rows`` unchanged."""
        width = int(rows.shape[1])
        if width <= self.dim:
            return rows
        matrix = projection_matrix(self.kind, self.seed, block, width, self.dim)
        return rows.to(torch.float32) @ matrix

    def to_json(self) -> dict:
        return {"dim": self.dim, "kind": self.kind, "seed": self.seed}
