"""Reports: one self-contained HTML page per run / bench / analyze directory, and ``inspect``.

Reports read only the files a run writes (docs/DESIGN.md §2); see :mod:`attriblm.report.html`
(:func:`render_report`) and :mod:`attriblm.report.inspect` (:func:`inspect_query`). The names
are imported lazily so that ``attriblm --help`` does not load numpy or torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["QueryView", "inspect_query", "render_report"]


def __getattr__(name: str) -> Any:
    if name == "render_report":
        from attriblm.report.html import render_report

        return render_report
    if name in ("inspect_query", "QueryView"):
        from attriblm.report import inspect as _inspect

        return getattr(_inspect, name)
    raise AttributeError(f"module 'attriblm.report' has no attribute {name!r}")
