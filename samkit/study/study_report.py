"""A compare or sweep folder's report, made only from its files (:func:`write_study_report`).

``results.csv`` (one row per run), ``report.md`` (two tables per method or grid cell —
generalisation, then flatness and cost — with mean ± std and 95% intervals over seeds, and the
paired gap to a baseline; with a reference, what each method keeps of its gain) and PNG plots,
from the rows :mod:`samkit.study.results` reads. Runs without a ``summary.json`` are listed as
incomplete and left out of the statistics.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from samkit import _atomic
from samkit.study.plots import figure_names, write_plots
from samkit.study.report_text import header, load_caveat, write_csv
from samkit.study.results import (
    CSV_FIELDS,
    SHARE_TARGET,
    baseline_of,
    cost_benefit,
    cost_reference,
    groups_of,
    load_study,
    per_seed,
    seed_values,
)
from samkit.study.stats import BOUNDS, Summary, fmt, gap_bounds, paired_gap, summarize

# Settings a method or cell may change; the "Shared setup" line shows only those all runs share.
SETUP_KEYS = (
    "dataset", "model", "model_options", "train_subset", "label_noise", "epochs", "batch_size",
    "lr", "momentum", "weight_decay", "schedule", "label_smoothing", "precision",
    "max_steps_per_epoch",
)  # fmt: skip


def _write_csv(path: Path, rows: list[dict[str, Any]], cell_keys: list[str]) -> None:
    cell_keys = [k for k in cell_keys if k not in CSV_FIELDS]  # e.g. rho is a column already
    fields = CSV_FIELDS[:3] + cell_keys + CSV_FIELDS[3:]
    write_csv(path, fields, ([row.get(k if k in CSV_FIELDS else f"cell:{k}") for k in fields]
                             for row in rows))  # fmt: skip


def _same(rows: list[dict[str, Any]], key: str) -> Any:
    values = {repr(r["_config"].get(key)) for r in rows if r["_config"]}
    if len(values) != 1:
        return "varies"
    return next(r["_config"].get(key) for r in rows if r["_config"])


def _settings(rows: list[dict[str, Any]], shared: dict[str, Any]) -> str:
    """What a method or cell sets beyond the shared setup: SAM knobs (with m) and overrides."""
    if not rows or not rows[0]["_config"]:
        return "–"
    cfg = rows[0]["_config"]
    parts = []
    if rows[0].get("m") is not None:
        parts.append(f"rho={_same(rows, 'rho')}")
        m = {r.get("m") for r in rows}
        parts.append(f"m={m.pop()}" if len(m) == 1 else "m varies")
        if cfg["optimizer"] == "fsam":
            parts += [f"sigma={_same(rows, 'sigma')}", f"lmbda={_same(rows, 'lmbda')}"]
        if cfg["optimizer"] == "asam":
            parts.append(f"eta={_same(rows, 'eta')}")
    for key in SETUP_KEYS:
        if key not in shared:
            parts.append(f"{key}={_same(rows, key)}")
    init = rows[0].get("cell:init_from")  # as planned: a {seed} template stays one
    if init:
        parts.append("init_from=" + _short_path(str(init)))
    return ", ".join(parts) if parts else "–"


def _short_path(path: str) -> str:
    p = Path(path)
    return "/".join(p.parts[-2:]) if len(p.parts) > 1 else path


def _shared_setup(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The setup keys every run shares (those that vary go to the per-method settings)."""
    shared = {}
    for key in SETUP_KEYS:
        value = _same(rows, key)
        if value != "varies":
            shared[key] = value
    return shared


