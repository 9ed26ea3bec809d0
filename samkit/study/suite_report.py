"""A suite folder's own report: ``verdicts.md`` and ``verdicts.csv``, from the files.

Each claim of ``suite.json`` whose study has results is judged (:func:`samkit.study.claims.evaluate`):
the gap claims in one table (and per claim with its per-seed values), the keeps claims as a
matrix of method x study (the share of the reference's gain each keeps, with its verdict), and
how rho and the picks were chosen (:mod:`samkit.study.tuning_report`). The studies' own reports
are their writer's (:func:`samkit.study.report.write_report` remakes them all, then this one).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from samkit import _atomic
from samkit.study import dln, tuning
from samkit.study.claims import INCONCLUSIVE, NO_GAIN, NOT_REPRODUCED, REPRODUCED, evaluate
from samkit.study.records import STUDY
from samkit.study.report_text import header, write_csv
from samkit.study.results import load_study
from samkit.study.stats import Summary
from samkit.study.suite_spec import KEEPS
from samkit.study.suites import read_record
from samkit.study.tuning_report import picks_markdown, tuning_markdown

REPORT, TABLE = "verdicts.md", "verdicts.csv"


def write_verdicts(folder: str | Path) -> str:
    """``verdicts.md`` and ``verdicts.csv`` of the suite in ``folder``; returns the verdict
    tables (the gap claims', then the keeps claims' matrix)."""
    folder = Path(folder)
    record = read_record(folder)
    kinds = {s["id"]: s["kind"] for s in record["studies"]}
    rows: list[dict[str, Any]] = []  # every compare/sweep run: the machine and its load
    for spec in record["studies"]:
        if spec["kind"] != "dln" and (folder / spec["id"] / STUDY).is_file():
            rows += load_study(folder / spec["id"])[1]
    picks = tuning.pick_outcomes(folder, record["picks"])
    picked = {i: p["chosen"] for i, p in picks.items() if p["chosen"] is not None}
    groups: dict[str, Any] = {}  # each keeps claim's study, read once
    outcomes = [
        o
        for c in record["claims"]
        if _study_ready(folder / c["study"], kinds[c["study"]])
        and (o := evaluate(folder, c, kinds[c["study"]], picked, groups)) is not None
    ]
    datasets = {s["id"]: dataset_of(s) for s in record["studies"]}
    for o in outcomes:
        o["dataset"] = datasets[o["claim"]["study"]]
    gaps = [o for o in outcomes if o["claim"].get("kind") != KEEPS]
    kept = [o for o in outcomes if o["claim"].get("kind") == KEEPS]
    tables = ([_verdict_table(gaps)] if gaps else []) + _keeps_tables(kept, picks)
    table = "\n\n".join(tables)
    _write_verdicts_csv(folder / TABLE, outcomes)
    _atomic.write_text(folder / REPORT, _verdicts_markdown(folder, record, gaps, kept, picks, table, rows))
    return table


def _study_ready(path: Path, kind: str) -> bool:
    return dln.is_done(path) if kind == "dln" else (path / STUDY).is_file()


DATASET_NAMES = {"mnist1d": "MNIST-1D", "digits": "digits", "dln": "diagonal network"}


def dataset_of(spec: dict[str, Any]) -> str:
    """The dataset a study of ``suite.json`` trains on (``dln`` for the diagonal network)."""
    return "dln" if spec["kind"] == "dln" else str(spec["setup"].get("dataset", "mnist1d"))


def _verdict_table(outcomes: list[dict[str, Any]]) -> str:
    lines = [
        "| claim | dataset | verdict | statistic (arm − baseline, paired by seed) | "
        "mean [95% CI] | seeds | predicted |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        c = o["claim"]
        lines.append(
            f"| `{c['id']}` | {DATASET_NAMES.get(o['dataset'], o['dataset'])} | "
            f"**{o['verdict']}** | {c['metric']}: {o['arm']} − {o['baseline']} | "
            f"{_gap_text(o['gap'], c['metric'])} | {o['gap'].n} | "
            f"{'> 0' if c['direction'] > 0 else '< 0'} |"
        )
    return "\n".join(lines)


def across_datasets(outcomes: list[dict[str, Any]]) -> list[str]:
    """One line per claim tested on more than one dataset: reproduced on both / one / neither."""
    families: dict[str, list[dict[str, Any]]] = {}
    for o in outcomes:
        families.setdefault(o["claim"].get("family") or o["claim"]["id"], []).append(o)
    lines = []
    for family, group in families.items():
        if len(group) < 2:
            continue
        held = [DATASET_NAMES.get(o["dataset"], o["dataset"]) for o in group
                if o["verdict"] == REPRODUCED]  # fmt: skip
        if len(held) == len(group):
            where = "reproduced on both" if len(group) == 2 else "reproduced on all"
        elif held:
            where = f"reproduced on {' and '.join(held)} only"
        else:
            where = "reproduced on neither"
        each = "; ".join(f"{DATASET_NAMES.get(o['dataset'], o['dataset'])}: {o['verdict']} "
                         f"({_gap_text(o['gap'], o['claim']['metric'])})" for o in group)  # fmt: skip
        lines.append(f"| `{family}` | **{where}** | {each} |")
    if not lines:
        return []
    return ["| claim | across datasets | each (mean [95% CI]) |", "|---|---|---|", *lines]


def _digits(metric: str) -> int:
    return 2 if metric == "lambda_max" else 4


def _gap_text(gap: Summary, metric: str) -> str:
    d = _digits(metric)
    if gap.n == 0:
        return "–"
    if gap.n == 1:
        return f"{gap.mean:+.{d}f} (1 seed: no interval)"
    return f"{gap.mean:+.{d}f} [{gap.ci_low:+.{d}f}, {gap.ci_high:+.{d}f}]"


def _keeps_tables(outcomes: list[dict[str, Any]], picks: dict[str, dict[str, Any]]) -> list[str]:
    """Per (reference, baseline): a matrix of method x study — the share of the
    reference's gain each method keeps, its verdict and the interval of gain − share x reference
    gain — with the reference's own gain first and each method's worst study and cost."""
    best = {p["best"]: p["best_name"] for p in picks.values() if p["best"] and p["best_name"]}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for o in outcomes:
        c = o["claim"]
        groups.setdefault((c["reference"]["label"], c["baseline"]["label"]), []).append(o)
    tables = []
    for (ref, base), group in groups.items():
        studies = list(dict.fromkeys(o["claim"]["study"] for o in group))
        cell = {(o["arm"], o["claim"]["study"]): o for o in group}
        lines = [f"| method | {' | '.join(f'`{s}`' for s in studies)} | worst | "
                 f"passes / `{base}` | time / `{base}` |",
                 "|---|" + "---|" * (len(studies) + 3)]  # fmt: skip
        refs = [next(o["reference"] for o in group if o["claim"]["study"] == s) for s in studies]
        gains = [r["gain"] for r in refs]
        lines.append(f"| `{ref}` (the gain to keep) | " + " | ".join(
            f"gain {100 * g.mean:+.1f} pts [{100 * g.ci_low:+.1f}, {100 * g.ci_high:+.1f}]"
            for g in gains) + f" | – | {_mean([r['passes'] for r in refs]):.2f}x | "
            f"{_mean([r['time'] for r in refs]):.2f}x |")  # fmt: skip
        for label in dict.fromkeys(o["arm"] for o in group):
            cells, shares, passes, times = [], {}, [], []
            for sid in studies:
                o = cell.get((label, sid))
                if o is None or o["gap"].n == 0:  # not run there, or no seed with all three
                    cells.append("–")
                    continue
                k, v, ci = o["keeps"], o["verdict"], o["gap"]
                shares[sid] = k["share"] if v != NO_GAIN else math.nan
                passes.append(k["passes"])
                times.append(k["time"])
                cells.append(f"{k['share']:.0%} ({v}; {100 * ci.mean:+.1f} [{100 * ci.ci_low:+.1f}, "
                             f"{100 * ci.ci_high:+.1f}])" if v != NO_GAIN else
                             f"– ({NO_GAIN}: {100 * k['reference_gain'].mean:+.1f} pts)")  # fmt: skip
            where, low = tuning.worst(shares)
            worst_text = "–" if where is None else f"{low:.0%} (`{where}`)"
            mark = f" **({best[label]})**" if label in best else ""
            lines.append(f"| `{label}`{mark} | " + " | ".join(cells) + f" | {worst_text} | "
                         f"{_mean(passes):.2f}x | {_mean(times):.2f}x |")  # fmt: skip
        tables.append("\n".join(lines))
    return tables


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _write_verdicts_csv(path: Path, outcomes: list[dict[str, Any]]) -> None:
    fields = ["claim", "verdict", "study", "metric", "arm", "baseline", "direction", "margin", "n",
              "mean_gap", "ci_low", "ci_high", "dataset", "family"]  # fmt: skip
    keeps = any(o["claim"].get("kind") == KEEPS for o in outcomes)
    if keeps:  # what a keeps claim adds: its reference, the share and the costs
        fields += ["kind", "reference", "share_target", "share", "reference_gain", "gain",
                   "passes_x_baseline", "time_x_baseline"]  # fmt: skip
    rows = []
    for o in outcomes:
        c, g = o["claim"], o["gap"]
        row = [c["id"], o["verdict"], c["study"], c["metric"], o["arm"], o["baseline"],
               c["direction"], c["margin"], g.n, g.mean, g.ci_low, g.ci_high, o["dataset"],
               c.get("family") or c["id"]]  # fmt: skip
        if keeps:
            k = o.get("keeps")
            row += [c.get("kind", "gap")] + ([None] * 7 if k is None else [
                c["reference"]["label"], c["share"], k["share"], k["reference_gain"].mean,
                k["gain"].mean, k["passes"], k["time"]])  # fmt: skip
        rows.append(row)
    write_csv(path, fields, rows)


GAP_RULE = (
    "**How a verdict is reached.** Each claim's statistic is the difference arm − baseline of "
    "one metric, paired by seed (same initialisation, data order and flipped labels; for the "
    "diagonal network, the same data), with its 95% paired-t interval. Oriented so that the "
    "claim predicts a positive difference: **reproduced** when the whole interval is above 0; "
    "**not reproduced** when the whole interval is below the claim's margin (the smallest "
    "effect that would count: half a point of accuracy, one point of memorised labels, 0 for "
    "flatness and the diagonal network); **inconclusive** otherwise — more seeds would "
    "decide. Accuracy intervals are clipped to [-1, 1]. A method's rho is chosen on tuning "
    "seeds that no verdict uses (below); where a claim picks the best cell of a grid "
    "instead (suites made before tuning seeds), it is the cell with the highest mean test "
    "accuracy on the verdict's own seeds."
)


def _keeps_rule(claim: dict[str, Any]) -> str:
    ref, base, share = claim["reference"]["label"], claim["baseline"]["label"], claim["share"]
    return (
        f"**How a keeps verdict is reached.** A method's share of `{ref}`'s gain = mean(method − "
        f"`{base}`) / mean(`{ref}` − `{base}`) in test accuracy, paired by seed; the verdict is "
        f"the 95% paired interval of (method − `{base}`) − {share:g} × (`{ref}` − `{base}`), in "
        f"points: **{REPRODUCED}** (it keeps at least {share:.0%}) when the whole interval is "
        f"above 0, **{NOT_REPRODUCED}** when it is below, **{INCONCLUSIVE}** otherwise. A study "
        f"where `{ref}` gains less than {100 * claim['margin']:.1f} points over `{base}` has no "
        f"gain to keep (**{NO_GAIN}**) and counts for no method's worst study. passes and time: "
        f"the method's mean over `{base}`'s, averaged over the studies."
    )


def _verdicts_markdown(
    folder: Path,
    record: dict[str, Any],
    gaps: list[dict[str, Any]],
    kept: list[dict[str, Any]],
    picks: dict[str, dict[str, Any]],
    table: str,
    rows: list[dict[str, Any]],
) -> str:
    outcomes = gaps + kept
    sessions = record.get("sessions", [])
    elapsed = sum(s.get("elapsed", 0.0) for s in sessions)
    counts = {v: sum(o["verdict"] == v for o in outcomes)
              for v in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NO_GAIN)}  # fmt: skip
    no_gain = f", {counts[NO_GAIN]} with {NO_GAIN}" if counts[NO_GAIN] else ""
    out = header(record["title"], folder, rows, [
        f"- **Verdicts**: {counts[REPRODUCED]} reproduced, {counts[NOT_REPRODUCED]} not "
        f"reproduced, {counts[INCONCLUSIVE]} inconclusive{no_gain}, of {len(outcomes)} claims.",
        "- **Studies**: "
        + ", ".join(f"[`{s['id']}`]({s['id']}/report.md) ({s['why']})" for s in record["studies"])
        + ".",
        f"- **Time**: {elapsed:.0f} s ({elapsed / 60:.1f} min) of wall time over "
        f"{len(sessions)} session(s): "
        + "; ".join(f"`{' '.join(_command(s))}` ({s['elapsed']:.0f} s, jobs {s.get('jobs', 1)})"
                    for s in sessions)  # fmt: skip
        + ".",
    ])  # fmt: skip
    out += ["", table, ""]
    across = across_datasets(gaps)
    if across:
        out += ["### The same claim on each dataset", "", *across, ""]
    if gaps:
        out += [GAP_RULE, ""]
    if kept:
        out += [_keeps_rule(kept[0]["claim"]), ""]
    out += [*tuning_markdown(folder, record), *picks_markdown(record, picks)]
    for o in gaps:
        c = o["claim"]
        d = _digits(c["metric"])
        out += [
            f"## {c['id']}",
            "",
            f"**{o['verdict']}** — {c['text']}",
            "",
            f"- Source: {c['source']}.",
            f"- Study: [`{c['study']}`]({c['study']}/report.md). Statistic: {c['metric']} of "
            f"{o['arm']} − {o['baseline']}; the claim predicts "
            f"{'> 0' if c['direction'] > 0 else '< 0'} (margin {c['margin']}).",
            f"- Paired gap: {_gap_text(o['gap'], c['metric'])} over {o['gap'].n} seed(s).",
            "",
            f"| seed | {o['arm']} | {o['baseline']} | difference |",
            "|---|---|---|---|",
        ]
        out += [f"| {s} | {a:.{d}f} | {b:.{d}f} | {a - b:+.{d}f} |" for s, a, b in o["per_seed"]]
        out.append("")
    return "\n".join(out)


def _command(session: dict[str, Any]) -> list[str]:
    cmd = list(session.get("command", []))
    if cmd and cmd[0].endswith(("samkit", "__main__.py", "cli.py")):
        cmd[0] = "samkit"
    return cmd
