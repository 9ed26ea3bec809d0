"""One writer per run folder: a run another live process trains is refused, naming that process.

The lock is the operating system's (``flock``), held by the process that trains: it vanishes
when that process dies, however it dies (kill -9 included), so no stale lock ever needs removing.
"""

from __future__ import annotations

import json

import pytest
from harness_fixtures import TINY_FLAGS, TrainingProcess, tiny_config

from samkit import cli
from samkit.errors import SamkitError
from samkit.train import load_config, load_run, train


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("samkit: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err  # one line, no traceback
    return lines[0]


def test_a_second_writer_is_refused_while_a_run_trains_and_the_run_survives(harness, tmp_path, capsys):
    run = tmp_path / "r"
    child = TrainingProcess(["train", *TINY_FLAGS, "--epochs", "100000", "--out", str(run)],
                            harness, run)  # fmt: skip
    try:
        child.wait_for("checkpoint.pt")
        busy = f"process {child.pid}"
        # the case: --overwrite of a training run reported success and lost the run
        assert cli.main(["train", *TINY_FLAGS, "--epochs", "2", "--out", str(run), "--overwrite"]) == 2
        line = _error_line(capsys)
        assert busy in line and str(run) in line and "wait for it" in line.lower()
        assert cli.main(["train", "--resume", str(run)]) == 2
        assert busy in _error_line(capsys)
        measure = ["sharpness", "--run", str(run), "--allow-incomplete", "--quiet",
                   "--num-examples", "32", "--steps", "1"]  # fmt: skip
        assert cli.main(measure) == 2 and busy in _error_line(capsys)
        other = tmp_path / "ft"
        init = ["train", *TINY_FLAGS, "--epochs", "1", "--out", str(other),
                "--init-from", str(run / "checkpoint.pt")]  # fmt: skip
        assert cli.main(init) == 2 and busy in _error_line(capsys)
        assert not other.exists()
        assert child.proc.poll() is None  # the first run still trains ...
        assert load_config(run / "config.yaml").epochs == 100000  # ... in its own folder
        with pytest.raises(SamkitError, match=busy):
            load_run(run, allow_incomplete=True)
    finally:
        child.kill()  # SIGKILL: no chance to clean up
    # the lock died with the process: the folder is free at once
    assert cli.main(["train", *TINY_FLAGS, "--epochs", "1", "--out", str(run), "--overwrite"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 1 and load_config(run / "config.yaml").epochs == 1


def test_a_finished_run_leaves_no_lock_and_a_failed_one_frees_its_folder(harness, tmp_path):
    run = tmp_path / "r"
    train(tiny_config(epochs=1), run, quiet=True)
    assert {p.name for p in run.iterdir()} - {"tensorboard"} == {
        "checkpoint.pt", "config.yaml", "env.json", "metrics.jsonl", "summary.json"}  # fmt: skip
    with pytest.raises(SamkitError, match="unknown dataset"):
        train(tiny_config(dataset="no-such-set"), tmp_path / "bad", quiet=True)
    train(tiny_config(epochs=1), tmp_path / "bad", quiet=True, overwrite=True)  # not held


def test_what_a_killed_writer_leaves_does_not_block_the_next_run(harness, tmp_path):
    """A process killed while writing the first file of a run leaves its lock file (held by no
    one) and half a temporary: a new run there is not refused as 'not empty', and cleans up."""
    run = tmp_path / "r"
    run.mkdir()
    (run / ".samkit-lock").write_text('{"pid": 999999999, "host": "x", "command": ["samkit"]}\n')
    (run / ".config.yaml.0badcafe.tmp").write_text("optimizer: s")
    summary = train(tiny_config(epochs=1), run, quiet=True)
    assert summary["status"] == "complete"
    assert not [p for p in run.iterdir() if p.name.startswith(".")]
    other = tmp_path / "o"
    other.mkdir()
    (other / ".notes.txt.0badcafe.tmp").write_text("a file that is not a run's")  # not ours: kept
    with pytest.raises(SamkitError, match="already exists and is not empty"):
        train(tiny_config(epochs=1), other, quiet=True)
    assert (other / ".notes.txt.0badcafe.tmp").exists()
