"""``samkit sharpness`` and ``samkit landscape``: measure a trained run folder.

:mod:`samkit.cli` calls :func:`add_parsers` with its subparsers. This wrapper lives with the
command line, not in :mod:`samkit.measure`, because it needs a trained run
(:func:`samkit.train.load_run`): ``measure`` itself depends on nothing above it. Results are
written as JSON (and, for ``landscape``, PNG) into the run folder unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from samkit import _atomic
from samkit.cli.flags import number, positive_int, seed_int
from samkit.errors import SamkitError
from samkit.train import load_run


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``sharpness`` and ``landscape`` subcommands."""
    p = subparsers.add_parser(
        "sharpness",
        help="worst-case or average m-sharpness of a trained run",
        description="Measure m-sharpness (Andriushchenko & Flammarion 2022) of a run's final "
        "weights: the loss (and error) increase under a perturbation of radius rho, one "
        "perturbation per group of --shard-size examples. Writes sharpness.json to the run.",
    )
    _common(p, "output JSON path (default: <run>/sharpness.json)")
    p.add_argument("--rho", type=number(float, 0), default=0.05, help="perturbation radius (default 0.05)")
    p.add_argument(
        "--kind",
        choices=("worst", "average"),
        default="worst",
        help="worst case (gradient ascent) or average case (Gaussian/uniform noise)",
    )
    p.add_argument(
        "--norm", choices=("l2", "linf"), default="l2", help="norm of the ball (default l2)"
    )
    p.add_argument(
        "--shard-size",
        type=positive_int,
        default=None,
        help="examples per perturbation, the m of m-sharpness (default: one per batch)",
    )
    p.add_argument("--adaptive", action="store_true", help="ASAM-style ball scaled by |w|")
    p.add_argument(
        "--steps", type=positive_int, default=20, help="ascent steps for --kind worst (default 20)"
    )
    p.add_argument(
        "--step-size", type=number(float, 0, low_open=True), default=None,
        help="ascent step length (default: rho)",
    )
    p.add_argument(
        "--num-samples",
        type=positive_int,
        default=10,
        help="noise draws per group for --kind average (default 10)",
    )
    p.set_defaults(func=_sharpness)

    p = subparsers.add_parser(
        "landscape",
        help="1-D or 2-D loss landscape of a trained run",
        description="Loss (and error) of a run's final weights along filter-normalized random "
        "directions (Li et al. 2018). Writes landscape_<dim>d.json and .png to the run.",
    )
    _common(p, "output JSON path (default: <run>/landscape_<dim>d.json); the PNG figure is "
            "written next to it")
    p.add_argument("--dim", type=int, choices=(1, 2), default=1, help="1-D curve or 2-D surface")
    p.add_argument("--steps", type=number(int, 2, high=10_001), default=21,
                   help="points per axis (default 21)")
    p.add_argument(
        "--span",
        type=number(float),
        nargs=2,
        default=(-1.0, 1.0),
        metavar=("LOW", "HIGH"),
        help="range of the direction coefficient (default -1 1)",
    )
    p.add_argument(
        "--plot",
        choices=("contour", "surface"),
        default="contour",
        help="2-D plot style (default contour)",
    )
    p.set_defaults(func=_landscape)


def _common(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("--run", required=True, help="run folder written by `samkit train`")
    p.add_argument(
        "--split",
        choices=("train", "test"),
        default="train",
        help="data split to measure on (default train)",
    )
    p.add_argument(
        "--num-examples",
        type=positive_int,
        default=1024,
        help="examples used, from the start of the split (default 1024)",
    )
    p.add_argument("--batch-size", type=positive_int, default=256, help="examples per batch (default 256)")
    p.add_argument(
        "--mode",
        choices=("eval", "train"),
        default="eval",
        help="model mode while measuring (default eval)",
    )
    p.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="cpu", help="device to load the run on (default cpu)")
    p.add_argument("--out", default=None, help=out_help)
    p.add_argument(
        "--quiet",
        "--no-progress",
        dest="quiet",
        action="store_true",
        help="no progress bars (--no-progress is the older name)",
    )
    p.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="measure an unfinished run's last checkpoint (refused by default: finish it with "
        "samkit train --resume DIR)",
    )


