"""Load a finished (or checkpointed) run folder for measurement: ``samkit.train.load_run``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from samkit.errors import SamkitError
from samkit.train import files
from samkit.train.config import TrainConfig, load_config
from samkit.train.setup import Batch, batches_of, build_model, error_fn, load_data, make_loss_fn


@dataclass
class LoadedRun:
    """A run rebuilt from its folder, with the checkpoint's weights loaded.

    Attributes:
        model: the model in eval mode, weights from ``checkpoint.pt`` (the last saved epoch).
        config: the run's :class:`TrainConfig`.
        loss_fn: ``loss_fn(model, batch)`` -> mean cross-entropy (no label smoothing: the loss
            measurement tools should see).
        error_fn: ``error_fn(model, batch)`` -> fraction of the batch classified wrong.
        dataset: the run's dataset (same label noise and subsets as in training).
        summary: ``summary.json`` when the run is complete, else ``None``.
    """

    model: nn.Module
    config: TrainConfig
    loss_fn: Callable[[nn.Module, Batch], Tensor]
    error_fn: Callable[[nn.Module, Batch], Tensor]
    dataset: Any
    summary: dict[str, Any] | None
    epoch: int

    def batches(
        self, split: str = "train", batch_size: int = 256, max_examples: int | None = None
    ) -> list[Batch]:
        """The first ``max_examples`` of ``split`` in order (no augmentation) as batches."""
        if split not in ("train", "test"):
            raise SamkitError(f"split must be 'train' or 'test', got {split!r}.")
        return batches_of(getattr(self.dataset, split), batch_size, max_examples)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the model and data of a run folder and load its checkpoint's weights.

    Example:
        >>> run = load_run("runs/compare-x/sam-seed0")
        >>> loss = run.loss_fn(run.model, run.batches("test", max_examples=512)[0])
    """
    run_dir = Path(run_dir)
    if not (run_dir / files.CONFIG).is_file():
        raise SamkitError(f"{run_dir} is not a run folder: it has no {files.CONFIG}.")
    if not (run_dir / files.CHECKPOINT).is_file():
        raise SamkitError(
            f"{run_dir} has no {files.CHECKPOINT} yet (the run has not finished an epoch)."
        )
    cfg = load_config(run_dir / files.CONFIG).replace(device=str(device))
    device = torch.device(device)
    state = files.load_checkpoint(run_dir / files.CHECKPOINT, device)
    ds = load_data(cfg, device)
    model = build_model(cfg, ds, device)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as err:
        raise SamkitError(
            f"{run_dir}: checkpoint does not fit the configured model ({err})."
        ) from err
    model.eval()
    summary_path = run_dir / files.SUMMARY
    return LoadedRun(
        model=model,
        config=cfg,
        loss_fn=make_loss_fn(0.0),
        error_fn=error_fn,
        dataset=ds,
        summary=files.read_json(summary_path) if summary_path.is_file() else None,
        epoch=int(state["epoch"]),
    )
