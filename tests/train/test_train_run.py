"""A run folder: files and keys, resume == uninterrupted, and nothing lost on bad input."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from harness_fixtures import tiny_config

from samkit.errors import SamkitError
from samkit.train import (
    RunInterrupted,
    TrainConfig,
    config_hash,
    load_config,
    load_run,
    save_config,
    train,
)
from samkit.train.run_files import load_checkpoint

METRIC_KEYS = {
    "epoch",
    "train_loss",
    "train_acc",
    "train_loss_running",
    "test_loss",
    "test_acc",
    "lr",
    "steps",
    "passes",
    "example_passes",
    "train_time",
    "wall_time",
    "memorised",
    "load",
}
SUMMARY_KEYS = {
    "status",
    "label",
    "optimizer",
    "seed",
    "config_hash",
    "epochs",
    "train_loss",
    "train_acc",
    "memorised",
    "test_loss",
    "test_acc",
    "best_test_acc",
    "steps",
    "passes",
    "example_passes",
    "passes_per_step",
    "ascent_steps",
    "execution_used",
    "execution_reason",
    "train_time",
    "wall_time",
    "load_max",
    "num_params",
    "train_examples",
    "test_examples",
    "world_size",
}
ENV_KEYS = {"python", "torch", "numpy", "device", "cpu", "git_commit", "command", "gpu",
            "world_size"}
TIMES = ("train_time", "wall_time", "load", "load_max")  # the machine's, not the run's


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_one_epoch_run_writes_every_file_with_documented_keys(harness, tmp_path):
    cfg = tiny_config(optimizer="sam", epochs=1)
    summary = train(cfg, tmp_path / "run", quiet=True)
    run = tmp_path / "run"
    assert {"config.yaml", "env.json", "metrics.jsonl", "summary.json", "checkpoint.pt"} <= {
        p.name for p in run.iterdir()
    }
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no leftovers of atomics
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and set(rows[0]) == METRIC_KEYS
    assert json.loads((run / "summary.json").read_text()) == summary
    assert set(summary) == SUMMARY_KEYS and summary["status"] == "complete"
    # SAM: two passes per step over batches of 32
    assert summary["steps"] == 4 and summary["passes"] == 8 and summary["example_passes"] == 256
    assert summary["config_hash"] == config_hash(cfg)
    assert ENV_KEYS <= set(json.loads((run / "env.json").read_text()))
    assert load_config(run / "config.yaml") == cfg
    state = load_checkpoint(run / "checkpoint.pt")
    assert {"model", "optimizer", "scheduler", "rng", "epoch"} <= set(state)
    assert set(state["rng"]) >= {"torch", "order", "augment"} and state["epoch"] == 1


@pytest.mark.parametrize(
    ("optimizer", "stop_after"),
    [("sgd", 4), ("fsam", 6), ("msam", 5)],  # end of epoch 1, and mid-epoch 2
)
def test_resume_after_interrupt_equals_uninterrupted(harness, tmp_path, optimizer, stop_after):
    cfg = tiny_config(optimizer=optimizer, epochs=3, label_noise=0.0)
    full = train(cfg, tmp_path / "full", quiet=True)
    with pytest.raises(RunInterrupted, match="--resume"):
        train(cfg, tmp_path / "cut", quiet=True, interrupt_after_steps=stop_after)
    assert not (tmp_path / "cut" / "summary.json").exists()
    resumed = train(None, tmp_path / "cut", resume=True, quiet=True)
    strip = lambda d: {k: v for k, v in d.items() if k not in TIMES}  # noqa: E731
    assert strip(resumed) == strip(full)
    rows = [
        [
            strip(json.loads(line))
            for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()
        ]
        for d in ("full", "cut")
    ]
    assert rows[0] == rows[1]
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    env = json.loads((tmp_path / "cut" / "env.json").read_text())
    assert len(env["resumes"]) == 1


def test_existing_folder_is_never_overwritten(harness, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(epochs=1), run, quiet=True)
    before = _snapshot(run)
    with pytest.raises(SamkitError, match="already exists.*--overwrite"):
        train(tiny_config(epochs=1, lr=0.01), run, quiet=True)
    assert _snapshot(run) == before
    train(tiny_config(epochs=1, lr=0.01), run, quiet=True, overwrite=True)
    assert load_config(run / "config.yaml").lr == 0.01


def test_corrupt_checkpoint_is_a_clear_error_and_folder_is_kept(harness, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        train(tiny_config(), run, quiet=True, interrupt_after_steps=2)
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncated, as by a full disk
    before = _snapshot(run)
    with pytest.raises(SamkitError, match="could not be read.*left untouched"):
        train(None, run, resume=True, quiet=True)
    with pytest.raises(SamkitError, match="could not be read"):
        load_run(run)
    assert _snapshot(run) == before


def test_resume_refuses_changed_settings_and_missing_folders(harness, tmp_path):
    with pytest.raises(SamkitError, match="no such folder"):
        train(None, tmp_path / "nothing", resume=True)
    run = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        train(tiny_config(), run, quiet=True, interrupt_after_steps=1)
    before = _snapshot(run)
    with pytest.raises(SamkitError, match="lr cannot change"):
        train(None, run, resume=True, overrides={"lr": 1.0})
    with pytest.raises(SamkitError, match="differs"):
        train(tiny_config(lr=0.5), run, resume=True)
    assert _snapshot(run) == before


def test_resume_without_the_checkpoint_of_recorded_epochs_is_refused(harness, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        train(tiny_config(), run, quiet=True, interrupt_after_steps=5)  # epoch 1 + one step
    (run / "checkpoint.pt").unlink()  # lost: restarting would silently discard epoch 1
    before = _snapshot(run)
    with pytest.raises(SamkitError, match=r"1 finished epoch.*no checkpoint.pt.*--overwrite"):
        train(None, run, resume=True, quiet=True)
    assert _snapshot(run) == before


def test_resume_of_a_folder_with_no_step_recorded_starts_from_the_beginning(harness, tmp_path):
    # A run killed before its first checkpoint left config.yaml and env.json only: nothing is
    # lost by starting again, and the result is the same run as an uninterrupted one.
    cfg = tiny_config(epochs=1)
    full = train(cfg, tmp_path / "full", quiet=True)
    run = tmp_path / "run"
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    (run / "env.json").write_text("{}")
    resumed = train(None, run, resume=True, quiet=True)
    assert {k: v for k, v in resumed.items() if k not in TIMES} == {
        k: v for k, v in full.items() if k not in TIMES
    }


def test_missing_dataset_is_a_clear_error(harness, tmp_path):
    with pytest.raises(SamkitError, match="unknown dataset 'no-such-set'"):
        train(tiny_config(dataset="no-such-set"), tmp_path / "run", quiet=True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimizer": "adam"}, "optimizer must be one of"),
        ({"optimizer": "sgd", "shards": 4}, "shards only applies to the SAM family"),
        ({"optimizer": "msam", "shards": 2, "shard_size": 8}, "not both"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"optimizer": "fsam", "lmbda": 1.0}, r"lmbda must be in \[0, 1\)"),
        ({"optimizer": "msam", "shards": 300, "batch_size": 128}, "has 128 examples but shards=300"),
        ({"warmup_epochs": 5.0, "epochs": 2}, "warmup_epochs"),
    ],
)
def test_bad_config_values_are_rejected_with_the_reason(changes, message):
    with pytest.raises(SamkitError, match=message):
        TrainConfig(**changes).validated()


def test_yaml_round_trip_and_unknown_keys(tmp_path):
    cfg = tiny_config(optimizer="fsam", rho=0.2, lmbda=0.6, model_options={"width": 16})
    path = tmp_path / "c.yaml"
    from samkit.train import save_config

    save_config(cfg, path)
    assert load_config(path) == cfg and config_hash(load_config(path)) == config_hash(cfg)
    path.write_text(yaml.safe_dump({"optimizer": "sam", "rhoo": 0.1, "weight-decay": "1e-3"}))
    with pytest.raises(SamkitError, match="unknown key\\(s\\) rhoo"):
        load_config(path)
    path.write_text(yaml.safe_dump({"optimizer": "sam", "weight-decay": "1e-3"}))
    assert load_config(path).weight_decay == pytest.approx(1e-3)


def test_msam_defaults_to_four_shards_and_label_does_not_change_the_hash():
    assert TrainConfig(optimizer="msam").sam_shards() == (4, None)
    assert TrainConfig(optimizer="msam", shard_size=16).sam_shards() == (None, 16)
    assert TrainConfig(optimizer="sam").sam_shards() == (1, None)
    assert config_hash(TrainConfig(label="a")) == config_hash(TrainConfig(label="b"))
    assert config_hash(TrainConfig(rho=0.1)) != config_hash(TrainConfig(rho=0.2))


def test_load_run_rebuilds_the_trained_model(harness, tmp_path):
    summary = train(tiny_config(epochs=1), tmp_path / "run", quiet=True)
    run = load_run(tmp_path / "run")
    batches = run.batches("test", batch_size=50)
    assert [len(b[1]) for b in batches] == [50, 50, 28]
    with torch.no_grad():
        total = sum(float(run.loss_fn(run.model, b)) * len(b[1]) for b in batches)
        wrong = sum(float(run.error_fn(run.model, b)) * len(b[1]) for b in batches)
    assert total / 128 == pytest.approx(summary["test_loss"], rel=1e-5)
    assert 1 - wrong / 128 == pytest.approx(summary["test_acc"])
    assert len(run.batches("train", batch_size=64, max_examples=100)[-1][1]) == 36
    with pytest.raises(SamkitError, match="split must be"):
        run.batches("val")


def test_load_run_refuses_an_incomplete_run_unless_asked(harness, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RunInterrupted):  # epochs=2 of 4 steps: stop after epoch 1 and a step
        train(tiny_config(), run, quiet=True, interrupt_after_steps=5)
    with pytest.raises(SamkitError, match=r"incomplete.*step 1 of epoch 2 of 2.*samkit train --resume"):
        load_run(run)
    partial = load_run(run, allow_incomplete=True)
    assert partial.summary is None and (partial.epoch, partial.step_in_epoch) == (1, 1)
    state = load_checkpoint(run / "checkpoint.pt")
    assert all(torch.equal(v, state["model"][k]) for k, v in partial.model.state_dict().items())
    train(None, run, resume=True, quiet=True)
    done = load_run(run)
    assert done.summary["status"] == "complete" and (done.epoch, done.step_in_epoch) == (2, 0)


def test_lr_schedules():
    from samkit.train.setup import lr_factor

    cos = lr_factor(TrainConfig(epochs=2), steps_per_epoch=5)
    assert cos(0) == 1.0 and cos(5) == pytest.approx(0.5) and cos(10) == pytest.approx(0.0)
    step = lr_factor(TrainConfig(epochs=10, schedule="step", schedule_unit="epoch"), 7)
    assert [step(t) for t in (0, 2, 3, 6, 8)] == pytest.approx([1, 1, 0.2, 0.04, 0.008])
    warm = lr_factor(TrainConfig(epochs=4, warmup_epochs=1, schedule="constant"), 3)
    assert [warm(t) for t in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1, 1])


def test_bf16_run_records_finite_metrics(harness, tmp_path):
    summary = train(tiny_config(precision="bf16", epochs=1, optimizer="sam"), tmp_path / "r")
    assert summary["status"] == "complete" and 0 <= summary["test_acc"] <= 1
    assert summary["train_loss"] == summary["train_loss"]  # not NaN