def _load(args: argparse.Namespace) -> tuple[Any, list[Any]]:
    if not Path(args.run).is_dir():
        raise SamkitError(f"--run {args.run}: no such run folder.")
    from samkit.train.setup import device_of

    device_of(args.device)
    low, high = getattr(args, "span", (0, 1))
    if low >= high:
        raise SamkitError(f"--span LOW HIGH needs LOW < HIGH, got {low:g} {high:g}.")
    if args.out is not None:
        _check_out(Path(args.out))
    run = load_run(args.run, device=args.device, allow_incomplete=args.allow_incomplete)
    batches = run.batches(
        split=args.split, batch_size=args.batch_size, max_examples=args.num_examples
    )
    return run, batches


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that is no file name, a folder, or a file samkit did not write."""
    if out.is_dir():  # ("" is the current folder)
        raise SamkitError(f"--out {out} is a folder; give the JSON file to write.")
    if out.exists():
        try:
            mine = "run" in json.loads(out.read_text())
        except (ValueError, TypeError, OSError, UnicodeDecodeError):
            mine = False
        if not mine:
            raise SamkitError(
                f"--out {out} exists and was not written by samkit sharpness or landscape; "
                "nothing was changed. Choose another --out."
            )


def _write_result(args: argparse.Namespace, run: Any, out: Path, payload: dict[str, Any]) -> None:
    """The result JSON, with where it was measured; an unfinished run is said in the output."""
    payload.update(split=args.split, run=str(args.run), epoch=run.epoch, complete=run.complete)
    if not run.complete:
        payload["step_in_epoch"] = run.step_in_epoch
        print(f"incomplete run: measured the weights at the {run.position()} (--allow-incomplete)")
    _atomic.write_json(out, payload)


def _output(args: argparse.Namespace, name: str) -> Path:
    """``--out`` or ``<run>/<name>``, its folder created (as for any output file a user names)."""
    out = Path(args.out) if args.out else Path(args.run) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _sharpness(args: argparse.Namespace) -> int:
    from samkit.measure.sharpness import sharpness

    run, batches = _load(args)
    res = sharpness(
        run.model,
        run.loss_fn,
        batches,
        rho=args.rho,
        kind=args.kind,
        norm=args.norm,
        shard_size=args.shard_size,
        adaptive=args.adaptive,
        steps=args.steps,
        step_size=args.step_size,
        num_samples=args.num_samples,
        seed=args.seed,
        error_fn=getattr(run, "error_fn", None),
        mode=args.mode,
        progress=not args.quiet,
    )
    out = _output(args, "sharpness.json")
    _write_result(args, run, out, res.to_dict())
    print(_sharpness_line(res, args.split, out))
    return 0


def _sharpness_line(res: Any, split: str, out: Path) -> str:
    """What was measured, in one line; an interval only where there is a spread to show."""
    if res.shard_size is not None:
        m = f"m={res.shard_size}"
    else:  # one perturbation per batch: m is the batch (the largest group; the last may be short)
        m = f"m={max(size for size, _, _ in res.per_group)} (one perturbation per batch)"
    if res.num_groups > 1:
        spread = f" ± {res.loss_increase_stderr:.2g} (standard error over {res.num_groups} groups)"
    else:
        spread = " (one group: no interval; --shard-size gives several)"
    err = "" if res.error_increase is None else f", error {res.error_increase:+.4f}"
    return (
        f"{res.kind}-case {res.norm} sharpness, rho={res.rho:g}, {m}, on {res.num_examples} "
        f"{split} examples: loss {res.loss_increase:+.5g}{spread}{err} -> {out}"
    )


def _landscape(args: argparse.Namespace) -> int:
    from samkit.measure.landscape import (
        landscape_1d,
        landscape_2d,
        plot_landscape_1d,
        plot_landscape_2d,
    )

    run, batches = _load(args)
    kw = dict(
        steps=args.steps,
        span=tuple(args.span),
        seed=args.seed,
        mode=args.mode,
        error_fn=getattr(run, "error_fn", None),
        progress=not args.quiet,
    )
    out = _output(args, f"landscape_{args.dim}d.json")
    if args.dim == 1:
        res = landscape_1d(run.model, run.loss_fn, batches, **kw)
        png = plot_landscape_1d(res, out.with_suffix(".png"))
    else:
        res = landscape_2d(run.model, run.loss_fn, batches, **kw)
        png = plot_landscape_2d(res, out.with_suffix(".png"), kind=args.plot)
    _write_result(args, run, out, res.to_dict())
    print(
        f"landscape {args.dim}-D on {args.split}: min loss {float(res.loss.min()):.5g} "
        f"-> {out}, {png}"
    )
    return 0
