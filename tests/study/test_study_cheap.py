"""The cheap-SAM protocol: the choice on the tuning half and the held-out verdicts (on fabricated
run folders, against shares computed by hand), the runner's plumbing on tiny runs, and the
``cheap`` cadence preset against the committed protocol."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict
from pathlib import Path

import pytest
from harness_fixtures import tiny_config
from study_helpers import accs, fake_compare

from samkit.errors import SamkitError
from samkit.optim import cadence as cadence_mod
from samkit.study import cheap, cheap_report
from samkit.study import write_report as write_any_report
from samkit.train import load_config, run_files

ROOT = Path(__file__).resolve().parents[2]
CANDS = [["fam", "a", "sam:cadence=every:k=4"], ["fam", "b", "sam:cadence=every:k=2"],
         ["solo", "c", "sam:cadence=drift:k=4"]]  # fmt: skip


def _suite(tmp_path: Path, settings: list[dict]) -> dict:
    record = {"kind": "reproduce", "suite": "cheap", "claims": [], "studies": [],
              "settings": settings, "candidates": [list(c) for c in CANDS], "tune_seeds": [7],
              "verdict_seeds": [0, 1], "sessions": []}  # fmt: skip
    run_files.write_json(tmp_path / "suite.json", record)
    return record


def _setting(sid, held_out):
    return {"id": sid, "setup": {}, "why": sid, "rhos": [0.1], "held_out": held_out}


def test_picks_take_the_best_worst_share_on_the_tuning_half(tmp_path):
    # SAM gains 0.10 on t1 and 0.20 on t2; t3: SAM gains nothing, so it counts for nothing
    fake_compare(tmp_path / "t1", {"sgd": accs(0.6, 0.6), "sam": accs(0.7, 0.7),
                                    "a": accs(0.69, 0.69), "b": accs(0.65, 0.65),
                                    "c": accs(0.68, 0.68)}, seeds=(7, 8))  # fmt: skip
    fake_compare(tmp_path / "t2", {"sgd": accs(0.5, 0.5), "sam": accs(0.7, 0.7),
                                    "a": accs(0.60, 0.60), "b": accs(0.69, 0.69),
                                    "c": accs(0.69, 0.69)}, seeds=(7, 8))  # fmt: skip
    fake_compare(tmp_path / "t3", {"sgd": accs(0.9, 0.9), "sam": accs(0.9, 0.9),
                                    "a": accs(0.1, 0.1), "b": accs(0.1, 0.1),
                                    "c": accs(0.1, 0.1)}, seeds=(7, 8))  # fmt: skip
    record = _suite(tmp_path, [_setting("t1", False), _setting("t2", False), _setting("t3", False)])
    table = cheap_report.tuning_table(tmp_path, record)
    # by hand: a keeps 0.09/0.10 and 0.10/0.20; b 0.05/0.10 and 0.19/0.20; c 0.08/0.10, 0.19/0.20
    assert table["a"]["t1"] == pytest.approx(0.9) and table["a"]["t2"] == pytest.approx(0.5)
    assert table["b"]["t1"] == pytest.approx(0.5) and math.isnan(table["b"]["t3"])
    # worst shares: a 0.5, b 0.5 (a tie: the earlier candidate), c 0.8
    assert cheap_report.picks(tmp_path, record) == {"fam": "a", "solo": "c"}
    assert cheap_report.preset(tmp_path, record) == "c"  # of the picks, c's worst 0.8 beats a's 0.5
    record["candidates"][2][2] = "rwp:noise=0.01"  # c is no cadence: it cannot be the preset
    assert cheap_report.preset(tmp_path, record) == "a"


def test_held_out_verdicts_and_the_report(tmp_path):
    for sid in ("t1",):
        fake_compare(tmp_path / sid, {"sgd": accs(0.6, 0.6), "sam": accs(0.7, 0.7),
                                       "a": accs(0.7, 0.7), "b": accs(0.6, 0.6),
                                       "c": accs(0.65, 0.65)}, seeds=(7, 8))  # fmt: skip
    fake_compare(tmp_path / "h1", {
        "sgd": accs(0.60, 0.62, 0.61), "sam": accs(0.70, 0.72, 0.71),
        "a": accs(0.70, 0.725, 0.71),  # keeps all: gain - 0.9 gain_sam = +0.01, +0.015, +0.01
        "c": accs(0.61, 0.63, 0.60)}, seeds=(0, 1, 2))  # fmt: skip
    fake_compare(tmp_path / "h2", {"sgd": accs(0.9, 0.9, 0.9), "sam": accs(0.9, 0.9, 0.9),
                                    "a": accs(0.9, 0.9, 0.9), "c": accs(0.9, 0.9, 0.9)},
                  seeds=(0, 1, 2))  # fmt: skip
    _suite(tmp_path, [_setting("t1", False), _setting("h1", True), _setting("h2", True)])
    table = cheap_report.write(tmp_path)
    rows = {(r["method"], r["setting"]): r for r in
            __import__("csv").DictReader(open(tmp_path / "cheap.csv"))}  # fmt: skip
    assert rows[("a", "h1")]["verdict"] == ">= 90%"
    assert float(rows[("a", "h1")]["share"]) == pytest.approx((0.1 + 0.105 + 0.1) / 0.3)
    assert rows[("c", "h1")]["verdict"] == "< 90%"  # gains 0.01, 0.01, -0.01 of SAM's 0.1
    assert rows[("a", "h2")]["verdict"] == "no SAM gain"
    line_a = next(ln for ln in table.splitlines() if ln.startswith("| `a`"))
    assert "no SAM gain" in line_a and f"{(0.305 / 0.3):.0%} (`h1`)" in line_a  # worst: h1 only
    text = (tmp_path / "cheap.md").read_text()
    assert table in text and "Tuning seeds** 7" in text and "Verdict seeds** 0, 1" in text
    assert re.search(r"\*\*`a`\*\* \(`sam:cadence=every:k=4`\) \| fam \| 100%", text)
    # samkit report on the folder remakes the same table
    assert write_any_report(tmp_path) == table


def test_the_runner_tunes_rho_per_setting_and_runs_only_the_picks_on_fresh_seeds(
    harness, tmp_path, monkeypatch
):
    tiny = {k: v for k, v in tiny_config().to_dict().items() if v is not None}
    settings = (
        cheap.Setting("tune-a", {**tiny, "label_noise": 0.4}, "tuning", (0.01, 0.3), False),
        cheap.Setting("held-b", {**tiny, "label_noise": 0.2}, "held", (0.05, 0.2), True),
    )
    monkeypatch.setattr(cheap, "CANDIDATES", (
        ("looksam", "look", "sam:cadence=every:k=2;reuse=looksam;alpha=0.2"),
        ("penalty", "pen", "sgd:head_penalty=0.01,feature_penalty=0.01"),
    ))  # fmt: skip
    picked = {"looksam": "look"}
    monkeypatch.setattr(cheap_report, "picks", lambda out, record: picked)
    monkeypatch.setattr(cheap_report, "write", lambda out: "table")
    with pytest.raises(SamkitError, match="disjoint"):
        cheap.run(tmp_path / "x", settings=settings, tune_seeds=(1,), verdict_seeds=(1, 2))
    out = tmp_path / "cheap"
    cheap.run(out, quiet=True, settings=settings, tune_seeds=(9,), verdict_seeds=(0, 1))
    record = run_files.read_json(out / "suite.json")
    assert record["settings"] == json.loads(json.dumps([asdict(s) for s in settings]))
    for s in settings:
        tune = run_files.read_json(out / f"{s.id}-tune" / "study.json")
        assert {r["seed"] for r in tune["runs"]} == {9}
        rho = cheap.tuning.choose(out / f"{s.id}-tune", {"sam": s.rhos})["sam"]["rho"]
        study = run_files.read_json(out / s.id / "study.json")
        labels = {r["label"] for r in study["runs"]}
        seeds = {r["seed"] for r in study["runs"]}
        if s.held_out:  # the picks only, on the verdict seeds
            assert labels == {"sgd", "sam", "look"} and seeds == {0, 1}
        else:  # every candidate, on the tuning seeds
            assert labels == {"sgd", "sam", "look", "pen"} and seeds == {9}
        for label in ("sam", "look"):  # the cadence runs at the setting's own SAM rho
            assert load_config(out / s.id / f"{label}-seed{min(seeds)}" / "config.yaml").rho == rho


def test_the_cheap_cadence_preset_is_the_committed_protocols_pick():
    assert cadence_mod.parse_cadence("cheap").__repr__() == cadence_mod.parse_cadence(
        cadence_mod.CHEAP).__repr__()  # fmt: skip
    with pytest.raises(SamkitError, match="known cadences: .*cheap"):
        cadence_mod.parse_cadence("cheep")
    committed = ROOT / "docs" / "report" / "cheap"
    if not (committed / "suite.json").is_file():
        pytest.skip("no committed cheap protocol")
    record = run_files.read_json(committed / "suite.json")
    best = cheap_report.preset(committed, record)
    spec = next(c[2] for c in record["candidates"] if c[1] == best)
    assert spec == f"sam:cadence={cadence_mod.CHEAP}"


def test_the_command_line_lists_the_protocol_and_refuses_two_suites(capsys):
    from samkit.cli import main

    assert main(["reproduce", "--suite", "cheap", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(s.id in listed for s in cheap.SETTINGS) and "looksam-a0.2" in listed
    assert sum(s.held_out for s in cheap.SETTINGS) >= 4 and len(cheap.SETTINGS) >= 8
    assert main(["reproduce", "--quick", "--suite", "cheap", "--list"]) == 2
    assert "error: --quick and --suite cheap ask for two suites" in capsys.readouterr().err
    assert main(["reproduce", "--suite", "cheap", "--claims", "demo"]) == 2
    assert "the cheap suite has none" in capsys.readouterr().err


def test_samkit_report_names_the_file_a_suite_folder_reads_from(tmp_path, capsys):
    from samkit.cli import main

    test_held_out_verdicts_and_the_report(tmp_path)  # a cheap protocol folder, fabricated
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"report: {tmp_path / 'cheap.md'}")
