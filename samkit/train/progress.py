"""What a run shows while it trains: the progress bar, TensorBoard, ``steps.jsonl`` rows, load.

TensorBoard is optional and never the run's record (the JSON files are): a writer that fails (its
folder removed, a full disk) warns once and the run continues without it.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

from samkit.errors import SamkitWarning
from samkit.train import run_files
from samkit.train.config import TrainConfig


def progress_bar(total: int, initial: int, *, disable: bool) -> Any:
    """A tqdm bar (with ETA) only where someone watches: off when asked and when stderr is not a
    terminal."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="step",
        dynamic_ncols=True,
        disable=disable or not sys.stderr.isatty(),
    )


class TensorBoard:
    """A ``SummaryWriter`` that cannot stop a run: the first failure warns and turns it off."""

    def __init__(self, folder: Path):
        self._writer: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        self._call(lambda: setattr(self, "_writer", SummaryWriter(str(folder))))

    @property
    def active(self) -> bool:
        return self._writer is not None

    def _call(self, fn: Any) -> None:
        try:
            fn()
        except Exception as err:  # whatever the writer raises: it is not the run's record
            self._writer = None
            warnings.warn(
                f"TensorBoard logging failed ({type(err).__name__}: {err}); the run continues "
                "without it (metrics.jsonl, steps.jsonl and summary.json are complete).",
                SamkitWarning,
                stacklevel=3,
            )

    def add_scalar(self, key: str, value: float, step: int) -> None:
        if self._writer is not None:
            self._call(lambda: self._writer.add_scalar(key, value, step))

    def add_hparams(self, hparams: dict[str, Any], metrics: dict[str, Any]) -> None:
        if self._writer is not None:
            self._call(lambda: self._writer.add_hparams(hparams, metrics))

    def close(self) -> None:
        if self._writer is not None:
            self._call(self._writer.close)


def log_step(path: Path, writer: Any, step: int, loss: float, lr: float, record: Any) -> dict[str, Any]:
    """One ``steps.jsonl`` row (and TensorBoard scalars under ``step/``) from the optimizer's record.

    ``loss`` is the batch's loss at ``w`` (the global batch's under torchrun); ``perturbed_loss`` and
    ``ascent_norm`` come from ``opt.last_step`` (rank 0's) and are ``None`` for a plain optimizer or
    a step without them.
    """
    row: dict[str, Any] = {"step": step, "loss": loss, "lr": lr}
    for key in ("perturbed_loss", "ascent_norm"):
        value = getattr(record, key, None)
        row[key] = None if value is None else float(value)
    row["ascended"] = getattr(record, "ascended", None)
    run_files.append_row(path, row)
    if writer is not None:
        for key, value in row.items():
            if key != "step" and value is not None:
                writer.add_scalar(f"step/{key}", float(value), step)
    return row


def hparams(cfg: TrainConfig) -> dict[str, Any]:
    """The config's scalar settings (TensorBoard's HPARAMS takes numbers, strings and booleans)."""
    return {k: v for k, v in cfg.__dict__.items() if isinstance(v, (int, float, str, bool))}


def load_average() -> float | None:
    """The 1-minute load average (runnable processes, all users): how contended the cores were."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None


def max_load(rows: list[dict[str, Any]]) -> float | None:
    loads = [r["load"] for r in rows if r.get("load") is not None]
    return max(loads) if loads else None
