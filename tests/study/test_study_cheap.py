"""The cheap-SAM protocol as an ordinary suite: the pick on the tuning studies and the keeps
verdicts (on fabricated run folders, against shares computed by hand), the runner's plumbing on
tiny runs, the old record format, and the ``cheap`` cadence preset against the committed
protocol."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from committed import assert_csv_agrees, assert_text_contains
from harness_fixtures import tiny_config
from study_helpers import accs, fake_compare

from samkit.errors import SamkitError
from samkit.optim import cadence as cadence_mod
from samkit.study import cheap, suites, tuning
from samkit.study import write_report as write_any_report
from samkit.study.claims import NO_GAIN, NOT_REPRODUCED, REPRODUCED, keeps_verdict
from samkit.study.claims import verdict as gap_verdict
from samkit.study.stats import summarize
from samkit.study.suite_spec import KEEPS, Claim, Pick, Suite
from samkit.train import load_config, run_files

ROOT = Path(__file__).resolve().parents[2]
CANDS = (("fam", "a", "sam:cadence=every:k=4"), ("fam", "b", "sam:cadence=every:k=2"),
         ("solo", "c", "sam:cadence=drift:k=4"))  # fmt: skip


def _pick(studies, best_of=("fam", "solo")) -> dict:
    return asdict(Pick("p", tuple(studies), CANDS, best_of=best_of, best_name="the best"))


def test_picks_take_the_best_worst_share_on_the_pick_studies(tmp_path):
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
    pick = _pick(["t1", "t2", "t3"])
    table = tuning.pick_shares(tmp_path, pick)
    # by hand: a keeps 0.09/0.10 and 0.10/0.20; b 0.05/0.10 and 0.19/0.20; c 0.08/0.10, 0.19/0.20
    assert table["a"]["t1"] == pytest.approx(0.9) and table["a"]["t2"] == pytest.approx(0.5)
    assert table["b"]["t1"] == pytest.approx(0.5) and math.isnan(table["b"]["t3"])
    # worst shares: a 0.5, b 0.5 (a tie: the earlier candidate), c 0.8
    chosen = tuning.choose_picks(pick, table)
    assert chosen == {"fam": "a", "solo": "c"}
    assert tuning.best_pick(pick, table, chosen) == "c"  # of the picks, c's worst 0.8 beats a's 0.5
    assert tuning.best_pick(_pick(["t1"], best_of=("fam",)), table, chosen) == "a"  # c not eligible
    with pytest.raises(SamkitError, match="no study of t3 gives a share for 'fam'"):
        tuning.choose_picks(_pick(["t3"]), tuning.pick_shares(tmp_path, _pick(["t3"])))


def test_keeps_verdict_is_the_gap_verdicts_interval_test():
    gain = summarize([0.1, 0.1, 0.12])
    for keeps in ([0.01, 0.02, 0.015], [-0.02, -0.03, -0.025], [0.05, -0.04, 0.01], [0.3]):
        k = summarize(keeps)
        assert keeps_verdict(k, gain, 0.005) == gap_verdict(k, +1, 0.0)  # one test, one answer
    assert keeps_verdict(summarize([0.01, 0.02, 0.015]), gain, 0.005) == REPRODUCED
    assert keeps_verdict(summarize([0.01, 0.02]), summarize([0.004, 0.004]), 0.005) == NO_GAIN
    assert keeps_verdict(summarize([0.01, 0.02]), summarize([]), 0.005) == NO_GAIN  # NaN gain
    with pytest.raises(SamkitError, match="names a reference"):
        Claim("x", "t", "s", "h", "test_acc", {"label": "a"}, {"label": "sgd"}, +1, kind=KEEPS)
    settings = (cheap.Setting("t", {}, "t", (0.1,), False), cheap.Setting("h", {}, "h", (0.1,), True))
    s = cheap.suite(settings, CANDS, (7,), (0,))
    with pytest.raises(SamkitError, match="only chooses"):  # a pick's seeds judge no claim
        Suite(s.claims + (replace(s.claims[0], id="x", study="t"),), s.studies, s.picks)
    with pytest.raises(SamkitError, match="no pick 'p'"):
        Suite((), tuple(replace(x, pick="p") for x in s.studies))


def _suite_folder(tmp_path: Path) -> None:
    """A cheap-style suite, fabricated: tuning study t1 (its pick: a, c), held-out h1 and h2."""
    fake_compare(tmp_path / "t1", {"sgd": accs(0.6, 0.6), "sam": accs(0.7, 0.7),
                                    "a": accs(0.7, 0.7), "b": accs(0.6, 0.6),
                                    "c": accs(0.65, 0.65)}, seeds=(7, 8))  # fmt: skip
    fake_compare(tmp_path / "t1-tune", {"sam.rho=0.1": accs(0.7, 0.7)}, seeds=(7, 8))
    fake_compare(tmp_path / "h1", {
        "sgd": accs(0.60, 0.62, 0.61), "sam": accs(0.70, 0.72, 0.71),
        "a": accs(0.70, 0.725, 0.71),  # keeps all: gain - 0.9 gain_sam = +0.01, +0.015, +0.01
        "c": accs(0.61, 0.63, 0.60)}, seeds=(0, 1, 2))  # fmt: skip
    fake_compare(tmp_path / "h2", {"sgd": accs(0.9, 0.9, 0.9), "sam": accs(0.9, 0.9, 0.9),
                                    "a": accs(0.9, 0.9, 0.9), "c": accs(0.9, 0.9, 0.9)},
                  seeds=(0, 1, 2))  # fmt: skip
    settings = tuple(cheap.Setting(i, {}, f"setting {i}", (0.1,), held) for i, held in
                     (("t1", False), ("h1", True), ("h2", True)))  # fmt: skip
    s = cheap.suite(settings, CANDS, (7, 8), (0, 1, 2))
    record = suites.record_of("cheap", list(s.claims), list(s.studies), list(s.picks))
    run_files.write_json(tmp_path / "suite.json", {**record, "sessions": []})


def test_keeps_verdicts_and_the_report(tmp_path):
    _suite_folder(tmp_path)
    table = write_any_report(tmp_path)
    rows = {(r["arm"], r["study"]): r for r in csv.DictReader(open(tmp_path / "verdicts.csv"))}
    assert rows[("a", "h1")]["verdict"] == REPRODUCED and rows[("a", "h1")]["kind"] == KEEPS
    assert float(rows[("a", "h1")]["share"]) == pytest.approx((0.1 + 0.105 + 0.1) / 0.3)
    assert float(rows[("a", "h1")]["mean_gap"]) == pytest.approx((0.01 + 0.015 + 0.01) / 3)
    assert rows[("c", "h1")]["verdict"] == NOT_REPRODUCED  # gains 0.01, 0.01, -0.01 of SAM's 0.1
    assert rows[("a", "h2")]["verdict"] == NO_GAIN
    assert ("b", "h1") not in rows  # b was not picked: not run on the held-out studies
    line_a = next(ln for ln in table.splitlines() if ln.startswith("| `a`"))
    assert NO_GAIN in line_a and f"{(0.305 / 0.3):.0%} (`h1`)" in line_a  # worst: h1 only
    text = (tmp_path / "verdicts.md").read_text()
    assert table in text and "**`t1`** (seeds 7, 8, which only choose)" in text
    assert re.search(r"\*\*`a`\*\* \(`sam:cadence=every:k=4`\) \| fam \| 100%", text)
    assert "1 reproduced, 1 not reproduced, 0 inconclusive, 2 with no reference gain, of 4" in text
    assert write_any_report(tmp_path) == table  # samkit report remakes the same table


def test_the_runner_tunes_rho_per_setting_and_runs_only_the_picks_on_fresh_seeds(
    harness, tmp_path, monkeypatch
):
    from samkit.study.reproduce import reproduce

    tiny = {k: v for k, v in tiny_config().to_dict().items() if v is not None}
    settings = (
        cheap.Setting("tune-a", {**tiny, "label_noise": 0.4}, "tuning", (0.01, 0.3), False),
        cheap.Setting("held-b", {**tiny, "label_noise": 0.2}, "held", (0.05, 0.2), True),
    )
    cands = (("looksam", "look", "sam:cadence=every:k=2;reuse=looksam;alpha=0.2"),
             ("penalty", "pen", "sgd:head_penalty=0.01,feature_penalty=0.01"))  # fmt: skip
    with pytest.raises(SamkitError, match="disjoint"):
        cheap.suite(settings, cands, tune_seeds=(1,), verdict_seeds=(1, 2))
    monkeypatch.setitem(suites.SUITES, "cheap", lambda: cheap.suite(settings, cands, (9,), (0, 1)))
    # a tiny run gains nothing reliable: the pick is fixed here (its choice is tested above)
    monkeypatch.setattr(tuning, "choose_picks", lambda pick, shares: {"looksam": "look"})
    out = tmp_path / "cheap"
    reproduce(out, suite="cheap", quiet=True)
    record = run_files.read_json(out / "suite.json")
    assert [s["id"] for s in record["studies"]] == ["tune-a", "held-b"]
    assert [p["id"] for p in record["picks"]] == [cheap.PICK]
    for s in settings:
        tune = run_files.read_json(out / f"{s.id}-tune" / "study.json")
        assert {r["seed"] for r in tune["runs"]} == {9}
        rho = tuning.choose(out / f"{s.id}-tune", {"sam": s.rhos})["sam"]["rho"]
        study = run_files.read_json(out / s.id / "study.json")
        labels = {r["label"] for r in study["runs"]}
        seeds = {r["seed"] for r in study["runs"]}
        if s.held_out:  # the picks only, on the verdict seeds
            assert labels == {"sgd", "sam", "look"} and seeds == {0, 1}
        else:  # every candidate, on the tuning seeds
            assert labels == {"sgd", "sam", "look", "pen"} and seeds == {9}
        for label in ("sam", "look"):  # the cadence runs at the setting's own SAM rho
            assert load_config(out / s.id / f"{label}-seed{min(seeds)}" / "config.yaml").rho == rho
    assert "| `look` |" in (out / "verdicts.md").read_text()


def test_an_old_cheap_record_reads_as_the_suite_its_settings_make():
    committed = ROOT / "docs" / "report" / "cheap"
    if not (committed / "suite.json").is_file():
        pytest.skip("no committed cheap protocol")
    old = run_files.read_json(committed / "suite.json")
    assert "settings" in old and old["studies"] == []  # the committed file is the old format
    record = suites.read_record(committed)
    assert [s["id"] for s in record["studies"]] == [s["id"] for s in old["settings"]]
    assert len(record["claims"]) == sum(s["held_out"] for s in old["settings"]) * 5  # 5 families
    assert record["picks"][0]["candidates"] == [list(c) for c in old["candidates"]]
    assert record["sessions"] == old["sessions"]
    now = suites.record_of("cheap", *map(list, (cheap.suite().claims, cheap.suite().studies,
                                               cheap.suite().picks)))  # fmt: skip
    assert run_files.read_json(committed / "suite.json") == old  # read, never rewritten
    assert {k: v for k, v in record.items() if k != "sessions"} == json.loads(json.dumps(now))


def test_committed_cheap_verdicts_regenerate_from_their_run_files(tmp_path):
    committed = ROOT / "docs" / "report" / "cheap"
    if not (committed / "verdicts.csv").is_file():
        pytest.skip("no committed cheap protocol")
    copy = tmp_path / "cheap"
    shutil.copytree(committed, copy)
    table = write_any_report(copy, plots=False)
    assert_csv_agrees(copy / "verdicts.csv", committed / "verdicts.csv")
    assert_text_contains(table, (committed / "verdicts.md").read_text())


def test_the_cheap_cadence_preset_is_the_committed_protocols_pick():
    assert cadence_mod.parse_cadence("cheap").__repr__() == cadence_mod.parse_cadence(
        cadence_mod.CHEAP).__repr__()  # fmt: skip
    with pytest.raises(SamkitError, match="known cadences: .*cheap"):
        cadence_mod.parse_cadence("cheep")
    committed = ROOT / "docs" / "report" / "cheap"
    if not (committed / "suite.json").is_file():
        pytest.skip("no committed cheap protocol")
    record = suites.read_record(committed)
    best = tuning.pick_outcomes(committed, record["picks"])[cheap.PICK]["best"]
    spec = next(c[2] for c in record["picks"][0]["candidates"] if c[1] == best)
    assert spec == f"sam:cadence={cadence_mod.CHEAP}"


def test_the_command_line_lists_the_protocol_and_refuses_two_suites(capsys):
    from samkit.cli import main

    assert main(["reproduce", "--suite", "cheap", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(s.id in listed for s in cheap.SETTINGS) and "looksam-a0.2" in listed
    assert sum(s.held_out for s in cheap.SETTINGS) >= 4 and len(cheap.SETTINGS) >= 8
    assert main(["reproduce", "--quick", "--suite", "cheap", "--list"]) == 2
    assert "error: --quick and --suite cheap ask for two suites" in capsys.readouterr().err
    assert main(["reproduce", "--suite", "cheap", "--claims", "demo", "--list"]) == 2
    assert "error: unknown claim(s) demo" in capsys.readouterr().err
    assert main(["reproduce", "--suite", "cheap", "--claims", "n40-w32-drift", "--list"]) == 0
    listed = capsys.readouterr().out  # one claim: its study, and the pick's studies it needs
    assert "studies: n20-w32" in listed and "n40-w32 (compare" in listed and "n0-w32 (" not in listed


def test_samkit_report_names_the_file_a_suite_folder_reads_from(tmp_path, capsys):
    from samkit.cli import main

    _suite_folder(tmp_path)
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"report: {tmp_path / 'verdicts.md'}")


def test_the_cheap_suite_is_named_in_one_place():
    named = [f"{p.relative_to(ROOT)}:{i}" for d in ("samkit/study", "samkit/cli")
             for p in sorted((ROOT / d).rglob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1) if '"cheap"' in line]  # fmt: skip
    assert len(named) == 1 and named[0].startswith("samkit/study/suites.py:"), named


def test_a_suite_record_from_before_picks_is_continued(tmp_path):
    from samkit.study.records import SUITE, open_record

    old = {"kind": "reproduce", "suite": "cheap", "claims": [], "studies": [], "settings": [],
           "sessions": [{"elapsed": 1.0}]}  # fmt: skip
    run_files.write_json(tmp_path / SUITE, old)
    s = cheap.suite()
    new = suites.record_of("cheap", list(s.claims), list(s.studies), list(s.picks))
    record = open_record(tmp_path, SUITE, new, merge={"claims": "id", "studies": "id",
                         "picks": "id"}, check=lambda old: None, what="suite")  # fmt: skip
    assert [p["id"] for p in record["picks"]] == [cheap.PICK]  # the old record had no picks
    assert record["sessions"] == old["sessions"] and "settings" not in record
    assert run_files.read_json(tmp_path / SUITE) == json.loads(json.dumps(record))  # migrated
