"""``samkit report DIR``: remake the report of any folder samkit wrote, from its files alone.

A compare or sweep folder gets its own report (:mod:`samkit.study.study_report`); a suite folder
(``suite.json``, written by ``samkit reproduce``) gets every study's report (and a tuned study's
tuning folder's), then the suite's verdicts (:mod:`samkit.study.suite_report`).
"""

from __future__ import annotations

from pathlib import Path

from samkit.study import dln
from samkit.study.records import STUDY, SUITE
from samkit.study.study_report import write_study_report
from samkit.study.suite_report import REPORT, write_verdicts
from samkit.study.suites import read_record
from samkit.study.tuning import SUFFIX as TUNE_SUFFIX


def report_name(folder: str | Path) -> str:
    """The file :func:`write_report` writes the folder's main report to."""
    return REPORT if (Path(folder) / SUITE).is_file() else "report.md"


def write_report(folder: str | Path, *, plots: bool = True) -> str:
    """(Re)write the report of a study folder, or of a suite folder; returns its table.

    A folder written by ``samkit reproduce`` (with ``suite.json``) gets every study's report
    remade, then the verdict table. ``plots=False`` leaves the figures as they are (the tables
    do not depend on them).
    """
    folder = Path(folder)
    if not (folder / SUITE).is_file():
        return write_study_report(folder, plots=plots)
    for spec in read_record(folder)["studies"]:
        path = folder / spec["id"]
        if spec["kind"] == "dln":
            if dln.is_done(path):
                dln.write_report(path, plots=plots)
            continue
        for study in (path.with_name(path.name + TUNE_SUFFIX), path):  # a tuned study's two
            if (study / STUDY).is_file():
                write_study_report(study, plots=plots)
    return write_verdicts(folder)
