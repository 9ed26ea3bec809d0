"""The figures of a study report, drawn from the rows :func:`samkit.study.results.load_study` reads
(never from a report).

``curves.png`` (per epoch: test accuracy, train loss, and for label noise the memorised fraction),
``acc_vs_flatness.png`` (one point per run), ``gain_vs_cost.png`` (with a reference method: the
gain over the baseline against passes spent), and for sweeps ``heatmap.png`` / ``sweep.png``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from samkit import _atomic
from samkit.study.results import SHARE_TARGET, cost_benefit
from samkit.study.stats import Summary


def write_plots(
    folder: Path,
    study: dict[str, Any],
    groups: dict[str, list[dict[str, Any]]],
    stats: dict[str, dict[str, Summary]],
    cell_keys: list[str],
) -> list[str]:
    """Draw the study's figures into ``folder``; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    written = []
    if study["kind"] == "compare":
        written.append(_curves(folder, groups, plt))
        if study.get("flatness"):
            written.append(_acc_vs_flatness(folder, groups, plt))
        if study.get("reference"):
            written.append(_gain_vs_cost(folder, study, groups, plt))
    elif cell_keys:
        written.append(_grid_plot(folder, study, groups, stats, cell_keys, plt))
    return [w for w in written if w]


def figure_names(study: dict[str, Any], cell_keys: list[str]) -> list[str]:
    """The files :func:`write_plots` writes for this study, in order."""
    if study["kind"] == "compare":
        return (["curves.png"] + (["acc_vs_flatness.png"] if study.get("flatness") else [])
                + (["gain_vs_cost.png"] if study.get("reference") else []))
    if not cell_keys:
        return []
    return ["sweep.png"] if len(cell_keys) == 1 else ["heatmap.png"]


def _save(fig: Any, path: Path, plt: Any) -> str:
    _atomic.save_figure(fig, path, dpi=120, bbox_inches="tight")  # atomic, with the umask's mode
    plt.close(fig)
    return path.name


