"""A study folder: ``study.json`` (what was planned, how, and each session's time) + run subfolders.

``study.json`` keys: ``kind`` (compare | sweep), ``base_config`` (the shared TrainConfig),
``base_hash``, ``seeds``, ``methods`` (compare) or ``grid`` (sweep), ``flatness`` (settings or
null), ``runs`` (``dir``, ``label``, ``seed``, ``cell``, ``config_hash`` of each planned run) and
``sessions`` (``started``, ``elapsed`` seconds, ``command``, ``jobs`` of each invocation).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.train import TrainConfig, config_hash
from samkit.train import files as run_files

STUDY = "study.json"


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
    path = folder / STUDY
    if path.is_file():
        old = run_files.read_json(path)
        for key in ("kind", "base_hash"):
            if old.get(key) != record[key]:
                raise SamkitError(
                    f"{folder} holds another study ({key} {old.get(key)!r} != {record[key]!r}); "
                    "nothing was changed. Use another --out."
                )
        known = {r["dir"] for r in record["runs"]}
        record["runs"] = [r for r in old["runs"] if r["dir"] not in known] + record["runs"]
        record["sessions"] = old.get("sessions", [])
    elif folder.exists() and any(folder.iterdir()):
        raise SamkitError(
            f"{folder} exists and is not a study folder (no {STUDY}); nothing was changed. "
            "Use another --out."
        )
    else:
        record["sessions"] = []
    folder.mkdir(parents=True, exist_ok=True)
    run_files.write_json(path, record)
    return record


def close_session(folder: Path, record: dict[str, Any], started: float, jobs: int) -> None:
    """Append this invocation's wall time to ``study.json``."""
    record["sessions"].append(
        {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "elapsed": time.time() - started,
            "command": list(sys.argv),
            "jobs": jobs,
        }
    )
    run_files.write_json(folder / STUDY, record)


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
