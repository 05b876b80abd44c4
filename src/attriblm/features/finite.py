"""One check for per-example feature rows: a NaN or infinite value names the example."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from attriblm.errors import ModelError


def check_finite_rows(
    rows: torch.Tensor, start: int, names: Sequence[str], what: str, where: str = ""
) -> None:
    """ModelError naming the first example of ``rows [b, d]`` (rows ``start…`` of ``names``)
    with a non-finite value: ``non-finite <what> (NaN or inf) for <example><where>: …``."""
    bad = (~torch.isfinite(rows)).any(dim=1).nonzero().flatten()
    if len(bad):
        index = start + int(bad[0])
        who = names[index] if index < len(names) else f"example {index + 1}"
        raise ModelError(
            f"non-finite {what} (NaN or inf) for {who}{where}: check the model and adapter "
            "weights, or use --dtype fp32"
        )
