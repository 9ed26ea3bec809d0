"""Every bad input a new user tried (issue 11): exit status 2, one ``error:`` line, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from samkit import cli

SMALL = ["--epochs", "1", "--batch-size", "16", "--max-steps-per-epoch", "2", "--quiet"]


def run_cli(argv, capsys):
    """Exit status and stderr without the ``samkit:`` log lines (e.g. a cache folder created)."""
    code = cli.main(argv)  # an uncaught exception would fail the test with its traceback
    lines = capsys.readouterr().err.splitlines(keepends=True)
    return code, "".join(line for line in lines if not line.startswith("samkit: "))


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


TINY = ["--dataset", "mnist1d", "--model", "mlp", "--train-subset", "64", "--test-subset", "32",
        *SMALL]  # fmt: skip


@pytest.mark.parametrize("optimizer", ["sgd", "sam"])
def test_a_diverging_run_names_the_cause_and_cli_remedies(harness, tmp_path, capsys, optimizer):
    args = ["train", *TINY, "--max-steps-per-epoch", "4", "--optimizer", optimizer, "--lr", "1e6",
            "--out", str(tmp_path / "r")]  # fmt: skip
    code, err = run_cli(args, capsys)
    assert code == 2 and err.startswith("error: the training loss") and "Traceback" not in err
    assert "the inputs are finite" in err and "the optimization diverged" in err
    assert "--lr (now 1e+06)" in err and "--overwrite" in err
    assert ("--rho (now 0.05)" in err) == (optimizer == "sam")
    assert "GradScaler" not in err and "nonfinite" not in err  # Python-API advice: no such flag


@pytest.mark.parametrize("optimizer", ["sgd", "sam"])
def test_non_finite_inputs_are_blamed_on_the_data(harness, tmp_path, capsys, monkeypatch, optimizer):
    from samkit.data._core import Dataset, Split
    from samkit.data._registry import _DATASETS

    def nan_inputs(root=None, download=False):  # data with NaN features (as from a bad file)
        x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
        x[::4, 5] = float("nan")  # in every batch
        y = torch.arange(64) % 2
        return Dataset("nan-inputs", 2, (8,), Split(x, y), Split(x[3:], y[3:]))

    monkeypatch.setitem(_DATASETS._entries, "nan-inputs", nan_inputs)
    args = ["train", "--dataset", "nan-inputs", "--model", "mlp", "--optimizer", optimizer,
            *SMALL, "--out", str(tmp_path / "r")]  # fmt: skip
    code, err = run_cli(args, capsys)
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert "inputs of epoch 1, step 1 are not finite" in err and "--data-root" in err
    assert "--lr" not in err and "GradScaler" not in err


def test_cifar_files_with_constant_pixels(harness, tmp_path, capsys):
    import pickle

    import numpy as np

    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batch = {b"labels": list(range(10)) * 2, b"data": np.full((20, 3072), 7, dtype=np.uint8)}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c"] * 10}, protocol=2))
    args = ["train", "--dataset", "cifar10", "--data-root", str(tmp_path / "data"), "--model",
            "mlp", *SMALL, "--out", str(tmp_path / "r")]  # fmt: skip
    code, err = run_cli(args, capsys)
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert "standard deviation 0" in err and "normalize=false" in err


def test_a_data_root_with_a_typo_is_refused_and_a_new_one_is_said(tmp_path, capsys):
    typo = tmp_path / "typo" / "path"
    args = ["train", *TINY, "--data-root", str(typo), "--out", str(tmp_path / "r")]
    code, err = run_cli(args, capsys)
    assert code == 2 and err.startswith(f"error: data root {typo} (--data-root) does not exist")
    assert "Traceback" not in err and not (tmp_path / "typo").exists()
    fresh = tmp_path / "data"
    args = ["train", *TINY, "--data-root", str(fresh), "--out", str(tmp_path / "r2")]
    assert cli.main(args) == 0
    assert f"samkit: created {fresh / 'mnist1d'} for the generated MNIST-1D data" in (
        capsys.readouterr().err
    )


def test_an_hf_model_missing_offline(harness, tmp_path, capsys, monkeypatch):
    transformers = pytest.importorskip("transformers")

    def offline(*args, **kwargs):  # what from_pretrained raises with no network and no cache
        raise OSError(
            "We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find "
            "them in the cached files."
        )

    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", offline)
    args = ["train", "--dataset", "synthetic", "--model", "hf:prajjwal1/bert-tiny", *SMALL,
            "--out", str(tmp_path / "r")]  # fmt: skip
    code, err = run_cli(args, capsys)
    assert code == 2 and err.startswith("error: model 'hf:prajjwal1/bert-tiny' could not be loaded")
    assert "Traceback" not in err and "local Hugging Face cache" in err and "HF_HOME" in err


def test_a_bad_option_in_a_real_process_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "samkit", "train", "--dataset", "synthetic", "--model", "mlp",
         "--dataset-option", "n=abc", *SMALL, "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
