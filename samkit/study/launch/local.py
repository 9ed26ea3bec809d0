"""The local launcher: a study's runs as processes of this machine (``--jobs N``), or in this
process one after another (``--jobs 1``)."""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from samkit.errors import SamkitError
from samkit.study.flatness import FlatnessSettings
from samkit.study.train_runs import Launched, run_one
from samkit.train import RunInterrupted, TrainConfig, signals


@dataclass(frozen=True)
class LocalLauncher:
    """Run a study's runs here: ``jobs`` processes (``spawn``), each with ``cores // jobs`` torch
    threads, or, with ``jobs=1``, in this process one after another.

    In processes, every run is attempted even if one fails (finished runs stay on disk); the
    failures are then reported together. A stop signal (Ctrl-C, SIGTERM, SIGUSR1) is passed on to
    the running runs, which checkpoint; no other run starts.
    """

    jobs: int = 1
    name = "local"

    def __post_init__(self) -> None:
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise SamkitError(f"--jobs must be >= 1, got {self.jobs}.")

    def run(
        self,
        plan: list[tuple[TrainConfig, Path]],
        *,
        folder: Path,
        quiet: bool,
        flatness: FlatnessSettings | None,
    ) -> Launched:
        """Train every ``(config, run folder)`` of ``plan`` (reused or resumed as found)."""
        if self.jobs == 1 or len(plan) == 1:
            for i, (cfg, run) in enumerate(plan, 1):
                if not quiet:
                    print(f"[{i}/{len(plan)}] {run.name}", flush=True)
                run_one(cfg, run, quiet=quiet, flatness=flatness)
        else:
            self._in_processes(plan, quiet=quiet, flatness=flatness)
        return Launched(done=True, record={"jobs": self.jobs})

    def _in_processes(
        self, plan: list[tuple[TrainConfig, Path]], *, quiet: bool, flatness: FlatnessSettings | None
    ) -> None:
        # Each process gets its share of the cores; "spawn" avoids forking a threaded torch.
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        ctx = multiprocessing.get_context("spawn")
        fs = None if flatness is None else asdict(flatness)
        stop = signals.Forwarding()
        with ProcessPoolExecutor(
            self.jobs, mp_context=ctx, initializer=_worker_init, initargs=(threads,)
        ) as ex, stop:
            futures = [ex.submit(_run_from_dict, c.to_dict(), str(f), fs) for c, f in plan]
            errors = []
            for (_, run), fut in zip(plan, futures, strict=True):
                try:
                    fut.result()
                    if not quiet:
                        print(f"done: {run.name}", flush=True)
                except RunInterrupted:  # the workers got the signal too (Ctrl-C, or passed on)
                    stop.requested = stop.requested or signal.SIGINT
                except Exception as err:  # keep going: the other runs' results must not be lost
                    errors.append(f"{run.name}: {err}")
                if stop.requested is not None:  # the running runs checkpoint; start no other
                    for pending in futures:
                        pending.cancel()
                    break
        if stop.requested is not None:
            raise RunInterrupted(
                f"interrupted by {signals.name(stop.requested)}: the running runs saved a "
                "checkpoint, the finished ones are kept", stop.requested,
            )  # fmt: skip
        if errors:
            raise SamkitError("some runs failed (the others are saved):\n  " + "\n  ".join(errors))


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)
    # A process group of its own: a terminal's Ctrl-C reaches the study's process only, which passes
    # it on once (signals.Forwarding); twice would stop a run at once, without its checkpoint.
    os.setpgrp()


def _run_from_dict(cfg: dict[str, Any], folder: str, flatness: dict[str, Any] | None) -> dict[str, Any]:
    fs = None if flatness is None else FlatnessSettings(**flatness)
    return run_one(TrainConfig.from_dict(cfg), Path(folder), quiet=True, flatness=fs)
