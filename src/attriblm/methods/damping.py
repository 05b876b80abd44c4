"""Per-block damping λ for the curvature ``H_b + λ_b I`` (docs/DESIGN.md §2).

The default is the paper / DataInf convention, ``λ_b = 0.1 · mean_i mean_j g_{i,b,j}²`` over the
training gradients of block ``b``. ``mode="absolute"`` uses ``value`` itself for every block.
``mode="eigen_mean"`` (K-FAC / EK-FAC only) uses ``value`` times the mean eigenvalue of the
method's curvature approximation of the block (Kronfluence's heuristic with ``value = 0.1``).

λ is never zero: a block whose training gradients are all zero (e.g. every ``lora_A`` while the
adapter's ``B`` matrices are still zero) gets the floor ``λ_b = value`` (its mean square taken as
1). With ``g_{i,b} = 0`` every method's block term ``(Ĥ_b⁻¹ v_b) · g_{i,b}`` is exactly 0 for any
``λ_b > 0``; the floor only keeps the solves finite and well scaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from attriblm.errors import ConfigError

DAMPING_MODES = ("relative", "absolute", "eigen_mean")


@dataclass
class Damping:
    """How λ is chosen per block.

    Attributes:
        mode: ``"relative"`` (λ = value · mean of the squared train gradient entries of the
            block; the paper's rule with value 0.1), ``"absolute"`` (λ = value) or
            ``"eigen_mean"`` (λ = value · mean curvature eigenvalue; kfac / ekfac only).
        value: the factor (relative) or λ itself (absolute); must be a finite number > 0.
    """

    mode: str = "relative"
    value: float = 0.1

    def __post_init__(self) -> None:
        if self.mode not in DAMPING_MODES:
            raise ConfigError(
                f"unknown damping mode '{self.mode}' (--damping-mode); "
                f"available: {', '.join(DAMPING_MODES)}"
            )
        try:
            self.value = float(self.value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"damping value must be a number (--damping), got {self.value!r}"
            ) from None
        if not math.isfinite(self.value) or self.value <= 0:
            raise ConfigError(
                f"damping value must be a finite number > 0 (--damping), got {self.value}"
            )

    def lambda_for(self, block_grads: torch.Tensor, block: str | None = None) -> float:
        """λ for one block from its training gradients ``[n, d]`` (computed in float64).

        Always a finite number > 0: an all-zero block gets the floor ``value`` (module doc).
        Raises ConfigError naming ``block`` if the block has no gradients or non-finite ones.
        """
        if self.mode == "absolute":
            return self.value
        if self.mode == "eigen_mean":
            raise ConfigError(
                "damping mode 'eigen_mean' needs curvature eigenvalues: only the kfac and ekfac "
                "methods support it (use relative or absolute damping for the others)"
            )
        where = f"block '{block}'" if block is not None else "a gradient block"
        if block_grads.numel() == 0:
            raise ConfigError(f"cannot set relative damping for {where}: it has no gradients")
        return self.lambda_from_mean_square(float(block_grads.double().square().mean()), block)

    def lambda_from_mean_square(self, mean_sq: float, block: str | None = None) -> float:
        """Relative λ from a block's mean squared train entry (streamed over a store's shards);
        the floor ``value`` when it is 0."""
        if self.mode == "absolute":
            return self.value
        where = f"block '{block}'" if block is not None else "a gradient block"
        lam = self.value * mean_sq
        if not math.isfinite(lam):
            raise ConfigError(
                f"relative damping gives λ = {lam} for {where} (mean squared gradient "
                f"{mean_sq}): the block's training gradients are not finite"
            )
        return lam if lam > 0 else self.value

    def lambda_from_eigenvalues(self, eigenvalues: torch.Tensor, block: str | None = None) -> float:
        """λ for ``mode="eigen_mean"``: ``value · mean(eigenvalues)`` (ConfigError if not > 0)."""
        lam = self.value * float(eigenvalues.double().mean())
        if not math.isfinite(lam) or lam <= 0:
            where = f"block '{block}'" if block is not None else "a block"
            raise ConfigError(
                f"eigen_mean damping gives λ = {lam} for {where}: its curvature eigenvalues are "
                "all zero or not finite; use an absolute damping"
            )
        return lam

    def to_dict(self) -> dict:
        """JSON-serialisable description, for ``info``."""
        return {"mode": self.mode, "value": self.value}
