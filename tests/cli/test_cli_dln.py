"""``samkit dln`` writes its results and figures, and never overwrites a folder silently."""

from __future__ import annotations

import argparse
import json
import os
import stat

import pytest

from samkit import SamkitError
from samkit.cli.dln import add_parsers


def parse(argv):
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    return parser.parse_args(["dln", *argv])


def test_dln_writes_results_and_figures(tmp_path, capsys):
    out = tmp_path / "dln"
    args = parse(["--n", "6", "--d", "8", "--k", "2", "--n-test", "100", "--steps", "200",
                  "--every", "50", "--rho", "0.01", "0.1", "--alpha", "0.1", "0.2", "--jobs", "2",
                  "--out", str(out)])
    old = os.umask(0o022)
    try:
        assert args.func(args) == 0
    finally:
        os.umask(old)
    res = json.loads((out / "results.json").read_text())
    assert [(r["alpha"], r["lr"]) for r in res["runs"]] == [(0.1, 0.05), (0.2, 0.05)]
    for r in res["runs"]:
        assert set(r["methods"]) == {"gd", "nsam", "1sam"}
        assert r["methods"]["1sam"]["rho"] == [0.01, 0.1] and r["methods"]["gd"]["rho"] == [0.0]
        assert r["seed"] == 0 and r["methods"]["nsam"]["trajectory"]["steps"] == [0, 50, 100, 150, 200]
        assert len(r["methods"]["nsam"]["test_loss"]) == 2 == len(r["methods"]["1sam"]["predicted_l1"])
        assert r["methods"]["nsam"]["test_loss"] == r["methods"]["nsam"]["trajectory"]["test_loss"][-1]
    for name in ("test_loss_vs_rho.png", "learning_curves.png", "l1_vs_steps.png"):
        assert (out / name).stat().st_size > 1000
    for path in out.iterdir():  # written with the umask's mode, like every samkit file
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name
    assert "| 1-SAM | 0.1 |" in capsys.readouterr().out
    again = parse(["--steps", "10", "--out", str(out)])
    with pytest.raises(SamkitError, match="exists and is not empty"):
        again.func(again)
    assert json.loads((out / "results.json").read_text()) == res  # nothing lost


def test_dln_quiet_hides_the_progress_bar(tmp_path, capsys):
    argv = ["--n", "4", "--d", "5", "--k", "1", "--n-test", "10", "--steps", "20", "--every", "10",
            "--rho", "0.1", "--alpha", "0.1", "0.2", "--no-plots"]  # fmt: skip
    args = parse([*argv, "--out", str(tmp_path / "a")])
    assert args.func(args) == 0 and "dln: 100%" in capsys.readouterr().err  # 2 combos: a bar
    args = parse([*argv, "--quiet", "--out", str(tmp_path / "b")])
    assert args.func(args) == 0 and capsys.readouterr().err == ""


def test_dln_rejects_a_bad_grid(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:  # refused while the command line is parsed
        parse(["--rho-min", "0", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2 and "--rho-min: expects a finite number > 0" in capsys.readouterr().err
    args = parse(["--rho-min", "0.5", "--rho-max", "0.1", "--out", str(tmp_path / "x")])
    with pytest.raises(SamkitError, match="rho grid"):
        args.func(args)
    assert not (tmp_path / "x").exists()
