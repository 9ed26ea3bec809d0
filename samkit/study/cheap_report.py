"""The cheap-SAM protocol's report (``cheap.md``, ``cheap.csv``), computed from its run files.

The protocol and its runner: :mod:`samkit.study.cheap`. Here: which candidate each family keeps
(chosen on the tuning half, :func:`picks`), and how every pick fared on the held-out half
(:func:`write`). Nothing here trains anything.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any

from samkit import _atomic
from samkit.errors import SamkitError
from samkit.study import tuning
from samkit.study.folder import STUDY, SUITE
from samkit.study.results import SHARE_TARGET, groups_of, load_caveat, load_study, per_seed
from samkit.study.stats import Summary, gap_bounds, paired_gap, share_recovered, summarize
from samkit.train import run_files

# A setting where SAM's mean gain over SGD is below this has no gain to keep: a share of it is
# noise over noise, so it neither picks a candidate nor counts for a method's worst case.
MIN_GAIN = 0.005
CADENCE = "sam:cadence="  # a candidate whose spec starts so is a cadence: it can be cadence="cheap"


def _cells(out: Path, setting: dict[str, Any]) -> dict[str, list[dict[str, Any]]] | None:
    folder = out / setting["id"]
    if not (folder / STUDY).is_file():
        return None
    study, rows = load_study(folder)
    return groups_of(study, rows)


def outcome(groups: dict[str, list[dict[str, Any]]], label: str) -> dict[str, Any]:
    """One method on one setting: its gain over SGD, the share of SAM's gain it keeps (with the
    paired interval of ``gain - 0.9 * SAM's gain``), SAM's own gain, passes and time over SGD."""
    sgd, sam, acc = (per_seed(groups.get(x, []), "test_acc") for x in ("sgd", "sam", label))
    share, keeps = share_recovered(acc, sam, sgd, SHARE_TARGET)
    ref_gain = paired_gap(sam, sgd, bounds=gap_bounds("test_acc"))
    cost = {}
    for key in ("passes", "train_time"):
        mine, base = (summarize(list(per_seed(groups.get(x, []), key).values())).mean
                      for x in (label, "sgd"))  # fmt: skip
        cost[key] = mine / base if base else math.nan
    return {"share": share, "keeps": keeps, "sam_gain": ref_gain,
            "gain": paired_gap(acc, sgd, bounds=gap_bounds("test_acc")),
            "passes": cost["passes"], "time": cost["train_time"]}  # fmt: skip


def keeps_verdict(o: dict[str, Any]) -> str:
    """``>= 90%``, ``< 90%``, ``undecided`` (the interval straddles 90%) or ``no SAM gain``."""
    if not o["sam_gain"].mean >= MIN_GAIN:
        return "no SAM gain"
    k: Summary = o["keeps"]
    if k.n < 2 or math.isnan(k.ci_low):
        return "undecided"
    if k.ci_low > 0:
        return ">= 90%"
    if k.ci_high < 0:
        return "< 90%"
    return "undecided"


def _worst(shares: dict[str, float]) -> tuple[str | None, float]:
    counted = {k: v for k, v in shares.items() if not math.isnan(v)}
    if not counted:
        return None, math.nan
    where = min(counted, key=lambda k: counted[k])
    return where, counted[where]


def tuning_table(out: Path, record: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{candidate: {tuning setting: share}}`` (NaN where SAM gained less than MIN_GAIN there)."""
    table: dict[str, dict[str, float]] = {c[1]: {} for c in record["candidates"]}
    for s in (s for s in record["settings"] if not s["held_out"]):
        groups = _cells(out, s)
        if groups is None:
            continue
        for _, label, _ in record["candidates"]:
            o = outcome(groups, label)
            table[label][s["id"]] = o["share"] if o["sam_gain"].mean >= MIN_GAIN else math.nan
    return table


def _best(labels: list[str], table: dict[str, dict[str, float]]) -> str | None:
    """Of ``labels``, the one whose worst share is highest; shares equal to rounding are a tie,
    which the earlier label wins. None when no label has a share."""
    scored = [(label, _worst(table[label])[1]) for label in labels]
    scored = [(label, w) for label, w in scored if not math.isnan(w)]
    if not scored:
        return None
    return max(scored, key=lambda lw: (round(lw[1], 9), -labels.index(lw[0])))[0]


