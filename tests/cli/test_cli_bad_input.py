"""Every bad input a new user tried (issue 11): exit status 2, one ``error:`` line, no traceback."""

from __future__ import annotations

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


def test_a_bad_option_in_a_real_process_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "samkit", "train", "--dataset", "synthetic", "--model", "mlp",
         "--dataset-option", "n=abc", *SMALL, "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
