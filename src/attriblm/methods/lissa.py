"""LiSSA run to convergence (``lissa``): the corrected counterpart of ``lissa-paper``.

Per block, with ``H = GᵀG/n`` (empirical Fisher), damping ``λ`` and scale
``σ = scale_factor · (μ_max(H) + λ)``:

    u_0 = v,    u_t = v + (I − (H + λI)/σ) u_{t−1},    s = (u_T/σ) · g.

The fixed point is ``u* = σ (H + λI)⁻¹ v``. ``T`` is the first step whose iterate is within
``tol`` of it, ``max_q ‖u_T − u*‖ / ‖u*‖ ≤ tol`` (default ``1e-6``), capped at ``max_iter``.
Stopping on the error, not on the step size: the error contracts by only ``1 − λ/σ`` per step in
the directions ``H`` does not see, so when ``σ/λ`` is large (≈1e4 on real LoRA blocks) a tiny
relative change ``‖u_t − u_{t−1}‖/‖u_t‖`` still leaves an error of about ``σ/λ`` times it.

The iterates are evaluated in closed form (:mod:`attriblm.methods.lissa_kernels`): in an
eigenbasis of ``H`` each mode of ``u_T`` is a geometric sum, so ``u_T`` and its exact error are
computed for any ``T`` without stepping, and ``T`` is found by bisection. The output is still
LiSSA's ``T``-th iterate (the truncated Neumann series), not an exact solve; ``T`` is the number
of LiSSA steps needed to reach ``tol``. Basis: the ``n×n`` Gram matrix when ``d > n``
(``path="eigen"``) or the ``d×d`` ``H`` otherwise (``path="dense"``). The literal recursion is
kept in the tests as the reference these iterates are checked against.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import Tensor

from attriblm.errors import ConfigError
from attriblm.methods.base import PreconditionedGradientMethod
from attriblm.methods.damping import Damping
from attriblm.methods.linalg import relative_residual
from attriblm.methods.lissa_kernels import (
    dense_spectrum,
    gram_spectrum,
    neumann_sum,
    stopping_step,
)
from attriblm.methods.registry import register

PATHS = ("auto", "eigen", "dense")
PATH_LABELS = {
    "eigen": "eigen (n×n Gram basis, closed form)",
    "dense": "dense (d×d basis of H, closed form)",
}


@register
class Lissa(PreconditionedGradientMethod):
    """``lissa``: LiSSA iterated until its error is below ``tol``, ``s = (u_T/σ) · g``; ``[m, n]``.

    See the module docstring for the recursion, the stopping rule and the closed form. Options:
    ``tol`` (relative error of ``u_T`` to the fixed point, max over queries; default 1e-6),
    ``max_iter`` (cap on ``T``, default 10,000,000: the closed form makes ``T`` free; the default
    model with the default damping needs a few 1e5), ``scale_factor`` (``σ`` = scale_factor ·
    (top eigenvalue of ``H`` + λ), default 1.1, must be > 0.5) and ``path`` (``auto``: ``eigen``
    when ``d > n``, else ``dense``). Per block, info reports the path, σ, ``σ/λ``, the top
    eigenvalue of ``H``, ``iterations`` (``T``), ``error`` (the relative error reached),
    ``residual`` (``max_q ‖(H + λI)x − v‖/‖v‖`` of the returned ``x = u_T/σ``, computed
    directly in ``d``-space) and ``converged``.
    """

    name = "lissa"
    summary = "LiSSA run until within tol of its fixed point (matches exact; fixes lissa-paper)"

    def __init__(
        self,
        damping: Damping | None = None,
        tol: float = 1e-6,
        max_iter: int = 10_000_000,
        scale_factor: float = 1.1,
        path: str = "auto",
    ) -> None:
        super().__init__(damping)
        if not 0 < tol < 1:
            raise ConfigError(f"lissa tol must be in (0, 1), got {tol}")
        if int(max_iter) != max_iter or max_iter < 1:
            raise ConfigError(f"lissa max_iter must be an integer ≥ 1, got {max_iter}")
        if not scale_factor > 0.5:
            raise ConfigError(
                f"lissa scale_factor must be > 0.5 (the recursion diverges otherwise; 1.1 is "
                f"the default), got {scale_factor}"
            )
        if path not in PATHS:
            raise ConfigError(f"unknown lissa path '{path}'; available: {', '.join(PATHS)}")
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.scale_factor = float(scale_factor)
        self.path = path

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "tol": self.tol,
            "max_iter": self.max_iter,
            "scale_factor": self.scale_factor,
            "path": self.path,
        }

    def _path_for(self, n: int, d: int) -> str:
        if self.path != "auto":
            return self.path
        return "eigen" if d > n else "dense"

    def precondition(self, block: str, queries: Tensor, train: Tensor, damping: float) -> Tensor:
        n, d = train.shape
        path = self._path_for(n, d)
        spectrum = (gram_spectrum if path == "eigen" else dense_spectrum)(train, queries)
        mu = spectrum.top_eigenvalue
        sigma = self.scale_factor * (mu + damping)
        m = spectrum.multipliers(damping, sigma)
        steps, error, converged = stopping_step(
            m, spectrum.weights, tol=self.tol, max_iter=self.max_iter
        )
        x = spectrum.combine(neumann_sum(m, steps)) / sigma
        residual = float(relative_residual(train, x, queries, damping).max())
        self.record(
            block,
            path=PATH_LABELS[path],
            top_eigenvalue=mu,
            sigma=sigma,
            sigma_over_lambda=sigma / damping,
            iterations=steps,
            error=error,
            residual=residual,
            converged=converged,
        )
        return x

    def summarize(self, blocks: dict[str, dict[str, Any]]) -> dict[str, Any]:
        bad = [name for name, b in blocks.items() if not b["converged"]]
        worst = max(blocks, key=lambda name: blocks[name]["error"])
        if bad:
            warnings.warn(
                f"lissa: {len(bad)} of {len(blocks)} blocks did not reach tol {self.tol:g} "
                f"within max_iter={self.max_iter} (largest relative error "
                f"{blocks[worst]['error']:.3g}, block '{worst}'); scores are not the converged "
                "values, see info['blocks']",
                RuntimeWarning,
                stacklevel=3,
            )
        return {
            "converged": not bad,
            "not_converged_blocks": bad,
            "max_iterations": max(b["iterations"] for b in blocks.values()),
            "max_error": blocks[worst]["error"],
            "max_residual": max(b["residual"] for b in blocks.values()),
        }
