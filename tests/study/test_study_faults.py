"""Fault injection: a study killed with SIGKILL at random points — in the middle of a checkpoint,
a metrics row, a summary, the study record or the report — and resumed each time (the same
command again) ends with the results.csv of a study that was never interrupted.

The kills are real (``os.kill(pid, SIGKILL)``: no clean-up, half-written temporaries left behind).
A kill *inside* a write comes from ``fault_driver.py``, which makes the process kill itself once
half of that write's bytes are on disk; a kill at a random *time* comes from the test. Both runs
share one machine, one torch and one thread: the columns that do not measure time must be equal,
bit for bit. The slow campaign (``-m slow``) draws its kill points from a recorded seed.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from samkit import cli

DRIVER = Path(__file__).with_name("fault_driver.py")
TIMES = ("train_time", "wall_time", "load_max")  # the machine's, not the study's
SETUP = [
    "compare", "--dataset", "mnist1d", "--model", "mlp", "--model-option", "width=16",
    "--epochs", "2", "--batch-size", "32", "--max-steps-per-epoch", "3", "--train-subset", "256",
    "--test-subset", "128", "--no-flatness", "--quiet",
]  # fmt: skip
STUDY = [*SETUP, "--methods", "sgd", "sam", "fsam", "--seeds", "0", "1"]  # the campaign's
SMALL = [*SETUP, "--methods", "sgd", "sam", "--seeds", "0"]  # the default suite's
# Where a session may be killed: inside the n-th write (n drawn from the range) of a file of that
# name in the session, chosen so that the session has made progress first (a kill in its first
# checkpoint every time would never let the study advance); "*" is any file.
WRITES = {"checkpoint.pt": (2, 3), "metrics.jsonl": (2, 3), "summary.json": (1, 2),
          "config.yaml": (2, 2), "env.json": (2, 3), "study.json": (1, 1),
          "results.csv": (1, 1), "report.md": (1, 1), "*": (4, 16)}  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in TIMES} for r in csv.DictReader(open(path))]


def _session(study: list[str], out: Path, cache: Path, kill: tuple[str, int] | None = None,
             after: float | None = None) -> int:  # fmt: skip
    """One ``samkit compare`` process: killed inside a write (``kill``) or after ``after`` s."""
    name, nth = kill or ("none", 0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SAMKIT_CACHE": str(cache)}
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), name, str(nth), "--", *study, "--out", str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group: a kill takes every process it started
    )  # fmt: skip
    if after is not None:
        try:
            proc.wait(timeout=after)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode in (0, -signal.SIGKILL), err  # killed, or finished: never an error
    return proc.returncode


def _reference(study: list[str], tmp: Path, cache: Path, monkeypatch) -> list[dict[str, str]]:
    """The uninterrupted study, run in this process (one torch thread, as the sessions)."""
    monkeypatch.setenv("SAMKIT_CACHE", str(cache))
    assert cli.main([*study, "--out", str(tmp / "ref")]) == 0
    return _rows(tmp / "ref" / "results.csv")


def _campaign(study: list[str], out: Path, cache: Path, kills: list) -> tuple[int, int]:
    """Run the kills in order, then sessions until one finishes; (kills that landed, sessions)."""
    landed = sessions = 0
    for kill in kills:
        sessions += 1
        landed += _session(study, out, cache, **kill) == -signal.SIGKILL
    while True:
        sessions += 1
        if _session(study, out, cache) == 0:
            return landed, sessions
        assert sessions < len(kills) + 5, "a session without a kill did not finish"


def test_a_study_killed_inside_a_checkpoint_resumes_to_the_uninterrupted_results(
    harness, tmp_path, monkeypatch
):
    rows = _reference(SMALL, tmp_path, harness, monkeypatch)
    # checkpoints: sgd epoch 1, sgd epoch 2, sam epoch 1 <- killed with half of it on disk (this
    # left a metrics.jsonl epoch without its checkpoint, and the study refused to resume)
    landed, _ = _campaign(SMALL, tmp_path / "study", harness, [dict(kill=("checkpoint.pt", 3))])
    assert landed == 1
    assert _rows(tmp_path / "study" / "results.csv") == rows
    assert not list((tmp_path / "study").rglob(".samkit-lock"))  # finished runs leave no lock
    assert not list((tmp_path / "study").rglob(".checkpoint.pt.*.tmp"))  # nor half a write


@pytest.mark.slow
def test_the_fault_injection_campaign(harness, tmp_path, monkeypatch, capsys):
    """Kill points drawn from a recorded seed (``SAMKIT_FAULT_SEED``) until at least 12 have
    landed in one study: inside a write of a chosen file (its first few in that session; the
    first three tries and every third one later in a checkpoint, while the study still trains),
    or at a random time; then the same command until it finishes."""
    rows = _reference(STUDY, tmp_path, harness, monkeypatch)
    seed = int(os.environ.get("SAMKIT_FAULT_SEED", "20250922"))
    rng = random.Random(seed)
    start = time.perf_counter()
    assert _session(STUDY, tmp_path / "timing", harness) == 0
    whole = time.perf_counter() - start
    out, tried, landed, where = tmp_path / "study", 0, 0, Counter()
    while landed < 12 and tried < 40:
        tried += 1
        in_checkpoint = tried <= 3 or tried % 3 == 1  # the first three, then every third
        if in_checkpoint or rng.random() < 0.5:
            name = "checkpoint.pt" if in_checkpoint else rng.choice(sorted(WRITES))
            kill = dict(kill=(name, rng.randint(*WRITES[name])))
        else:  # a random time, mostly while the session trains
            name, kill = "time", dict(after=rng.uniform(0.3, whole / 2))
        if _session(STUDY, out, harness, **kill) == -signal.SIGKILL:
            landed += 1
            where[name] += 1
    sessions = tried + 1
    while _session(STUDY, out, harness) != 0:
        sessions += 1
        assert sessions < tried + 5, "a session without a kill did not finish"
    assert landed >= 10 and where["checkpoint.pt"] >= 3
    assert _rows(out / "results.csv") == rows
    with capsys.disabled():
        print(f"\nfault campaign (seed {seed}): {tried} kill points tried, {landed} landed "
              f"({dict(sorted(where.items()))}), {sessions} sessions, results.csv equal "
              f"({len(rows)} runs)")


def test_a_study_folder_left_by_a_kill_in_its_first_write_is_continued(harness, tmp_path, monkeypatch):
    """Killed while writing its first study.json, a study leaves half a temporary (and maybe its
    lock file): the same command must take the folder as its own, not as someone else's files."""
    out = tmp_path / "study"
    out.mkdir()
    (out / ".study.json.0badcafe.tmp").write_text('{"kind": "comp')
    (out / ".samkit-lock").write_text("")
    monkeypatch.setenv("SAMKIT_CACHE", str(harness))
    assert cli.main([*SMALL, "--epochs", "1", "--out", str(out)]) == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert cli.main([*SMALL, "--epochs", "1", "--out", str(tmp_path / "other")]) == 2  # not ours
