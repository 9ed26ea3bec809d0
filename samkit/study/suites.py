"""The suites ``samkit reproduce --suite NAME`` knows, and a suite folder's record read back.

A suite is data (:class:`~samkit.study.suite_spec.Suite`): the papers' claims on the quick or the full
set of studies (:mod:`samkit.study.papers`), or the cheap-SAM protocol (:mod:`samkit.study.cheap`).
``suite.json`` stores the claims, studies and picks it ran, so a report never needs the code's
current definition of the suite.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.study import cheap, papers
from samkit.study.records import SUITE
from samkit.study.suite_spec import Claim, Pick, StudySpec, Suite, select_claims
from samkit.train import run_files

SUITES: dict[str, Callable[[], Suite]] = {
    "quick": lambda: papers.suite(quick=True),
    "full": lambda: papers.suite(quick=False),
    "cheap": cheap.suite,
}


def suite(name: str) -> Suite:
    """The suite named ``name`` (:data:`SUITES`)."""
    if name not in SUITES:
        raise SamkitError(f"suite must be one of {', '.join(SUITES)}; got {name!r}.")
    return SUITES[name]()


def plan(name: str, claim_ids: list[str] | None) -> tuple[list[Claim], list[StudySpec], list[Pick]]:
    """The selected claims, the studies they need (sources first, in the suite's order) and the
    picks those studies take methods from."""
    whole = suite(name)
    claims = select_claims(claim_ids, whole.claims)
    specs = {s.id: s for s in whole.studies}
    picks = {p.id: p for p in whole.picks}
    needed: set[str] = set()

    def need(sid: str) -> None:
        if sid not in needed:
            needed.add(sid)
            spec = specs[sid]
            for dep in [*spec.needs(), *(picks[spec.pick].studies if spec.pick else ())]:
                need(dep)

    for claim in claims:
        need(claim.study)
    studies = [s for s in specs.values() if s.id in needed]
    used = {s.pick for s in studies if s.pick}
    return claims, studies, [p for p in picks.values() if p.id in used]


def record_of(name: str, claims: list[Claim], specs: list[StudySpec], picks: list[Pick]) -> dict[str, Any]:
    """What ``suite.json`` stores of a plan (sessions are added as they run)."""
    return {
        "kind": "reproduce",
        "suite": name,
        "title": suite(name).title.format(suite=name) if name in SUITES else name,
        "claims": [asdict(c) for c in claims],
        "studies": [asdict(s) for s in specs],
        "picks": [asdict(p) for p in picks],
    }


def read_record(folder: Path) -> dict[str, Any]:
    """``folder/suite.json``, with ``claims``, ``studies`` and ``picks`` however old the file.

    A cheap-SAM folder written before the protocol was ordinary suite data (``settings`` and
    ``candidates``, no studies) is read as the suite those settings make (:func:`cheap.from_record`);
    a record from before suites had titles and picks was the papers' claims. The file is left as
    it is.
    """
    record = run_files.read_json(Path(folder) / SUITE)
    if "settings" in record and not record.get("studies"):
        old = cheap.from_record(record)
        upgraded = {**record_of(record["suite"], *_all(old)), "sessions": record.get("sessions", [])}
        upgraded["title"] = old.title.format(suite=record["suite"])
        record = json.loads(json.dumps(upgraded))  # as it would read from a file written now
    record.setdefault("title", papers.TITLE.format(suite=record["suite"]))
    record.setdefault("picks", [])
    return record


def _all(s: Suite) -> tuple[list[Claim], list[StudySpec], list[Pick]]:
    return list(s.claims), list(s.studies), list(s.picks)
