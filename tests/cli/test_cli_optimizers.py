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
