"""Reports: verdict tables, Markdown reports and figures for a set of training runs.

Independent of MLflow: whoever reads the runs (``ablate.compare``, the study report) converts each one
into a :class:`RunRecord` and calls :func:`build_comparison`, then :func:`render_table` for the
terminal or :func:`write_report` for ``report.md`` plus ``curves.png`` and ``differences.png``.

- ``build``    records, pairing by seed, verdicts (statistics in :mod:`ablate.stats`)
- ``tables``   one set of cells rendered to rich, Markdown and JSON
- ``render``   the verdict table and the report files
- ``figures``  curves, paired differences, factorial effects
- ``study``    the sections of a study's report (tuning, factorial, search)
"""

from __future__ import annotations

import importlib

_LAZY = {"Comparison": "build", "RunRecord": "build", "VariantRow": "build", "build_comparison": "build",
         "render_markdown": "render", "render_table": "render", "render_text": "render",
         "verdict_table": "render", "write_report": "render"}


def __getattr__(name: str):  # scipy and matplotlib load with the parts that use them (a finished run
    if name in _LAZY:  # reads only ``stability``, which needs neither)
        return getattr(importlib.import_module(f"ablate.report.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ablate.report' has no attribute {name!r}")


__all__ = [
    "Comparison",
    "RunRecord",
    "VariantRow",
    "build_comparison",
    "render_markdown",
    "render_table",
    "render_text",
    "verdict_table",
    "write_report",
]
