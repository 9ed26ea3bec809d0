"""The sharpness / landscape subcommands against a fake `load_run` (a model with known data)."""

from __future__ import annotations

import argparse
import json
import os
import stat
from types import SimpleNamespace

import pytest
import torch
from measure_helpers import bn_mlp, ce, class_data, error_rate

from samkit.cli import measure as cli_measure
from samkit.cli.measure import add_parsers
from samkit.errors import SamkitError
from samkit.measure import landscape_1d, sharpness


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    model = bn_mlp()
    x, y = class_data(n=20)
    calls = []

    def batches(split="train", batch_size=256, max_examples=None):
        calls.append((split, batch_size, max_examples))
        n = len(x) if max_examples is None else min(max_examples, len(x))
        return [
            (x[i : min(i + batch_size, n)], y[i : min(i + batch_size, n)])
            for i in range(0, n, batch_size)
        ]

    def load_run(run_dir, device="cpu", allow_incomplete=False):
        assert device == "cpu"
        return SimpleNamespace(
            model=model, loss_fn=ce, error_fn=error_rate, batches=batches, epoch=3, complete=True
        )

    monkeypatch.setattr(cli_measure, "load_run", load_run)
    return SimpleNamespace(dir=tmp_path, model=model, data=(x, y), calls=calls, batches=batches)


def parse(argv):
    parser = argparse.ArgumentParser(prog="samkit")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_every_flag_has_help():
    parser = argparse.ArgumentParser(prog="samkit")
    sub = parser.add_subparsers()
    add_parsers(sub)
    for name in ("sharpness", "landscape"):
        p = sub.choices[name]
        assert p.description
        for action in p._actions:
            assert action.help, (name, action.dest)


def test_sharpness_command_writes_what_the_api_returns(fake_run):
    args = parse(
        [
            "sharpness",
            "--run",
            str(fake_run.dir),
            "--rho",
            "0.2",
            "--shard-size",
            "4",
            "--num-examples",
            "12",
            "--batch-size",
            "8",
            "--steps",
            "3",
            "--no-progress",
        ]
    )
    assert args.func(args) == 0
    assert fake_run.calls[-1] == ("train", 8, 12)
    out = json.loads((fake_run.dir / "sharpness.json").read_text())
    direct = sharpness(
        fake_run.model,
        ce,
        fake_run.batches("train", 8, 12),
        rho=0.2,
        shard_size=4,
        steps=3,
        error_fn=error_rate,
        progress=False,
    )
    assert out["loss_increase"] == pytest.approx(direct.loss_increase, rel=1e-12)
    assert out["error_increase"] == pytest.approx(direct.error_increase)
    assert out["num_groups"] == 3 and out["num_examples"] == 12


@pytest.mark.parametrize("dim", [1, 2])
def test_landscape_command_writes_json_and_png(fake_run, dim):
    out = fake_run.dir / "sub" / "ls.json"
    args = parse(
        [
            "landscape",
            "--run",
            str(fake_run.dir),
            "--dim",
            str(dim),
            "--steps",
            "3",
            "--split",
            "test",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    old = os.umask(0o002)  # a group-shared study: every file it writes is group-readable
    try:
        assert args.func(args) == 0
    finally:
        os.umask(old)
    data = json.loads(out.read_text())
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    for path in (out, out.with_suffix(".png")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o664
    assert fake_run.calls[-1][0] == "test"
    if dim == 1:
        direct = landscape_1d(fake_run.model, ce, fake_run.batches(), steps=3, progress=False)
        assert data["loss"] == pytest.approx(direct.loss.tolist(), rel=1e-12)
    else:
        assert len(data["loss"]) == 3 and len(data["loss"][0]) == 3


def test_help_promises_only_the_files_each_command_writes():
    parser = argparse.ArgumentParser(prog="samkit")
    sub = parser.add_subparsers()
    add_parsers(sub)
    sharp, land = (sub.choices[name].format_help() for name in ("sharpness", "landscape"))
    assert "PNG" not in sharp and "png" not in sharp.lower()  # sharpness writes JSON only
    assert "PNG" in land


@pytest.mark.parametrize("flag", ["--quiet", "--no-progress"])
def test_quiet_and_its_alias_hide_progress(fake_run, capsys, flag):
    args = parse(["sharpness", "--run", str(fake_run.dir), "--steps", "2", flag])
    assert args.quiet and args.func(args) == 0
    assert capsys.readouterr().err == ""


def test_sharpness_prints_what_was_measured(fake_run, capsys):
    base = ["sharpness", "--run", str(fake_run.dir), "--steps", "2", "--quiet"]
    args = parse([*base, "--num-examples", "12"])  # default: one perturbation per batch
    assert args.func(args) == 0
    out = capsys.readouterr().out
    saved = json.loads((fake_run.dir / "sharpness.json").read_text())
    assert "m=12" in out and "m=None" not in out  # the one batch holds the 12 examples
    assert "±" not in out and "one group: no interval" in out
    assert f"loss {saved['loss_increase']:+.5g}" in out
    args = parse([*base, "--num-examples", "12", "--shard-size", "4"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    saved = json.loads((fake_run.dir / "sharpness.json").read_text())
    assert "m=4" in out and "on 12 train examples" in out
    assert f"± {saved['loss_increase_stderr']:.2g} (standard error over 3 groups)" in out


def test_missing_run_folder(fake_run):
    args = parse(["sharpness", "--run", str(fake_run.dir / "nope")])
    with pytest.raises(SamkitError, match="no such run folder"):
        args.func(args)


def test_state_untouched_by_command(fake_run):
    before = [t.clone() for t in fake_run.model.state_dict().values()]
    args = parse(
        [
            "sharpness",
            "--run",
            str(fake_run.dir),
            "--kind",
            "average",
            "--no-progress",
            "--num-samples",
            "2",
        ]
    )
    args.func(args)
    for a, b in zip(before, fake_run.model.state_dict().values()):
        assert torch.equal(a, b)
