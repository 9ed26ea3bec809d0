"""Every bad input a new user tried (issue 11): exit status 2, one ``error:`` line, no traceback."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest
import torch
from cli_helpers import run_cli, snapshot

from samkit import cli

SMALL = ["--epochs", "1", "--batch-size", "16", "--max-steps-per-epoch", "2", "--quiet"]


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


# ---- issue 30: data loss and misleading messages ---------------------------------------------
def test_overwrite_never_empties_a_folder_samkit_did_not_write(harness, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "v"
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.tex").write_text("x")
    (folder / "sub" / "notes.txt").write_text("y")
    before = snapshot(tmp_path)
    monkeypatch.chdir(folder)  # the case: --out . in one's own folder
    code, err = run_cli(["train", *TINY, "--out", ".", "--overwrite"], capsys)
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert "thesis.tex" in err and "sub" in err and "nothing was changed" in err
    assert snapshot(tmp_path) == before
    run = tmp_path / "run"  # a samkit run with someone's file in it: refused the same way
    assert cli.main(["train", *TINY, "--out", str(run)]) == 0
    (run / "notes.md").write_text("mine")
    before = snapshot(tmp_path)
    code, err = run_cli(["train", *TINY, "--lr", "0.01", "--out", str(run), "--overwrite"], capsys)
    assert code == 2 and "notes.md" in err and snapshot(tmp_path) == before
    (run / "notes.md").unlink()  # what samkit wrote (the run, a measurement of it) is replaced
    (run / "sharpness.json").write_text("{}")
    assert cli.main(["train", *TINY, "--lr", "0.01", "--out", str(run), "--overwrite"]) == 0
    assert "lr: 0.01" in (run / "config.yaml").read_text() and not (run / "sharpness.json").exists()


def test_compare_refuses_an_optimizer_its_methods_would_ignore(harness, tmp_path, capsys):
    out = tmp_path / "c"
    args = ["compare", "--optimizer", "adamw", "--methods", "sgd", "sam", *TINY, "--seeds", "0",
            "--no-flatness", "--out", str(out)]  # fmt: skip
    code, err = run_cli(args, capsys)
    assert code == 2 and err.startswith("error: ") and "--optimizer adamw" in err
    assert "--methods" in err and "--base" in err and not out.exists()


def test_a_refused_compare_writes_nothing(harness, tmp_path, capsys):
    out = tmp_path / "c"
    args = ["compare", "--methods", "sgd", *TINY, "--seeds", "0", "--no-flatness", "--jobs", "0",
            "--out", str(out)]  # fmt: skip
    code, err = run_cli(args, capsys)
    assert code == 2 and "--jobs" in err and "Traceback" not in err
    assert not out.exists()  # the next compare --out c is not refused as "another study"


@pytest.mark.parametrize(
    "args",
    [
        ["--dataset", "nosuch"],
        ["--model", "nosuch"],
        ["--device", "cuda:0"],
        ["--train-subset", "10", "--batch-size", "16"],
        ["--dataset", "digits", "--model", "cnn1d"],
    ],
)
def test_a_refused_train_leaves_no_folder_behind(harness, tmp_path, capsys, args):
    if args[0] == "--device" and torch.cuda.is_available():
        args = ["--device", f"cuda:{torch.cuda.device_count()}"]  # one more than there is
    out = tmp_path / "r"
    code, err = run_cli(["train", *TINY, *args, "--out", str(out)], capsys)
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert not out.exists()
    out.mkdir()  # a folder the user made is left as it was: there, and empty
    assert run_cli(["train", *TINY, *args, "--out", str(out)], capsys)[0] == 2
    assert out.is_dir() and not list(out.iterdir())


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_an_unreadable_checkpoint_says_what_to_do_in_one_line(harness, tmp_path, capsys, damage):
    from harness_fixtures import tiny_config

    from samkit.train import RunInterrupted, train

    run = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        train(tiny_config(), run, quiet=True, interrupt_after_steps=5)
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(b"garbage\n" if damage == "garbage" else ckpt.read_bytes()[:2000])
    before = snapshot(tmp_path)
    code, err = run_cli(["train", "--resume", str(run), "--quiet"], capsys)
    assert code == 2 and err.startswith(f"error: checkpoint {ckpt} could not be read")
    assert len(err.strip().splitlines()) == 1, err
    for words in ("weights_only", "PyTorch", "Errno", "Invalid argument", "Traceback"):
        assert words not in err
    assert "damaged" in err and "--overwrite" in err  # the run's own folder: replacing is a remedy
    fine_tune = tmp_path / "ft"
    code, err = run_cli(["train", *TINY, "--init-from", str(ckpt), "--out", str(fine_tune)], capsys)
    assert code == 2 and f"--init-from {ckpt}" in err and len(err.strip().splitlines()) == 1
    assert "--overwrite" not in err and "weights_only" not in err  # the source is what is broken
    assert snapshot(tmp_path) == before


def _help_texts():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    return parser, commands


def test_help_shows_each_default_once_and_every_command_an_example():
    parser, commands = _help_texts()
    for name, sub in commands.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if action.help:
                text = formatter._expand_help(action)
                assert text.count("default") <= 1, (name, action.option_strings, text)
        assert "\nexamples:\n  samkit " + name in sub.format_help(), name  # samkit/cli/examples.py
    from samkit.cli.examples import EXAMPLES

    for line in (line for name in commands for line in EXAMPLES[name]):
        parser.parse_args(shlex.split(line.split("#")[0])[1:])  # each example is a valid command


def test_version_and_the_words_of_messages(harness, tmp_path, capsys):
    import samkit

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"samkit {samkit.__version__}"
    assert cli.main(["train", *TINY, "--out", str(tmp_path / "r")]) == 0
    assert " after 1 epoch, " in capsys.readouterr().out
    code, err = run_cli(["train", "--resume", str(tmp_path / "nosuch")], capsys)
    assert code == 2 and "no such folder" in err and "config.yaml" not in err
    data = tmp_path / "data"
    data.mkdir()
    args = ["train", "--dataset", "cifar10", "--data-root", str(data), "--model", "mlp", *SMALL,
            "--out", str(tmp_path / "c")]  # fmt: skip
    code, err = run_cli(args, capsys)
    assert code == 2 and "--download" in err and "--data-root" in err
    assert "set root" not in err  # the Python words only beside the flags: "(root=)"


def test_reproduce_help_states_the_full_suite_time_of_docs_report():
    import re
    from pathlib import Path

    report = (Path(__file__).resolve().parents[2] / "docs" / "report" / "README.md").read_text()
    minutes = re.search(r"samkit reproduce --jobs 2 --out docs/report/full` \| \*\*about (\d+) min",
                        report).group(1)  # fmt: skip
    _, commands = _help_texts()
    text = " ".join(commands["reproduce"].description.split())
    assert f"about {minutes} minutes" in text, text
