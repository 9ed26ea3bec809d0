"""Fixtures shared by the harness tests (train, study, cli).

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
