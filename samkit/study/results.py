"""Reading a study folder: ``study.json`` and each run's files, as rows, groups and per-seed values.

Reads ``study.json`` and each run's ``config.yaml``, ``summary.json``, ``metrics.jsonl``,
``flatness.json`` and ``env.json``. Everything a report, a figure or a verdict says is computed
from what these functions return; nothing here writes a file. Runs without a ``summary.json`` are
``incomplete`` and left out of every per-seed value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.study.folder import FLATNESS, STUDY
from samkit.study.stats import gap_bounds, paired_gap, share_recovered, summarize
from samkit.train import run_files

# The columns of results.csv; a row holds these keys of a run's summary and flatness.
CSV_FIELDS = [
    "dir", "label", "seed", "status", "optimizer", "rho", "shards", "shard_size", "m",
    "label_noise", "test_acc", "test_loss", "train_loss", "train_acc", "memorised",
    "best_test_acc", "epochs", "steps", "passes", "example_passes", "train_time", "wall_time",
    "load_max", "lambda_max", "lambda_max_converged", "sharpness", "sharpness_stderr",
    "execution_used",
]  # fmt: skip


def load_study(folder: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``study.json`` and one row per planned run, read from the run folders.

    A row has the run's summary keys, ``optimizer``/``rho``/``shards``/``shard_size``/``m`` (the
    examples per SAM shard) from its config, its flatness, ``_metrics`` (the per-epoch rows) and
    ``_config`` (the config as a dict); ``status`` is ``complete`` or ``incomplete``.
    """
    folder = Path(folder)
    if not (folder / STUDY).is_file():
        raise SamkitError(
            f"{folder} is not a study folder (no {STUDY}); give a folder written by "
            "`samkit compare`, `samkit sweep` or `samkit reproduce`."
        )
    study = run_files.read_json(folder / STUDY)
    rows = [_row(folder, run) for run in study["runs"]]
    return study, rows


def _row(folder: Path, run: dict[str, Any]) -> dict[str, Any]:
    from samkit.train import load_config
    from samkit.train.setup import shard_examples

    run_dir = folder / run["dir"]
    row: dict[str, Any] = {"dir": run["dir"], "label": run["label"], "seed": run["seed"]}
    row.update({f"cell:{k}": v for k, v in run.get("cell", {}).items()})
    row["_config"] = {}
    if (run_dir / run_files.CONFIG).is_file():
        cfg = load_config(run_dir / run_files.CONFIG)
        row["_config"] = cfg.to_dict()
        shards = cfg.sam_shards() if cfg.is_sam else (None, None)
        row.update(
            optimizer=cfg.optimizer,
            rho=cfg.rho if cfg.is_sam else None,
            shards=shards[0],
            shard_size=shards[1],
            m=shard_examples(cfg),
            label_noise=cfg.label_noise,
        )
    if (run_dir / run_files.SUMMARY).is_file():
        summary = run_files.read_json(run_dir / run_files.SUMMARY)
        row["status"] = summary.get("status", "complete")
        for key in CSV_FIELDS:
            if key in summary and key not in ("label", "seed"):
                row[key] = summary[key]
    else:
        row["status"] = "incomplete"
    if (run_dir / FLATNESS).is_file():
        flat = run_files.read_json(run_dir / FLATNESS)
        for key in ("lambda_max", "lambda_max_converged", "sharpness", "sharpness_stderr"):
            row[key] = flat.get(key)
    row["_metrics"] = run_files.read_metrics(run_dir / run_files.METRICS)
    row["_env"] = (
        run_files.read_json(run_dir / run_files.ENV) if (run_dir / run_files.ENV).is_file() else {}
    )
    return row


def per_seed(rows: list[dict[str, Any]], key: str) -> dict[int, float]:
    """``{seed: value}`` of ``key`` over the complete runs in ``rows`` that measured it."""
    return {
        int(r["seed"]): float(r[key])
        for r in rows
        if r.get("status") == "complete" and r.get(key) is not None
    }


