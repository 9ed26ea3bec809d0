"""``samkit train``: one run into its own folder (or ``--resume DIR``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from samkit.cli.flags import add_config_flags, config_from_args, given_settings
from samkit.errors import SamkitError


def add_parsers(sub: Any) -> None:
    """Register ``train``."""
    p = sub.add_parser(
        "train",
        help="train one run into its own folder",
        description="Train one run. Writes config.yaml, env.json, metrics.jsonl (one line per "
        "epoch), summary.json and checkpoint.pt into --out (see docs/harness.md). Ctrl-C saves a "
        "checkpoint; --resume DIR continues it bit-exactly (on CPU).",
    )
    add_config_flags(p)
    p.add_argument("--out", type=Path, help="run folder (default runs/<optimizer>-...-<time>)")
    p.add_argument("--resume", type=Path, metavar="DIR", help="continue the run saved in DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from samkit.train import train
    from samkit.train.distributed import is_main_process

    if args.resume is not None:
        if args.config is not None or args.out is not None or args.overwrite:
            raise SamkitError(
                "--resume DIR continues the run saved in DIR; it takes no --config, --out or "
                "--overwrite (only --epochs, --device, --execution, --quiet)."
            )
        summary = train(
            None, args.resume, resume=True, quiet=args.quiet, overrides=given_settings(args)
        )
        out = Path(args.resume)
    else:
        cfg = config_from_args(args)
        out = Path(args.out) if args.out else _default_out(cfg)
        summary = train(cfg, out, overwrite=args.overwrite, quiet=args.quiet)
    if not is_main_process():  # under torchrun: one summary line, from rank 0
        return 0
    print(
        f"{summary['label']}: test acc {summary['test_acc']:.4f}, test loss "
        f"{summary['test_loss']:.4f}, train loss {summary['train_loss']:.4f} after "
        f"{summary['epochs']} epoch{'s' if summary['epochs'] != 1 else ''}, {summary['steps']} "
        f"steps, {summary['passes']:g} passes, "
        f"{summary['wall_time']:.1f} s -> {out}"
    )
    return 0


def _default_out(cfg: Any) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{cfg.optimizer}-{cfg.dataset}-{cfg.model}-seed{cfg.seed}-{stamp}"
    return Path("runs") / name.replace(":", "_").replace("/", "_")
