"""compare and sweep on tiny setups: the right rows, reuse from disk, resume, and reports."""

from __future__ import annotations

import csv
import json

import pytest
from committed import assert_text_contains
from harness_fixtures import tiny_config

from samkit.errors import SamkitError
from samkit.study import compare, parse_grid, parse_method, summarize, sweep, write_report
from samkit.train import RunInterrupted, train


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _stat_cell(values):
    s = summarize(values)  # the report clips the interval to [0, 1]
    low, high = max(0.0, s.ci_low), min(1.0, s.ci_high)
    return f"{s.mean:.4f} ± {s.std:.4f} [{low:.4f}, {high:.4f}]"


def test_compare_two_methods_two_seeds_writes_rows_and_report(harness, tmp_path):
    out = tmp_path / "cmp"
    res = compare(
        tiny_config(),
        methods=["sgd", "sam:rho=0.1"],
        seeds=[0, 1],
        out=out,
        flatness=False,
        quiet=True,
    )
    rows = _csv(out / "results.csv")
    assert [(r["label"], r["seed"]) for r in rows] == [
        ("sgd", "0"),
        ("sgd", "1"),
        ("sam", "0"),
        ("sam", "1"),
    ]
    assert all(r["status"] == "complete" for r in rows)
    assert [r["rho"] for r in rows] == ["", "", "0.1", "0.1"]
    assert [float(r["passes"]) for r in rows] == [8, 8, 16, 16]  # 2 epochs x 4 steps x 1 or 2
    for r in rows:  # each row is its run's summary
        summary = json.loads((out / r["dir"] / "summary.json").read_text())
        assert float(r["test_acc"]) == summary["test_acc"] and summary["seed"] == int(r["seed"])
    report = (out / "report.md").read_text()
    accs = {lb: [float(r["test_acc"]) for r in rows if r["label"] == lb] for lb in ("sgd", "sam")}
    gaps = [a - b for a, b in zip(accs["sam"], accs["sgd"])]  # paired by seed
    gap = summarize(gaps)
    assert f"| `sgd` | – | 2/2 | {_stat_cell(accs['sgd'])} | – |" in report
    assert (
        f"| `sam` | rho=0.1, m=32 | 2/2 | {_stat_cell(accs['sam'])} | {gap.mean:+.4f} "
        f"[{max(-1, gap.ci_low):+.4f}, {min(1, gap.ci_high):+.4f}] |"
    ) in report
    assert res.table in report and (out / "curves.png").stat().st_size > 0
    assert "| 8 | 1.00x |" in res.table and "| 16 | 2.00x |" in res.table  # passes / sgd
    assert "rho=0.05" not in report.split("**Shared setup**")[1].split("\n")[0]


def test_compare_reuses_complete_runs_and_resumes_interrupted_ones(harness, tmp_path):
    out = tmp_path / "cmp"
    compare(tiny_config(), methods=["sgd"], seeds=[0], out=out, flatness=False, quiet=True)
    done = (out / "sgd-seed0" / "checkpoint.pt").read_bytes()
    # an interrupted run of the same plan, as left by Ctrl-C
    cfg = tiny_config().replace(optimizer="sam", seed=0, label="sam")
    with pytest.raises(RunInterrupted):
        train(cfg, out / "sam-seed0", quiet=True, interrupt_after_steps=3)
    compare(tiny_config(), methods=["sgd", "sam"], seeds=[0], out=out, flatness=False, quiet=True)
    assert (out / "sgd-seed0" / "checkpoint.pt").read_bytes() == done  # reused, not retrained
    env = json.loads((out / "sam-seed0" / "env.json").read_text())
    assert len(env["resumes"]) == 1  # resumed, not restarted
    uninterrupted = train(cfg, tmp_path / "ref", quiet=True)
    resumed = json.loads((out / "sam-seed0" / "summary.json").read_text())
    assert resumed["test_loss"] == uninterrupted["test_loss"]
    study = json.loads((out / "study.json").read_text())
    assert [r["dir"] for r in study["runs"]] == ["sgd-seed0", "sam-seed0"]
    assert len(study["sessions"]) == 2


