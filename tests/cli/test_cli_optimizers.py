"""Optimizer names, rule options, micro-batches and clipping from the command line."""

from __future__ import annotations

import json

import pytest

from samkit import cli
from samkit.errors import SamkitError
from samkit.optim import registry
from samkit.study.compare import parse_method
from samkit.train import load_config

TINY = [
    "--dataset", "mnist1d", "--model", "mlp", "--model-option", "width=16", "--epochs", "1",
    "--batch-size", "32", "--max-steps-per-epoch", "2", "--train-subset", "128",
    "--test-subset", "64", "--quiet",
]  # fmt: skip


def test_train_with_a_rule_option_micro_batches_and_clipping(harness, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", *TINY, "--optimizer", "multistep_sam", "--optimizer-option", "steps=3",
            "--micro-batch-size", "8", "--max-grad-norm", "0.5", "--out", str(out)]
    assert cli.main(args) == 0
    cfg = load_config(out / "config.yaml")
    assert cfg.optimizer_options == {"steps": 3} and cfg.micro_batch_size == 8
    assert cfg.max_grad_norm == 0.5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passes_per_step"] == 4 and summary["passes"] == 4 * summary["steps"]


def test_bad_rule_options_are_an_error_line(harness, tmp_path, capsys):
    for option, message in (
        ("beta=1", "optimizer 'gsam' does not take option(s) beta; it accepts: adaptive, alpha"),
        ("alpha=abc", "alpha must be a finite number, got 'abc'"),
    ):
        code = cli.main(["train", *TINY, "--optimizer", "gsam", "--optimizer-option", option,
                         "--out", str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err
        assert not (tmp_path / "r").exists()


def test_optimizers_command_lists_every_name_with_its_cost(capsys):
    assert cli.main(["optimizers"]) == 0
    text = capsys.readouterr().out
    rows = {line.split()[0]: line for line in text.splitlines()[1:] if line and line[0].isalpha()}
    assert set(registry.names()) <= set(rows)
    assert rows["momentum_sam"].split()[1] == "1" and rows["multistep_sam"].split()[1] == "3"
    assert "alpha=0.1" in rows["gsam"] and "gamma=0.9" in rows["wsam"]


def test_study_methods_take_rule_options():
    assert parse_method("gsam:alpha=0.2,rho=0.1,label=g") == (
        "g", {"optimizer": "gsam", "rho": 0.1, "optimizer_options": {"alpha": 0.2}}
    )
    with pytest.raises(SamkitError, match="'beta' is neither a run setting nor an option of 'gsam'"):
        parse_method("gsam:beta=1")


def test_cadence_from_the_command_line_counts_its_passes(harness, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, "--epochs", "2", "--optimizer", "sam", "--cadence",
                     "window:start=0.5", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]
    assert steps == 4 and summary["ascent_steps"] == 2  # the second half of training: 2 of 4 steps
    assert summary["passes"] == steps + 2 and summary["example_passes"] == 32 * (steps + 2)
    assert load_config(out / "config.yaml").cadence == "window:start=0.5"


def test_cadence_resume_mid_run_equals_the_uninterrupted_run(harness, tmp_path):
    from samkit.train import TrainConfig, train

    cfg = TrainConfig(dataset="mnist1d", model="mlp", model_options={"width": 16}, epochs=2,
                      batch_size=32, max_steps_per_epoch=3, train_subset=128, test_subset=64,
                      optimizer="sam", cadence="random:p=0.5,seed=3")
    full = train(cfg, tmp_path / "full", quiet=True)
    from samkit.train import RunInterrupted

    with pytest.raises(RunInterrupted):
        train(cfg, tmp_path / "cut", quiet=True, interrupt_after_steps=4)
    resumed = train(None, tmp_path / "cut", resume=True, quiet=True)
    for key in ("train_loss", "test_loss", "passes", "ascent_steps"):
        assert resumed[key] == full[key], key


def test_bad_cadence_specs_are_an_error_line(harness, tmp_path, capsys):
    for spec, message in (("sometimes", "unknown cadence 'sometimes'"),
                          ("every:k=0", "k must be a positive integer"),
                          ("every:kk=2", "'kk=2' is not one of its options")):
        code = cli.main(["train", *TINY, "--optimizer", "sam", "--cadence", spec,
                         "--out", str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and message in err
    assert cli.main(["train", *TINY, "--cadence", "every:k=2", "--out", str(tmp_path / "r")]) == 2
    assert "cadence only applies to the SAM family" in capsys.readouterr().err


def test_study_methods_take_a_cadence_with_several_options():
    label, overrides = parse_method("sam:cadence=every:k=5;reuse=looksam,label=look")
    assert label == "look" and overrides["cadence"] == "every:k=5;reuse=looksam"
    from samkit.optim.cadence import Every, parse_cadence

    c = parse_cadence(overrides["cadence"])
    assert isinstance(c, Every) and (c.k, c.reuse_mode) == (5, "looksam")
