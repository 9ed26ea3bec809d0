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


def test_a_half_written_last_row_of_steps_jsonl_is_dropped_on_resume(tmp_path):
    """A process killed while appending leaves half a line; the resume must not choke on it."""
    from samkit.errors import SamkitError
    from samkit.train.run_files import keep_rows_until, read_metrics

    path = tmp_path / "steps.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    keep_rows_until(path, 2)
    assert read_metrics(path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n{"step": 3, "loss": 1.0}\n')
    with pytest.raises(SamkitError, match="line 2 is not JSON; the file was left as is"):
        keep_rows_until(path, 3)  # damage inside the file is not a crash's: say so, change nothing
    assert path.read_text().count("\n") == 3