def test_compare_refuses_another_setup_in_the_same_folder(harness, tmp_path):
    out = tmp_path / "cmp"
    compare(tiny_config(epochs=1), methods=["sgd"], seeds=[0], out=out, flatness=False, quiet=True)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(SamkitError, match="another study"):
        compare(tiny_config(lr=0.2), methods=["sgd"], seeds=[0], out=out, quiet=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(SamkitError, match="not a study folder"):
        compare(tiny_config(), methods=["sgd"], seeds=[0], out=tmp_path / "other", quiet=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_compare_measures_flatness_into_each_run(harness, tmp_path):
    out = tmp_path / "cmp"
    res = compare(
        tiny_config(epochs=1),
        methods=["sam"],
        seeds=[0],
        out=out,
        flatness_examples=64,
        quiet=True,
    )
    flat = json.loads((out / "sam-seed0" / "flatness.json").read_text())
    assert {"lambda_max", "lambda_max_converged", "sharpness", "sharpness_stderr"} <= set(flat)
    assert flat["settings"]["examples"] == 64 and flat["lambda_max"] > 0
    row = _csv(out / "results.csv")[0]
    assert float(row["lambda_max"]) == flat["lambda_max"]
    assert "λ_max" in res.table and (out / "acc_vs_flatness.png").is_file()


def test_sweep_writes_every_cell_of_the_grid(harness, tmp_path):
    out = tmp_path / "sw"
    res = sweep(
        tiny_config(optimizer="sam", epochs=1, max_steps_per_epoch=2),
        grid=["rho=0.01,0.1", "shards=1,2"],
        seeds=[0],
        out=out,
        quiet=True,
    )
    rows = _csv(out / "results.csv")
    cells = {(r["rho"], r["shards"]) for r in rows}
    assert cells == {("0.01", "1"), ("0.01", "2"), ("0.1", "1"), ("0.1", "2")}
    for r in rows:  # the folder name, the cell and the run's config agree
        assert r["dir"] == f"rho={r['rho']}_shards={r['shards']}-seed0"
    assert (out / "heatmap.png").stat().st_size > 0
    assert res.table.count("| `rho=") == 8  # a row per cell in each of the two tables
    assert "| `rho=0.1_shards=2` | rho=0.1, m=16 | 1/1 |" in res.table  # the cell says its m


def test_report_is_rebuilt_from_files_only(harness, tmp_path):
    out = tmp_path / "cmp"
    compare(
        tiny_config(epochs=1), methods=["sgd"], seeds=[0, 1], out=out, flatness=False, quiet=True
    )
    summary = out / "sgd-seed1" / "summary.json"
    data = json.loads(summary.read_text())
    data["test_acc"] = 0.5  # the report must follow the files
    summary.write_text(json.dumps(data))
    (out / "report.md").unlink()
    write_report(out)
    accs = [json.loads((out / d / "summary.json").read_text())["test_acc"] for d in
            ("sgd-seed0", "sgd-seed1")]  # fmt: skip
    assert f"| `sgd` | – | 2/2 | {_stat_cell(accs)} |" in (out / "report.md").read_text()
    assert _csv(out / "results.csv")[1]["test_acc"] == "0.5"
    with pytest.raises(SamkitError, match="not a study folder"):
        write_report(tmp_path)


def test_method_and_grid_specs():
    assert parse_method("msam:shards=8,rho=0.1") == (
        "msam",
        {"optimizer": "msam", "shards": 8, "rho": 0.1},
    )
    assert parse_method("sam:label=sam-big,rho=0.2")[0] == "sam-big"
    with pytest.raises(SamkitError, match="not an optimizer"):
        parse_method("adam")
    with pytest.raises(SamkitError, match="not key=value"):
        parse_method("sam:rho")
    assert parse_grid(["rho=0.01,0.1", "shards=1,4"]) == {"rho": [0.01, 0.1], "shards": [1, 4]}
    with pytest.raises(SamkitError, match="not a run setting"):
        parse_grid(["rhoo=1,2"])
    with pytest.raises(SamkitError, match="one or two"):
        parse_grid(["rho=1", "shards=1", "lr=1"])
    with pytest.raises(SamkitError, match="repeats"):
        parse_grid(["rho=0.1,0.1"])


@pytest.mark.slow
def test_compare_in_parallel_processes_equals_in_sequence(harness, tmp_path):
    kw = dict(methods=["sgd", "fsam"], seeds=[0], flatness=False, quiet=True)
    compare(tiny_config(), out=tmp_path / "seq", **kw)
    compare(tiny_config(), out=tmp_path / "par", jobs=2, **kw)
    for d in ("sgd-seed0", "fsam-seed0"):
        a, b = (json.loads((tmp_path / s / d / "summary.json").read_text()) for s in ("seq", "par"))
        assert (a["test_loss"], a["train_loss"]) == (b["test_loss"], b["train_loss"])


def test_ctrl_c_in_a_study_keeps_finished_runs_and_says_how_to_finish(
    harness, tmp_path, monkeypatch
):
    import os
    import signal

    import samkit.train.loop as loop

    real_step, calls = loop.train_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 10:  # during the second run (8 steps each)
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", step)
    out = tmp_path / "cmp"
    kw = dict(methods=["sgd", "sam"], seeds=[0], out=out, flatness=False, quiet=True)
    with pytest.raises(RunInterrupted, match=f"again with --out {out}"):
        compare(tiny_config(), **kw)
    assert (out / "sgd-seed0" / "summary.json").is_file()
    assert not (out / "sam-seed0" / "summary.json").exists()
    monkeypatch.setattr(loop, "train_step", real_step)
    compare(tiny_config(), **kw)
    assert [r["status"] for r in _csv(out / "results.csv")] == ["complete", "complete"]


def test_committed_main_job_report_is_regenerated_from_its_files(tmp_path):
    import shutil
    from pathlib import Path

    committed = Path(__file__).resolve().parents[2] / "docs" / "report" / "main-compare"
    if not (committed / "study.json").is_file():
        pytest.skip("no committed main-job report")
    copy = tmp_path / "report"
    shutil.copytree(committed, copy)
    table = write_report(copy)
    assert (copy / "results.csv").read_text() == (committed / "results.csv").read_text()  # data
    assert_text_contains(table, (committed / "report.md").read_text())  # computed: to the last digit
    assert len(_csv(copy / "results.csv")) == 12


def test_report_says_when_its_times_were_taken_on_a_loaded_machine(harness, tmp_path):
    out = tmp_path / "cmp"
    compare(tiny_config(epochs=1), methods=["sgd"], seeds=[0, 1], out=out, flatness=False,
            quiet=True)  # fmt: skip

    def set_load(load_max, cores=2):
        for d in ("sgd-seed0", "sgd-seed1"):
            for name, key, value in (("summary.json", "load_max", load_max),
                                     ("env.json", "cpu_count", cores)):  # fmt: skip
                path = out / d / name
                data = json.loads(path.read_text())
                data[key] = value
                path.write_text(json.dumps(data))
        write_report(out)
        return (out / "report.md").read_text()

    assert "Caveat" not in set_load(2.4)  # the study's own 2 processes and a little bookkeeping
    text = set_load(3.1)
    assert "**Caveat — times are unreliable**" in text and "up to 3.1 on 2 logical cores" in text
    assert "Caveat" not in set_load(3.1, cores=4)
    assert "up to 3.1" in set_load(3.1, cores=4)  # the machine line still reports the load
