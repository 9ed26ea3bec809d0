"""``samkit reproduce``: run the studies the claims need, then judge each claim from the run files.

A suite folder holds ``suite.json`` (the claims and studies as data, and each session's time and
command), one study folder per study (``compare``/``sweep`` folders as those commands write them;
``dln/results.json`` for the theory study), ``verdicts.md`` and ``verdicts.csv``. Everything in
the verdict table is computed from the files, so ``samkit report DIR`` remakes it (and every
study's report) exactly.

Verdict of a claim (:func:`verdict`), from the 95% paired-t interval of its statistic ``gap`` =
metric(arm) − metric(baseline), oriented so that the claim predicts ``gap > 0``:

* **reproduced**: the whole interval is above 0;
* **not reproduced**: the whole interval is below the claim's ``margin`` (the smallest effect
  that would count) — the effect is absent, too small, or reversed;
* **inconclusive**: otherwise (the interval is too wide to tell), or fewer than 2 paired seeds.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from samkit import _atomic
from samkit.errors import SamkitError
from samkit.study.report import SUITE
from samkit.study.stats import Summary, fmt, gap_bounds, paired_gap, summarize
from samkit.study.suite import Claim, StudySpec, select_claims, studies
from samkit.train import files as run_files

DLN_RESULTS = "results.json"
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"


def verdict(gap: Summary, direction: int, margin: float = 0.0) -> str:
    """reproduced / not reproduced / inconclusive from the interval of a paired gap (module doc).

    Example:
        >>> from samkit.study.stats import summarize
        >>> verdict(summarize([0.02, 0.03, 0.025]), +1, 0.005)
        'reproduced'
    """
    if gap.n < 2 or math.isnan(gap.ci_low):
        return INCONCLUSIVE
    low, high = (gap.ci_low, gap.ci_high) if direction > 0 else (-gap.ci_high, -gap.ci_low)
    if low > 0:
        return REPRODUCED
    if high < margin:
        return NOT_REPRODUCED
    return INCONCLUSIVE


# ---- values of one side of a claim ---------------------------------------------------------------
def arm_values(folder: Path, kind: str, arm: dict[str, Any], metric: str) -> tuple[str, dict[int, float]]:
    """``(description, {seed: value})`` of ``metric`` for one side of a claim in a study folder."""
    if kind == "dln":
        return _dln_values(folder, arm, metric)
    from samkit.study.report import groups_of, load_study, per_seed

    study, rows = load_study(folder)
    groups = groups_of(study, rows)
    if "label" in arm:
        if arm["label"] not in groups:
            raise SamkitError(f"{folder}: no method {arm['label']!r} (has {', '.join(groups)}).")
        return arm["label"], per_seed(groups[arm["label"]], metric)
    wanted = arm.get("cell", {})
    matching = [
        label for label, group in groups.items()
        if group and all(group[0].get(f"cell:{k}") == v for k, v in wanted.items())
    ]  # fmt: skip
    if not matching:
        raise SamkitError(f"{folder}: no grid cell with {wanted}.")
    if len(matching) > 1 and not arm.get("best_of"):
        raise SamkitError(f"{folder}: {len(matching)} cells match {wanted}; name one or best_of.")
    # the cell of the group with the best mean test accuracy (how the papers pick rho)
    best = max(matching, key=lambda lb: _mean(per_seed(groups[lb], "test_acc")))
    return best, per_seed(groups[best], metric)


def _mean(values: dict[int, float]) -> float:
    m = summarize(list(values.values())).mean
    return -math.inf if math.isnan(m) else m


def _dln_values(folder: Path, arm: dict[str, Any], metric: str) -> tuple[str, dict[int, float]]:
    data = run_files.read_json(folder / DLN_RESULTS)
    method = arm["method"]
    key = "test_loss" if metric == "log10_test_loss" else metric
    out: dict[int, float] = {}
    for seed, res in data["seeds"].items():
        m = res[method]
        i = 0 if method == "gd" else _index(m["rho"], arm["rho"], folder)
        value = m[key][i]
        if value is None or m["diverged"][i]:
            continue
        out[int(seed)] = math.log10(value) if metric == "log10_test_loss" else float(value)
    from samkit.theory.cli import LABELS

    return LABELS[method] + ("" if method == "gd" else f" rho={arm['rho']}"), out


def _index(rhos: list[float], rho: float, folder: Path) -> int:
    for i, r in enumerate(rhos):
        if math.isclose(r, rho, rel_tol=1e-9):
            return i
    raise SamkitError(f"{folder}: rho {rho} was not run (rho values: {rhos}).")


def evaluate(folder: Path, claim: dict[str, Any], kind: str) -> dict[str, Any]:
    """The claim's statistic and verdict, computed from the study folder's files."""
    study = folder / claim["study"]
    arm_desc, arm = arm_values(study, kind, claim["arm"], claim["metric"])
    base_desc, base = arm_values(study, kind, claim["baseline"], claim["metric"])
    gap = paired_gap(arm, base, bounds=gap_bounds(claim["metric"]))  # [-1, 1] for accuracies
    seeds = sorted(arm.keys() & base.keys())
    return {
        "claim": claim,
        "arm": arm_desc,
        "baseline": base_desc,
        "gap": gap,
        "verdict": verdict(gap, claim["direction"], claim["margin"]),
        "per_seed": [(s, arm[s], base[s]) for s in seeds],
    }


# ---- running a suite -----------------------------------------------------------------------------
def plan(suite: str, claim_ids: list[str] | None) -> tuple[list[Claim], list[StudySpec]]:
    """The selected claims and the studies they need (sources first), in the suite's order."""
    claims = select_claims(claim_ids)
    specs = {s.id: s for s in studies(suite)}
    needed: set[str] = set()

    def need(sid: str) -> None:
        if sid not in needed:
            needed.add(sid)
            for dep in specs[sid].needs():
                need(dep)

    for claim in claims:
        need(claim.study)
    return claims, [s for s in specs.values() if s.id in needed]


