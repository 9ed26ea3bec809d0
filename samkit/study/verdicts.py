"""The verdict table of a suite folder: ``verdicts.md`` and ``verdicts.csv``, from the files.

Each claim of ``suite.json`` whose study has results is judged (:func:`samkit.study.claims.evaluate`);
the markdown says how, per claim with its per-seed values, and on which machine the runs trained.
The studies' own reports are their writers' (:func:`samkit.study.report.write_report` remakes
them all, then this table).
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

from samkit import _atomic
from samkit.study import dln, tuning
from samkit.study.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, evaluate
from samkit.study.folder import STUDY, SUITE
from samkit.study.results import load_caveat, load_study
from samkit.study.stats import Summary
from samkit.train import run_files


def write_verdicts(folder: str | Path) -> str:
    """``verdicts.md`` and ``verdicts.csv`` of the suite in ``folder``; returns the verdict table."""
    folder = Path(folder)
    record = run_files.read_json(folder / SUITE)
    kinds = {s["id"]: s["kind"] for s in record["studies"]}
    rows: list[dict[str, Any]] = []  # every compare/sweep run: the machine and its load
    for spec in record["studies"]:
        if spec["kind"] != "dln" and (folder / spec["id"] / STUDY).is_file():
            rows += load_study(folder / spec["id"])[1]
    outcomes = [
        evaluate(folder, c, kinds[c["study"]])
        for c in record["claims"]
        if _study_ready(folder / c["study"], kinds[c["study"]])
    ]
    datasets = {s["id"]: dataset_of(s) for s in record["studies"]}
    for o in outcomes:
        o["dataset"] = datasets[o["claim"]["study"]]
    table = _verdict_table(outcomes)
    _write_verdicts_csv(folder / "verdicts.csv", outcomes)
    _atomic.write_text(
        folder / "verdicts.md", _verdicts_markdown(folder, record, outcomes, table, rows)
    )
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


def _write_verdicts_csv(path: Path, outcomes: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["claim", "verdict", "study", "metric", "arm", "baseline", "direction", "margin",
                "n", "mean_gap", "ci_low", "ci_high", "dataset", "family"])  # fmt: skip
    for o in outcomes:
        c, g = o["claim"], o["gap"]
        w.writerow([c["id"], o["verdict"], c["study"], c["metric"], o["arm"], o["baseline"],
                    c["direction"], c["margin"], g.n, g.mean, g.ci_low, g.ci_high, o["dataset"],
                    c.get("family") or c["id"]])  # fmt: skip
    _atomic.write_text(path, buf.getvalue())


def _verdicts_markdown(
    folder: Path,
    record: dict[str, Any],
    outcomes: list[dict[str, Any]],
    table: str,
    rows: list[dict[str, Any]],
) -> str:
    sessions = record.get("sessions", [])
    elapsed = sum(s.get("elapsed", 0.0) for s in sessions)
    counts = {v: sum(o["verdict"] == v for o in outcomes)
              for v in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)}  # fmt: skip
    env = next((r["_env"] for r in rows if r.get("_env")), {})
    loads = [r["load_max"] for r in rows if r.get("load_max") is not None]
    out = [
        f"# The papers' claims: verdicts ({record['suite']} suite)",
        "",
        f"Generated by `samkit report` from the run files in `{folder.name}/` on "
        f"{time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        f"- **Verdicts**: {counts[REPRODUCED]} reproduced, {counts[NOT_REPRODUCED]} not "
        f"reproduced, {counts[INCONCLUSIVE]} inconclusive, of {len(outcomes)} claims.",
        "- **Studies**: "
        + ", ".join(f"[`{s['id']}`]({s['id']}/report.md) ({s['why']})" for s in record["studies"])
        + ".",
        f"- **Time**: {elapsed:.0f} s ({elapsed / 60:.1f} min) of wall time over "
        f"{len(sessions)} session(s): "
        + "; ".join(f"`{' '.join(_command(s))}` ({s['elapsed']:.0f} s, jobs {s.get('jobs', 1)})"
                    for s in sessions)  # fmt: skip
        + ".",
    ]
    if env:
        out.append(
            f"- **Machine**: {env.get('cpu')} ({env.get('cpu_count')} logical cores), torch "
            f"{env.get('torch')}, samkit commit `{env.get('git_commit')}`"
            + (f"; 1-minute load average during the runs up to {max(loads):.1f}" if loads else "")
            + "."
        )
    caveat = load_caveat(rows)
    if caveat:
        out += ["", caveat]
    out += ["", table, ""]
    across = across_datasets(outcomes)
    if across:
        out += ["### The same claim on each dataset", "", *across, ""]
    out += [
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
        "accuracy on the verdict's own seeds.",
        "",
        *tuning.tuning_markdown(folder, record),
    ]
    for o in outcomes:
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
