"""K-FAC and EK-FAC: Kronecker-factored block curvature per LoRA linear.

K-FAC is Martens & Grosse (2015); EK-FAC, its eigenvalue correction, George et al. (2018); both
applied to influence functions on LLMs by Grosse et al. (2023).

For a block with weight ``[out, in]`` (gradient rows are row-major flattens of ``[out, in]``), the
train-side factors ``A [in, in]``, ``S [out, out]`` (:mod:`attriblm.features.kfac`) approximate the
empirical Fisher ``H_b ≈ S ⊗ A``. With ``A = Q_A diag(e_A) Q_Aᵀ`` and ``S = Q_S diag(e_S) Q_Sᵀ``
(float64 ``eigh``)::

    iHVP(V) = Q_S ((Q_Sᵀ V Q_A) / (Λ + λ)) Q_Aᵀ          V, Λ: [out, in]

* ``kfac``: ``Λ_{oi} = e_S[o] · e_A[i]`` (the Kronecker eigenvalues).
* ``ekfac``: ``Λ_{oi} = mean_i (Q_Sᵀ G_i Q_A)²_{oi}`` fitted from the train per-example gradients
  ``G_i`` (eigenvalue correction).

Trace: ``S ⊗ A`` drops the cross-token terms ``δ_t δ_sᵀ ⊗ a_t a_sᵀ`` (``t ≠ s``) of
``H = (1/n) Σ_i vec(G_i) vec(G_i)ᵀ``, so ``tr(S ⊗ A) = tr(S) tr(A)`` differs from ``tr(H)`` on
multi-token examples, while EK-FAC's ``Σ Λ = tr(H)`` exactly. Relative damping
(``λ_b = 0.1 · tr(H_b)/d_b``) is therefore ``0.1 / ratio`` of K-FAC's own mean eigenvalue, with
``ratio = tr(S ⊗ A)/tr(H)`` recorded per block as ``trace_ratio``.

Scores ``s(q, i) = Σ_b ⟨iHVP(V_{q,b}), G_{i,b}⟩`` ``[m, n]``, larger = more supportive. The
fitted eigenbases and ``Λ`` depend on the training set only (:meth:`KFAC.fit`):
:meth:`KFACFit.save_factors` writes them to safetensors and the ``factors`` option reuses them
for any number of query sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attriblm.errors import ConfigError, DataError
from attriblm.io import load_tensors, save_tensors
from attriblm.methods.base import FeatureSet, PreconditionedFit, PreconditionedGradientMethod
from attriblm.methods.damping import Damping
from attriblm.methods.registry import register

_FIELDS = ("q_a", "e_a", "q_s", "e_s", "eigenvalues")


@dataclass
class EigenFactors:
    """The fitted curvature of one block (float64).

    Attributes:
        q_a, e_a: eigenvectors ``[in, in]`` (columns) and eigenvalues ``[in]`` of ``A``.
        q_s, e_s: eigenvectors ``[out, out]`` and eigenvalues ``[out]`` of ``S``.
        eigenvalues: ``Λ [out, in]`` used by the iHVP (Kronecker or corrected).
    """

    q_a: Tensor
    e_a: Tensor
    q_s: Tensor
    e_s: Tensor
    eigenvalues: Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.q_s.shape[0]), int(self.q_a.shape[0])


def eigendecompose(a: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(Q_A, e_A, Q_S, e_S)`` of symmetric ``A``, ``S`` in float64 (eigenvalues clamped ≥ 0)."""
    e_a, q_a = torch.linalg.eigh(a.double())
    e_s, q_s = torch.linalg.eigh(s.double())
    return q_a, e_a.clamp_min(0.0), q_s, e_s.clamp_min(0.0)


def to_eigenbasis(ef: EigenFactors, x: Tensor) -> Tensor:
    """``Q_Sᵀ X Q_A`` for rows ``x [m, out*in]`` → ``[m, out, in]``."""
    out_f, in_f = ef.shape
    return ef.q_s.T @ (x.reshape(-1, out_f, in_f) @ ef.q_a)