def reproduce(
    out: str | Path,
    *,
    suite: str = "quick",
    claim_ids: list[str] | None = None,
    jobs: int = 1,
    threads: int | None = None,
    quiet: bool = False,
) -> str:
    """Run the studies of the selected claims into ``out`` and write the verdicts; returns the
    verdict table. A folder from an earlier call is continued (finished runs are reused)."""
    out = Path(out)
    claims, specs = plan(suite, claim_ids)
    record = _open_suite(out, suite, claims, specs)
    started = time.time()
    from samkit.train import RunInterrupted

    try:
        for spec in specs:
            if not quiet:
                print(f"== study {spec.id}: {spec.why}", flush=True)
            try:
                _run_study(out, spec, jobs=jobs, threads=threads, quiet=quiet)
            except RunInterrupted:
                raise RunInterrupted(
                    f"interrupted in study {spec.id}; finished runs are kept. To finish the suite, "
                    f"run the same samkit reproduce command again with --out {out}"
                ) from None
    finally:
        record["sessions"].append(
            {
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                "elapsed": time.time() - started,
                "command": list(sys.argv),
                "jobs": jobs,
                "studies": [s.id for s in specs],
            }
        )
        run_files.write_json(out / SUITE, record)
    return write_suite_report(out, remake_studies=False)  # each study wrote its own report


def _open_suite(
    out: Path, suite: str, claims: list[Claim], specs: list[StudySpec]
) -> dict[str, Any]:
    record = {
        "kind": "reproduce",
        "suite": suite,
        "claims": [asdict(c) for c in claims],
        "studies": [asdict(s) for s in specs],
        "sessions": [],
    }
    path = out / SUITE
    if path.is_file():
        old = run_files.read_json(path)
        if old.get("suite") != suite:
            raise SamkitError(
                f"{out} holds the {old.get('suite')!r} suite, not {suite!r}; nothing was changed. "
                "Use another --out."
            )
        known_claims = {c["id"] for c in record["claims"]}
        known_studies = {s["id"] for s in record["studies"]}
        record["claims"] = [c for c in old["claims"] if c["id"] not in known_claims] + record[
            "claims"
        ]
        record["studies"] = [s for s in old["studies"] if s["id"] not in known_studies] + record[
            "studies"
        ]
        record["sessions"] = old.get("sessions", [])
    elif out.exists() and any(out.iterdir()):
        raise SamkitError(
            f"{out} exists and is not a claims-suite folder (no {SUITE}); nothing was changed. "
            "Use another --out."
        )
    out.mkdir(parents=True, exist_ok=True)
    run_files.write_json(path, record)
    return record


def _run_study(out: Path, spec: StudySpec, *, jobs: int, threads: int | None, quiet: bool) -> None:
    folder = out / spec.id
    if spec.kind == "dln":
        run_dln(folder, spec.setup, list(spec.seeds), quiet=quiet)
        write_dln_report(folder)
        return
    from samkit.study import compare, sweep
    from samkit.train import TrainConfig

    setup = dict(spec.setup)
    if "init_from" in setup:  # "{suite}/noise-40/sgd-seed{seed}" -> this suite's folder
        setup["init_from"] = setup["init_from"].replace("{suite}", str(out))
    if threads is not None:
        setup["threads"] = threads
    base = TrainConfig.from_dict(setup).validated()
    common = dict(seeds=list(spec.seeds), out=folder, jobs=jobs, baseline=spec.baseline,
                  quiet=quiet)  # fmt: skip
    if spec.kind == "compare":
        compare(base, methods=list(spec.methods), flatness=spec.flatness, **common)
    else:
        sweep(base, grid=list(spec.grid), flatness=spec.flatness, **common)


