"""A study folder: ``study.json`` (what was planned, how, and each session's time) + run subfolders;
a suite folder (``samkit reproduce``): ``suite.json`` + one study folder per study.

``study.json`` keys: ``kind`` (compare | sweep), ``base_config`` (the shared TrainConfig),
``base_hash``, ``seeds``, ``methods`` (compare) or ``grid`` (sweep), ``flatness`` (settings or
null), ``runs`` (``dir``, ``label``, ``seed``, ``cell``, ``config_hash`` of each planned run) and
``sessions`` (``started``, ``elapsed`` seconds, ``command``, ``jobs`` and ``launcher`` of each
invocation; with ``--launcher slurm`` also the submitit ``executor``, ``submitted`` — each
submitted run's ``dir`` and ``job`` id — and ``submitit_folder``).
``suite.json`` (:mod:`samkit.study.reproduce`) has ``kind`` (reproduce), ``suite``, ``title``,
``claims``, ``studies``, ``picks`` (:mod:`samkit.study.suite_spec`, as dicts) and ``sessions`` (which
also name the ``studies`` each one ran); :func:`samkit.study.suites.read_record` reads it back,
older formats included.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.train import TrainConfig, config_hash, run_files, run_folder

STUDY = "study.json"
SUITE = "suite.json"


def default_folder(kind: str, cfg: TrainConfig) -> Path:
    """``runs/<kind>-<dataset>-<model>-<time>``: a fresh name, so nothing is overwritten."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{kind}-{cfg.dataset}-{cfg.model}-{stamp}".replace(":", "_").replace("/", "_")
    folder = Path("runs") / name
    suffix = 1
    while folder.exists():  # two studies started in the same second
        suffix += 1
        folder = Path("runs") / f"{name}-{suffix}"
    return folder


def open_study(folder: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Create ``folder/study.json``, or continue the study already there if it is the same one.

    Runs planned now are merged with those planned before (a study can gain seeds or methods);
    a folder holding another kind of study or another base setup is an error.
    """

    def same_study(old: dict[str, Any]) -> None:
        for key in ("kind", "base_hash"):
            if old.get(key) != record[key]:
                raise SamkitError(
                    f"{folder} holds another study ({key} {old.get(key)!r} != {record[key]!r}); "
                    "nothing was changed. Use another --out."
                )

    return open_record(folder, STUDY, record, merge={"runs": "dir"}, check=same_study,
                       what="study")  # fmt: skip


def open_record(
    folder: Path,
    name: str,
    record: dict[str, Any],
    *,
    merge: dict[str, str],
    check: Callable[[dict[str, Any]], None],
    what: str,
) -> dict[str, Any]:
    """Write ``folder/name`` (a study's or a suite's record), continuing the one already there.

    An existing record is first passed to ``check`` (which raises if it is another study or
    suite); then each list ``record[key]`` is merged with the old one (the old entries whose
    ``merge[key]`` field is not planned again come first) and the old ``sessions`` are kept. A
    folder with other files and no record is refused: nothing in it is touched.
    """
    with run_folder.hold(folder, wait=True):  # two studies on one folder: one at a time here
        return _open_record(folder, name, record, merge=merge, check=check, what=what)


def _open_record(
    folder: Path,
    name: str,
    record: dict[str, Any],
    *,
    merge: dict[str, str],
    check: Callable[[dict[str, Any]], None],
    what: str,
) -> dict[str, Any]:
    path = folder / name
    if path.is_file():
        old = run_files.read_json(path)
        check(old)
        for key, ident in merge.items():
            known = {item[ident] for item in record[key]}
            record[key] = [item for item in old.get(key, []) if item[ident] not in known] + record[key]
        record["sessions"] = old.get("sessions", [])
    elif folder.exists() and any(not _left_by_a_crash(p, name) for p in folder.iterdir()):
        raise SamkitError(
            f"{folder} exists and is not a {what} folder (no {name}); nothing was changed. "
            "Use another --out."
        )
    else:
        record["sessions"] = []
    folder.mkdir(parents=True, exist_ok=True)
    run_files.write_json(path, record)
    return record


def close_session(
    folder: Path,
    record: dict[str, Any],
    started: float,
    jobs: int,
    name: str = STUDY,
    **extra: Any,
) -> None:
    """Append this invocation's wall time (and ``extra``) to the record and write it.

    The record is the one on disk now (another study on the same folder may have planned more
    runs or closed its own session since this one opened), plus this session.
    """
    session = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed": time.time() - started,
        "command": list(sys.argv),
        "jobs": jobs,
        **extra,
    }
    with run_folder.hold(folder, wait=True):
        path = folder / name
        if path.is_file():
            record.clear()
            record.update(run_files.read_json(path))
        record.setdefault("sessions", []).append(session)
        run_files.write_json(path, record)


def _left_by_a_crash(path: Path, name: str) -> bool:
    """The lock file, or half a temporary of the record, which a killed process leaves behind."""
    return path.name == run_folder.LOCK or (
        path.name.startswith(f".{name}.") and path.name.endswith(".tmp")
    )


def base_record(kind: str, base: TrainConfig, seeds: list[int], flatness: Any) -> dict[str, Any]:
    """The fields every study record has."""
    from dataclasses import asdict

    return {
        "kind": kind,
        "base_config": base.to_dict(),
        "base_hash": config_hash(base),
        "seeds": list(seeds),
        "flatness": None if flatness is None else asdict(flatness),
    }
