"""Reports of a study folder, made only from the files on disk (``samkit report DIR``).

Reads ``study.json`` and each run's ``summary.json``, ``metrics.jsonl``, ``flatness.json`` and
``env.json``; writes ``results.csv`` (one row per run), ``report.md`` (a table per method or grid
cell with mean ± std and 95% t-intervals over seeds) and PNG plots. Runs without a
``summary.json`` are listed as incomplete and left out of the statistics.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.study.folder import STUDY
from samkit.study.stats import Summary, fmt, summarize
from samkit.train import files as run_files

FLATNESS = "flatness.json"
CSV_FIELDS = [
    "dir", "label", "seed", "status", "optimizer", "rho", "shards", "shard_size",
    "test_acc", "test_loss", "train_loss", "train_acc", "best_test_acc", "epochs", "steps",
    "passes", "example_passes", "train_time", "wall_time",
    "lambda_max", "lambda_max_converged", "sharpness", "sharpness_stderr",
]  # fmt: skip


def _load(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if not (folder / STUDY).is_file():
        raise SamkitError(
            f"{folder} is not a study folder (no {STUDY}); give a folder written by "
            "`samkit compare` or `samkit sweep`."
        )
    study = run_files.read_json(folder / STUDY)
    rows = []
    for run in study["runs"]:
        run_dir = folder / run["dir"]
        row: dict[str, Any] = {"dir": run["dir"], "label": run["label"], "seed": run["seed"]}
        row.update({f"cell:{k}": v for k, v in run.get("cell", {}).items()})
        cfg_path = run_dir / run_files.CONFIG
        if cfg_path.is_file():
            from samkit.train import load_config

            cfg = load_config(cfg_path)
            row.update(optimizer=cfg.optimizer, rho=cfg.rho if cfg.is_sam else None)
            shards = cfg.sam_shards() if cfg.is_sam else (None, None)
            row.update(shards=shards[0], shard_size=shards[1])
        summary_path = run_dir / run_files.SUMMARY
        if summary_path.is_file():
            summary = run_files.read_json(summary_path)
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
        rows.append(row)
    return study, rows


def _write_csv(path: Path, rows: list[dict[str, Any]], cell_keys: list[str]) -> None:
    cell_keys = [k for k in cell_keys if k not in CSV_FIELDS]  # e.g. rho is a column already
    fields = CSV_FIELDS[:3] + cell_keys + CSV_FIELDS[3:]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        out = {k: row.get(k) for k in CSV_FIELDS}
        out.update({k: row.get(f"cell:{k}") for k in cell_keys})
        writer.writerow({k: "" if v is None else v for k, v in out.items()})
    run_files.write_text_atomic(path, buf.getvalue())


def _values(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get("status") == "complete" and r.get(key) is not None]


def _groups(rows: list[dict[str, Any]], order: list[str]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {label: [] for label in order}
    for row in rows:
        groups.setdefault(row["label"], []).append(row)
    return groups


def _reference(study: dict[str, Any], groups: dict[str, list[dict[str, Any]]]) -> str:
    # Cost ratios are relative to plain SGD when it is in the study, else to the first method.
    for label, rows in groups.items():
        if rows and rows[0].get("optimizer") == "sgd":
            return label
    return next(iter(groups))


def _table(
    study: dict[str, Any], groups: dict[str, list[dict[str, Any]]], cell_keys: list[str]
) -> tuple[str, dict[str, dict[str, Summary]]]:
    ref = _reference(study, groups)
    ref_time = summarize(_values(groups[ref], "train_time")).mean
    keys = ("test_acc", "test_loss", "train_loss", "lambda_max", "sharpness", "train_time",
            "passes")  # fmt: skip
    stats = {
        label: {k: summarize(_values(rows, k)) for k in keys} for label, rows in groups.items()
    }
    flat = study.get("flatness") is not None
    head = ["method" if study["kind"] == "compare" else "cell", "runs",
            "test acc (mean ± std [95% CI])", "test loss", "final train loss"]  # fmt: skip
    if flat:
        head += ["λ_max (Hessian)", "m-sharpness"]
    head += ["train time (s)", f"time / {ref}", "passes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, rows in groups.items():
        s = stats[label]
        done = sum(r.get("status") == "complete" for r in rows)
        cells = [f"`{label}`", f"{done}/{len(rows)}", fmt(s["test_acc"]), fmt(s["test_loss"]),
                 fmt(s["train_loss"], interval=False)]  # fmt: skip
        if flat:
            cells += [
                fmt(s["lambda_max"], 2, interval=False),
                fmt(s["sharpness"], 4, interval=False),
            ]
        ratio = s["train_time"].mean / ref_time if ref_time and ref_time > 0 else math.nan
        passes = s["passes"].mean
        cells += [
            fmt(s["train_time"], 1, interval=False),
            "–" if math.isnan(ratio) else f"{ratio:.2f}x",
            "–" if math.isnan(passes) else f"{passes:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), stats


def write_report(folder: str | Path) -> str:
    """(Re)write ``results.csv``, ``report.md`` and plots of a study folder; returns the table."""
    folder = Path(folder)
    study, rows = _load(folder)
    cell_keys = list(study.get("grid", {})) if study["kind"] == "sweep" else []
    order = study.get("labels") or list(dict.fromkeys(r["label"] for r in rows))
    groups = _groups(rows, order)
    _write_csv(folder / "results.csv", rows, cell_keys)
    table, stats = _table(study, groups, cell_keys)
    plots = _plots(folder, study, groups, stats, cell_keys)
    (folder / "report.md").parent.mkdir(parents=True, exist_ok=True)
    run_files.write_text_atomic(folder / "report.md", _markdown(folder, study, rows, table, plots))
    return table


def _markdown(
    folder: Path, study: dict[str, Any], rows: list[dict[str, Any]], table: str, plots: list[str]
) -> str:
    base = study["base_config"]
    env = _first_env(folder, rows)
    sessions = study.get("sessions", [])
    elapsed = sum(s.get("elapsed", 0.0) for s in sessions)
    complete = sum(r.get("status") == "complete" for r in rows)
    title = "Comparison" if study["kind"] == "compare" else "Sweep"
    what = (
        f"methods {', '.join(f'`{m}`' for m in study.get('methods', []))}"
        if study["kind"] == "compare"
        else "grid " + " x ".join(f"`{k}` in {v}" for k, v in study.get("grid", {}).items())
    )
    setup_keys = ("dataset", "model", "model_options", "epochs", "batch_size", "lr", "momentum",
                  "weight_decay", "schedule", "rho", "label_smoothing", "label_noise",
                  "precision", "train_subset", "max_steps_per_epoch")  # fmt: skip
    setup = ", ".join(f"{k}={base[k]}" for k in setup_keys if base.get(k) not in (None, {}, 0.0))
    out = [
        f"# {title}: {base['dataset']} / {base['model']}",
        "",
        f"Generated by `samkit report` from the run files in `{folder.name}/` on "
        f"{time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        f"- **Runs**: {what} x seeds {study['seeds']}: {complete}/{len(rows)} complete.",
        f"- **Shared setup**: {setup}.",
    ]
    if env:
        out.append(
            f"- **Machine**: {env.get('cpu')} ({env.get('cpu_count')} logical cores, "
            f"{env.get('torch_threads')} torch threads), device `{env.get('device')}`"
            + (f" ({env['gpu']})" if env.get("gpu") else "")
            + f"; Python {env.get('python')}, torch {env.get('torch')}, samkit commit "
            f"`{env.get('git_commit')}`."
        )
    if sessions:
        jobs = ", ".join(str(s.get("jobs", 1)) for s in sessions)
        out.append(
            f"- **Wall time of the study**: {elapsed:.1f} s over {len(sessions)} session(s) "
            f"(parallel jobs: {jobs}), training and flatness included."
        )
    out += ["", table, "", _notes(study), ""]
    for plot in plots:
        out += [f"![{plot}]({plot})", ""]
    incomplete = [r["dir"] for r in rows if r.get("status") != "complete"]
    if incomplete:
        out += [f"Incomplete runs (not in the statistics): {', '.join(incomplete)}.", ""]
    out += ["Per-run numbers: [results.csv](results.csv).", ""]
    return "\n".join(out)


def _notes(study: dict[str, Any]) -> str:
    notes = [
        "Mean ± sample std over seeds; brackets: 95% Student-t interval of the mean "
        "(mean ± t(0.975, n-1)·std/√n).",
        "Losses are eval-mode cross-entropy without label smoothing; train loss is on the "
        "(possibly noisy) training labels after the last epoch.",
        "Train time counts optimizer steps only (no evaluation); passes are forward-backward "
        "passes over a batch (SGD 1 per step, every SAM variant 2).",
    ]
    if study.get("flatness"):
        f = study["flatness"]
        notes.append(
            f"λ_max: top Hessian eigenvalue of the training loss on the first {f['examples']} "
            f"train examples (Lanczos, tol {f['tol']}); m-sharpness: worst-case loss increase "
            f"within an l2 ball of radius {f['rho']}, one perturbation per {f['shard_size']} "
            f"examples ({f['steps']} ascent steps), averaged over groups."
        )
    return "\n".join(f"- {n}" for n in notes)


def _first_env(folder: Path, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    for row in rows:
        path = folder / row["dir"] / run_files.ENV
        if path.is_file():
            return run_files.read_json(path)
    return None


def _plots(
    folder: Path,
    study: dict[str, Any],
    groups: dict[str, list[dict[str, Any]]],
    stats: dict[str, dict[str, Summary]],
    cell_keys: list[str],
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    written = []
    if study["kind"] == "compare":
        written.append(_curves(folder, groups, plt))
        if study.get("flatness"):
            written.append(_acc_vs_flatness(folder, groups, plt))
    elif cell_keys:
        written.append(_grid_plot(folder, study, groups, stats, cell_keys, plt))
    return [w for w in written if w]


def _save(fig: Any, path: Path, plt: Any) -> str:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)  # atomic, like every other file of a study
    return path.name


def _curves(folder: Path, groups: dict[str, list[dict[str, Any]]], plt: Any) -> str:
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in groups.items():
        runs = [r["_metrics"] for r in rows if r.get("status") == "complete" and r["_metrics"]]
        if not runs:
            continue
        n = min(len(m) for m in runs)
        epochs = np.arange(1, n + 1)
        for ax, key in zip(axes, ("test_acc", "train_loss"), strict=True):
            values = np.array([[m[i][key] for i in range(n)] for m in runs])
            mean, std = values.mean(0), values.std(0)
            (line,) = ax.plot(epochs, mean, label=f"{label} (n={len(runs)})")
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    axes[0].set(xlabel="epoch", ylabel="test accuracy", title="Test accuracy (mean ± std)")
    axes[1].set(xlabel="epoch", ylabel="train loss", yscale="log", title="Train loss (eval mode)")
    axes[0].legend()
    return _save(fig, folder / "curves.png", plt)


def _acc_vs_flatness(folder: Path, groups: dict[str, list[dict[str, Any]]], plt: Any) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in groups.items():
        done = [
            r for r in rows if r.get("status") == "complete" and r.get("lambda_max") is not None
        ]
        for ax, key in zip(axes, ("lambda_max", "sharpness"), strict=True):
            ax.scatter([r[key] for r in done], [r["test_acc"] for r in done], label=label)
    axes[0].set(xlabel="top Hessian eigenvalue λ_max", ylabel="test accuracy")
    axes[1].set(xlabel="worst-case m-sharpness (loss increase)", ylabel="test accuracy")
    axes[0].legend()
    fig.suptitle("Test accuracy vs flatness of the final model (one point per run)")
    return _save(fig, folder / "acc_vs_flatness.png", plt)


def _grid_plot(
    folder: Path,
    study: dict[str, Any],
    groups: dict[str, list[dict[str, Any]]],
    stats: dict[str, dict[str, Summary]],
    keys: list[str],
    plt: Any,
) -> str:
    import numpy as np

    grid = study["grid"]

    def mean_acc(cell: dict[str, Any]) -> float:
        name = "_".join(f"{k}={cell[k]}" for k in keys)
        return stats[name]["test_acc"].mean if name in stats else math.nan

    if len(keys) == 1:
        (k,) = keys
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([str(v) for v in grid[k]], [mean_acc({k: v}) for v in grid[k]], marker="o")
        ax.set(xlabel=k, ylabel="mean test accuracy", title=f"Test accuracy vs {k}")
        return _save(fig, folder / "sweep.png", plt)
    rk, ck = keys
    acc = np.array([[mean_acc({rk: r, ck: c}) for c in grid[ck]] for r in grid[rk]])
    fig, ax = plt.subplots(figsize=(1.3 * len(grid[ck]) + 3, 0.9 * len(grid[rk]) + 2))
    im = ax.imshow(acc, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(grid[ck])), [str(c) for c in grid[ck]])
    ax.set_yticks(range(len(grid[rk])), [str(r) for r in grid[rk]])
    ax.set(xlabel=ck, ylabel=rk, title="Mean test accuracy")
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            if not math.isnan(acc[i, j]):
                ax.text(j, i, f"{acc[i, j]:.3f}", ha="center", va="center", color="w")
    fig.colorbar(im, ax=ax)
    return _save(fig, folder / "heatmap.png", plt)
