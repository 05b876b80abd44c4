"""Exact damped-Fisher inverse: ``(H_b + λ_b I)⁻¹ v`` per block, by a direct solve or CG."""

from __future__ import annotations

import warnings
from typing import Any

from torch import Tensor

from attriblm.errors import ConfigError
from attriblm.methods.base import PreconditionedGradientMethod
from attriblm.methods.damping import Damping
from attriblm.methods.linalg import (
    conjugate_gradient,
    damped_fisher_solve,
    fisher_operator,
    relative_residual,
)
from attriblm.methods.registry import register

SOLVERS = ("direct", "cg")


@register
class Exact(PreconditionedGradientMethod):
    """``s = ((H + λI)⁻¹ v) · g`` per block with ``H = GᵀG/n``; ``[m, n]`` float32.

    ``solver="direct"`` (default): float64; Woodbury on the ``n×n`` Gram matrix when the block
    is wider than ``n`` (``(GᵀG/n + λI)⁻¹ v = (1/λ)(v − Gᵀ(nλI + GGᵀ)⁻¹ G v)``), otherwise a
    ``d×d`` Cholesky solve. ``solver="cg"``: conjugate gradients on ``(H + λI) x = v`` batched
    over queries, until relative residual ``< tol`` or ``max_iter`` (default
    ``10·(min(n, d) + 1)``), in float64. Each block's info reports the path and the final relative
    residual ``‖(H + λI)u − v‖ / ‖v‖`` (max over queries; float64 for CG).
    """

    name = "exact"
    summary = "exact (H + λI)⁻¹v per block (Woodbury / Cholesky in float64, or CG)"

    def __init__(
        self,
        damping: Damping | None = None,
        solver: str = "direct",
        tol: float = 1e-10,
        max_iter: int | None = None,
    ) -> None:
        super().__init__(damping)
        if solver not in SOLVERS:
            raise ConfigError(f"unknown exact solver '{solver}'; available: {', '.join(SOLVERS)}")
        if not tol > 0:
            raise ConfigError(f"exact tol must be > 0, got {tol}")
        if max_iter is not None and max_iter < 1:
            raise ConfigError(f"exact max_iter must be ≥ 1, got {max_iter}")
        self.solver = solver
        self.tol = float(tol)
        self.max_iter = max_iter

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {**super().options(), "solver": self.solver}
        if self.solver == "cg":
            opts.update(tol=self.tol, max_iter=self.max_iter)
        return opts

    def precondition(self, block: str, queries: Tensor, train: Tensor, damping: float) -> Tensor:
        if self.solver == "direct":
            u, how = damped_fisher_solve(train, queries, damping)
            self.record(block, path=how)
        else:
            # float64: in float32 the recursion cannot reach a relative residual near 1e-10 on
            # ill-conditioned blocks and would always run to max_iter.
            n, d = train.shape
            max_iter = self.max_iter if self.max_iter is not None else 10 * (min(n, d) + 1)
            train64, queries64 = train.double(), queries.double()
            res = conjugate_gradient(
                fisher_operator(train64, damping), queries64, tol=self.tol, max_iter=max_iter
            )
            u = res.x.to(queries.dtype)
            self.record(block, path="cg", iterations=res.iterations, converged=res.converged)
            self.record(block, residual=float(res.residuals.max()))
            return u
        self.record(block, residual=float(relative_residual(train, u, queries, damping).max()))
        return u

    def summarize(self, blocks: dict[str, dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"max_residual": max(b["residual"] for b in blocks.values())}
        if self.solver == "cg":
            bad = [name for name, b in blocks.items() if not b["converged"]]
            out["converged"] = not bad
            out["max_iterations"] = max(b["iterations"] for b in blocks.values())
            if bad:
                warnings.warn(
                    f"exact (cg): {len(bad)} of {len(blocks)} blocks did not reach relative "
                    f"residual {self.tol:g} within max_iter (first: '{bad[0]}'); "
                    "see info['blocks']",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return out
