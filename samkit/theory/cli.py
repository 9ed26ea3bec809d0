"""``samkit dln``: GD vs n-SAM vs 1-SAM on diagonal linear networks, over a grid, with figures."""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from samkit import _atomic
from samkit.errors import SamkitError
from samkit.theory import dln

LABELS = {"gd": "GD", "nsam": "n-SAM", "1sam": "1-SAM"}


def add_parsers(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "dln",
        help="diagonal linear networks: implicit bias of GD vs n-SAM vs 1-SAM",
        description=(
            "Sparse regression with a diagonal linear network beta = u*v (Andriushchenko & "
            "Flammarion, ICML 2022). Trains GD, n-SAM (one perturbation from the full-batch "
            "gradient) and 1-SAM (every example perturbed along its own gradient) from u=alpha, "
            "v=0 for every rho of a grid (and every alpha x lr given), and writes results.json and "
            "figures. Defaults reproduce the paper's setting."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--n", type=int, default=20, help="training examples")
    p.add_argument("--d", type=int, default=30, help="input dimension")
    p.add_argument("--k", type=int, default=3, help="non-zero coordinates of theta*")
    p.add_argument("--noise", type=float, default=0.0, help="label noise standard deviation")
    p.add_argument("--n-test", type=int, default=10_000, help="test examples")
    p.add_argument("--alpha", type=float, nargs="+", default=[0.1], help="initialisation scale(s)")
    p.add_argument("--lr", type=float, nargs="+", default=[0.05], help="step size(s)")
    p.add_argument("--steps", type=int, default=10_000, help="full-batch updates")
    p.add_argument("--rho", type=float, nargs="+", help="explicit rho values (else the log grid)")
    p.add_argument("--rho-min", type=float, default=1e-3, help="smallest rho of the log grid")
    p.add_argument("--rho-max", type=float, default=1.0, help="largest rho of the log grid")
    p.add_argument("--rho-count", type=int, default=13, help="number of rho values of the grid")
    p.add_argument("--methods", nargs="+", default=list(dln.METHODS), choices=dln.METHODS,
                   help="methods to run")
    p.add_argument("--normalized", action="store_true",
                   help="perturb by rho*g/||g|| instead of the paper's unnormalised rho*g")
    p.add_argument("--every", type=int, default=100, help="record metrics every this many steps")
    p.add_argument("--seed", type=int, default=0, help="seed of the data")
    p.add_argument("--jobs", type=int, default=1,
                   help="processes for the alpha x lr combinations (each runs all rho at once)")
    p.add_argument("--out", type=Path, help="output folder (default runs/dln-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _job(args: dict, alpha: float, lr: float, rhos: list[float]) -> dict:
    problem = dln.make_problem(args["n"], args["d"], args["k"], args["noise"], args["n_test"],
                               args["seed"])
    out: dict[str, Any] = {"alpha": alpha, "lr": lr, "methods": {}}
    for method in args["methods"]:
        t0 = time.perf_counter()
        rho = np.zeros(1) if method == "gd" else np.asarray(rhos)
        traj = dln.train(problem, method, rho=rho, lr=lr, alpha=alpha, steps=args["steps"],
                         normalized=args["normalized"], every=args["every"])
        res = traj.to_dict()
        res["rho"] = rho.tolist()
        res["seconds"] = time.perf_counter() - t0
        # the interpolator predicted by each run's effective initialisation
        res["predicted_l1"] = [
            float(np.abs(dln.predicted_interpolator(problem.X, problem.y, a)).sum())
            if not div else None
            for a, div in zip(traj.alpha_eff, traj.diverged, strict=True)
        ]
        out["methods"][method] = res
    return out


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.rho is None and (args.rho_min <= 0 or args.rho_max < args.rho_min or args.rho_count < 1):
        raise SamkitError("the rho grid needs 0 < --rho-min <= --rho-max and --rho-count >= 1")
    rhos = args.rho or np.logspace(np.log10(args.rho_min), np.log10(args.rho_max),
                                   args.rho_count).tolist()
    if any(r < 0 for r in rhos):
        raise SamkitError("rho values must be >= 0")
    out = args.out or Path("runs") / time.strftime("dln-%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise SamkitError(f"{out} exists and is not empty: choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    config["rho_values"] = rhos
    combos = list(product(args.alpha, args.lr))
    t0 = time.perf_counter()
    no_bar = args.quiet or len(combos) < 2  # (a single combination has nothing to count)
    if args.jobs > 1 and len(combos) > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(_job, config, a, lr, rhos) for a, lr in combos]
            results = [f.result() for f in tqdm(futures, desc="dln", disable=no_bar)]
    else:
        results = [_job(config, a, lr, rhos) for a, lr in tqdm(combos, desc="dln", disable=no_bar)]
    payload = {"config": config, "seconds": time.perf_counter() - t0, "runs": results}
    _atomic.write_json(out / "results.json", payload, indent=None)
    print(summary_table(payload))
    if not args.no_plots:
        for path in plot(payload, out):
            print(f"wrote {path}")
    print(f"results in {out}/results.json ({payload['seconds']:.1f} s)")
    return 0


def summary_table(payload: dict) -> str:
    """Markdown: final test loss and ||beta||_1 per method and rho, for each alpha x lr."""
    lines = []
    for r in payload["runs"]:
        lines.append(f"\nalpha={r['alpha']}, lr={r['lr']}:\n")
        lines.append("| method | rho | test loss | ||beta||_1 | dist to theta* | alpha_eff (mean) |")
        lines.append("|---|---|---|---|---|---|")
        for m, res in r["methods"].items():
            for i, rho in enumerate(res["rho"]):
                lines.append(
                    f"| {LABELS[m]} | {rho:.3g} | {res['test_loss'][-1][i]:.4g} | "
                    f"{res['l1'][-1][i]:.4g} | {res['dist'][-1][i]:.4g} | "
                    f"{res['alpha_eff_mean'][-1][i]:.3g} |"
                )
    return "\n".join(lines)


def plot(payload: dict, out: Path) -> list[Path]:
    """Final test loss and ||beta||_1 vs rho per method; learning curves and ||beta||_1 along
    training at the rho where 1-SAM's final test loss is lowest. For the first alpha x lr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    r = payload["runs"][0]
    ms = r["methods"]
    setting = f"α = {r['alpha']:g}, lr = {r['lr']:g}, {payload['config']['steps']} steps"
    short = setting
    if len(payload["runs"]) > 1:  # the figures show one setting; say which, and where the rest is
        setting += f" (first of {len(payload['runs'])} α × lr settings; all in results.json)"
        short += f" (first of {len(payload['runs'])} settings)"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for m, res in ms.items():
        rho = np.asarray(res["rho"], dtype=float)
        test = np.asarray(res["test_loss"][-1], dtype=float)
        l1 = np.asarray(res["l1"][-1], dtype=float)
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

    best = None
    if "1sam" in ms:
        test = np.asarray(ms["1sam"]["test_loss"][-1], dtype=float)
        best = int(np.nanargmin(test)) if np.isfinite(test).any() else 0
    for key, fname, ylabel in (("test_loss", "learning_curves.png", "test loss"),
                               ("l1", "l1_vs_steps.png", r"$\|\beta\|_1$")):
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        for m, res in ms.items():
            i = 0 if m == "gd" or best is None else min(best, len(res["rho"]) - 1)
            vals = np.asarray(res[key], dtype=float)[:, i]
            label = LABELS[m] if m == "gd" else f"{LABELS[m]} (ρ = {res['rho'][i]:.3g})"
            ax.plot(res["steps"], vals, label=label)
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
