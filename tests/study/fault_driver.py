"""Run ``samkit`` and SIGKILL itself in the middle of a chosen write (fault-injection tests).

    python fault_driver.py NAME N -- <samkit arguments>

kills the process (and nothing else: SIGKILL, no clean-up runs) during the ``N``-th atomic write
of a file called ``NAME`` (``*``: any file), after half of that write's bytes reached the
temporary file; ``none`` for NAME runs ``samkit`` untouched. The temporary file is left behind
half-written, as a real crash leaves it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path


def _arm(name: str, nth: int) -> None:
    from samkit import _atomic

    real, seen = _atomic.replacing, [0]

    class _Dying:
        def __init__(self, handle):
            self.handle, self.calls = handle, 0

        def write(self, data):
            self.calls += 1
            if self.calls >= 2 or len(data) > 64:  # torch.save writes in many calls: not the first
                self.handle.write(bytes(data)[: max(1, len(data) // 2)])
                self.handle.flush()
                os.fsync(self.handle.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            return self.handle.write(data)

        def __getattr__(self, attr):
            return getattr(self.handle, attr)

    @contextlib.contextmanager
    def replacing(path):
        with real(path) as handle:
            if name in ("*", Path(path).name):
                seen[0] += 1
                if seen[0] == nth:
                    yield _Dying(handle)
                    return
            yield handle

    _atomic.replacing = replacing


def main() -> int:
    name, nth, sep, *args = sys.argv[1:]
    assert sep == "--"
    if name != "none":
        _arm(name, int(nth))
    from samkit.cli import main as samkit

    return samkit(args)


if __name__ == "__main__":
    sys.exit(main())
