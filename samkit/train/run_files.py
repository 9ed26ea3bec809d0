"""The files of a run folder, each written atomically by :mod:`samkit._atomic`.

``config.yaml`` (the :class:`~samkit.train.config.TrainConfig`), ``env.json`` (where and how it
ran: :mod:`samkit.train.environment`), ``metrics.jsonl`` (one line per epoch), ``summary.json``
(written once, when the run is complete) and ``checkpoint.pt`` (everything needed to continue
bit-exactly). See ``docs/harness.md`` for every key.

A write the file system refuses (full, read-only, permission denied, quota) raises
:class:`WriteError`, which names the file and what to do; the file it would have replaced is left
as it was (the writes are atomic), so the last checkpoint survives any failed write.
"""

from __future__ import annotations

import contextlib
import errno
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samkit import _atomic
from samkit.errors import SamkitError

CONFIG = "config.yaml"
ENV = "env.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
STEPS = "steps.jsonl"
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1

# What each refusal of the file system means for the user, and what to do about it.
_REMEDIES = {
    errno.ENOSPC: ("the disk is full (no space left on device)", "free space on it"),
    errno.EDQUOT: ("the disk quota is exceeded", "free space within your quota"),
    errno.EROFS: ("the file system is read-only", "make it writable (or copy the folder to one)"),
    errno.EACCES: ("permission denied", "make the folder writable for you (chmod/chown)"),
    errno.EPERM: ("permission denied (operation not permitted)",
                  "make the folder writable for you (chmod/chown)"),
}


class WriteError(OSError, SamkitError):
    """A run-folder file could not be written; :meth:`message` says which, why and what to do.

    An ``OSError`` (what it is) and a :class:`SamkitError` (the CLI prints one ``error:`` line).
    """

    def __init__(self, path: Path, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.path, self.cause = Path(path), cause

    def __str__(self) -> str:
        return self.message("The file it would have replaced is unchanged.")

    def reason(self) -> str:
        code = self.cause.errno
        if code in _REMEDIES:
            what, todo = _REMEDIES[code]
            return f"{what}; {todo}"
        return f"{self.cause.strerror or self.cause} (errno {code}); fix the file system"

    def message(self, consequence: str) -> str:
        """One line: the file, the reason, the remedy, then ``consequence`` (what state the run is
        in and how to go on)."""
        return f"could not write {self.path}: {self.reason()}. {consequence}"


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    try:
        yield
    except WriteError:
        raise
    except OSError as err:
        raise WriteError(path, err) from err


def write_json(path: Path, payload: Any) -> None:
    """Atomically write ``payload`` as indented JSON (numpy/torch scalars and paths allowed)."""
    with _writing(path):
        _atomic.write_json(path, payload, default=_jsonable)


def read_json(path: Path) -> Any:
    """Read a JSON file, with a clear error when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except ValueError as err:  # not JSON, or not even text (UnicodeDecodeError)
        raise SamkitError(f"{path} is not valid JSON ({err}); the file was left as is.") from err


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` whole (it is small) so it always matches the checkpoint."""
    with _writing(path):
        _atomic.write_text(path, "".join(json.dumps(r, default=_jsonable) + "\n" for r in rows))


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line (``steps.jsonl``: too long to rewrite whole at every row)."""
    with _writing(path), open(path, "a") as fh:
        fh.write(json.dumps(row, default=_jsonable) + "\n")


def keep_rows_until(path: Path, step: int) -> None:
    """Drop the rows of a resumed run's ``steps.jsonl`` written after its checkpoint (``step``),
    and half a row that a process killed while appending left at the end."""
    if not Path(path).is_file():
        return
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:  # only the last line can be cut short by a crash
                raise SamkitError(
                    f"{path}: line {i + 1} is not JSON; the file was left as is."
                ) from None
    kept = [r for r in rows if r.get("step", 0) <= step]
    if len(kept) != len(lines):
        write_metrics(path, kept)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (empty if the file does not exist)."""
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically ``torch.save`` the run's state (with the checkpoint format) to ``path``."""
    with _writing(path):
        try:
            _atomic.save_torch(path, {"format": CHECKPOINT_FORMAT, **state})
        except RuntimeError as err:
            # torch's writer reports a failed write as "enforce fail at inline_container.cc"; the
            # file system's own error (a full disk) is the one the user can act on.
            cause = err.__context__
            while cause is not None and not isinstance(cause, OSError):
                cause = cause.__context__
            if cause is None:
                raise
            raise cause from err


def load_checkpoint(path: Path, map_location: Any = "cpu", *, remedy: str | None = None) -> dict[str, Any]:
    """Load a checkpoint; a truncated or foreign file is a :class:`SamkitError` (file untouched)
    whose message ends with ``remedy`` (by default, what to do about a run folder's own one)."""
    remedy = remedy or (
        "The run folder was left untouched; restore the file, or start the run again in a new "
        "--out folder (or with --overwrite to replace this one)."
    )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file, with advice for its API
        raise SamkitError(
            f"checkpoint {path} could not be read: the file is damaged (cut short, or overwritten) "
            f"or was not written by samkit ({type(err).__name__} in torch.load). {remedy}"
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise SamkitError(
            f"checkpoint {path} is not a samkit training checkpoint (format "
            f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r}, "
            f"expected {CHECKPOINT_FORMAT}). {remedy}"
        )
    return state


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