def _picks(out: Path, record: dict[str, Any], table: dict[str, dict[str, float]]) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for family in dict.fromkeys(c[0] for c in record["candidates"]):
        best = _best([c[1] for c in record["candidates"] if c[0] == family], table)
        if best is None:
            raise SamkitError(f"{out}: no tuning setting gives a share for {family!r} (did SAM "
                              "gain anything on the tuning half?).")  # fmt: skip
        chosen[family] = best
    return chosen


def _preset(record: dict[str, Any], table: dict[str, dict[str, float]],
            chosen: dict[str, str]) -> str | None:  # fmt: skip
    specs = {c[1]: c[2] for c in record["candidates"]}
    return _best([label for label in chosen.values() if specs[label].startswith(CADENCE)], table)


def picks(out: Path, record: dict[str, Any]) -> dict[str, str]:
    """Per family, the candidate whose worst share over the tuning settings is highest (ties:
    the earlier candidate). A family none of whose candidates has a share is an error."""
    return _picks(out, record, tuning_table(out, record))


def preset(out: Path, record: dict[str, Any]) -> str | None:
    """The pick among the cadences with the highest worst share on the tuning half: what
    ``cadence="cheap"`` is (None when no candidate is a cadence)."""
    table = tuning_table(out, record)
    return _preset(record, table, _picks(out, record, table))