def corrected_eigenvalues(ef: EigenFactors, grads: Tensor, chunk: int = 256) -> Tensor:
    """EK-FAC's ``Λ = mean_i (Q_Sᵀ G_i Q_A)²`` ``[out, in]`` from train grads ``[n, out*in]``."""
    total = torch.zeros(ef.shape, dtype=torch.float64, device=ef.q_a.device)
    for start in range(0, grads.shape[0], chunk):
        g = grads[start : start + chunk].to(device=ef.q_a.device, dtype=torch.float64)
        total += to_eigenbasis(ef, g).square().sum(dim=0)
    return total / grads.shape[0]


def kfac_ihvp(ef: EigenFactors, v: Tensor, damping: float) -> Tensor:
    """``Q_S ((Q_Sᵀ V Q_A) / (Λ + λ)) Q_Aᵀ`` for rows ``v [m, out*in]`` → ``[m, out*in]``."""
    z = to_eigenbasis(ef, v) / (ef.eigenvalues + damping)
    return (ef.q_s @ z @ ef.q_a.T).reshape(v.shape[0], -1)


def save_eigen_factors(path: Path | str, factors: dict[str, EigenFactors]) -> Path:
    """Write fitted factors as safetensors, tensors named ``<block>/<field>``."""
    tensors = {f"{b}/{f}": getattr(ef, f) for b, ef in factors.items() for f in _FIELDS}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return save_tensors(path, tensors)


