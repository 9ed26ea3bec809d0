"""The diagonal-linear-network study of the claims suite: GD, n-SAM and 1-SAM over many data seeds.

The runs are :func:`samkit.theory.grid.run_grid`'s (the runner ``samkit dln`` uses too), into the
study's ``results.json``; this module adds what a suite needs of them: the report across seeds
(``report.md`` and ``test_loss_vs_gd.png``) and the per-seed values a claim compares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from samkit import _atomic
from samkit.errors import SamkitError
from samkit.study.plots import log_axis
from samkit.study.report_text import header
from samkit.study.stats import fmt, summarize
from samkit.theory.dln import LABELS
from samkit.theory.grid import RESULTS, GridSettings, read_grid, run_grid


def run(folder: Path, setup: dict[str, Any], seeds: Sequence[int], *, quiet: bool) -> None:
    """GD, n-SAM and 1-SAM on one data seed per seed (final values only); seeds already in the
    folder's ``results.json`` with the same settings are kept, not recomputed."""
    run_grid(folder, GridSettings(**setup), seeds, reuse=True, quiet=quiet)


def is_done(folder: Path) -> bool:
    """Whether the study has results to report (its ``results.json``)."""
    return (folder / RESULTS).is_file()


def _by_seed(folder: Path) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """The results and ``{seed: methods}``, sorted by seed; the study is one alpha and one lr."""
    data = read_grid(folder)
    s = data["settings"]
    if len(s["alpha"]) != 1 or len(s["lr"]) != 1:
        raise SamkitError(
            f"{folder}: the study compares data seeds at one alpha and one lr; its results have "
            f"alpha {s['alpha']} and lr {s['lr']}."
        )
    return data, {r["seed"]: r["methods"] for r in sorted(data["runs"], key=lambda r: r["seed"])}


def arm_values(folder: Path, arm: dict[str, Any], metric: str) -> tuple[str, dict[int, float]]:
    """``(description, {seed: value})`` of ``metric`` for one side of a claim: ``arm`` is
    ``{"method": "1sam", "rho": 0.1}`` (or ``{"method": "gd"}``); ``log10_test_loss`` is the
    log of ``test_loss``. A diverged run has no value."""
    _, seeds = _by_seed(folder)
    method = arm["method"]
    key = "test_loss" if metric == "log10_test_loss" else metric
    out: dict[int, float] = {}
    for seed, methods in seeds.items():
        m = methods[method]
        i = 0 if method == "gd" else _index(m["rho"], arm["rho"], folder)
        value = m[key][i]
        if value is None or m["diverged"][i]:
            continue
        out[seed] = math.log10(value) if metric == "log10_test_loss" else float(value)
    return LABELS[method] + ("" if method == "gd" else f" rho={arm['rho']}"), out


def _index(rhos: list[float], rho: float, folder: Path) -> int:
    for i, r in enumerate(rhos):
        if math.isclose(r, rho, rel_tol=1e-9):
            return i
    raise SamkitError(f"{folder}: rho {rho} was not run (rho values: {rhos}).")


def _ratios(seeds: dict[int, dict[str, Any]], method: str) -> list[list[float]]:
    """Per seed, the final test loss of ``method`` at each rho over GD's (NaN where it diverged)."""
    out = []
    for methods in seeds.values():
        g = methods["gd"]["test_loss"][0]
        out.append([math.nan if t is None or not g else t / g for t in methods[method]["test_loss"]])
    return out


def write_report(folder: Path, *, plots: bool = True) -> str:
    """``report.md`` and ``test_loss_vs_gd.png`` of the study, from ``results.json``; returns the
    table (per method and rho: seeds better than GD, the median and mean log ratio of the test
    losses, seeds with a smaller ``‖β‖₁``)."""
    import numpy as np

    data, seeds = _by_seed(folder)
    s = data["settings"]
    lines = [
        "| method | rho | seeds better than GD (test loss) | median test loss / GD | "
        "mean log10(test loss / GD) [95% CI] | seeds with smaller ‖β‖₁ than GD |",
        "|---|---|---|---|---|---|",
    ]
    for method in ("nsam", "1sam"):
        for i, rho in enumerate(s["rho"]):
            r, l1 = [], []
            for methods in seeds.values():
                t, g = methods[method]["test_loss"][i], methods["gd"]["test_loss"][0]
                if t is not None and g:
                    r.append(t / g)
                    l1.append(methods[method]["l1"][i] < methods["gd"]["l1"][0])
            logs = summarize([math.log10(x) for x in r if x > 0])
            lines.append(
                f"| {LABELS[method]} | {rho:g} | {sum(x < 1 for x in r)}/{len(r)} | "
                f"{np.median(r):.3g} | {fmt(logs, 3, sign=True)} | {sum(l1)}/{len(l1)} |"
            )
    table = "\n".join(lines)
    if plots:
        _plot(folder, s["rho"], seeds)
    first, last = min(seeds), max(seeds)
    text = header("Diagonal linear network: GD vs n-SAM vs 1-SAM across data seeds",
                  f"{folder.name}/{RESULTS}", [], [
        f"- **Setup** (samkit.theory.dln, the paper's sparse regression): n={s['n']}, d={s['d']}, "
        f"k={s['k']}, alpha={s['alpha'][0]}, lr={s['lr'][0]}, {s['steps']} full-batch steps, "
        f"{'normalised' if s['normalized'] else 'unnormalised'} SAM; one data seed (X, theta*, "
        f"test set) per seed: {len(seeds)} seeds ({first}..{last}). "
        f"{data['seconds']:.1f} s in all.",
        "- rho is samkit's: the perturbation is rho·∇ℓ_i with ℓ_i = (x_iᵀβ − y_i)²/2, so for "
        "1-SAM it is 2x the rho of the authors' notebook (which perturbs by 2·rho·r_i·x_i⊙v); "
        "for n-SAM the two agree (docs/theory.md).",
    ])  # fmt: skip
    text += [
        "",
        table,
        "",
        "![test loss relative to GD](test_loss_vs_gd.png)",
        "",
    ]
    _atomic.write_text(folder / "report.md", "\n".join(text))
    return table


def _plot(folder: Path, rhos: list[float], seeds: dict[int, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained", sharey=True)
    for ax, method in zip(axes, ("nsam", "1sam"), strict=True):
        ratios = _ratios(seeds, method)
        for r in ratios:
            ax.plot(rhos, r, color="0.6", lw=0.8, alpha=0.7)
        ax.plot(rhos, np.nanmedian(np.array(ratios, dtype=float), 0), "o-", color="C3", lw=2,
                label=f"median over {len(seeds)} seeds")  # fmt: skip
        ax.axhline(1.0, color="k", ls="--", lw=1, label="GD (= 1)")
        ax.set(xlabel="rho (samkit convention)",
               title=f"{LABELS[method]}: final test loss / GD's, one grey line per data seed")  # fmt: skip
        log_axis(ax, "x")
        log_axis(ax, "y")
        ax.legend()
    axes[0].set_ylabel("test loss relative to GD (below 1: better)")
    _atomic.save_figure(fig, folder / "test_loss_vs_gd.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
