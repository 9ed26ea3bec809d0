"""samkit.study: many runs on one setup — ``compare`` (methods x seeds), ``sweep`` (a grid) —
reports made from their run files (``write_report``), and the papers' claims as a suite.

Data flows one way: :mod:`~samkit.study.runs` trains a plan of runs into a study folder
(:mod:`~samkit.study.folder`); :mod:`~samkit.study.results` reads the folder back;
:mod:`~samkit.study.plots` and :mod:`~samkit.study.report` write figures and reports from what it
reads; :mod:`~samkit.study.claims` judges a claim from it and :mod:`~samkit.study.verdicts`
writes the suite's verdict table; :mod:`~samkit.study.reproduce` runs a suite (the claims and
studies of :mod:`~samkit.study.suite`, the diagonal-network study of :mod:`~samkit.study.dln`).
"""

from samkit.study.compare import DEFAULT_METHODS, compare, parse_method
from samkit.study.presets import MAIN_JOB, NOISY_JOB
from samkit.study.report import write_report
from samkit.study.runs import StudyResult
from samkit.study.stats import Summary, summarize
from samkit.study.sweep import parse_grid, sweep

__all__ = [
    "DEFAULT_METHODS",
    "MAIN_JOB",
    "NOISY_JOB",
    "StudyResult",
    "Summary",
    "compare",
    "parse_grid",
    "parse_method",
    "summarize",
    "sweep",
    "write_report",
]
