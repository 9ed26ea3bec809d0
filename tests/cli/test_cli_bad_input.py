"""Every bad input a new user tried (issue 11): exit status 2, one ``error:`` line, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from samkit import cli

SMALL = ["--epochs", "1", "--batch-size", "16", "--max-steps-per-epoch", "2", "--quiet"]


def run_cli(argv, capsys):
    code = cli.main(argv)  # an uncaught exception would fail the test with its traceback
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model", "mlp", "--model-option", "width=abc"],
            "model 'mlp' option width expects an integer, got 'abc'",
        ),
        (
            ["--dataset", "synthetic", "--model", "mlp", "--dataset-option", "n=abc"],
            "dataset 'synthetic' option n expects an integer, got 'abc'",
        ),
        (
            ["--dataset", "synthetic", "--model", "mlp", "--dataset-option",
             "input_shape=(3,32,32)"],
            "option input_shape expects a list of integers, got '(3,32,32)'",
        ),
    ],
)  # fmt: skip
def test_bad_option_values(harness, tmp_path, capsys, args, message):
    code, err = run_cli(["train", *args, *SMALL, "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["sharpness", "landscape"])
def test_measuring_an_incomplete_run(harness, tmp_path, capsys, command):
    from harness_fixtures import tiny_config

    from samkit.train import RunInterrupted, train

    run = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        train(tiny_config(), run, quiet=True, interrupt_after_steps=4)  # Ctrl-C at step 4 of 4
    args = [command, "--run", str(run), "--num-examples", "64", "--steps", "3", "--no-progress"]
    code, err = run_cli(args, capsys)
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert "incomplete" in err and f"samkit train --resume {run}" in err
    assert "--allow-incomplete" in err
    assert not list(run.glob(f"{command}*.json")) and not list(run.glob("landscape*"))
    assert cli.main([*args, "--allow-incomplete"]) == 0
    out = capsys.readouterr().out
    assert "incomplete run: measured the weights at the step 4 of epoch 1 of 2" in out
    result = json.loads(next(run.glob(f"{command}*.json")).read_text())
    assert (result["epoch"], result["step_in_epoch"], result["complete"]) == (0, 4, False)


def test_resume_with_the_checkpoint_missing(harness, tmp_path, capsys):
    from harness_fixtures import tiny_config

    from samkit.train import RunInterrupted, train

    run = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        train(tiny_config(), run, quiet=True, interrupt_after_steps=5)
    (run / "checkpoint.pt").unlink()
    code, err = run_cli(["train", "--resume", str(run), "--quiet"], capsys)
    assert code == 2 and err.startswith("error: cannot resume") and "Traceback" not in err
    assert "no checkpoint.pt" in err and not (run / "summary.json").exists()


def test_a_bad_option_in_a_real_process_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "samkit", "train", "--dataset", "synthetic", "--model", "mlp",
         "--dataset-option", "n=abc", *SMALL, "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
