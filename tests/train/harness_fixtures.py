"""Fixtures shared by the harness tests (train, study, cli).

Runs use the real registries (MNIST-1D, a small MLP) on a few hundred examples and a handful of
steps. While a registry has not landed yet, a tiny stand-in with the same interface is patched in
for the test session only (never product code).
"""

from __future__ import annotations

import pytest
import torch

import samkit.data
import samkit.models
from samkit.train import TrainConfig


def _stub_load_dataset(name, *, root=None, download=False, label_noise=0.0, seed=0, **options):
    from samkit.data._core import Dataset, Split
    from samkit.errors import SamkitError

    if name != "mnist1d":
        raise SamkitError(f"unknown dataset {name!r}")
    g = torch.Generator().manual_seed(123)
    centers = torch.randn(10, 40, generator=g) * 2

    def split(n):
        y = torch.randint(0, 10, (n,), generator=g)
        return Split(centers[y] + torch.randn(n, 40, generator=g), y)

    return Dataset("mnist1d", 10, (40,), split(600), split(200), None, {})


class _StubMLP(torch.nn.Sequential):
    def __init__(self, num_classes, input_shape, width=32):
        super().__init__(
            torch.nn.Flatten(),
            torch.nn.Linear(int(torch.tensor(input_shape).prod()), width),
            torch.nn.ReLU(),
            torch.nn.Linear(width, num_classes),
        )


def _stub_build_model(name, *, num_classes, input_shape, **kwargs):
    return _StubMLP(num_classes, input_shape, **kwargs)


@pytest.fixture
def harness(monkeypatch, tmp_path_factory):
    """Cache generated data in one session folder; stand in for registries not yet landed."""
    cache = tmp_path_factory.getbasetemp() / "samkit-cache"
    monkeypatch.setenv("SAMKIT_CACHE", str(cache))
    if not hasattr(samkit.data, "load_dataset"):
        monkeypatch.setattr(samkit.data, "load_dataset", _stub_load_dataset, raising=False)
    if not hasattr(samkit.models, "build_model"):
        monkeypatch.setattr(samkit.models, "build_model", _stub_build_model, raising=False)
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
