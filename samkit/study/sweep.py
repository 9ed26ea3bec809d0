"""``samkit sweep``: a grid over one or two run settings (x seeds), as in mSAM's sensitivity study.

Each cell runs in ``out/<key1>=<v1>_<key2>=<v2>-seed<k>``; the report has one row per cell and a
heatmap of mean test accuracy (a line plot for a one-key grid).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.study.flatness import flatness_settings
from samkit.study.launch import resolve
from samkit.study.records import base_record, default_folder
from samkit.study.status import pending_table
from samkit.study.study_report import write_study_report
from samkit.study.train_runs import Launcher, StudyResult, plan_config, run_study
from samkit.train import TrainConfig, config_hash

DEFAULT_GRID = ("rho=0.02,0.05,0.1,0.2", "shards=1,2,4,8")


def parse_grid(specs: list[str] | tuple[str, ...]) -> dict[str, list[Any]]:
    """``["rho=0.01,0.1", "shards=1,4"]`` -> ``{"rho": [0.01, 0.1], "shards": [1, 4]}``; values are
    read as in :mod:`samkit.spec` (one with commas in parentheses:
    ``cadence=(every:k=2,reuse=looksam),always``)."""
    from dataclasses import fields

    from samkit.spec import scalar, split, unwrap

    known = {f.name for f in fields(TrainConfig)}
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not values.strip():
            raise SamkitError(f"--grid expects KEY=V1,V2,..., got {spec!r}.")
        if key not in known:
            raise SamkitError(
                f"--grid {spec!r}: {key!r} is not a run setting; known: {', '.join(sorted(known))}."
            )
        if key in grid or key == "seed":
            raise SamkitError(f"--grid {key} is given twice (seeds go in --seeds).")
        parsed = [scalar(unwrap(v)) for v in split(values, "--grid")]
        if len(set(map(str, parsed))) != len(parsed):
            raise SamkitError(f"--grid {key} repeats a value: {values}.")
        grid[key] = parsed
    if not 1 <= len(grid) <= 2:
        raise SamkitError(f"--grid takes one or two settings, got {len(grid)}.")
    return grid


def sweep(
    base: TrainConfig,
    *,
    grid: list[str] | tuple[str, ...] | None = None,
    seeds: list[int] | tuple[int, ...] | None = None,
    out: Path | str | None = None,
    jobs: int = 1,
    flatness: bool = False,
    flatness_examples: int | None = None,
    baseline: str | None = None,
    quiet: bool = False,
    launcher: str | Launcher = "local",
) -> StudyResult:
    """Train every grid cell for every seed and write results.csv, report.md and a heatmap.

    ``baseline``: a cell (``"rho=0.05_shards=1"``) the report's paired gaps are taken to (none by
    default). ``base.init_from`` may contain ``{seed}``, and ``launcher`` says where the runs run
    (see :func:`samkit.study.compare`).

    Example:
        >>> sweep(TrainConfig(optimizer="sam"), grid=["rho=0.05,0.1", "shards=1,4"], seeds=[0])
    """
    launcher_ = resolve(launcher, jobs)
    cells = parse_grid(list(grid or DEFAULT_GRID))
    seeds = list((0,) if seeds is None else seeds)
    if not seeds:
        raise SamkitError("--seeds needs at least one seed.")
    keys = list(cells)
    folder = Path(out) if out is not None else default_folder("sweep", base)
    plan, runs = [], []
    for values in itertools.product(*cells.values()):
        cell = dict(zip(keys, values, strict=True))
        name = "_".join(f"{k}={v}" for k, v in cell.items())
        for seed in seeds:
            try:
                cfg = plan_config(base, cell, seed, name, folder / f"{name}-seed{seed}")
            except SamkitError as err:
                raise SamkitError(f"grid cell {name}: {err}") from err
            runs.append(
                {
                    "dir": f"{name}-seed{seed}",
                    "label": name,
                    "seed": seed,
                    "cell": cell,
                    "config_hash": config_hash(cfg),
                }
            )
            plan.append(cfg)
    fs = flatness_settings(flatness, flatness_examples)
    record = base_record("sweep", base, seeds, fs)
    labels = list(dict.fromkeys(r["label"] for r in runs))
    if baseline is not None and baseline not in labels:
        raise SamkitError(f"--baseline {baseline!r} is not a cell of the grid ({', '.join(labels)}).")
    record.update(grid=cells, runs=runs, baseline=baseline)
    shape = " x ".join(f"{k} ({len(v)})" for k, v in cells.items())
    banner = f"sweep: {shape} x {len(seeds)} seed(s) = {len(plan)} runs"
    done = run_study(folder, record, plan, launcher=launcher_, quiet=quiet, flatness=fs, banner=banner)
    if not done:
        return StudyResult(folder, pending_table(folder), done=False)
    return StudyResult(folder, write_study_report(folder))
