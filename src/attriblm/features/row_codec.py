"""How feature rows are stored: fp32 exactly, bf16 rounded, fp16 scaled per row.

* ``fp32``: exact.
* ``bf16``: 8 significant bits (relative error ≤ 2⁻⁹ per entry), float32's range.
* ``fp16``: 11 significant bits, but its smallest positive value is 2⁻²⁴ ≈ 6·10⁻⁸, below which
  LoRA gradient entries (often 10⁻⁹…10⁻⁶) would flush to zero. Each row is therefore divided by
  its largest ``|entry|`` (its *scale*, kept beside it as float32) before the cast, so every
  stored value lies in ``[−1, 1]``. An entry at least 2⁻¹⁴ of its row's largest keeps relative
  error ≤ 2⁻¹¹; a smaller one has absolute error ≤ 2⁻²⁵ · scale. An all-zero row gets scale 1.

Decoding always returns float32.
"""

from __future__ import annotations

import torch

STORE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SCALED = frozenset({"fp16"})


def encode_rows(rows: torch.Tensor, dtype: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[n, d]`` float rows → (stored ``[n, d]`` in ``dtype``, per-row scale ``[n]`` or None)."""
    rows = rows.detach().to("cpu", torch.float32)
    if dtype not in SCALED:
        return rows.to(STORE_DTYPES[dtype]).contiguous(), None
    scale = rows.abs().amax(dim=1) if rows.shape[1] else rows.new_ones(rows.shape[0])
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (rows / scale[:, None]).to(STORE_DTYPES[dtype]).contiguous(), scale.contiguous()


def decode_rows(stored: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """Stored rows (and their scale, if any) → ``[n, d]`` float32."""
    rows = stored.float()
    return rows if scale is None else rows * scale.float()[:, None]
