"""``--init-from``: start a run from another run's weights (fine-tuning), nothing else.

The new run's optimizer, LR schedule, seed and data order are its own; only the model's
``state_dict`` (weights and BatchNorm buffers) comes from the source. The source is recorded in
the config twice: ``init_from`` (where it was, not hashed: moving a folder does not change a run)
and ``init_from_id`` (what it was: the source's config hash and a digest of its weights, hashed),
so two runs started from different weights never share a config hash, and a source that changed
since the run was planned is refused instead of silently used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samkit.errors import SamkitError
from samkit.train import run_files, run_folder
from samkit.train.config import TrainConfig, load_config

# Fields that fix the architecture; a source trained with other values cannot be loaded.
ARCHITECTURE = ("model", "model_options")


def source_paths(source: str | Path) -> tuple[Path, Path | None]:
    """``(checkpoint.pt, config.yaml or None)`` of a run folder or of a checkpoint file."""
    path = Path(source)
    if path.is_dir():
        if not (path / run_files.CHECKPOINT).is_file():
            raise SamkitError(
                f"--init-from {path}: the folder has no {run_files.CHECKPOINT} (is it a run folder "
                "written by `samkit train`?)."
            )
        if not (path / run_files.SUMMARY).is_file():
            raise SamkitError(
                f"--init-from {path}: that run is not complete (no {run_files.SUMMARY}); finish it "
                f"with `samkit train --resume {path}`, or pass {path / run_files.CHECKPOINT} to start "
                "from its last saved epoch on purpose."
            )
        return path / run_files.CHECKPOINT, path / run_files.CONFIG
    if path.is_file():
        sibling = path.parent / run_files.CONFIG
        return path, sibling if sibling.is_file() else None
    raise SamkitError(
        f"--init-from {path}: no such run folder or checkpoint file (give a run folder written "
        "by `samkit train` or its checkpoint.pt)."
    )


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 (16 hex) of a ``state_dict``: names, dtypes, shapes and bytes of every tensor."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _read(source: str | Path) -> tuple[dict[str, Any], TrainConfig | None, str]:
    """The source's checkpoint, its config (if known) and its identity ``<config hash>:<digest>``."""
    ckpt_path, cfg_path = source_paths(source)
    with run_folder.reading(ckpt_path.parent, "start a run from it (--init-from)"):
        state = run_files.load_checkpoint(ckpt_path, remedy=(
            f"It is the source of --init-from {ckpt_path}: nothing was trained. Restore the file, "
            "or train the source run again, then start this run."))  # fmt: skip
    if "model" not in state:
        raise SamkitError(f"--init-from {ckpt_path}: the checkpoint holds no model weights.")
    src_cfg = load_config(cfg_path) if cfg_path is not None else None
    identity = f"{state.get('config_hash', 'unknown')}:{weights_digest(state['model'])}"
    return state, src_cfg, identity


def _check_architecture(cfg: TrainConfig, src_cfg: TrainConfig | None, source: str) -> None:
    if src_cfg is None:
        return  # a bare checkpoint: the strict state_dict load is the check
    mine = {k: getattr(cfg, k) for k in ARCHITECTURE}
    theirs = {k: getattr(src_cfg, k) for k in ARCHITECTURE}
    if mine != theirs:
        raise SamkitError(
            f"--init-from {source}: the source is model={theirs['model']} "
            f"model_options={theirs['model_options']}, this run builds model={mine['model']} "
            f"model_options={mine['model_options']}. --init-from loads weights only, so the "
            "architecture must be the same: use the source's --model/--model-option values."
        )


def resolve_init(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``init_from_id`` filled in from its source (and the architecture checked).

    A config without ``init_from`` is returned as is; one whose ``init_from_id`` is already set
    is checked against the source as it is now.
    """
    if cfg.init_from is None:
        return cfg
    _, src_cfg, identity = _read(cfg.init_from)
    _check_architecture(cfg, src_cfg, cfg.init_from)
    if cfg.init_from_id is not None and cfg.init_from_id != identity:
        raise SamkitError(
            f"--init-from {cfg.init_from}: the source is not the one this run was planned from "
            f"(weights {identity} != {cfg.init_from_id}); it was retrained or replaced. Nothing "
            "was changed; use a new --out for a run from the new source."
        )
    return cfg.replace(init_from_id=identity)


def load_init_weights(cfg: TrainConfig, model: nn.Module) -> None:
    """Load the source's weights into ``model`` (strictly: every name and shape must match)."""
    if cfg.init_from is None:
        raise SamkitError(
            f"the run was planned from weights {cfg.init_from_id} but names no --init-from "
            "source to load them from."
        )
    state, src_cfg, identity = _read(cfg.init_from)
    _check_architecture(cfg, src_cfg, cfg.init_from)
    if cfg.init_from_id is not None and identity != cfg.init_from_id:
        raise SamkitError(
            f"--init-from {cfg.init_from}: the source's weights changed since this run was "
            f"configured ({identity} != {cfg.init_from_id}); nothing was trained."
        )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise SamkitError(
            f"--init-from {cfg.init_from}: its weights do not fit this run's model ({err}). "
            "--init-from loads weights only: the model, its options and the number of classes "
            "must be those of the source."
        ) from err
