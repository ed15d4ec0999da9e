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

from ablate.report.build import Comparison, RunRecord, VariantRow, build_comparison
from ablate.report.render import render_markdown, render_table, render_text, verdict_table, write_report

__all__ = [
    "RunRecord",
    "VariantRow",
    "Comparison",
    "build_comparison",
    "render_table",
    "render_text",
    "render_markdown",
    "verdict_table",
    "write_report",
]
