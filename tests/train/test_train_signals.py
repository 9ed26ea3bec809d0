"""SIGTERM and SIGUSR1 (what schedulers send before they kill) are handled like Ctrl-C: the step
finishes, a mid-epoch checkpoint is written, the exit status is 128 + the signal's number, and
``--resume`` continues bit-identically (same machine, same torch, same threads)."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from harness_fixtures import TINY_FLAGS, TrainingProcess

from samkit import cli
from samkit.train.run_files import load_checkpoint

TIMES = ("train_time", "wall_time", "load", "load_max")  # the machine's, not the run's
FLAGS = [*TINY_FLAGS, "--epochs", "2", "--max-steps-per-epoch", "3", "--optimizer", "fsam"]


def _strip(d):
    return {k: v for k, v in d.items() if k not in TIMES}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_a_signal_saves_a_mid_epoch_checkpoint_and_resume_is_bit_identical(
    harness, tmp_path, capsys, monkeypatch, signum
):
    import samkit.train.loop as loop

    real_step, calls = loop.train_step, []

    def step_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # in the middle of epoch 2: the step finishes, then the run stops
            os.kill(os.getpid(), signum)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", step_then_signal)
    out = tmp_path / "run"
    assert cli.main(["train", *FLAGS, "--out", str(out)]) == 128 + signum
    err = capsys.readouterr().err
    assert signal.Signals(signum).name in err and f"--resume {out}" in err
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["epoch"], state["step_in_epoch"]) == (1, 1) and not (out / "summary.json").exists()
    monkeypatch.setattr(loop, "train_step", real_step)
    assert cli.main(["train", "--resume", str(out)]) == 0
    ref = tmp_path / "ref"
    assert cli.main(["train", *FLAGS, "--out", str(ref)]) == 0
    a, b = (json.loads((d / "summary.json").read_text()) for d in (out, ref))
    assert _strip(a) == _strip(b)
    rows = [[_strip(json.loads(x)) for x in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (out, ref)]  # fmt: skip
    assert rows[0] == rows[1]
    wa, wb = (load_checkpoint(d / "checkpoint.pt") for d in (out, ref))
    for part in ("model", "rng"):
        assert wa[part].keys() == wb[part].keys()
        assert all(torch.equal(wa[part][k], wb[part][k]) for k in wa[part]), part
    assert wa["optimizer"]["state"].keys() == wb["optimizer"]["state"].keys()


def test_sigterm_to_a_training_process_stops_it_with_a_checkpoint_and_status_143(harness, tmp_path):
    run = tmp_path / "r"
    child = TrainingProcess(["train", *TINY_FLAGS, "--epochs", "100000", "--out", str(run)],
                            harness, run)  # fmt: skip
    try:
        child.wait_for("checkpoint.pt")
        child.proc.send_signal(signal.SIGTERM)
        status, _, err = child.finish(timeout=60)
    finally:
        child.kill()
    assert status == 128 + signal.SIGTERM, err
    assert "SIGTERM" in err and f"--resume {run}" in err and "Traceback" not in err
    state = load_checkpoint(run / "checkpoint.pt")
    done = state["epoch"] + (state["step_in_epoch"] > 0)  # the epochs it has begun
    assert cli.main(["train", "--resume", str(run), "--epochs", str(done), "--quiet"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == done and summary["steps"] == 4 * done


def test_an_interruption_rewrapped_by_a_study_keeps_its_signal():
    """A study adds how to finish the study to the message; the exit status stays the signal's."""
    from samkit.train import RunInterrupted

    try:
        raise RunInterrupted("interrupted by SIGTERM ...", signal.SIGTERM)
    except RunInterrupted:
        wrapped = RunInterrupted("interrupted by SIGTERM ...\nTo finish the study, ...")
    assert wrapped.exit_status == 143 and RunInterrupted("Ctrl-C").exit_status == 130


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc: Linux)."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def _alive(pid: int) -> bool:
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads child processes from /proc")
def test_sigterm_to_a_study_with_jobs_stops_its_workers_too(harness, tmp_path):
    """A scheduler may signal only the process it started: a study with --jobs passes the signal
    on, so no worker goes on training without it, and the same command finishes the study."""
    import time

    study = tmp_path / "s"
    args = ["compare", *TINY_FLAGS, "--epochs", "100000", "--methods", "sgd", "sam",
            "--seeds", "0", "--jobs", "2", "--no-flatness", "--out", str(study)]  # fmt: skip
    child, workers = TrainingProcess(args, harness, study), []
    try:
        child.wait_for("sgd-seed0/checkpoint.pt")
        child.wait_for("sam-seed0/checkpoint.pt")
        workers = [k for k in _children(child.pid) if "spawn_main" in open(f"/proc/{k}/cmdline").read()]
        assert len(workers) == 2
        child.proc.send_signal(signal.SIGTERM)  # the study's own process, not its workers
        status, _, err = child.finish(timeout=300)  # the workers' last steps: slow on a loaded CPU
        deadline = time.monotonic() + 30
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [w for w in workers if _alive(w)]
    finally:  # the workers first: orphans hold the pipes the child's output is read from
        for w in [*workers, *_children(child.pid)]:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        child.kill()
    assert not left, f"workers {left} went on training after the study stopped"
    assert status == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and f"--out {study}" in err
    for run in ("sgd-seed0", "sam-seed0"):  # each worker stopped its run with a checkpoint
        # of the step it stopped at: a run checks for a signal after each step, so its stop
        # checkpoint is mid-epoch (step >= 1); the checkpoint of an epoch's end has step 0
        state = load_checkpoint(study / run / "checkpoint.pt")
        assert state["step_in_epoch"] >= 1, f"{run}: the last checkpoint is an epoch's end, not the stop's"
        assert not (study / run / "summary.json").exists()