# ---- the diagonal-linear-network study -----------------------------------------------------------
def run_dln(folder: Path, setup: dict[str, Any], seeds: list[int], *, quiet: bool) -> None:
    """GD, n-SAM and 1-SAM on one data seed per seed; reuses seeds already in ``results.json``."""
    import numpy as np

    from samkit.theory import dln

    path = folder / DLN_RESULTS
    data = run_files.read_json(path) if path.is_file() else None
    if data is None or data.get("settings") != setup:
        data = {"settings": setup, "seeds": {}, "seconds": 0.0}
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for seed in seeds:
        if str(seed) in data["seeds"]:
            continue
        problem = dln.make_problem(setup["n"], setup["d"], setup["k"], 0.0, 10_000, seed)
        res = {}
        for method in dln.METHODS:
            rho = np.zeros(1) if method == "gd" else np.asarray(setup["rho"], dtype=float)
            traj = dln.train(problem, method, rho=rho, lr=setup["lr"], alpha=setup["alpha"],
                             steps=setup["steps"], every=setup["steps"])  # fmt: skip
            res[method] = {
                "rho": rho.tolist(),
                "test_loss": _finite(traj.test_loss[-1]),
                "train_loss": _finite(traj.train_loss[-1]),
                "l1": _finite(traj.l1[-1]),
                "alpha_eff_mean": _finite(traj.alpha_eff_mean[-1]),
                "diverged": traj.diverged.tolist(),
            }
        data["seeds"][str(seed)] = res
        if not quiet:
            print(f"dln seed {seed}: done", flush=True)
    data["seconds"] += time.perf_counter() - t0
    run_files.write_json(path, data)


def _finite(values: Any) -> list[float | None]:
    return [None if not math.isfinite(float(v)) else float(v) for v in values]


