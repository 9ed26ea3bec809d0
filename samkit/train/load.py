"""Load a finished run folder for measurement: ``samkit.train.load_run``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from samkit.errors import SamkitError
from samkit.train import run_files, run_folder
from samkit.train.config import TrainConfig, load_config
from samkit.train.setup import Batch, batches_of, build_model, error_fn, load_data, make_loss_fn


@dataclass
class LoadedRun:
    """A run rebuilt from its folder, with the checkpoint's weights loaded.

    Attributes:
        model: the model in eval mode, with the weights of ``checkpoint.pt``: the final weights
            of a complete run (``load_run(..., allow_incomplete=True)``: the last checkpoint's).
        config: the run's :class:`TrainConfig`.
        loss_fn: ``loss_fn(model, batch)`` -> mean cross-entropy (no label smoothing: the loss
            measurement tools should see).
        error_fn: ``error_fn(model, batch)`` -> fraction of the batch classified wrong.
        dataset: the run's dataset (same label noise and subsets as in training).
        summary: ``summary.json`` when the run is complete, else ``None``.
        epoch: epochs the weights have completed (``config.epochs`` for a complete run).
        step_in_epoch: steps into the next epoch (an interrupted run's mid-epoch checkpoint;
            0 otherwise).
    """

    model: nn.Module
    config: TrainConfig
    loss_fn: Callable[[nn.Module, Batch], Tensor]
    error_fn: Callable[[nn.Module, Batch], Tensor]
    dataset: Any
    summary: dict[str, Any] | None
    epoch: int
    step_in_epoch: int = 0

    @property
    def complete(self) -> bool:
        """Whether the weights are the run's final ones (``summary.json`` says complete)."""
        return self.summary is not None

    def position(self) -> str:
        """Where in training the weights are: ``"end of epoch 3 of 6"``, ``"step 5 of epoch 2 of 6"``."""
        return _position(self.epoch, self.step_in_epoch, self.config.epochs)

    def batches(
        self, split: str = "train", batch_size: int = 256, max_examples: int | None = None
    ) -> list[Batch]:
        """The first ``max_examples`` of ``split`` in order (no augmentation) as batches."""
        if split not in ("train", "test"):
            raise SamkitError(f"split must be 'train' or 'test', got {split!r}.")
        return batches_of(getattr(self.dataset, split), batch_size, max_examples)


def load_run(
    run_dir: str | Path, device: str | torch.device = "cpu", *, allow_incomplete: bool = False
) -> LoadedRun:
    """Rebuild the model and data of a complete run folder, with its final weights.

    A folder another process is training (or overwriting) is refused
    (:class:`~samkit.train.run_folder.FolderBusy`, naming the process); while the files are read,
    no other process can start writing them. A run that has not finished (interrupted: no
    ``summary.json``) is refused with a :class:`SamkitError` that says how to finish it
    (``samkit train --resume DIR``), since mid-training weights measured by mistake look like a
    result. ``allow_incomplete=True`` loads
    the last checkpoint instead; ``run.summary`` is then ``None`` and ``run.epoch`` /
    ``run.step_in_epoch`` say where training stopped.

    Example:
        >>> run = load_run("runs/compare-x/sam-seed0")
        >>> loss = run.loss_fn(run.model, run.batches("test", max_examples=512)[0])
    """
    run_dir = Path(run_dir)
    with run_folder.reading(run_dir, "measure it"):  # refused while another process trains it
        return _load_run(run_dir, device, allow_incomplete)


def _load_run(run_dir: Path, device: str | torch.device, allow_incomplete: bool) -> LoadedRun:
    if not (run_dir / run_files.CONFIG).is_file():
        raise SamkitError(f"{run_dir} is not a run folder: it has no {run_files.CONFIG}.")
    if not (run_dir / run_files.CHECKPOINT).is_file():
        raise SamkitError(
            f"{run_dir} has no {run_files.CHECKPOINT} yet (the run has not finished an epoch)."
        )
    cfg = load_config(run_dir / run_files.CONFIG).replace(device=str(device))
    device = torch.device(device)
    state = run_files.load_checkpoint(run_dir / run_files.CHECKPOINT, device)
    summary = _summary_if_complete(run_dir)
    epoch, step = int(state.get("epoch", 0)), int(state.get("step_in_epoch", 0))
    if summary is None and not allow_incomplete:
        raise SamkitError(
            f"{run_dir} is an incomplete run: its last checkpoint is from the "
            f"{_position(epoch, step, cfg.epochs)} (no "
            f"{run_files.SUMMARY}). Finish it with: samkit train --resume {run_dir}, or pass "
            "allow_incomplete=True (--allow-incomplete on the command line) to use those weights."
        )
    if summary is not None and (epoch, step) != (summary.get("epochs"), 0):
        raise SamkitError(
            f"{run_dir}: {run_files.SUMMARY} says {summary.get('epochs')} epochs but "
            f"{run_files.CHECKPOINT} is from epoch {epoch}; the folder mixes two runs. Train it again "
            "in a new --out folder."
        )
    ds = load_data(cfg, device)
    model = build_model(cfg, ds, device)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as err:
        raise SamkitError(
            f"{run_dir}: checkpoint does not fit the configured model "
            f"({' '.join(str(err).split())[:300]})."
        ) from err
    model.eval()
    return LoadedRun(
        model=model,
        config=cfg,
        loss_fn=make_loss_fn(0.0),
        error_fn=error_fn,
        dataset=ds,
        summary=summary,
        epoch=epoch,
        step_in_epoch=step,
    )


def _position(epoch: int, step_in_epoch: int, epochs: int) -> str:
    if step_in_epoch:
        return f"step {step_in_epoch} of epoch {epoch + 1} of {epochs}"
    return f"end of epoch {epoch} of {epochs}"


def _summary_if_complete(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / run_files.SUMMARY
    if not path.is_file():
        return None
    summary = run_files.read_json(path)
    return summary if summary.get("status") == "complete" else None
