"""samkit.study: many runs on one setup — ``compare`` (methods x seeds), ``sweep`` (a grid) —
and reports made from their run files (``write_report``)."""

from samkit.study.compare import DEFAULT_METHODS, MAIN_JOB, StudyResult, compare, parse_method
from samkit.study.report import write_report
from samkit.study.stats import Summary, summarize
from samkit.study.sweep import parse_grid, sweep

__all__ = [
    "DEFAULT_METHODS",
    "MAIN_JOB",
    "StudyResult",
    "Summary",
    "compare",
    "parse_grid",
    "parse_method",
    "summarize",
    "sweep",
    "write_report",
]
