"""The report: tidy results, leaderboards, the study's summary tables, plots and ``index.html``.

Entry point: :func:`build_report` (``dermbench report RUNS --out DIR``).
"""

from .build import Report, ReportOptions, build_report

__all__ = ["Report", "ReportOptions", "build_report"]
