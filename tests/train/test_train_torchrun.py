"""``torchrun --nproc-per-node 2 -m samkit train``: DDP, m-sharpness across ranks, rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from samkit.train import TrainConfig, train

SETUP = ["--dataset", "mnist1d", "--train-subset", "256", "--test-subset", "128", "--model", "mlp",
         "--batch-size", "32", "--lr", "0.05", "--rho", "0.1", "--seed", "3", "--quiet"]


def cli_config(**kw) -> TrainConfig:
    base = dict(dataset="mnist1d", train_subset=256, test_subset=128, model="mlp", batch_size=32,
                lr=0.05, rho=0.1, seed=3)
    return TrainConfig(**{**base, **kw})


def torchrun(args, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SAMKIT_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "samkit", "train", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("torchrun")
    done = torchrun([*SETUP, "--optimizer", "sam", "--epochs", "2", "--out", str(tmp / "ddp")], tmp)
    (tmp / "stdout.txt").write_text(done.stdout)
    return tmp


def test_two_ranks_equal_one_process_with_two_shards(two_rank_run, tmp_path, monkeypatch):
    """Per-rank perturbation on 2 ranks is mSAM with 2 shards of the same global batch."""
    monkeypatch.setenv("SAMKIT_CACHE", str(two_rank_run / "cache"))
    single = train(cli_config(optimizer="msam", shards=2, epochs=2), tmp_path / "one", quiet=True)
    ddp = json.loads((two_rank_run / "ddp" / "summary.json").read_text())
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert ddp["steps"] == single["steps"] == 16
    for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-5), key


def test_rank_zero_writes_one_run_folder(two_rank_run):
    run = two_rank_run / "ddp"
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["config.yaml", "env.json", "metrics.jsonl", "summary.json", "checkpoint.pt"]
        + (["tensorboard"] if (run / "tensorboard").exists() else [])
    )
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # one writer: no duplicated lines
    assert json.loads((run / "env.json").read_text())["world_size"] == 2
    # one final summary line on the console, from rank 0 (the other rank prints nothing)
    lines = (two_rank_run / "stdout.txt").read_text().splitlines()
    assert [line for line in lines if "test acc" in line] == [
        f"sam: test acc {ddp_summary(run)['test_acc']:.4f}, test loss "
        f"{ddp_summary(run)['test_loss']:.4f}, train loss {ddp_summary(run)['train_loss']:.4f} "
        f"after 2 epochs, 16 steps, 32 passes, {ddp_summary(run)['wall_time']:.1f} s -> {run}"
    ]


def ddp_summary(run):
    return json.loads((run / "summary.json").read_text())


def test_a_two_rank_checkpoint_resumes_in_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMKIT_CACHE", str(tmp_path / "cache"))
    torchrun([*SETUP, "--optimizer", "fsam", "--epochs", "1", "--out", str(tmp_path / "r")],
             tmp_path)
    first = json.loads((tmp_path / "r" / "summary.json").read_text())
    from samkit.train import loop

    (tmp_path / "r" / "summary.json").unlink()  # pretend the run stopped after epoch 1
    resumed = loop.train(None, tmp_path / "r", resume=True, overrides={"epochs": 2}, quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert resumed["steps"] == 2 * first["steps"] and resumed["world_size"] == 1
    assert rows[0]["test_loss"] == first["test_loss"]  # epoch 1 kept from the 2-rank run


def _children(pid: int) -> list[int]:
    out = []
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(stat))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks' processes in /proc")
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """A signal that reaches one rank only (a scheduler signalling one process) must not leave the
    others waiting forever in the next step's all-reduce: the ranks agree to stop together."""
    import signal
    import time

    from samkit.train.run_files import load_checkpoint

    env = {**os.environ, "OMP_NUM_THREADS": "1", "SAMKIT_CACHE": str(tmp_path / "cache")}
    run = tmp_path / "r"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "samkit", "train", *SETUP, "--optimizer", "sam", "--epochs", "100000",
           "--out", str(run)]  # fmt: skip
    agent = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoint.pt").exists():
            assert agent.poll() is None and time.monotonic() < deadline, agent.stderr.read()
            time.sleep(0.1)
        ranks = _children(agent.pid)
        assert len(ranks) == 2
        os.kill(max(ranks), signal.SIGTERM)  # one rank only (spawned second: rank 1 or 0 alike)
        _, err = agent.communicate(timeout=120)  # without agreement: rank 0 hangs in all_reduce
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    import re

    stops = re.findall(r"interrupted by SIGTERM at epoch (\d+), step (\d+)", err)
    assert len(stops) == 2 and stops[0] == stops[1], err[-3000:]  # both ranks, the same step
    assert "Traceback" not in err.split("interrupted by")[0], err[-3000:]
    state = load_checkpoint(run / "checkpoint.pt")  # rank 0 wrote the stop's own checkpoint
    epoch, step = (int(x) for x in stops[0])
    assert (state["epoch"], state["step_in_epoch"]) == (epoch - 1, step)
