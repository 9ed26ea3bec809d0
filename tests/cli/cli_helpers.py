"""Helpers the CLI tests share: run a command in-process, and fingerprint a folder tree."""

from __future__ import annotations

import hashlib
from pathlib import Path

from samkit import cli


def run_cli(argv, capsys):
    """Exit status and stderr without the ``samkit:`` log lines (e.g. a cache folder created).

    An uncaught exception fails the calling test with its traceback; argparse's own refusals
    (``SystemExit``) give their status like the real command does.
    """
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    lines = capsys.readouterr().err.splitlines(keepends=True)
    keep = [line for line in lines if not line.startswith("samkit: ") or "error: " in line]
    return code, "".join(keep)


def snapshot(root: Path) -> dict[str, str]:
    """Every file (its SHA-256) and folder under ``root``: what a refused command must not change."""
    out = {}
    for path in sorted(Path(root).rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink() or not path.is_file():
            out[rel] = "folder" if path.is_dir() else "other"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
