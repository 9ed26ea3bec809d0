"""``--execution`` picks how mSAM's shards run; the run's results do not depend on it."""

from __future__ import annotations

import pytest

from samkit.train import TrainConfig, config_hash, train


def test_vectorized_and_loop_runs_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMKIT_CACHE", str(tmp_path / "cache"))
    base = dict(dataset="mnist1d", train_subset=128, test_subset=64, model="cnn1d", batch_size=32,
                optimizer="msam", shards=4, epochs=1, seed=1)
    runs = {ex: train(TrainConfig(**base, execution=ex), tmp_path / ex, quiet=True)
            for ex in ("loop", "vectorized")}
    for key in ("train_loss", "test_loss", "test_acc"):
        assert runs["vectorized"][key] == pytest.approx(runs["loop"][key], abs=1e-5), key
    # how the shards run is not part of what the run computes: same config hash
    assert config_hash(TrainConfig(**base, execution="loop")) == config_hash(TrainConfig(**base))
