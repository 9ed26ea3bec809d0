"""The samkit command line: help, errors without tracebacks, train/resume/report, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from samkit import cli
from samkit.cli.flags import CONFIG_FLAGS
from samkit.train import load_config

TINY = [
    "--dataset", "mnist1d", "--model", "mlp", "--model-option", "width=16", "--epochs", "2",
    "--batch-size", "32", "--max-steps-per-epoch", "3", "--train-subset", "256",
    "--test-subset", "128", "--quiet",
]  # fmt: skip


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_help_documents_every_flag_and_registers_all_commands():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"train", "compare", "sweep", "report", "sharpness", "landscape", "dln"} <= set(
        sub.choices
    )
    text = sub.choices["train"].format_help()
    for flag, *_ in CONFIG_FLAGS:
        assert flag in text
    for flag in ("--config", "--out", "--resume", "--overwrite", "--quiet", "--model-option"):
        assert flag in text
    for action in sub.choices["train"]._actions:  # every flag explains itself
        assert action.help, action.dest


def test_bad_values_give_a_clear_error_without_traceback(harness, tmp_path, capsys):
    assert cli.main(["train", "--lr", "0", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: lr must be > 0") and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:  # argparse rejects unknown choices itself
        cli.main(["train", "--optimizer", "adam"])
    assert exc.value.code == 2
    assert "invalid choice: 'adam'" in capsys.readouterr().err
    assert cli.main(["train", "--model-option", "width", "--out", str(tmp_path / "r")]) == 2
    assert "expects KEY=VALUE" in capsys.readouterr().err


def test_missing_dataset_files_are_a_clear_error(harness, tmp_path, capsys):
    code = cli.main(
        [
            "train",
            "--dataset",
            "cifar10",
            "--data-root",
            str(tmp_path / "none"),
            "--model",
            "cnn2d",
            "--out",
            str(tmp_path / "r"),
        ]  # fmt: skip
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "cifar" in err.lower()
    assert "Traceback" not in err


def test_train_with_config_file_flag_override_resume_and_existing_folder(harness, tmp_path, capsys):
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"optimizer": "sam", "rho": 0.2, "lr": 0.01}))
    out = tmp_path / "run"
    assert cli.main(["train", "--config", str(conf), "--lr", "0.03", *TINY, "--out", str(out)]) == 0
    cfg = load_config(out / "config.yaml")
    assert (cfg.optimizer, cfg.rho, cfg.lr) == ("sam", 0.2, 0.03)  # file, then flags
    assert "test acc" in capsys.readouterr().out
    before = _snapshot(out)
    assert cli.main(["train", *TINY, "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and _snapshot(out) == before
    assert cli.main(["train", "--resume", str(out), "--lr", "1"]) == 2
    assert "lr cannot change" in capsys.readouterr().err and _snapshot(out) == before
    assert cli.main(["train", "--resume", str(out), "--quiet"]) == 0  # complete: reported as is
    assert _snapshot(out)["summary.json"] == before["summary.json"]


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_the_same_run(
    harness, tmp_path, monkeypatch, capsys
):
    import samkit.train.loop as loop

    real_step, calls = loop.train_step, []

    def step_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # a real SIGINT in the middle of epoch 2
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", step_then_ctrl_c)
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, "--optimizer", "fsam", "--out", str(out)]) == 130
    assert f"--resume {out}" in capsys.readouterr().err
    assert not (out / "summary.json").exists() and (out / "checkpoint.pt").exists()
    monkeypatch.setattr(loop, "train_step", real_step)
    assert cli.main(["train", "--resume", str(out)]) == 0
    ref = tmp_path / "ref"
    assert cli.main(["train", *TINY, "--optimizer", "fsam", "--out", str(ref)]) == 0
    a, b = (json.loads((d / "summary.json").read_text()) for d in (out, ref))
    for key in ("train_loss", "test_loss", "test_acc", "steps", "passes"):
        assert a[key] == b[key]


def test_report_command_and_study_errors(harness, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", *TINY, "--methods", "sgd", "--seeds", "0", "--no-flatness", "--out"]
    assert cli.main([*args, str(out)]) == 0
    assert "| `sgd` | – | 1/1 |" in capsys.readouterr().out
    (out / "report.md").unlink()
    assert cli.main(["report", str(out)]) == 0 and (out / "report.md").is_file()
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "not a study folder" in capsys.readouterr().err
    assert cli.main(["sweep", *TINY, "--grid", "rhoo=1", "--out", str(tmp_path / "s")]) == 2
    assert "not a run setting" in capsys.readouterr().err


def test_python_dash_m_samkit_runs_the_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "samkit", "train", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "--shard-size" in proc.stdout


def _help_defaults(command):
    """{config key: the '(default: X)' its flag's help prints} for a subcommand."""
    import re

    sub = next(a for a in cli.build_parser()._actions if a.dest == "command").choices[command]
    out = {}
    for action in sub._actions:
        m = re.search(r"\(default: ([^)]*)\)$", " ".join((action.help or "").split()))
        if m and action.dest in {k for _, k, _, _ in CONFIG_FLAGS}:
            out[action.dest] = m.group(1)
    return out


def test_compare_and_sweep_help_show_the_settings_they_really_start_from():
    from samkit.study.presets import MAIN_JOB
    from samkit.train import TrainConfig

    compare, sweep, train = (_help_defaults(c) for c in ("compare", "sweep", "train"))
    for key, value in MAIN_JOB.items():  # epochs 30, lr 0.05, model_options... not 10 and 0.1
        if key in compare:
            assert compare[key] == str(value) and sweep[key] == str(value), key
    assert compare["epochs"] == "30" and compare["lr"] == "0.05" and compare["optimizer"] == "sgd"
    assert sweep["optimizer"] == "sam"  # a sweep starts from SAM
    assert train["epochs"] == str(TrainConfig().epochs) and train["lr"] == str(TrainConfig().lr)
    # and these are what the commands build: parse with no flags, compare with the help
    args = cli.build_parser().parse_args(["compare"])
    cfg = cli.config_from_args(args, MAIN_JOB)
    assert all(str(getattr(cfg, k)) == v for k, v in compare.items()
               if k != "model_options" and getattr(cfg, k) is not None)  # None: said in words
    assert compare["scope"] == "all" and cfg.scope is None  # fmt: skip


def test_cli_prints_samkit_warnings_as_advice_and_init_from_errors(harness, tmp_path, capsys):
    args = ["train", *TINY, "--optimizer", "sam", "--shard-size", "4", "--model-option",
            "batchnorm=true", "--epochs", "1", "--out", str(tmp_path / "r")]  # fmt: skip
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: SAM shards of 4 example(s)") and "norm=group" in err
    assert cli.main(["train", *TINY, "--init-from", str(tmp_path / "r"), "--model-option",
                     "width=32", "--out", str(tmp_path / "ft")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("error: --init-from") and "Traceback" not in err
    assert "architecture must be the same" in err and not (tmp_path / "ft").exists()
    assert cli.main(["train", *TINY, "--init-from", str(tmp_path / "r"), "--model-option",
                     "batchnorm=true", "--out", str(tmp_path / "ft")]) == 0  # fmt: skip
    assert load_config(tmp_path / "ft" / "config.yaml").init_from == str(tmp_path / "r")
