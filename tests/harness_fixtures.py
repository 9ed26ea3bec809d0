"""Fixtures shared by the harness tests (train, study, cli); the root conftest registers ``harness``.

Runs use the real registries (MNIST-1D, a small MLP) on a few hundred examples and a handful of
steps.
"""

from __future__ import annotations

import pytest

from samkit.train import TrainConfig


@pytest.fixture
def harness(monkeypatch, tmp_path_factory):
    """Cache generated data in one session folder (shared by the tests of a worker)."""
    cache = tmp_path_factory.getbasetemp() / "samkit-cache"
    monkeypatch.setenv("SAMKIT_CACHE", str(cache))
    return cache


def tiny_config(**changes) -> TrainConfig:
    """A run of a few steps on a few hundred MNIST-1D examples with a small MLP."""
    base = dict(
        dataset="mnist1d",
        model="mlp",
        optimizer="sgd",
        lr=0.05,
        batch_size=32,
        epochs=2,
        max_steps_per_epoch=4,
        train_subset=256,
        test_subset=128,
        eval_batch_size=128,
        seed=0,
    )
    base.update(changes)
    return TrainConfig(**base).validated()


# The flags of tiny_config() for `samkit train` (epochs left to the caller).
TINY_FLAGS = [
    "--dataset", "mnist1d", "--model", "mlp", "--optimizer", "sgd", "--lr", "0.05",
    "--batch-size", "32", "--max-steps-per-epoch", "4", "--train-subset", "256",
    "--test-subset", "128", "--eval-batch-size", "128", "--seed", "0", "--quiet",
]  # fmt: skip


class TrainingProcess:
    """``samkit train`` in a child process (one torch thread), for tests of what another live
    process sees: started, then waited for until its run folder holds a checkpoint."""

    def __init__(self, args: list[str], cache, folder=None):
        import os
        import subprocess
        import sys

        env = {**os.environ, "OMP_NUM_THREADS": "1", "SAMKIT_CACHE": str(cache)}
        self.folder = folder
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "samkit", *args], env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for(self, name: str = "checkpoint.pt", timeout: float = 120.0) -> None:
        """Wait until ``folder/name`` exists (the child got that far), or fail with its stderr."""
        import time

        deadline = time.monotonic() + timeout
        while not (self.folder / name).exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"child exited {self.proc.returncode}: {self.proc.stderr.read()}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"child did not write {name} in {timeout:.0f} s")
            time.sleep(0.05)

    def finish(self, timeout: float = 120.0) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()
