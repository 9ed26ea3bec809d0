"""The files of a run folder, each written atomically by :mod:`samkit._atomic`.

``config.yaml`` (the :class:`~samkit.train.config.TrainConfig`), ``env.json`` (where and how it
ran), ``metrics.jsonl`` (one line per epoch), ``summary.json`` (written once, when the run is
complete) and ``checkpoint.pt`` (everything needed to continue bit-exactly). See
``docs/harness.md`` for every key.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
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


def write_json(path: Path, payload: Any) -> None:
    """Atomically write ``payload`` as indented JSON (numpy/torch scalars and paths allowed)."""
    _atomic.write_json(path, payload, default=_jsonable)


def read_json(path: Path) -> Any:
    """Read a JSON file, with a clear error when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise SamkitError(f"{path} is not valid JSON ({err}); the file was left as is.") from err


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` whole (it is small) so it always matches the checkpoint."""
    _atomic.write_text(path, "".join(json.dumps(r, default=_jsonable) + "\n" for r in rows))


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line (``steps.jsonl``: too long to rewrite whole at every row)."""
    with open(path, "a") as fh:
        fh.write(json.dumps(row, default=_jsonable) + "\n")


def keep_rows_until(path: Path, step: int) -> None:
    """Drop the rows of a resumed run's ``steps.jsonl`` written after its checkpoint (``step``)."""
    rows = read_metrics(path)
    if any(r.get("step", 0) > step for r in rows):
        write_metrics(path, [r for r in rows if r.get("step", 0) <= step])


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (empty if the file does not exist)."""
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically ``torch.save`` the run's state (with the checkpoint format) to ``path``."""
    _atomic.save_torch(path, {"format": CHECKPOINT_FORMAT, **state})


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint; a truncated or foreign file is a :class:`SamkitError` (file untouched)."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise SamkitError(
            f"checkpoint {path} could not be read ({type(err).__name__}: {err}). The run folder "
            "was left untouched; restore the file, or start the run again in a new --out folder "
            "(or with --overwrite to replace this one)."
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise SamkitError(
            f"checkpoint {path} is not a samkit training checkpoint (format "
            f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r}, "
            f"expected {CHECKPOINT_FORMAT}); the run folder was left untouched."
        )
    return state


def environment(device: torch.device, command: list[str] | None) -> dict[str, Any]:
    """Versions, hardware and command line, for ``env.json``."""
    env: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": list(sys.argv if command is None else command),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "samkit": _samkit_version(),
        "platform": platform.platform(),
        "device": str(device),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "git_commit": _git_commit(),
    }
    return env


def _samkit_version() -> str:
    import samkit

    return samkit.__version__


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    # The commit of the samkit checkout (if it is one), so a result names the code that made it.
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
