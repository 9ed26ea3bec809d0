"""``samkit dln``: GD vs n-SAM vs 1-SAM on diagonal linear networks, over a grid, with figures.

The runs are :func:`samkit.theory.grid.run_grid`'s (the runner the ``dln`` study of
``samkit reproduce`` uses too); the table and figures :mod:`samkit.theory.figures`'.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from samkit.cli.flags import number, positive_int, seed_int
from samkit.errors import SamkitError
from samkit.theory import dln
from samkit.theory.figures import plot, summary_table
from samkit.theory.grid import RESULTS, GridSettings, rho_grid, run_grid


def add_parsers(subparsers: Any) -> None:
    """Register ``dln``."""
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
    )
    p.add_argument("--n", type=positive_int, default=20, help="training examples")
    p.add_argument("--d", type=positive_int, default=30, help="input dimension")
    p.add_argument("--k", type=positive_int, default=3, help="non-zero coordinates of theta*")
    p.add_argument("--noise", type=number(float, 0), default=0.0, help="label noise standard deviation")
    p.add_argument("--n-test", type=positive_int, default=10_000, help="test examples")
    p.add_argument("--alpha", type=number(float, 0, low_open=True), nargs="+", default=[0.1],
                   help="initialisation scale(s)")
    p.add_argument("--lr", type=number(float, 0, low_open=True), nargs="+", default=[0.05],
                   help="step size(s)")
    p.add_argument("--steps", type=positive_int, default=10_000, help="full-batch updates")
    p.add_argument("--rho", type=number(float, 0), nargs="+", help="explicit rho values (else the log grid)")
    p.add_argument("--rho-min", type=number(float, 0, low_open=True), default=1e-3,
                   help="smallest rho of the log grid")
    p.add_argument("--rho-max", type=number(float, 0, low_open=True), default=1.0,
                   help="largest rho of the log grid")
    p.add_argument("--rho-count", type=number(int, 1, high=10_001), default=13,
                   help="number of rho values of the grid")
    p.add_argument("--methods", nargs="+", default=list(dln.METHODS), choices=dln.METHODS,
                   help="methods to run")
    p.add_argument("--normalized", action="store_true",
                   help="perturb by rho*g/||g|| instead of the paper's unnormalised rho*g")
    p.add_argument("--every", type=positive_int, default=100, help="record metrics every this many steps")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the data")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="processes for the alpha x lr combinations (each runs all rho at once)")
    p.add_argument("--out", type=Path, help="output folder (default runs/dln-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.rho is None and (args.rho_min <= 0 or args.rho_max < args.rho_min or args.rho_count < 1):
        raise SamkitError("the rho grid needs 0 < --rho-min <= --rho-max and --rho-count >= 1")
    rhos = args.rho or rho_grid(args.rho_min, args.rho_max, args.rho_count)
    if any(r < 0 for r in rhos):
        raise SamkitError("rho values must be >= 0")
    out = args.out or Path("runs") / time.strftime("dln-%Y%m%d-%H%M%S")
    if args.k > args.d:
        raise SamkitError(f"--k {args.k} non-zero coordinates cannot exceed --d {args.d}")
    if out.exists() and not out.is_dir():
        raise SamkitError(f"--out {out} exists and is not a folder; choose another --out")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise SamkitError(f"{out} exists and is not empty: choose another --out or pass --overwrite")
    settings = GridSettings(
        n=args.n, d=args.d, k=args.k, noise=args.noise, n_test=args.n_test, alpha=args.alpha,
        lr=args.lr, steps=args.steps, rho=rhos, methods=args.methods, normalized=args.normalized,
        every=args.every,
    )  # fmt: skip
    payload = run_grid(out, settings, [args.seed], jobs=args.jobs, quiet=args.quiet)
    print(summary_table(payload))
    if not args.no_plots:
        for path in plot(payload, out):
            print(f"wrote {path}")
    print(f"results in {out}/{RESULTS} ({payload['seconds']:.1f} s)")
    return 0