def write(out: str | Path) -> str:
    """``cheap.md`` and ``cheap.csv`` of a protocol folder; returns the held-out table."""
    out = Path(out)
    record = run_files.read_json(out / SUITE)
    if record.get("suite") != "cheap":
        raise SamkitError(f"{out} is not a cheap-SAM protocol folder (suite {record.get('suite')!r}).")
    table = tuning_table(out, record)  # the tuning half's runs, read once
    chosen = _picks(out, record, table)
    best = _preset(record, table, chosen)
    held = [s for s in record["settings"] if s["held_out"]]
    results = {s["id"]: _cells(out, s) for s in held}
    rows, lines = [], []
    names = " | ".join(f"`{s['id']}`" for s in held)
    lines += [f"| method | {names} | worst | passes / SGD | time / SGD |",
              "|---|" + "---|" * (len(held) + 3)]  # fmt: skip
    ref_cells, ref_passes, ref_times = [], [], []  # SAM itself: the gain there is to keep
    for s in held:
        groups = results[s["id"]]
        if groups is None or "sam" not in groups:
            ref_cells.append("–")
            continue
        o = outcome(groups, "sam")
        g = o["gain"]
        ref_cells.append(f"gain {100 * g.mean:+.1f} pts [{100 * g.ci_low:+.1f}, {100 * g.ci_high:+.1f}]")
        ref_passes.append(o["passes"])
        ref_times.append(o["time"])
    lines.append("| `sam` (the gain to keep) | " + " | ".join(ref_cells) +
                 f" | – | {_mean(ref_passes):.2f}x | {_mean(ref_times):.2f}x |")  # fmt: skip
    for label in chosen.values():
        cells, shares, passes, times = [], {}, [], []
        for s in held:
            groups = results[s["id"]]
            if groups is None or label not in groups:
                cells.append("–")
                continue
            o = outcome(groups, label)
            if o["keeps"].n == 0:  # no seed with SGD, SAM and this method all finished
                cells.append("–")
                continue
            v = keeps_verdict(o)
            shares[s["id"]] = o["share"] if v != "no SAM gain" else math.nan
            passes.append(o["passes"])
            times.append(o["time"])
            k = o["keeps"]
            cells.append(f"{o['share']:.0%} ({v}; {100 * k.mean:+.1f} [{100 * k.ci_low:+.1f}, "
                         f"{100 * k.ci_high:+.1f}])" if v != "no SAM gain" else
                         f"– (no SAM gain: {100 * o['sam_gain'].mean:+.1f} pts)")  # fmt: skip
            rows.append([label, s["id"], o["share"], v, k.n, k.mean, k.ci_low, k.ci_high,
                         o["sam_gain"].mean, o["gain"].mean, o["passes"], o["time"]])  # fmt: skip
        where, worst = _worst(shares)
        worst_text = "–" if where is None else f"{worst:.0%} (`{where}`)"
        mark = " **(cadence=\"cheap\")**" if label == best else ""
        lines.append(f"| `{label}`{mark} | " + " | ".join(cells) + f" | {worst_text} | "
                     f"{_mean(passes):.2f}x | {_mean(times):.2f}x |")  # fmt: skip
    held_table = "\n".join(lines)
    _write_csv(out / "cheap.csv", rows)
    _atomic.write_text(out / "cheap.md", _markdown(out, record, chosen, best, table, held_table))
    return held_table


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _write_csv(path: Path, rows: list[list[Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "setting", "share", "verdict", "n", "keeps_mean", "keeps_ci_low",
                "keeps_ci_high", "sam_gain", "gain", "passes_x_sgd", "time_x_sgd"])  # fmt: skip
    w.writerows(rows)
    _atomic.write_text(path, buf.getvalue())


def _markdown(out: Path, record: dict[str, Any], chosen: dict[str, str], best: str,
              table: dict[str, dict[str, float]], held_table: str) -> str:  # fmt: skip
    settings = record["settings"]
    tuning_ids = [s["id"] for s in settings if not s["held_out"]]
    sessions = record.get("sessions", [])
    elapsed = sum(s.get("elapsed", 0.0) for s in sessions)
    rows_all: list[dict[str, Any]] = []
    for s in settings:
        for folder in (out / s["id"], out / f"{s['id']}{tuning.SUFFIX}"):
            if (folder / STUDY).is_file():
                rows_all += load_study(folder)[1]
    env = next((r["_env"] for r in rows_all if r.get("_env")), {})
    text = [
        "# Cheap SAM beyond its preset: the protocol's report",
        "",
        f"Generated by `samkit report` from the run files in `{out.name}/` on "
        f"{time.strftime('%Y-%m-%d %H:%M')}; {len(rows_all)} runs, {elapsed / 60:.1f} min of wall "
        f"time over {len(sessions)} session(s)"
        + (f", {env.get('cpu')} ({env.get('cpu_count')} logical cores), torch {env.get('torch')}, "
           f"samkit commit `{env.get('git_commit')}`" if env else "") + ".",
        "",
        f"- **Tuning seeds** {', '.join(map(str, record['tune_seeds']))}: SAM's rho per setting "
        "(on SAM itself) and, on the tuning half, each family's knob. **Verdict seeds** "
        f"{', '.join(map(str, record['verdict_seeds']))}: the held-out half only.",
        "- **Share of SAM's gain** = mean(method − SGD) / mean(SAM − SGD) in test accuracy, paired "
        "by seed; the verdict is the 95% paired interval of (method − SGD) − 0.9 (SAM − SGD), in "
        "points: **>= 90%** when it is above 0, **< 90%** when below, **undecided** otherwise. A "
        f"setting where SAM gains less than {100 * MIN_GAIN:.1f} points over SGD has no gain to keep "
        "and counts for no worst case.",
        "",
    ]
    caveat = load_caveat(rows_all)
    if caveat:
        text += [caveat, ""]
    text += ["## Settings and SAM's rho", "",
             "| setting | half | what | SAM's rho (mean test acc on the tuning seeds per rho) |",
             "|---|---|---|---|"]  # fmt: skip
    for s in settings:
        folder = out / f"{s['id']}{tuning.SUFFIX}"
        choice = "–"
        if (folder / STUDY).is_file():
            c = tuning.choose(folder, {"sam": tuple(s["rhos"])})["sam"]
            choice = f"**{c['rho']:g}** (" + ", ".join(f"{r:g}: {m:.4f}" for r, m in c["means"].items()) + ")"
        half = "held out" if s["held_out"] else "tuning"
        text.append(f"| `{s['id']}` | {half} | {s['why']} | {choice} |")
    text += ["", "## Tuning half: the share of SAM's gain each candidate keeps", "",
             "| candidate | family | " + " | ".join(f"`{i}`" for i in tuning_ids) + " | worst |",
             "|---|---|" + "---|" * (len(tuning_ids) + 1)]  # fmt: skip
    for family, label, spec in record["candidates"]:
        shares = table[label]
        where, worst = _worst(shares)
        cells = [("–" if math.isnan(shares.get(i, math.nan)) else f"{shares[i]:.0%}") for i in tuning_ids]
        name = f"**`{label}`**" if chosen.get(family) == label else f"`{label}`"
        text.append(f"| {name} (`{spec}`) | {family} | " + " | ".join(cells) +
                    f" | {'–' if where is None else f'{worst:.0%}'} |")  # fmt: skip
    text += [
        "",
        "Bold: the family's pick (highest worst share on the tuning half). "
        f"`cadence=\"cheap\"` is the best of the cadence families' picks: **`{best}`**."
        if best else "Bold: the family's pick (highest worst share on the tuning half).",
        "",
        "## Held-out half, fresh seeds: what each pick keeps",
        "",
        "Per setting: the share of SAM's gain, the verdict, and the paired interval of "
        "(gain − 0.9 × SAM's gain) in points.",
        "",
        held_table,
        "",
    ]
    return "\n".join(text)
