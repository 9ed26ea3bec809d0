"""How far a study is (``samkit status``): each planned run finished, running, interrupted or
waiting, read from the run folders (and their locks) without writing anything.

A study submitted to a cluster and not waited for (``--launcher slurm --no-wait``) is
followed with this; once every run is finished, ``samkit report`` writes its report.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.study.flatness import FLATNESS
from samkit.study.records import STUDY
from samkit.train import run_files, run_folder

STATES = ("finished", "running", "interrupted", "waiting")


def run_states(folder: str | Path) -> dict[str, str]:
    """``{run dir: state}`` of every run the study in ``folder`` planned: ``finished`` (trained,
    and its flatness measured when the study asks for it), ``running`` (a process holds its
    folder), ``interrupted`` (a checkpoint or a summary, no process) or ``waiting`` (not
    started: queued, or never launched)."""
    folder = Path(folder)
    path = folder / STUDY
    if not path.is_file():
        raise SamkitError(f"{folder} is not a study folder (no {STUDY}); give a compare or sweep folder.")
    study = run_files.read_json(path)
    return {r["dir"]: _state(folder / r["dir"], study.get("flatness") is not None) for r in study["runs"]}


def _state(run: Path, flatness: bool) -> str:
    try:
        with run_folder.reading(run, purpose="read its state"):
            pass
    except run_folder.FolderBusy:
        return "running"
    if (run / run_files.SUMMARY).is_file() and (not flatness or (run / FLATNESS).is_file()):
        return "finished"
    if (run / run_files.CHECKPOINT).is_file() or (run / run_files.SUMMARY).is_file():
        return "interrupted"
    return "waiting"


def pending_table(folder: str | Path) -> str:
    """What ``samkit status`` prints: the count of runs in each state, the runs not finished,
    the jobs of the last cluster submission, and the command that writes the report."""
    folder = Path(folder)
    states = run_states(folder)
    counts = Counter(states.values())
    done = counts["finished"] == len(states)
    lines = [f"{folder}: {counts['finished']}/{len(states)} runs finished"
             + "".join(f", {counts[s]} {s}" for s in STATES[1:] if counts[s])]  # fmt: skip
    lines += [f"  {name}: {state}" for name, state in states.items() if state != "finished"]
    jobs = _last_submission(folder)
    if jobs and not done:
        lines.append(f"submitted as job(s) {', '.join(j['job'] for j in jobs)} (squeue / sacct -j ID)")
    lines.append(
        f"every run is finished: `samkit report {folder}` writes the report" if done
        else f"when they are finished, `samkit report {folder}` writes the report "
        "(an interrupted run resumes when the study's command is run again)"
    )  # fmt: skip
    return "\n".join(lines)


def _last_submission(folder: Path) -> list[dict[str, Any]]:
    sessions = run_files.read_json(folder / STUDY).get("sessions", [])
    for session in reversed(sessions):
        if session.get("submitted"):
            return list(session["submitted"])
    return []