def _integer_epochs(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 1.5" on short runs


def log_axis(ax: Any, axis: str = "y") -> None:
    """A log axis labelled with plain numbers (0.05, 0.1, 0.2). Minor ticks get labels when the
    data span few decades (all of them under one decade, the 2s and 5s under two), where the
    decade labels alone would be one or two."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    getattr(ax, f"set_{axis}scale")("log")
    scale = getattr(ax, f"{axis}axis")
    scale.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    low, high = getattr(ax, f"get_{axis}lim")()
    decades = math.log10(high / low) if low > 0 else math.inf
    digits = "123456789" if decades < 1 else "25" if decades < 2 else ""
    scale.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in digits else "")
        if digits
        else NullFormatter()
    )


def _curves(folder: Path, groups: dict[str, list[dict[str, Any]]], plt: Any) -> str:
    import numpy as np

    done = {
        label: [r["_metrics"] for r in rows if r.get("status") == "complete" and r["_metrics"]]
        for label, rows in groups.items()
    }
    noisy = any(m[0].get("memorised") is not None for runs in done.values() for m in runs)
    panels = [("test_acc", "test accuracy", "Test accuracy"),
              ("train_loss", "train loss (log scale)", "Train loss (eval mode, labels as trained)")]
    if noisy:
        panels.append(("memorised", "fraction of flipped labels fit",
                       "Memorised noisy labels"))  # fmt: skip
    many = sum(bool(runs) for runs in done.values()) > 8
    # constrained layout keeps each panel's tick labels out of its neighbour; many methods get
    # distinct colours and line styles and a legend of their own below the panels
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 6.4 if many else 4.2),
                             layout="constrained")  # fmt: skip
    colours = plt.get_cmap("tab20").colors if many else [None]
    styles = ("-", "--", ":", "-.")
    for k, (label, runs) in enumerate(done.items()):
        if not runs:
            continue
        n = min(len(m) for m in runs)
        epochs = np.arange(1, n + 1)
        for ax, (key, _, _) in zip(axes, panels, strict=True):
            values = np.array([[m[i].get(key) for i in range(n)] for m in runs], dtype=float)
            if np.isnan(values).all():
                continue
            mean, std = np.nanmean(values, 0), np.nanstd(values, 0)
            style = {"color": colours[k % len(colours)], "linestyle": styles[k // 20 % 4]} if many else {}
            (line,) = ax.plot(epochs, mean, label=f"{label} (n={len(runs)})", **style)
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    for ax, (key, ylabel, title) in zip(axes, panels, strict=True):
        ax.set(xlabel="epoch", ylabel=ylabel, title=title)
        _integer_epochs(ax)
        if key == "train_loss":
            log_axis(ax)
    if axes[0].lines and many:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=6,
                   fontsize=8)
    elif axes[0].lines:
        axes[0].legend()
    fig.suptitle("Per epoch, mean ± std over seeds")
    return _save(fig, folder / "curves.png", plt)


def _acc_vs_flatness(folder: Path, groups: dict[str, list[dict[str, Any]]], plt: Any) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for label, rows in groups.items():
        done = [
            r for r in rows if r.get("status") == "complete" and r.get("lambda_max") is not None
        ]
        for ax, key in zip(axes, ("lambda_max", "sharpness"), strict=True):
            ax.scatter([r[key] for r in done], [r["test_acc"] for r in done], label=label)
    axes[0].set(xlabel="top Hessian eigenvalue λ_max (lower: flatter)", ylabel="test accuracy")
    axes[1].set(xlabel="worst-case m-sharpness: loss increase (lower: flatter)",
                ylabel="test accuracy")  # fmt: skip
    axes[0].legend()
    fig.suptitle("Test accuracy vs flatness of the final model (one point per run)")
    return _save(fig, folder / "acc_vs_flatness.png", plt)


def _tick(key: str, value: Any, rows: list[dict[str, Any]] | None) -> str:
    """A grid value as a tick label; shard counts also say m (examples per shard)."""
    if key == "shards" and rows:
        m = {r.get("m") for r in rows if r.get("m") is not None}
        if len(m) == 1:
            return f"{value} (m={m.pop()})"
    if key == "shard_size":
        return f"m={value}"
    return str(value)


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

    def name(cell: dict[str, Any]) -> str:
        return "_".join(f"{k}={cell[k]}" for k in keys)

    def mean_acc(cell: dict[str, Any]) -> float:
        return stats[name(cell)]["test_acc"].mean if name(cell) in stats else math.nan

    def rows_with(key: str, value: Any) -> list[dict[str, Any]]:
        return [r for rows in groups.values() for r in rows if r.get(f"cell:{key}") == value]

    seeds = len(study.get("seeds", []))
    if len(keys) == 1:
        (k,) = keys
        fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
        ticks = [_tick(k, v, rows_with(k, v)) for v in grid[k]]
        ax.plot(ticks, [mean_acc({k: v}) for v in grid[k]], marker="o")
        ax.set(xlabel=k, ylabel="mean test accuracy",
               title=f"Test accuracy vs {k} (mean of {seeds} seed(s))")  # fmt: skip
        return _save(fig, folder / "sweep.png", plt)
    rk, ck = keys
    acc = np.array([[mean_acc({rk: r, ck: c}) for c in grid[ck]] for r in grid[rk]])
    fig, ax = plt.subplots(figsize=(1.5 * len(grid[ck]) + 3, 0.9 * len(grid[rk]) + 2),
                           layout="constrained")  # fmt: skip
    im = ax.imshow(acc, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(grid[ck])), [_tick(ck, c, rows_with(ck, c)) for c in grid[ck]])
    ax.set_yticks(range(len(grid[rk])), [_tick(rk, r, rows_with(rk, r)) for r in grid[rk]])
    ax.set(xlabel=ck, ylabel=rk, title=f"Mean test accuracy ({seeds} seed(s) per cell)")
    finite = acc[np.isfinite(acc)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            if not math.isnan(acc[i, j]):  # dark text on the light (high) end of viridis
                color = "k" if acc[i, j] > middle else "w"
                ax.text(j, i, f"{acc[i, j]:.3f}", ha="center", va="center", color=color)
    fig.colorbar(im, ax=ax, label="mean test accuracy")
    return _save(fig, folder / "heatmap.png", plt)


def _gain_vs_cost(folder: Path, study: dict[str, Any], groups: dict[str, list[dict[str, Any]]],
                  plt: Any) -> str | None:
    """Test-accuracy gain over the baseline against passes / baseline, one point per method."""
    points = cost_benefit(study, groups)
    if not points:
        return None
    ref = study["reference"]
    base = study.get("baseline") or "sgd"
    families: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        families.setdefault(p["label"].split("-")[0], []).append(p)
    ref_gain = 100 * next(p["gain"].mean for p in points if p["label"] == ref)
    # A method that lost far more than the reference gains would squash the figure: it is drawn at
    # the bottom edge, with its value written beside it.
    floor = -0.5 * abs(ref_gain) if ref_gain else None
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    markers = "osD^v<>PXh*"
    off_scale = []
    n_families = len(families)
    for i, (family, members) in enumerate(sorted(families.items())):
        members = sorted(members, key=lambda p: p["passes"])
        dodge = 0.006 * (i - (n_families - 1) / 2)  # keep error bars at equal cost apart
        xs = [p["passes"] + dodge for p in members]
        ys = [100 * p["gain"].mean for p in members]
        lo = [100 * (p["gain"].mean - p["gain"].ci_low) for p in members]
        hi = [100 * (p["gain"].ci_high - p["gain"].mean) for p in members]
        if floor is not None:
            for p, y in zip(members, ys, strict=True):
                if y < floor:
                    off_scale.append((p, y))
            keep = [j for j, y in enumerate(ys) if y >= floor]
            xs, ys = [xs[j] for j in keep], [ys[j] for j in keep]
            lo, hi = [lo[j] for j in keep], [hi[j] for j in keep]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker=markers[i % len(markers)], capsize=3,
                    linestyle="-" if len(xs) > 1 else "none", label=family)
    for j, (p, y) in enumerate(off_scale):
        ax.annotate(f"{p['label']}: {y:+.1f} (off scale)", xy=(p["passes"], floor),
                    xytext=(6, 6 + 12 * j), textcoords="offset points", fontsize=8, color="tab:red")
        ax.plot([p["passes"]], [floor], marker="v", color="tab:red")
    ax.axhline(0, color="0.5", linewidth=0.8)
    ax.axhline(SHARE_TARGET * ref_gain, color="tab:red", linestyle="--", linewidth=0.9,
               label=f"{SHARE_TARGET:.0%} of {ref}'s gain")
    ax.axvline(1.25, color="0.6", linestyle=":", linewidth=0.9, label="1.25x passes")
    ax.set_xlim(left=0.98)  # the baseline sits at 1
    if floor is not None and off_scale:
        ax.set_ylim(bottom=floor * 1.15)
    ax.set_xlabel(f"passes / {base} (forward-backward passes, counted)")
    ax.set_ylabel(f"test accuracy gain over {base} (points, 95% CI)")
    ax.set_title("What each cadence buys per pass")
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="outside right upper")
    ax.grid(alpha=0.3)
    return _save(fig, folder / "gain_vs_cost.png", plt)
