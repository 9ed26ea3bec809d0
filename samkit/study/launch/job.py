"""What one submitted job runs: one run of a study, stopped cleanly and requeued when the scheduler
says time is up.

submitit starts the job, unpickles :class:`RunJob` and calls it. The run is
:func:`samkit.study.train_runs.run_one`, exactly as a local study runs it (the run folder's lock held
throughout; a finished run reused, an interrupted one resumed from its checkpoint).

Signals. submitit asks SLURM for its preemption signal (``SIGUSR2`` unless
``SUBMITIT_PREEMPT_SIGNAL`` says otherwise) ``signal_delay_s`` before the time limit and on
preemption, and handles it by calling the job's ``checkpoint`` and requeueing the job. Here that
signal first goes to samkit's own stop (the one SIGTERM/SIGUSR1 get: the step ends, a mid-epoch
checkpoint is written); then submitit's handler requeues the job, which resumes the run from that
checkpoint. Outside training (loading, waiting for the run's lock, measuring flatness) there is
nothing to save, so submitit's handler requeues at once. SIGTERM and SIGUSR1 keep samkit's
meaning: checkpoint and stop (``scancel``; SLURM itself requeues a job it preempts with
``--requeue``).

Nothing here imports submitit at module level: only a job (where submitit runs it) and the SLURM
launcher touch this file.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from samkit.study.flatness import FlatnessSettings
from samkit.study.train_runs import run_one
from samkit.train import RunInterrupted, TrainConfig, signals


class RunJob:
    """``RunJob()(config, run_folder, flatness)``: train (reuse, resume) one run in a job; its
    ``checkpoint`` is what submitit resubmits on requeue (the same call: the run folder holds the
    progress)."""

    def __call__(self, cfg: dict[str, Any], folder: str, flatness: dict[str, Any] | None) -> dict[str, Any]:
        import submitit
        import torch

        # The run's threads for the whole job (training and flatness, as in a local study's
        # process); by default the CPUs SLURM gave the job, not all of the node's.
        torch.set_num_threads(cfg.get("threads") or max(1, len(os.sched_getaffinity(0))))
        preempt = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
        requeue = signal.getsignal(preempt)  # submitit's: checkpoint() and requeue the job
        asked: list[int] = []

        def on_preempt(signum: int, frame: Any) -> None:
            asked.append(signum)
            stop = signal.getsignal(signal.SIGTERM)
            if callable(stop) and isinstance(getattr(stop, "__self__", None), signals.Interrupts):
                stop(signum, frame)  # training: end the step, checkpoint, RunInterrupted
            elif callable(requeue):
                requeue(signum, frame)  # nothing to save: requeue now

        previous = signal.signal(preempt, on_preempt)
        try:
            fs = None if flatness is None else FlatnessSettings(**flatness)
            return run_one(TrainConfig.from_dict(cfg), Path(folder), quiet=True, flatness=fs)
        except RunInterrupted as err:
            print(f"samkit: {Path(folder).name}: {err}", file=sys.stderr, flush=True)
            if asked and callable(requeue):
                print("samkit: the job is requeued; it resumes the run from this checkpoint",
                      file=sys.stderr, flush=True)  # fmt: skip
                requeue(asked[0], None)  # raises: the job exits to be requeued
            raise
        finally:
            signal.signal(preempt, previous)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """What submitit requeues: this same call (the run resumes from its own checkpoint)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
