"""What a study asks of SLURM: partition, time, GPUs, CPUs and memory per run, account, extra
``#SBATCH`` lines, setup lines, array parallelism — from ``--slurm-*`` flags or a YAML block.

Checked here, before anything is written or submitted, so a bad value is one ``error:`` line;
turned into submitit's parameters by :meth:`SlurmOptions.parameters` (submitit itself is not
imported here). A YAML file holds the block under ``slurm:`` (or at its top level); keys are the
flag names without ``--slurm-`` (``array_parallelism`` or ``array-parallelism``); flags override it::

    slurm:
      partition: gpu
      time: "4:00:00"          # per job; a longer run is checkpointed and requeued
      gpus: 1
      cpus: 8
      mem: 32G
      account: my-lab
      sbatch: {constraint: a100, qos: high}
      setup: ["module load cuda/12.4", "source ~/samkit/.venv/bin/activate"]
      array_parallelism: 16
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from samkit._checks import check_choice, check_positive_int
from samkit.errors import SamkitError

EXECUTORS = ("slurm", "local")  # local: submitit's local executor (jobs as processes here)
# #SBATCH keys samkit sets itself (submitit's logs, the array, the requeue signal) or that have an
# option of their own: an --slurm-sbatch of them is refused, with the option to use.
_MANAGED = {
    "array": None, "output": None, "error": None, "signal": None, "open-mode": None,
    "partition": "partition", "time": "time", "mem": "mem", "account": "account",
    "cpus-per-task": "cpus", "gpus-per-node": "gpus", "nodes": None, "ntasks-per-node": None,
}  # fmt: skip
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEM = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$", re.IGNORECASE)
_KEY = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class SlurmOptions:
    """The SLURM side of a study: one job per run (an array job for a study).

    ``time``: a job's limit in SLURM's format (``90`` minutes, ``4:00:00``, ``1-12:00:00``); a run
    that needs longer is checkpointed ``signal_delay_s`` seconds before it and requeued (at most
    ``max_requeues`` times). ``mem``: SLURM's ``--mem`` (``32G``; a bare number is megabytes).
    ``sbatch``: extra ``#SBATCH --key=value`` lines (a value of ``None``: ``#SBATCH --key``).
    ``setup``: shell lines each job runs first (``module load``, activating samkit's venv).
    ``folder``: submitit's job folder (pickles and logs; default ``<study>/.submitit``).
    ``executor``: ``slurm``, or ``local`` for submitit's local executor (jobs as processes of
    this machine: a dry run of the submission without a cluster). ``wait``: wait for the runs (a
    progress bar of finished runs) and write the report, or return once they are submitted.
    """

    partition: str | None = None
    time: str = "2:00:00"
    gpus: int = 0
    cpus: int | None = None
    mem: str | None = None
    account: str | None = None
    sbatch: dict[str, str | None] = field(default_factory=dict)
    setup: tuple[str, ...] = ()
    array_parallelism: int | None = None
    folder: str | None = None
    executor: str = "slurm"
    max_requeues: int = 3
    signal_delay_s: int = 120
    wait: bool = True
    poll_s: float | None = None  # seconds between looks at the jobs (default 30; local: 0.5)

    def __post_init__(self) -> None:
        check_choice("--slurm-executor", self.executor, EXECUTORS)
        for name in ("partition", "account", "folder"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise SamkitError(f"--slurm-{name} must be a non-empty name, got {value!r}.")
        minutes = self.minutes  # checks the format
        check_positive_int("--slurm-gpus", self.gpus, minimum=0)
        check_positive_int("--slurm-cpus", self.cpus, allow_none=True)
        check_positive_int("--slurm-array-parallelism", self.array_parallelism, allow_none=True)
        check_positive_int("--slurm-max-requeues", self.max_requeues, minimum=0)
        check_positive_int("--slurm-signal-delay-s", self.signal_delay_s)
        if self.signal_delay_s >= 60 * minutes:
            raise SamkitError(
                f"--slurm-signal-delay-s {self.signal_delay_s} is not shorter than --slurm-time "
                f"{self.time} ({minutes} min): the job would be signalled before it starts."
            )
        if self.mem is not None:
            self.mem_gb  # noqa: B018  (checks the format)
        if self.poll_s is not None and (
            isinstance(self.poll_s, bool) or not isinstance(self.poll_s, (int, float))
            or not self.poll_s > 0
        ):  # fmt: skip
            raise SamkitError(f"poll_s must be a number > 0, got {self.poll_s!r}.")
        if not isinstance(self.sbatch, dict):
            raise SamkitError(f"--slurm-sbatch must be KEY=VALUE lines, got {self.sbatch!r}.")
        for key in self.sbatch:
            if not isinstance(key, str) or not _KEY.match(key):
                raise SamkitError(
                    f"--slurm-sbatch {key!r}: an sbatch option is lower-case letters, digits and "
                    "dashes (e.g. constraint=a100, qos=high)."
                )
            if key in _MANAGED:
                own = _MANAGED[key]
                use = f"use --slurm-{own}" if own else "samkit sets it (one task per run)"
                raise SamkitError(f"--slurm-sbatch {key}: {use}.")
        if isinstance(self.setup, str) or not all(isinstance(s, str) for s in self.setup):
            raise SamkitError(f"--slurm-setup must be shell lines, got {self.setup!r}.")

    @property
    def minutes(self) -> int:
        """``time`` in whole minutes (rounded up)."""
        m = _TIME.match(str(self.time).strip()) if isinstance(self.time, (str, int)) else None
        if m is None or isinstance(self.time, bool):
            raise SamkitError(
                f"--slurm-time must be SLURM's MINUTES, MM:SS, HH:MM:SS or D-HH[:MM[:SS]], got "
                f"{self.time!r}."
            )
        days, a, b, c = m.groups()
        parts = [int(x) for x in (a, b, c) if x is not None]
        if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
            parts += [0] * (3 - len(parts))
            seconds = int(days) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
        elif len(parts) == 1:  # MM
            seconds = parts[0] * 60
        elif len(parts) == 2:  # MM:SS
            seconds = parts[0] * 60 + parts[1]
        else:  # HH:MM:SS
            seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
        if seconds <= 0:
            raise SamkitError(f"--slurm-time must be longer than 0, got {self.time!r}.")
        return math.ceil(seconds / 60)

    @property
    def mem_gb(self) -> float | None:
        """``mem`` in GB (SLURM's units: K, M, G, T; none is M)."""
        if self.mem is None:
            return None
        m = _MEM.match(str(self.mem).strip())
        if m is None or isinstance(self.mem, bool) or float(m.group(1)) <= 0:
            raise SamkitError(f"--slurm-mem must be a size such as 32G or 500M, got {self.mem!r}.")
        scale = {"k": 1 / 1024**2, "m": 1 / 1024, "": 1 / 1024, "g": 1.0, "t": 1024.0}
        return float(m.group(1)) * scale[m.group(2).lower()]

    def parameters(self, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """submitit's ``AutoExecutor(**first)`` and ``update_parameters(**second)`` for jobs
        named ``name``: one task on one node per run."""
        executor = {f"{self.executor}_max_num_timeout": self.max_requeues}
        params: dict[str, Any] = {
            "name": name,
            "timeout_min": self.minutes,
            "nodes": 1,
            "tasks_per_node": 1,
            "gpus_per_node": self.gpus,
            "cpus_per_task": self.cpus,
            "mem_gb": self.mem_gb,
        }
        if self.setup:
            params[f"{self.executor}_setup"] = list(self.setup)
        if self.executor == "slurm":
            sbatch = {k: True if v is None else v for k, v in self.sbatch.items()}
            params.update(
                slurm_partition=self.partition,
                slurm_account=self.account,
                slurm_signal_delay_s=self.signal_delay_s,
                slurm_array_parallelism=self.array_parallelism,
                slurm_additional_parameters=sbatch or None,
            )
        return executor, {k: v for k, v in params.items() if v is not None}

    @classmethod
    def read(cls, path: str | Path | None = None, **flags: Any) -> SlurmOptions:
        """The options of the YAML block in ``path`` (if given) with ``flags`` (those not ``None``)
        on top."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        if path is not None:
            values = _read_block(Path(path), known)
        unknown = sorted(set(flags) - known)
        if unknown:
            raise SamkitError(f"unknown SLURM option(s): {', '.join(unknown)}.")
        given = {k: v for k, v in flags.items() if v is not None}
        if isinstance(values.get("sbatch"), dict) and isinstance(given.get("sbatch"), dict):
            given["sbatch"] = {**values["sbatch"], **given["sbatch"]}  # the file's lines, and more
        values.update(given)
        if "setup" in values and isinstance(values["setup"], list):
            values["setup"] = tuple(values["setup"])
        if "time" in values and isinstance(values["time"], int):
            values["time"] = str(values["time"])
        return cls(**values)


def _read_block(path: Path, known: set[str]) -> dict[str, Any]:
    if not path.is_file():
        raise SamkitError(f"--slurm-config {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SamkitError(f"--slurm-config {path} is not valid YAML: {err}") from err
    if isinstance(data, dict) and "slurm" in data:
        data = data["slurm"] or {}
    if not isinstance(data, dict):
        raise SamkitError(f"--slurm-config {path}: expected a mapping of SLURM options (slurm: ...).")
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SamkitError(
            f"--slurm-config {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}."
        )
    if isinstance(values.get("sbatch"), dict):
        values["sbatch"] = {str(k).lstrip("-"): None if v is None else str(v)
                            for k, v in values["sbatch"].items()}  # fmt: skip
    return values


def parse_sbatch(items: list[str] | None) -> dict[str, str | None] | None:
    """``["constraint=a100", "--qos=high", "exclusive"]`` -> ``{"constraint": "a100", "qos":
    "high", "exclusive": None}`` (the ``--slurm-sbatch`` flags)."""
    if not items:
        return None
    out: dict[str, str | None] = {}
    for item in items:
        key, sep, value = item.strip().lstrip("-").partition("=")
        if not key:
            raise SamkitError(f"--slurm-sbatch expects KEY=VALUE (or KEY), got {item!r}.")
        out[key.strip()] = value.strip() if sep else None
    return out
