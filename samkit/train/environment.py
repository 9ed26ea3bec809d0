"""Where and how a run ran, for its ``env.json``: versions, hardware, the command, the commit."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def environment(device: torch.device, command: list[str] | None) -> dict[str, Any]:
    """Versions, hardware and command line, for ``env.json``."""
    cpu = _cpuinfo()
    env: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": list(sys.argv if command is None else command),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "samkit": _samkit_version(),
        "platform": platform.platform(),
        "device": str(device),
        "cpu": _cpu_name(cpu),
        # What makes two CPUs of one "model name" compute differently: the exact part, the vector
        # instructions torch's kernels use, and the math libraries it was built with.
        "cpu_id": _cpu_id(cpu),
        "cpu_capability": _cpu_capability(),
        "math_libraries": math_libraries(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "git_commit": _git_commit(),
    }
    return env


def _samkit_version() -> str:
    import samkit

    return samkit.__version__


def _cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (empty where there is none)."""
    found: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if not line.strip() and found:  # the first processor's block is enough
                break
            if sep:
                found.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return found


def _cpu_name(info: dict[str, str]) -> str:
    return info.get("model name") or platform.processor() or platform.machine()


def _cpu_id(info: dict[str, str]) -> dict[str, str] | None:
    """Vendor, family, model and stepping (None where /proc/cpuinfo has none): two CPUs sold under
    one name ("AMD EPYC") may be different generations with different kernels."""
    wanted = {"vendor_id": "vendor", "cpu family": "family", "model": "model", "stepping": "stepping"}
    return {short: info[key] for key, short in wanted.items() if key in info} or None


def _cpu_capability() -> str | None:
    """The vector instruction set torch dispatches its CPU kernels to (``AVX2``, ``AVX512``, ...)."""
    get = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return str(get()) if get is not None else None


def math_libraries(config: str | None = None) -> dict[str, str]:
    """The BLAS, MKL and oneDNN versions torch was built with, read from ``torch.__config__.show()``."""
    text = torch.__config__.show() if config is None else config
    found: dict[str, str] = {}
    patterns = {
        "blas": r"BLAS_INFO=([^,\s]+)",
        "mkl": r"Math Kernel Library Version ([0-9][^\s-]*)",
        "onednn": r"(?:MKL-DNN|oneDNN) v([0-9][^\s]*)",
        "openmp": r"OpenMP ([0-9]+)",
    }
    for name, pattern in patterns.items():
        match = re.search(pattern, text)
        if match:
            found[name] = match.group(1)
    return found


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
