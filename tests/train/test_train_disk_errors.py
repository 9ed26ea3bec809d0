"""A file system that refuses a write (full, read-only, permission denied): one ``error:`` line
that names the file and what to do; the last checkpoint is intact and ``--resume`` gives the
uninterrupted result. A TensorBoard writer that fails warns once; the run goes on without it."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path

import pytest
import torch
from harness_fixtures import TINY_FLAGS

from samkit import _atomic, cli
from samkit.train.run_files import load_checkpoint

TIMES = ("train_time", "wall_time", "load", "load_max")
FLAGS = [*TINY_FLAGS, "--epochs", "3", "--optimizer", "sam"]


class _FullHandle:
    """A file handle on a disk that fills up after ``room`` bytes (as the OS reports it)."""

    def __init__(self, handle, room: int, code: int):
        self.handle, self.room, self.code = handle, room, code

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(self.code, os.strerror(self.code))
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)


def _fail_writes(monkeypatch, name: str, nth: int, code: int) -> None:
    """The ``nth`` atomic write of a file called ``name`` (and every later one) fails with ``code``."""
    real, seen = _atomic.replacing, []

    @contextlib.contextmanager
    def replacing(path):
        with real(path) as handle:
            if Path(path).name == name:
                seen.append(path)
            yield _FullHandle(handle, 100, code) if len(seen) >= nth else handle

    monkeypatch.setattr(_atomic, "replacing", replacing)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("samkit: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_full_disk_while_checkpointing_is_one_error_line_and_resume_loses_nothing(
    harness, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    _fail_writes(monkeypatch, "checkpoint.pt", nth=2, code=errno.ENOSPC)  # epoch 2's checkpoint
    assert cli.main(["train", *FLAGS, "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert str(out / "checkpoint.pt") in line and "no space left" in line.lower()
    assert "free" in line and f"--resume {out}" in line and "(end of epoch 1) is intact" in line
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1  # the last checkpoint is intact
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert cli.main(["train", "--resume", str(out)]) == 0
    ref = tmp_path / "ref"
    assert cli.main(["train", *FLAGS, "--out", str(ref)]) == 0
    a, b = (json.loads((d / "summary.json").read_text()) for d in (out, ref))
    assert {k: v for k, v in a.items() if k not in TIMES} == {k: v for k, v in b.items() if k not in TIMES}
    wa, wb = (load_checkpoint(d / "checkpoint.pt")["model"] for d in (out, ref))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize(
    ("code", "says"),
    [(errno.EROFS, "read-only"), (errno.EACCES, "permission"), (errno.EDQUOT, "quota")],
)
def test_a_refused_metrics_write_names_the_file_and_the_remedy(
    harness, tmp_path, capsys, monkeypatch, code, says
):
    out = tmp_path / "run"
    _fail_writes(monkeypatch, "metrics.jsonl", nth=2, code=code)
    assert cli.main(["train", *FLAGS, "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert str(out / "metrics.jsonl") in line and says in line.lower() and f"--resume {out}" in line
    # the checkpoint is written before metrics.jsonl: epoch 2's is there, and the resume rewrites
    # the metrics from it
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2 and "(end of epoch 2) is intact" in line
    monkeypatch.undo()
    assert cli.main(["train", "--resume", str(out)]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_a_run_folder_that_cannot_be_written_at_all_is_refused_before_training(
    harness, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    _fail_writes(monkeypatch, "config.yaml", nth=1, code=errno.EACCES)
    assert cli.main(["train", *FLAGS, "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert str(out / "config.yaml") in line and "permission" in line.lower()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_read_only_run_folder_is_one_error_line(harness, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *FLAGS, "--epochs", "1", "--out", str(out)]) == 0
    out.chmod(0o555)
    try:
        assert cli.main(["train", "--resume", str(out), "--epochs", "2"]) == 2
        assert "permission" in _one_error_line(capsys).lower()
    finally:
        out.chmod(0o755)


def test_a_failing_tensorboard_writer_warns_once_and_the_run_completes(
    harness, tmp_path, capsys, monkeypatch
):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    def broken(self, *args, **kwargs):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "tensorboard/events")

    monkeypatch.setattr(SummaryWriter, "add_scalar", broken)
    out = tmp_path / "run"
    assert cli.main(["train", *FLAGS, "--log-every-steps", "1", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "TensorBoard" in warned[0] and "continues" in warned[0], err
    assert json.loads((out / "summary.json").read_text())["epochs"] == 3