def _tables(
    study: dict[str, Any], groups: dict[str, list[dict[str, Any]]]
) -> tuple[str, dict[str, dict[str, Summary]]]:
    ref = cost_reference(groups)
    base = baseline_of(study, groups)
    keys = ("test_acc", "test_loss", "train_loss", "train_acc", "memorised", "lambda_max",
            "sharpness", "train_time", "passes")  # fmt: skip
    stats = {
        label: {k: summarize(seed_values(rows, k), bounds=BOUNDS.get(k, (-math.inf, math.inf)))
                for k in keys}
        for label, rows in groups.items()
    }  # fmt: skip
    all_rows = [r for rows in groups.values() for r in rows]
    shared = _shared_setup(all_rows)
    noisy = any(s["memorised"].n for s in stats.values())
    flat = study.get("flatness") is not None
    first = "method" if study["kind"] == "compare" else "cell"

    head = [first, "settings", "runs", "test acc (mean ± std [95% CI])"]
    if base is not None:
        head.append(f"Δ test acc vs `{base}` (paired [95% CI])")
    head += ["train acc", *(["memorised (of flipped labels)"] if noisy else []), "test loss"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, rows in groups.items():
        s = stats[label]
        done = sum(r.get("status") == "complete" for r in rows)
        cells = [f"`{label}`", _settings(rows, shared), f"{done}/{len(rows)}", fmt(s["test_acc"])]
        if base is not None:
            cells.append("–" if label == base else _gap_cell(rows, groups[base], "test_acc"))
        cells.append(fmt(s["train_acc"], interval=False))
        if noisy:
            cells.append(fmt(s["memorised"], interval=False))
        cells.append(fmt(s["test_loss"], interval=False))
        lines.append("| " + " | ".join(cells) + " |")

    ref_time = stats[ref]["train_time"].mean
    ref_passes = stats[ref]["passes"].mean
    head = [first, "final train loss"]
    if flat:
        head += ["λ_max (Hessian)", "m-sharpness"]
    head += ["train time (s)", f"time / `{ref}`", "passes", f"passes / `{ref}`"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label in groups:
        s = stats[label]
        cells = [f"`{label}`", fmt(s["train_loss"], interval=False)]
        if flat:
            cells += [
                fmt(s["lambda_max"], 2, interval=False),
                fmt(s["sharpness"], 4, interval=False),
            ]
        cells += [
            fmt(s["train_time"], 1, interval=False),
            _ratio(s["train_time"].mean, ref_time),
            "–" if math.isnan(s["passes"].mean) else f"{s['passes'].mean:.0f}",
            _ratio(s["passes"].mean, ref_passes),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += time_notes(groups, stats, ref, loaded=load_caveat(all_rows) is not None)
    return "\n".join(lines), stats


# A method's time ratio further than this above its pass ratio is explained under the table.
TIME_TOLERANCE = 0.10


def time_notes(groups: dict[str, list[dict[str, Any]]], stats: dict[str, dict[str, Summary]],
               ref: str, loaded: bool) -> list[str]:  # fmt: skip
    """Why a method's ``time / ref`` exceeds its ``passes / ref`` by more than 10%, from what its
    runs record (shards and the execution that ran them, a fraction of the batch per ascent, the
    machine's load); a method it cannot explain is said to be unexplained."""
    notes = []
    for label, rows in groups.items():
        s, r = stats[label], stats[ref]
        values = (s["train_time"].mean, r["train_time"].mean, s["passes"].mean, r["passes"].mean)
        if label == ref or not rows or not all(v > 0 for v in values):  # NaN is not > 0 either
            continue
        times, passes = values[0] / values[1], values[2] / values[3]
        if not times > passes * (1 + TIME_TOLERANCE):
            continue
        row, cfg = rows[0], rows[0].get("_config", {})
        cadence = str(cfg.get("cadence") or "")
        why = []
        if (row.get("shards") or 1) > 1:
            why.append(f"its {row['shards']} shards of {row.get('m')} examples take a pass each "
                       f"({row.get('execution_used') or 'loop'}): a small model's pass over a few "
                       "examples costs nearly what a pass over the whole batch does "
                       "(benchmarks/results/step_time_cpu.md)")  # fmt: skip
        if "ascent_fraction" in cadence:
            why.append("its ascent passes run over a fraction of the batch, which costs nearly a "
                       "whole pass on a small model but counts as that fraction")  # fmt: skip
        if loaded:
            why.append("the machine was loaded while it trained (the caveat above)")
        because = "; ".join(why) if why else "not explained by its passes (no cause recorded)"
        notes.append(f"- `{label}`: time / `{ref}` {times:.2f}x against passes / `{ref}` "
                     f"{passes:.2f}x — {because}.")  # fmt: skip
    return ["", *notes] if notes else []


def _gap_cell(rows: list[dict[str, Any]], base_rows: list[dict[str, Any]], key: str) -> str:
    gap = paired_gap(per_seed(rows, key), per_seed(base_rows, key), bounds=gap_bounds(key))
    if gap.n == 0:
        return "–"
    if gap.n == 1:
        return f"{gap.mean:+.4f} (1 seed)"
    return f"{gap.mean:+.4f} [{gap.ci_low:+.4f}, {gap.ci_high:+.4f}]"


def _ratio(value: float, ref: float) -> str:
    if math.isnan(value) or math.isnan(ref) or ref <= 0:
        return "–"
    return f"{value / ref:.2f}x"


def _cost_benefit_table(study: dict[str, Any], points: list[dict[str, Any]]) -> str:
    base, ref = study.get("baseline") or "sgd", study["reference"]
    head = [
        "method", f"passes / `{base}`", f"Δ test acc vs `{base}` (paired [95% CI])",
        f"share of `{ref}`'s gain", f"gain − {SHARE_TARGET:g}·`{ref}` gain (paired [95% CI])",
        "gain per extra pass",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in sorted(points, key=lambda p: p["passes"]):
        g, k = p["gain"], p["keeps"]
        extra = p["passes"] - 1
        lines.append("| " + " | ".join([
            f"`{p['label']}`", f"{p['passes']:.2f}x",
            f"{g.mean:+.4f} [{g.ci_low:+.4f}, {g.ci_high:+.4f}]" if g.n > 1 else "–",
            "–" if p["label"] == ref or math.isnan(p["share"]) else f"{p['share']:.0%}",
            "–" if p["label"] == ref or k.n < 2 else f"{k.mean:+.4f} [{k.ci_low:+.4f}, {k.ci_high:+.4f}]",
            f"{g.mean / extra:+.4f}" if extra > 1e-9 and g.n else "–",
        ]) + " |")  # fmt: skip
    return "\n".join(lines)


def write_study_report(folder: str | Path, *, plots: bool = True) -> str:
    """(Re)write ``results.csv``, ``report.md`` and plots of a compare or sweep folder; returns
    the tables."""
    folder = Path(folder)
    study, rows = load_study(folder)
    cell_keys = list(study.get("grid", {})) if study["kind"] == "sweep" else []
    groups = groups_of(study, rows)
    _write_csv(folder / "results.csv", rows, cell_keys)
    table, stats = _tables(study, groups)
    if plots:
        figures = write_plots(folder, study, groups, stats, cell_keys)
    else:
        figures = [n for n in figure_names(study, cell_keys) if (folder / n).is_file()]
    _atomic.write_text(
        folder / "report.md", _markdown(folder, study, rows, table, figures)
    )
    return table


def _markdown(
    folder: Path, study: dict[str, Any], rows: list[dict[str, Any]], table: str, plots: list[str]
) -> str:
    base = study["base_config"]
    sessions = study.get("sessions", [])
    elapsed = sum(s.get("elapsed", 0.0) for s in sessions)
    complete = sum(r.get("status") == "complete" for r in rows)
    title = "Comparison" if study["kind"] == "compare" else "Sweep"
    what = (
        f"methods {', '.join(f'`{m}`' for m in study.get('methods', []))}"
        if study["kind"] == "compare"
        else "grid " + " x ".join(f"`{k}` in {v}" for k, v in study.get("grid", {}).items())
    )
    shared = _shared_setup(rows)
    if base.get("init_from"):  # the study's source, as planned (a {seed} template stays one)
        shared["init_from"] = _short_path(base["init_from"])
    setup = ", ".join(f"{k}={v}" for k, v in shared.items() if v not in (None, {}, 0.0))
    wall = []
    if sessions:
        jobs = ", ".join(str(s.get("jobs", 1)) for s in sessions)
        wall.append(
            f"- **Wall time of the study**: {elapsed:.1f} s over {len(sessions)} session(s) "
            f"(parallel jobs: {jobs}), training and flatness included."
        )
    out = header(
        f"{title}: {base['dataset']} / {base['model']}",
        folder,
        rows,
        [
            f"- **Runs**: {what} x seeds {study['seeds']}: {complete}/{len(rows)} complete.",
            f"- **Shared setup**: {setup} (what a method or cell sets beyond it: the settings "
            "column).",
        ],
        wall,
    )
    out += ["", table, ""]
    points = cost_benefit(study, groups_of(study, rows))
    if points:
        out += [
            f"## Cost and benefit (reference: `{study['reference']}`)",
            "",
            _cost_benefit_table(study, points),
            "",
            f"passes / baseline: counted forward-backward passes, a machine-independent cost. "
            f"Share: mean gain over the mean gain of `{study['reference']}`; the next column is "
            f"the paired interval of gain − {SHARE_TARGET:g} × reference gain per seed (above 0: "
            f"keeps at least {SHARE_TARGET:.0%} of it). Gain per extra pass: gain / (passes − 1).",
            "",
        ]
    out += [_notes(study), ""]
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
        "(mean ± t(0.975, n-1)·std/√n), clipped to the metric's range ([0, 1] for accuracies, "
        "≥ 0 for losses) so it never claims impossible values; with 2 or 3 seeds it is wide.",
        "Δ vs the baseline: the mean over seeds of (method − baseline) on the same seed (same "
        "initialisation, data order and noisy labels), with the paired-t 95% interval "
        "(clipped to [-1, 1]). An interval that excludes 0 is a difference these seeds resolve.",
        "settings: rho and m (examples per SAM shard; m = batch size is plain SAM, m = 1 is "
        "1-SAM) and anything else a method or cell changes.",
        "Train accuracy is on the labels as trained (noisy ones included); memorised: the "
        "fraction of the flipped training labels the final model predicts (fits the wrong "
        "label), all flipped examples counted. Losses are eval-mode cross-entropy without label "
        "smoothing.",
        "Train time counts optimizer steps only (no evaluation); passes are forward-backward "
        "passes over a batch (SGD 1 per step, every SAM variant 2): a cost that does not depend "
        "on the machine.",
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
