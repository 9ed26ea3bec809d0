"""Per-step logging of the harness: steps.jsonl rows (and TensorBoard scalars) from the step record."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from harness_fixtures import tiny_config

import samkit
from samkit.errors import SamkitError
from samkit.train import RunInterrupted, train
from samkit.train.progress import log_step
from samkit.train.setup import lr_factor


class _Writer:
    def __init__(self):
        self.scalars = {}

    def add_scalar(self, key, value, step):
        self.scalars[(key, step)] = value


def test_a_row_holds_the_step_record_values(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3).double()
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    g = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    opt = samkit.SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1)
    loss = opt.train_step(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), (x, y))
    writer = _Writer()
    row = log_step(tmp_path / "steps.jsonl", writer, 7, float(loss), 0.1, opt.last_step)
    assert row["ascent_norm"] == pytest.approx(float(torch.sqrt(sum((t**2).sum() for t in g))), abs=1e-12)
    assert row["perturbed_loss"] == float(opt.last_step.perturbed_loss) > row["loss"]  # uphill at w + e
    assert row["ascended"] is True and (row["step"], row["lr"]) == (7, 0.1)
    assert json.loads((tmp_path / "steps.jsonl").read_text()) == row
    assert writer.scalars[("step/perturbed_loss", 7)] == row["perturbed_loss"]
    plain = log_step(tmp_path / "steps.jsonl", None, 8, 1.5, 0.1, None)  # a plain optimizer: no record
    assert (plain["perturbed_loss"], plain["ascent_norm"], plain["ascended"]) == (None, None, None)


def test_run_logs_every_n_steps_and_a_resume_keeps_the_rows_of_an_uninterrupted_run(harness, tmp_path):
    cfg = tiny_config(optimizer="sam", epochs=2, log_every_steps=3)  # 8 steps: rows at 3 and 6
    train(cfg, tmp_path / "full", quiet=True)
    full = [json.loads(r) for r in (tmp_path / "full" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in full] == [3, 6] and all(r["ascended"] for r in full)
    factor = lr_factor(cfg, 4)
    assert [r["lr"] for r in full] == pytest.approx([cfg.lr * factor(s - 1) for s in (3, 6)])

    with pytest.raises(RunInterrupted):
        train(cfg, tmp_path / "cut", quiet=True, interrupt_after_steps=3)
    with open(tmp_path / "cut" / "steps.jsonl", "a") as fh:  # a row written after the checkpoint
        fh.write(json.dumps({"step": 4, "loss": 9.0}) + "\n")
    train(None, tmp_path / "cut", resume=True, quiet=True)
    cut = [json.loads(r) for r in (tmp_path / "cut" / "steps.jsonl").read_text().splitlines()]
    assert cut == full  # the stale row is gone; the resumed steps log what the full run logged


def test_log_every_steps_is_checked_and_not_hashed():
    from samkit.train import config_hash

    assert config_hash(tiny_config(log_every_steps=1)) == config_hash(tiny_config())
    assert tiny_config(log_every_steps=0).log_every_steps == 0  # off
    with pytest.raises(SamkitError, match="log_every_steps"):
        tiny_config(log_every_steps=-1)


def test_tensorboard_gets_the_step_rows_the_epoch_metrics_and_the_hparams(harness, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    cfg = tiny_config(optimizer="sam", epochs=2, log_every_steps=3)
    summary = train(cfg, tmp_path / "run", quiet=True)
    rows = [json.loads(r) for r in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    events = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "run" / "tensorboard")).Reload()
    runs = events.Runs()
    main = next(r for r, tags in runs.items() if "step/loss" in tags["scalars"])
    for key in ("loss", "perturbed_loss", "ascent_norm", "lr"):
        logged = [(e.step, e.value) for e in events.Scalars(main, f"step/{key}")]
        assert logged == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in rows]
    history = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for key in ("train_loss", "test_acc", "lr"):  # one point per epoch, from metrics.jsonl's rows
        logged = [(e.step, e.value) for e in events.Scalars(main, key)]
        assert logged == [(r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in history]
    # add_hparams writes its own run under the main one, with the final metrics
    hp = [r for r, tags in runs.items() if "final/test_acc" in tags["scalars"]]
    assert len(hp) == 1
    assert events.Scalars(hp[0], "final/test_acc")[0].value == pytest.approx(summary["test_acc"], rel=1e-6)
    plugin = events.PluginRunToTagToContent("hparams")[hp[0]]
    from tensorboard.plugins.hparams import plugin_data_pb2

    info = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"])
    hparams = info.session_start_info.hparams
    assert hparams["optimizer"].string_value == "sam"
    assert hparams["rho"].number_value == pytest.approx(cfg.rho)
