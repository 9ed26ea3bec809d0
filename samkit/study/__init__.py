"""samkit.study: many runs on one setup — ``compare`` (methods x seeds), ``sweep`` (a grid) —
reports made from their run files (``write_report``), and the papers' claims as a suite.

Data flows one way: :mod:`~samkit.study.train_runs` trains a plan of runs into a study folder
(its record: :mod:`~samkit.study.records`; flatness: :mod:`~samkit.study.flatness`);
:mod:`~samkit.study.results` reads the folder back; :mod:`~samkit.study.plots`,
:mod:`~samkit.study.study_report` and :mod:`~samkit.study.suite_report` write figures and reports
from what it reads (:mod:`~samkit.study.report` picks which); :mod:`~samkit.study.claims` judges
a claim from it. A suite is data (:mod:`~samkit.study.suite_spec`: the papers' claims in
:mod:`~samkit.study.papers`, the cheap-SAM protocol in :mod:`~samkit.study.cheap`, named in
:mod:`~samkit.study.suites`) that :mod:`~samkit.study.reproduce` runs.
"""

from samkit.study.compare import DEFAULT_METHODS, compare, parse_method
from samkit.study.presets import MAIN_JOB, NOISY_JOB
from samkit.study.report import write_report
from samkit.study.stats import Summary, summarize
from samkit.study.sweep import parse_grid, sweep
from samkit.study.train_runs import StudyResult

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
