"""Stopping a run cleanly: Ctrl-C, and the signals schedulers send before they kill.

``SIGINT`` (Ctrl-C), ``SIGTERM`` (what SLURM, Kubernetes and most schedulers send first) and
``SIGUSR1`` (what SLURM's ``--signal`` sends, minutes early) are all deferred to the end of the
current step; the loop then writes a mid-epoch checkpoint (including the epoch's permutation) and
raises :class:`RunInterrupted`, and ``samkit train --resume`` continues bit-identically (same
machine, same torch, same thread count). A second signal stops at once; the last checkpoint is
then the resume point. The command exits with ``128 + the signal's number``, the shell's
convention: 130 (SIGINT), 143 (SIGTERM), 138 (SIGUSR1 on Linux).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name)
)


class RunInterrupted(Exception):
    """Training stopped early (a signal) after saving a checkpoint; the message says how to resume.

    ``signum`` is the signal that stopped it (SIGINT by default); a ``RunInterrupted`` raised
    while another is handled (a study adding how to finish the study) keeps that one's signal.
    ``exit_status`` is what the command line exits with: ``128 + signum``.
    """

    def __init__(self, message: str, signum: int | None = None):
        super().__init__(message)
        if signum is None:
            current = sys.exc_info()[1]
            signum = getattr(current, "signum", signal.SIGINT)
        self.signum = int(signum)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def name(signum: int) -> str:
    """``SIGTERM`` for 15, and so on."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Interrupts:
    """Within the block, the stop signals set :attr:`requested` (the first one's number) instead
    of stopping the process; a second one raises ``KeyboardInterrupt`` at once. Handlers are only
    installed in the main thread (Python delivers signals there); the previous ones come back."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested = signum


class Forwarding(Interrupts):
    """For a process whose work runs in ``multiprocessing`` children (a study's ``--jobs``): the
    stop signals are passed on to every live child, which stops its run like a signal of its own
    (step, checkpoint, :class:`RunInterrupted`), and :attr:`requested` is set for the parent to
    start no more work. A scheduler may signal only the process it started; without this the
    children would go on training after their parent died. Handlers only in the main thread."""

    def _handle(self, signum: int, frame: Any) -> None:
        import multiprocessing
        import os

        self.requested = self.requested or signum
        for child in multiprocessing.active_children():
            if child.pid is not None:
                try:
                    os.kill(child.pid, signum)
                except ProcessLookupError:  # it has just ended
                    pass
