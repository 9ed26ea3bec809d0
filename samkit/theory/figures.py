"""What ``samkit dln`` shows of a grid's results (:mod:`samkit.theory.grid`): a table per
``alpha x lr`` and three figures of the first one."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from samkit import _atomic
from samkit.theory.dln import LABELS


def _g(value: float | None, spec: str) -> str:
    return format(math.nan if value is None else value, spec)


def summary_table(payload: dict[str, Any]) -> str:
    """Markdown: final test loss and ||beta||_1 per method and rho, for each alpha x lr."""
    lines = []
    for r in payload["runs"]:
        lines.append(f"\nalpha={r['alpha']}, lr={r['lr']}:\n")
        lines.append("| method | rho | test loss | ||beta||_1 | dist to theta* | alpha_eff (mean) |")
        lines.append("|---|---|---|---|---|---|")
        for m, res in r["methods"].items():
            dist = res.get("trajectory", {}).get("dist", [None])[-1]
            for i, rho in enumerate(res["rho"]):
                lines.append(
                    f"| {LABELS[m]} | {rho:.3g} | {_g(res['test_loss'][i], '.4g')} | "
                    f"{_g(res['l1'][i], '.4g')} | {'–' if dist is None else _g(dist[i], '.4g')} | "
                    f"{_g(res['alpha_eff_mean'][i], '.3g')} |"
                )
    return "\n".join(lines)


def plot(payload: dict[str, Any], out: Path) -> list[Path]:
    """Final test loss and ||beta||_1 vs rho per method; learning curves and ||beta||_1 along
    training at the rho where 1-SAM's final test loss is lowest (with a trajectory). For the
    first alpha x lr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    r = payload["runs"][0]
    ms = r["methods"]
    setting = f"α = {r['alpha']:g}, lr = {r['lr']:g}, {payload['settings']['steps']} steps"
    short = setting
    if len(payload["runs"]) > 1:  # the figures show one setting; say which, and where the rest is
        setting += f" (first of {len(payload['runs'])} α × lr settings; all in results.json)"
        short += f" (first of {len(payload['runs'])} settings)"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for m, res in ms.items():
        rho = np.asarray(res["rho"], dtype=float)
        test = np.asarray(res["test_loss"], dtype=float)  # null (diverged) reads as NaN
        l1 = np.asarray(res["l1"], dtype=float)
        if m == "gd":
            for ax, val in zip(axes, (test[0], l1[0]), strict=True):
                ax.axhline(val, color="k", ls="--", label=LABELS[m])
            continue
        for ax, val in zip(axes, (test, l1), strict=True):
            (line,) = ax.plot(rho, val, "o-", label=LABELS[m])
            bad = ~np.isfinite(val)
            if bad.any():  # a diverged rho would be a silent gap in the line: mark it on top
                ax.plot(rho[bad], np.ones(int(bad.sum())), "x", color=line.get_color(), ms=9,
                        mew=2, transform=ax.get_xaxis_transform(), clip_on=False,
                        label=f"{LABELS[m]} diverged")
        # too large a rho drives the network to the saddle u = v = 0 (it gets there slowly:
        # "collapsed" is a norm a millionth of the largest one, not an exact zero)
        collapsed = np.flatnonzero(np.isfinite(l1) & (l1 < 1e-6 * np.nanmax(np.abs(l1))))
        if collapsed.size:
            axes[1].annotate("collapsed to β = 0", (rho[collapsed[0]], 0.0), xytext=(-12, 25),
                             textcoords="offset points", ha="right", fontsize="small",
                             arrowprops={"arrowstyle": "->", "lw": 0.8})
    for ax, name in zip(axes, ("final test loss", r"final $\|\beta\|_1$"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(r"$\rho$")
        ax.set_ylabel(name)
        ax.legend(fontsize="small")
    axes[0].set_yscale("log")
    fig.suptitle(f"diagonal linear network: {setting}")
    fig.tight_layout()
    paths.append(_atomic.save_figure(fig, out / "test_loss_vs_rho.png", dpi=120))
    plt.close(fig)
    if any("trajectory" not in res for res in ms.values()):
        return paths  # final values only: no curves to draw

    best = None
    if "1sam" in ms:
        test = np.asarray(ms["1sam"]["test_loss"], dtype=float)
        best = int(np.nanargmin(test)) if np.isfinite(test).any() else 0
    for key, fname, ylabel in (("test_loss", "learning_curves.png", "test loss"),
                               ("l1", "l1_vs_steps.png", r"$\|\beta\|_1$")):
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        for m, res in ms.items():
            i = 0 if m == "gd" or best is None else min(best, len(res["rho"]) - 1)
            curve = res["trajectory"]
            vals = np.asarray(curve[key], dtype=float)[:, i]
            label = LABELS[m] if m == "gd" else f"{LABELS[m]} (ρ = {res['rho'][i]:.3g})"
            ax.plot(curve["steps"], vals, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if key == "test_loss":
            ax.set_yscale("log")
        if best is not None:
            rho = ms["1sam"]["rho"][best]
            ax.set_title(f"at ρ = {rho:.3g}, where 1-SAM's final test loss is lowest\n{short}",
                         fontsize="medium")
        ax.legend(fontsize="small")
        fig.tight_layout()
        paths.append(_atomic.save_figure(fig, out / fname, dpi=120))
        plt.close(fig)
    return paths
