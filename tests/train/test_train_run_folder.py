"""The run-folder lock (samkit.train.run_folder): exclusive for writers, shared for readers,
re-entrant within a process, waited for by studies, and gone with its process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from samkit.errors import SamkitError
from samkit.train import run_folder
from samkit.train.run_folder import LOCK, FolderBusy

HOLDER = """
import sys
from samkit.train import run_folder
ctx = run_folder.hold if sys.argv[2] == "write" else run_folder.reading
with ctx(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


# The same locks taken by hand, as another samkit process takes them (a quick child: no torch).
RAW_HOLDER = """
import fcntl, json, os, sys
folder, mode = sys.argv[1], sys.argv[2]
os.makedirs(folder, exist_ok=True)
fd = os.open(os.path.join(folder, ".samkit-lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX if mode == "write" else fcntl.LOCK_SH)
if mode == "write":
    os.write(fd, json.dumps({"pid": os.getpid(), "host": os.uname()[1], "command": ["x"]}).encode())
print("held", flush=True)
sys.stdin.read()
"""


class _Holder:
    def __init__(self, folder, mode="write", raw=False):
        code = RAW_HOLDER if raw else HOLDER
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(folder), mode],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert self.proc.stdout.readline().strip() == "held"

    def release(self):
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=60)


def test_a_writer_excludes_writers_and_readers_and_a_waiter_gets_the_folder_after_it(tmp_path):
    folder = tmp_path / "run"
    other = _Holder(folder)
    try:
        with pytest.raises(FolderBusy, match=f"in use by process {other.proc.pid}.*try again"):
            with run_folder.hold(folder, purpose="overwrite it"):
                pass
        with pytest.raises(FolderBusy, match=f"process {other.proc.pid}"):
            with run_folder.reading(folder):
                pass
        said, got = [], []

        def study():
            with run_folder.hold(folder, wait=True, on_wait=said.append):
                got.append(json.loads((folder / LOCK).read_text())["pid"])

        waiter = threading.Thread(target=study)
        waiter.start()
        time.sleep(0.5)
        assert not got and len(said) == 1 and f"process {other.proc.pid}" in said[0]
        other.release()  # it removes the lock file while holding it: the waiter must notice
        waiter.join(timeout=60)
        assert got == [os.getpid()]
    finally:
        other.kill()
    assert not (folder / LOCK).exists()  # released: no trace


def test_a_killed_holder_leaves_a_file_nobody_holds(tmp_path):
    folder = tmp_path / "run"
    other = _Holder(folder, raw=True)
    other.kill()  # SIGKILL
    assert json.loads((folder / LOCK).read_text())["pid"] == other.proc.pid  # stale, not held
    with run_folder.hold(folder):
        assert json.loads((folder / LOCK).read_text())["pid"] == os.getpid()


def test_readers_share_and_exclude_writers(tmp_path):
    folder = tmp_path / "run"
    with run_folder.hold(folder):
        pass  # a folder that has been trained (no lock file left)
    with run_folder.reading(folder):
        pass  # nobody writes it: nothing to wait for, nothing created
    assert not (folder / LOCK).exists()
    (folder / LOCK).write_text("")  # as a killed writer leaves it
    reader = _Holder(folder, mode="read", raw=True)
    try:
        with run_folder.reading(folder):
            pass  # two readers at once
        with pytest.raises(FolderBusy, match="being read by another process"):
            with run_folder.hold(folder):
                pass
    finally:
        reader.release()


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    folder = tmp_path / "run"
    with run_folder.hold(folder):
        with run_folder.hold(folder):  # a study holds the folder, then train() takes it again
            with run_folder.reading(folder):  # and measures it
                assert run_folder.holds(folder)
        assert run_folder.holds(folder) and (folder / LOCK).exists()
    assert not run_folder.holds(folder) and not (folder / LOCK).exists()


def test_a_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SamkitError, match="exists and is not a folder"):
        with run_folder.hold(tmp_path / "f"):
            pass
