"""A run folder and the MNIST-1D cache are readable by whoever the umask lets read them."""

from __future__ import annotations

import os
import stat

import pytest
from harness_fixtures import tiny_config

from samkit.train import train

RUN_FILES = ("config.yaml", "env.json", "metrics.jsonl", "summary.json", "checkpoint.pt")


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask022", "umask002"])
def test_run_files_and_data_cache_follow_the_umask(tmp_path, monkeypatch, umask):
    monkeypatch.setenv("SAMKIT_CACHE", str(tmp_path / "cache"))
    old = os.umask(umask)
    try:
        train(tiny_config(epochs=1, max_steps_per_epoch=2), tmp_path / "run", quiet=True)
    finally:
        os.umask(old)
    expected = 0o666 & ~umask  # 0644 for a private umask, 0664 for a group-shared one
    written = [tmp_path / "run" / name for name in RUN_FILES]
    written += list((tmp_path / "cache" / "mnist1d").glob("*.npz"))
    assert len(written) == len(RUN_FILES) + 1
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == expected, path.name