def load_eigen_factors(path: Path | str) -> dict[str, EigenFactors]:
    """Read factors written by :func:`save_eigen_factors` (block order as stored)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"K-FAC factor file {path} not found")
    tensors = load_tensors(path)
    blocks: dict[str, dict[str, Tensor]] = {}
    for key, t in tensors.items():
        block, _, name = key.rpartition("/")
        blocks.setdefault(block, {})[name] = t.double()
    try:
        return {b: EigenFactors(**{f: parts[f] for f in _FIELDS}) for b, parts in blocks.items()}
    except KeyError as exc:
        raise DataError(f"{path} is not a K-FAC factor file (missing {exc})") from None


@register
class KFAC(PreconditionedGradientMethod):
    """K-FAC: ``s = Σ_b ⟨(S_b ⊗ A_b + λ_b I)⁻¹ v_b, g_b⟩`` in the Kronecker eigenbasis; ``[m, n]``.

    Needs the train-side K-FAC factors (feature ``kfac``) and the per-example gradients.
    Options: ``damping`` (relative: the study's ``λ_b = value · mean g²``, the default;
    absolute; or ``eigen_mean``: ``value · mean(Λ_b)``), ``factors`` (path of a factor file
    written by :meth:`KFACFit.save_factors` to reuse instead of fitting). ``info["lambda"]``
    holds λ per block; ``info["blocks"][b]`` the shape, eigenvalue range and ``trace_ratio``
    ``= Σ Λ_b / tr(H_b)`` (``tr(S ⊗ A)/tr(H)`` for K-FAC, 1 for EK-FAC; ``None`` for a block
    with all-zero gradients); ``info["trace_ratio"]`` its ``min`` / ``max`` over blocks.
    """

    name = "kfac"
    needs = ("gradients", "kfac")
    summary = "K-FAC: Kronecker-factored (S ⊗ A) block Fisher per LoRA linear, float64 eigh"
    corrected = False

    def __init__(self, damping: Damping | None = None, factors: str | Path | None = None) -> None:
        super().__init__(damping)
        self.factors_path = None if factors is None else Path(factors)

    def options(self) -> dict[str, Any]:
        opts = super().options()
        opts["factors"] = None if self.factors_path is None else str(self.factors_path)
        return opts

    def fit_factors(self, train: FeatureSet) -> dict[str, EigenFactors]:
        """Eigendecompose the train factors (and, for EK-FAC, fit ``Λ`` from ``train.grads``),
        or read them from the ``factors`` file."""
        if self.factors_path is not None:
            return load_eigen_factors(self.factors_path)
        if not train.kfac:
            raise ConfigError(
                f"method '{self.name}' needs K-FAC factors of the training set, but the train "
                "features have none"
            )
        fitted = {}
        for block, f in train.kfac.items():
            q_a, e_a, q_s, e_s = eigendecompose(f.A, f.S)
            ef = EigenFactors(q_a, e_a, q_s, e_s, e_s[:, None] * e_a[None, :])
            if self.corrected:
                if train.grads is None or block not in train.grads:
                    raise ConfigError(f"ekfac needs the train gradients of block '{block}'")
                ef.eigenvalues = corrected_eigenvalues(ef, train.grads[block])
            fitted[block] = ef
        return fitted

    def fit(self, train: FeatureSet) -> KFACFit:
        """The factors fitted on ``train`` (:meth:`fit_factors`), once for any query sets."""
        return KFACFit(self, train)

    def block_dampings(self, train: dict[str, Tensor]) -> dict[str, float]:
        if self.damping.mode != "eigen_mean":
            return super().block_dampings(train)
        return {
            b: self.damping.lambda_from_eigenvalues(self.active_fit.factors[b].eigenvalues, block=b)
            for b in train
        }

    @property
    def active_fit(self) -> KFACFit:
        return super().active_fit  # type: ignore[return-value]

    def precondition(self, block: str, queries: Tensor, train: Tensor, damping: float) -> Tensor:
        ef = self.active_fit.factors[block]
        trace_h = float(train.square().sum()) / train.shape[0]  # tr(GᵀG/n) = mean_i ‖g_i‖²
        self.record(
            block,
            shape=list(ef.shape),
            eigenvalue_max=float(ef.eigenvalues.max()),
            eigenvalue_mean=float(ef.eigenvalues.mean()),
            trace_ratio=float(ef.eigenvalues.sum()) / trace_h if trace_h > 0 else None,
        )
        return kfac_ihvp(ef, queries, damping)

    def summarize(self, blocks: dict[str, dict[str, Any]]) -> dict[str, Any]:
        ratios = [b["trace_ratio"] for b in blocks.values() if b.get("trace_ratio") is not None]
        if not ratios:
            return {"trace_ratio": None}
        return {"trace_ratio": {"min": min(ratios), "max": max(ratios)}}


class KFACFit(PreconditionedFit):
    """K-FAC / EK-FAC fitted on a training set: the eigenbases and ``Λ`` per block
    (``factors``), reused for every query set; :meth:`save_factors` writes them."""

    method: KFAC

    def __init__(self, method: KFAC, train: FeatureSet) -> None:
        super().__init__(method, train)
        self.factors = method.fit_factors(train)

    def preconditioned(self, queries: FeatureSet) -> tuple[dict[str, Tensor], dict[str, Any]]:
        grads = self.train.grads or {}
        for block, ef in self.factors.items():
            out_f, in_f = ef.shape
            if block in grads and grads[block].shape[1] != out_f * in_f:
                raise DataError(
                    f"K-FAC factors of block '{block}' are [{out_f}, {in_f}] but its gradients "
                    f"have width {grads[block].shape[1]}"
                )
        missing = [b for b in grads if b not in self.factors]
        if missing:
            raise DataError(f"no K-FAC factors for block(s) {missing[:5]}")
        return super().preconditioned(queries)

    def save_factors(self, path: Path | str) -> Path:
        """Write the fitted factors (safetensors, :func:`save_eigen_factors`)."""
        return save_eigen_factors(path, self.factors)


@register
class EKFAC(KFAC):
    """EK-FAC: K-FAC's eigenbasis with eigenvalues ``Λ = mean_i (Q_Sᵀ G_i Q_A)²`` refitted.

    Same options and info as :class:`KFAC`. With ``eigen_mean`` damping at 0.1 it equals the
    relative rule exactly (``mean Λ = mean_i ‖G_i‖² / d``, the basis being orthonormal).
    """

    name = "ekfac"
    summary = "EK-FAC: K-FAC eigenbasis with eigenvalues refitted from per-example gradients"
    corrected = True
