"""The HTML report: a self-contained site built from the files a run wrote.

``build_report`` writes ``index.html`` (the leaderboard: sortable, filterable, raw or
normalised to chance 0, with heatmaps), ``precision.html`` (each precision against
the reference: paired difference, flips, exact McNemar; score against bits per weight),
``tasks.html`` and ``tasks/{task}.html`` (definition, scores, per-instance drill-down
loaded on demand), ``cost.html`` and ``provenance.html`` (with ``llmboard verify``'s
verdict per score). Tables are itables (DataTables), plots Vega-Altair rendered to SVG
by vl-convert; every script and style sits beside the pages, nothing is fetched.
"""

from .build import build_report, publish_report
from .collect import ReportError
from .data import VERIFY_MODES

__all__ = ["VERIFY_MODES", "ReportError", "build_report", "publish_report"]