def write_dln_report(folder: Path, *, plots: bool = True) -> str:
    """``report.md`` and ``test_loss_vs_gd.png`` of the dln study, from ``results.json``."""
    import numpy as np

    data = run_files.read_json(folder / DLN_RESULTS)
    seeds = sorted(data["seeds"], key=int)
    s = data["settings"]
    lines = [
        "| method | rho | seeds better than GD (test loss) | median test loss / GD | "
        "mean log10(test loss / GD) [95% CI] | seeds with smaller ‖β‖₁ than GD |",
        "|---|---|---|---|---|---|",
    ]
    ratios: dict[str, Any] = {}
    from samkit.theory.cli import LABELS

    for method in ("nsam", "1sam"):
        name = LABELS[method]
        for i, rho in enumerate(s["rho"]):
            r, l1 = [], []
            for seed in seeds:
                res = data["seeds"][seed]
                t, g = res[method]["test_loss"][i], res["gd"]["test_loss"][0]
                if t is not None and g:
                    r.append(t / g)
                    l1.append(res[method]["l1"][i] < res["gd"]["l1"][0])
            ratios[(method, rho)] = r
            logs = summarize([math.log10(x) for x in r if x > 0])
            lines.append(
                f"| {name} | {rho:g} | {sum(x < 1 for x in r)}/{len(r)} | "
                f"{np.median(r):.3g} | {fmt(logs, 3, sign=True)} | {sum(l1)}/{len(l1)} |"
            )
    table = "\n".join(lines)
    if plots:
        _dln_plot(folder, data, seeds)
    text = [
        "# Diagonal linear network: GD vs n-SAM vs 1-SAM across data seeds",
        "",
        f"Generated by `samkit report` from `{folder.name}/{DLN_RESULTS}` on "
        f"{time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        f"- **Setup** (samkit.theory.dln, the paper's sparse regression): n={s['n']}, d={s['d']}, "
        f"k={s['k']}, alpha={s['alpha']}, lr={s['lr']}, {s['steps']} full-batch steps, "
        f"unnormalised SAM; one data seed (X, theta*, test set) per seed: {len(seeds)} seeds "
        f"({seeds[0]}..{seeds[-1]}). {data.get('seconds', 0.0):.1f} s in all.",
        "- rho is samkit's: the perturbation is rho·∇ℓ_i with ℓ_i = (x_iᵀβ − y_i)²/2, so for "
        "1-SAM it is 2x the rho of the authors' notebook (which perturbs by 2·rho·r_i·x_i⊙v); "
        "for n-SAM the two agree (docs/theory.md).",
        "",
        table,
        "",
        "![test loss relative to GD](test_loss_vs_gd.png)",
        "",
    ]
    _atomic.write_text(folder / "report.md", "\n".join(text))
    return table


def _dln_plot(folder: Path, data: dict[str, Any], seeds: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from samkit.study.plots import log_axis

    rhos = data["settings"]["rho"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained", sharey=True)
    from samkit.theory.cli import LABELS

    for ax, method in zip(axes, ("nsam", "1sam"), strict=True):
        name = LABELS[method]
        all_r = []
        for seed in seeds:
            res = data["seeds"][seed]
            g = res["gd"]["test_loss"][0]
            r = [np.nan if t is None else t / g for t in res[method]["test_loss"]]
            all_r.append(r)
            ax.plot(rhos, r, color="0.6", lw=0.8, alpha=0.7)
        ax.plot(rhos, np.nanmedian(np.array(all_r, dtype=float), 0), "o-", color="C3", lw=2,
                label=f"median over {len(seeds)} seeds")  # fmt: skip
        ax.axhline(1.0, color="k", ls="--", lw=1, label="GD (= 1)")
        ax.set(xlabel="rho (samkit convention)",
               title=f"{name}: final test loss / GD's, one grey line per data seed")  # fmt: skip
        log_axis(ax, "x")
        log_axis(ax, "y")
        ax.legend()
    axes[0].set_ylabel("test loss relative to GD (below 1: better)")
    tmp = folder / ".test_loss_vs_gd.tmp.png"
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(folder / "test_loss_vs_gd.png")


# ---- the suite's report ----------------------------------------------------------------------------
def write_suite_report(
    folder: str | Path, *, remake_studies: bool = True, plots: bool = True
) -> str:
    """Remake every study's report (unless ``remake_studies`` is false; figures too unless
    ``plots`` is false) and ``verdicts.md`` / ``verdicts.csv``; returns the verdict table."""
    from samkit.study.report import load_study, write_report

    folder = Path(folder)
    record = run_files.read_json(folder / SUITE)
    kinds = {s["id"]: s["kind"] for s in record["studies"]}
    rows: list[dict[str, Any]] = []
    for spec in record["studies"]:
        path = folder / spec["id"]
        if spec["kind"] == "dln":
            if (path / DLN_RESULTS).is_file() and remake_studies:
                write_dln_report(path, plots=plots)
        elif (path / "study.json").is_file():
            if remake_studies:
                write_report(path, plots=plots)
            rows += load_study(path)[1]
    outcomes = [
        evaluate(folder, c, kinds[c["study"]])
        for c in record["claims"]
        if _study_ready(folder / c["study"], kinds[c["study"]])
    ]
    table = _verdict_table(outcomes)
    _write_verdicts_csv(folder / "verdicts.csv", outcomes)
    _atomic.write_text(
        folder / "verdicts.md", _verdicts_markdown(folder, record, outcomes, table, rows)
    )
    return table


def _study_ready(path: Path, kind: str) -> bool:
    return (path / (DLN_RESULTS if kind == "dln" else "study.json")).is_file()


def _verdict_table(outcomes: list[dict[str, Any]]) -> str:
    lines = [
        "| claim | verdict | statistic (arm − baseline, paired by seed) | mean [95% CI] | "
        "seeds | predicted |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        c = o["claim"]
        lines.append(
            f"| `{c['id']}` | **{o['verdict']}** | {c['metric']}: {o['arm']} − "
            f"{o['baseline']} | {_gap_text(o['gap'], c['metric'])} | {o['gap'].n} | "
            f"{'> 0' if c['direction'] > 0 else '< 0'} |"
        )
    return "\n".join(lines)


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
                "n", "mean_gap", "ci_low", "ci_high"])  # fmt: skip
    for o in outcomes:
        c, g = o["claim"], o["gap"]
        w.writerow([c["id"], o["verdict"], c["study"], c["metric"], o["arm"], o["baseline"],
                    c["direction"], c["margin"], g.n, g.mean, g.ci_low, g.ci_high])  # fmt: skip
    _atomic.write_text(path, buf.getvalue())


def _verdicts_markdown(
    folder: Path,
    record: dict[str, Any],
    outcomes: list[dict[str, Any]],
    table: str,
    rows: list[dict[str, Any]],
) -> str:
    from samkit.study.report import load_caveat

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
    out += [
        "",
        table,
        "",
        "**How a verdict is reached.** Each claim's statistic is the difference arm − baseline of "
        "one metric, paired by seed (same initialisation, data order and flipped labels; for the "
        "diagonal network, the same data), with its 95% paired-t interval. Oriented so that the "
        "claim predicts a positive difference: **reproduced** when the whole interval is above 0; "
        "**not reproduced** when the whole interval is below the claim's margin (the smallest "
        "effect that would count: half a point of accuracy, one point of memorised labels, 0 for "
        "flatness and the diagonal network); **inconclusive** otherwise — more seeds would "
        "decide. Accuracy intervals are clipped to [-1, 1]. Where a claim picks the best rho of a "
        "grid, it is the cell with the highest mean test accuracy, as the papers tune rho.",
        "",
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