def groups_of(study: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows by method label (compare) or grid cell (sweep), in the study's order."""
    order = study.get("labels") or list(dict.fromkeys(r["label"] for r in rows))
    groups: dict[str, list[dict[str, Any]]] = {label: [] for label in order}
    for row in rows:
        groups.setdefault(row["label"], []).append(row)
    return groups


def seed_values(rows: list[dict[str, Any]], key: str) -> list[float]:
    """The values of :func:`per_seed`, for statistics over seeds."""
    return list(per_seed(rows, key).values())


def cost_reference(groups: dict[str, list[dict[str, Any]]]) -> str:
    """The method cost ratios are relative to: plain SGD when it is in the study, else the first."""
    for label, rows in groups.items():
        if rows and rows[0].get("optimizer") == "sgd":
            return label
    return next(iter(groups))


def baseline_of(study: dict[str, Any], groups: dict[str, list[dict[str, Any]]]) -> str | None:
    """The method (or cell) the paired gaps are taken to: ``study["baseline"]`` if set, else for a
    comparison SGD (or the first method); a sweep has none unless one was chosen."""
    chosen = study.get("baseline")
    if chosen is not None:
        if chosen not in groups:
            raise SamkitError(
                f"baseline {chosen!r} is not a method of this study; choose one of "
                f"{', '.join(groups)}."
            )
        return chosen
    return cost_reference(groups) if study["kind"] == "compare" else None


# What a cheaper method must keep of the reference's gain (issue "Cheap SAM": 90% at <= 1.25x passes).
SHARE_TARGET = 0.9


def cost_benefit(
    study: dict[str, Any], groups: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Per method: passes / baseline, the test-accuracy gain over the baseline (paired interval),
    the share of the reference method's gain it keeps, and the paired interval of
    ``gain - 0.9 * reference gain`` (positive: it keeps at least 90%)."""
    base, ref = baseline_of(study, groups), study.get("reference")
    if base is None or ref is None or ref not in groups:
        return []
    base_acc = per_seed(groups[base], "test_acc")
    ref_acc = per_seed(groups[ref], "test_acc")
    base_passes = summarize(seed_values(groups[base], "passes")).mean
    out = []
    for label, rows in groups.items():
        if label == base:
            continue
        acc = per_seed(rows, "test_acc")
        share, keeps = share_recovered(acc, ref_acc, base_acc, SHARE_TARGET)
        out.append({
            "label": label,
            "cost": summarize(seed_values(rows, "passes")).mean / base_passes,
            "gain": paired_gap(acc, base_acc, bounds=gap_bounds("test_acc")),
            "share": share,
            "keeps": keeps,
        })  # fmt: skip
    return out


# Load above the cores by more than this (in cores) means other work competed with the runs; below
# it, the excess is the study's own bookkeeping (its parent process, report writing).
LOAD_TOLERANCE = 0.5


def load_caveat(rows: list[dict[str, Any]]) -> str | None:
    """A warning when the machine was busier than its cores while runs trained (times unreliable).

    Every run records the 1-minute load average (runnable processes of all users) after each
    epoch; a run whose load exceeded the logical cores by more than :data:`LOAD_TOLERANCE` was
    timed while other work competed for the cores.
    """
    loaded = []
    for r in rows:
        cores = r.get("_env", {}).get("cpu_count")
        if r.get("load_max") is not None and cores and r["load_max"] > cores + LOAD_TOLERANCE:
            loaded.append((r["load_max"], cores))
    if not loaded:
        return None
    worst, cores = max(loaded)
    return (
        f"**Caveat — times are unreliable**: the machine was loaded while {len(loaded)} of "
        f"{len(rows)} runs trained (1-minute load average up to {worst:.1f} on {cores} logical "
        "cores: other work competed for the cores). Train times and time ratios are only "
        "indicative; `passes` and `passes / SGD` count the work itself and do not depend on the "
        "machine."
    )
