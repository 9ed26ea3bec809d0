"""The ``samkit`` parser with every command, and :func:`main`.

Each command group registers its own subcommands (``add_parsers``): :mod:`samkit.cli.train`,
:mod:`samkit.cli.study` (compare, sweep, reproduce, report), :mod:`samkit.cli.cluster`
(status; the ``--launcher`` flags), :mod:`samkit.cli.optimizers`,
:mod:`samkit.cli.dln`, :mod:`samkit.cli.measure` (sharpness, landscape). A
:class:`~samkit.errors.SamkitError` is printed as ``error: <message>`` with exit status 2, no
traceback; Ctrl-C in a run prints how to resume it (exit status 130).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import Any

from samkit._version import __version__
from samkit.cli import cluster, dln, examples, measure, optimizers, study, train
from samkit.errors import SamkitError, SamkitWarning

COMMAND_GROUPS = (train, study, cluster, optimizers, dln, measure)  # in the order of `samkit --help`


def build_parser() -> argparse.ArgumentParser:
    """The ``samkit`` parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="samkit",
        description="Sharpness-aware minimization for PyTorch: train, compare, sweep, measure.",
    )
    parser.add_argument("--version", action="version", version=f"samkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in COMMAND_GROUPS:
        group.add_parsers(sub)
    examples.add_examples(sub)
    return parser


class _StderrLog(logging.Handler):
    """The ``samkit`` log as ``samkit: <message>`` lines on the current ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"samkit: {record.getMessage().removeprefix('samkit: ')}", file=sys.stderr)


def _show_log() -> None:
    # What the library logs at INFO and above (a cache folder it created, a fallback it took)
    # is part of what a command tells its user; Python users configure logging themselves.
    logger = logging.getLogger("samkit")
    if not any(isinstance(h, _StderrLog) for h in logger.handlers):
        logger.addHandler(_StderrLog())
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    _show_log()
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():  # restores the caller's warning display afterwards
        warnings.showwarning = _show_warning
        return _run(args)


def _show_warning(message: Any, category: Any, filename: str, lineno: int, *rest: Any) -> None:
    # samkit's own warnings read as advice ("warning: ..."), not as a source location
    if issubclass(category, SamkitWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno), end="", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from samkit.train import RunInterrupted

    try:
        return int(args.func(args) or 0)
    except SamkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunInterrupted as err:
        print(f"\n{err}", file=sys.stderr)
        return err.exit_status  # 128 + the signal: 130 Ctrl-C, 143 SIGTERM (samkit.train.signals)
