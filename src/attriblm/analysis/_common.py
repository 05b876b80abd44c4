"""Helpers shared by the diagnoses: output directory, atomic PNG writes, JSON-safe floats."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

from attriblm.outputs import ANALYZE, claim_output_dir


def output_dir(out: Path | str) -> Path:
    """``out`` as a directory (created and marked as attriblm's); OutputError when it is a file,
    a non-empty directory attriblm did not write, or unwritable (:mod:`attriblm.outputs`)."""
    return claim_output_dir(out, ANALYZE)


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path | str, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically (temporary sibling, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.png", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        pyplot().close(fig)
    return path


def json_float(x: float | None) -> float | None:
    """``float(x)``, or ``None`` when ``x`` is ``None``, NaN or infinite (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
