"""LiSSA as run by the study's reference code (``lissa-paper``), quirks included."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from attriblm.errors import ConfigError
from attriblm.methods.base import PreconditionedGradientMethod
from attriblm.methods.damping import Damping
from attriblm.methods.registry import register


def lissa_paper_iterate(
    v: Tensor,
    g: Tensor,
    damping: float,
    *,
    iterations: int = 3,
    alpha: float = 1.0,
    scale: float = 1000.0,
) -> Tensor:
    """The reference recursion for each row of ``v [m, d]`` given ``g [n, d]``.

    ``u_0 = v``;
    ``u_t = v + u_{t−1} − α·(1/scale)·[ (1/n) Σ_i (g_i·u_{t−1}) g_i − λ u_{t−1} ]``.

    Quirks kept on purpose: the **minus** sign on ``λ`` (a LiSSA recursion for ``(H + λI)⁻¹``
    would add ``λ u``, so the reference effectively damps with ``−λ``); the fixed ``1/scale``
    with only a few steps, so ``u_T`` stays close to ``(T+1)·v``; and no division by ``scale``
    at the end (the returned ``u_T`` is used as is, as the reference does).
    """
    n = g.shape[0]
    u = v
    for _ in range(iterations):
        hvp = (u @ g.T) @ g / n - damping * u  # quirk: −λu, as in the reference code
        u = v + u - (alpha / scale) * hvp
    return u


@register
class LissaPaper(PreconditionedGradientMethod):
    """``lissa-paper``: ``s = u_T · g`` with :func:`lissa_paper_iterate`; ``[m, n]`` float32.

    Reproduces the study's reference LiSSA (3 steps, α = 1, scale 1000, ``−λ``). When the top
    eigenvalue of ``H`` is small against ``scale`` (as for the study's LoRA gradients),
    ``u_T ≈ (T+1) v`` and the scores rank like GradSim, which is what the study saw; with much
    larger gradients the few steps overshoot instead. Use ``lissa`` for a converged LiSSA.
    """

    name = "lissa-paper"
    summary = (
        "paper variant: LiSSA as in the study's reference code incl. its quirks "
        "(3 steps, scale 1000, -λ sign); ranks like gradsim"
    )

    def __init__(
        self,
        damping: Damping | None = None,
        iterations: int = 3,
        alpha: float = 1.0,
        scale: float = 1000.0,
    ) -> None:
        super().__init__(damping)
        if int(iterations) != iterations or iterations < 0:
            raise ConfigError(f"lissa-paper iterations must be an integer ≥ 0, got {iterations}")
        if not scale > 0:
            raise ConfigError(f"lissa-paper scale must be > 0, got {scale}")
        self.iterations = int(iterations)
        self.alpha = float(alpha)
        self.scale = float(scale)

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "iterations": self.iterations,
            "alpha": self.alpha,
            "scale": self.scale,
        }

    def precondition(self, block: str, queries: Tensor, train: Tensor, damping: float) -> Tensor:
        return lissa_paper_iterate(
            queries,
            train,
            damping,
            iterations=self.iterations,
            alpha=self.alpha,
            scale=self.scale,
        )

    def summarize(self, blocks: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {
            "variant": "paper (reference code): u_t = v + u - α/scale·(Hu - λu), no final /scale",
            "iterations": self.iterations,
        }
