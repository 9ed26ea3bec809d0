"""Reading a study folder: ``study.json`` and each run's files, as rows, groups and per-seed values.

Reads ``study.json`` and each run's ``config.yaml``, ``summary.json``, ``metrics.jsonl``,
``flatness.json`` and ``env.json``. Everything a report, a figure or a verdict says is computed
from what these functions return (the gain a method keeps of a reference's included:
:func:`keeps`); nothing here writes a file or a sentence. Runs without a ``summary.json`` are
``incomplete`` and left out of every per-seed value.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.study.flatness import FLATNESS
from samkit.study.records import STUDY
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


# What a cheaper method must keep of the reference's gain (a compare's cost-and-benefit table).
SHARE_TARGET = 0.9


def _mean_of(rows: list[dict[str, Any]], key: str) -> float:
    return summarize(seed_values(rows, key)).mean


def keeps(
    groups: dict[str, list[dict[str, Any]]],
    label: str,
    reference: str,
    baseline: str,
    share: float = SHARE_TARGET,
) -> dict[str, Any]:
    """What method ``label`` keeps of ``reference``'s test-accuracy gain over ``baseline``.

    ``gain`` and ``reference_gain``: paired gaps to the baseline; ``share``: mean gain over mean
    reference gain (on the seeds all three have); ``keeps``: the paired interval of ``gain -
    share * reference gain`` (above 0: it keeps at least ``share``); ``passes`` and ``time``: its
    mean passes and train time over the baseline's.
    """
    acc, ref, base = (per_seed(groups.get(x, []), "test_acc") for x in (label, reference, baseline))
    ratio, kept = share_recovered(acc, ref, base, share)
    cost = {}
    for key in ("passes", "train_time"):
        mine, theirs = (_mean_of(groups.get(x, []), key) for x in (label, baseline))
        cost[key] = mine / theirs if theirs else math.nan
    bounds = gap_bounds("test_acc")
    return {"label": label, "share": ratio, "keeps": kept,
            "gain": paired_gap(acc, base, bounds=bounds),
            "reference_gain": paired_gap(ref, base, bounds=bounds),
            "passes": cost["passes"], "time": cost["train_time"]}  # fmt: skip


def cost_benefit(
    study: dict[str, Any], groups: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Per method but the baseline, :func:`keeps` of the study's reference (its cost-and-benefit
    table); empty when the study names no reference."""
    base, ref = baseline_of(study, groups), study.get("reference")
    if base is None or ref is None or ref not in groups:
        return []
    return [keeps(groups, label, ref, base) for label in groups if label != base]
