"""The claims suite: verdict logic (on fabricated run folders), the suite's plumbing on tiny
studies, and the committed verdict tables regenerated from their run files."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
from committed import assert_csv_agrees, assert_text_contains
from harness_fixtures import tiny_config
from study_helpers import accs, fake_compare

from samkit.errors import SamkitError
from samkit.study import claims as claims_mod
from samkit.study import reproduce as reproduce_mod
from samkit.study import suites, write_report
from samkit.study.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, verdict
from samkit.study.papers import CLAIMS, studies
from samkit.study.stats import summarize
from samkit.study.suite_spec import Claim, StudySpec, Suite, select_claims
from samkit.train import run_files, save_config

ROOT = Path(__file__).resolve().parents[2]


def test_verdict_from_the_interval_of_the_gap():
    up = summarize([0.02, 0.03, 0.025])  # interval [0.0126, 0.0374]
    assert verdict(up, +1, 0.005) == REPRODUCED
    assert verdict(up, -1, 0.005) == NOT_REPRODUCED  # the claim predicted a decrease
    wide = summarize([0.05, -0.04, 0.01])
    assert verdict(wide, +1, 0.005) == INCONCLUSIVE and verdict(wide, -1) == INCONCLUSIVE
    flat = summarize([0.001, -0.001, 0.0005, 0.0])  # a tight interval around 0
    assert flat.ci_high < 0.005
    assert verdict(flat, +1, 0.005) == NOT_REPRODUCED  # rules out a gain of half a point
    assert verdict(flat, +1, 0.0) == INCONCLUSIVE  # with no margin, 0 itself is not ruled out
    assert verdict(summarize([0.3]), +1) == INCONCLUSIVE  # one seed: no interval
    assert verdict(summarize([]), +1) == INCONCLUSIVE


def test_suite_verdicts_from_fabricated_run_folders(tmp_path):
    suite = tmp_path / "suite"
    fake_compare(
        suite / "s",
        {
            "sgd": accs(0.70, 0.72, 0.71),
            "sam": accs(0.75, 0.78, 0.75),  # +0.05, +0.06, +0.04: reproduced
            "fsam": accs(0.73, 0.75, 0.725),  # vs sam: -0.02, -0.03, -0.025: not reproduced
            "msam": accs(0.80, 0.74, 0.76),  # vs sam: +0.05, -0.04, +0.01: inconclusive
        },
    )
    for label, lam in (("sam", (50.0, 60.0, 55.0)), ("msam", (40.0, 45.0, 41.0))):
        for seed, v in enumerate(lam):
            run_files.write_json(suite / "s" / f"{label}-seed{seed}" / "flatness.json",
                                 {"lambda_max": v})  # fmt: skip
    fake = [
        Claim("c-rep", "SAM beats SGD", "paper A", "s", "test_acc",
              {"label": "sam"}, {"label": "sgd"}, +1, 0.005),
        Claim("c-not", "F-SAM beats SAM", "paper B", "s", "test_acc",
              {"label": "fsam"}, {"label": "sam"}, +1, 0.005),
        Claim("c-inc", "mSAM beats SAM", "paper C", "s", "test_acc",
              {"label": "msam"}, {"label": "sam"}, +1, 0.005),
        Claim("c-flat", "mSAM is flatter", "paper C", "s", "lambda_max",
              {"label": "msam"}, {"label": "sam"}, -1, 0.0),
    ]  # fmt: skip
    spec = StudySpec("s", "compare", {}, "fabricated")
    run_files.write_json(
        suite / "suite.json",
        {"kind": "reproduce", "suite": "quick", "claims": [asdict(c) for c in fake],
         "studies": [asdict(spec)], "sessions": [{"elapsed": 12.0, "command": ["samkit"]}]},
    )  # fmt: skip
    table = write_report(suite)  # a suite folder: the study's report, then the verdicts
    rows = {r["claim"]: r for r in csv.DictReader(open(suite / "verdicts.csv"))}
    assert {k: r["verdict"] for k, r in rows.items()} == {
        "c-rep": REPRODUCED, "c-not": NOT_REPRODUCED, "c-inc": INCONCLUSIVE, "c-flat": REPRODUCED,
    }  # fmt: skip
    assert float(rows["c-rep"]["mean_gap"]) == pytest.approx(0.05)
    assert float(rows["c-flat"]["mean_gap"]) == pytest.approx(-13.0)
    text = (suite / "verdicts.md").read_text()
    assert table in text and "| 0 | 0.7500 | 0.7000 | +0.0500 |" in text  # per-seed rows
    assert "1 not reproduced" in text and (suite / "s" / "report.md").is_file()


def test_sweep_arm_takes_the_best_rho_of_its_group_and_dln_arms(tmp_path):
    folder = tmp_path / "sw"
    runs = []
    accs = {(8, 0.05): (0.80, 0.82), (8, 0.1): (0.70, 0.71), (64, 0.05): (0.75, 0.74),
            (64, 0.1): (0.78, 0.77)}  # fmt: skip
    for (m, rho), values in accs.items():
        name = f"shard_size={m}_rho={rho}"
        for seed, acc in enumerate(values):
            d = folder / f"{name}-seed{seed}"
            save_config(tiny_config(optimizer="sam", shard_size=m if m < 32 else 32, rho=rho,
                                    seed=seed), d / "config.yaml")  # fmt: skip
            run_files.write_json(d / "summary.json", {"status": "complete", "test_acc": acc})
            runs.append({"dir": d.name, "label": name, "seed": seed,
                         "cell": {"shard_size": m, "rho": rho}})  # fmt: skip
    run_files.write_json(folder / "study.json", {"kind": "sweep", "runs": runs, "seeds": [0, 1],
                                                 "base_config": {}, "grid": {}})  # fmt: skip
    arm = {"cell": {"shard_size": 8}, "best_of": "rho"}
    assert claims_mod.arm_values(folder, "sweep", arm, "test_acc") == (
        "shard_size=8_rho=0.05", {0: 0.80, 1: 0.82})
    label, vals = claims_mod.arm_values(folder, "sweep", {"cell": {"shard_size": 64},
                                                          "best_of": "rho"}, "test_acc")
    assert label == "shard_size=64_rho=0.1" and vals == {0: 0.78, 1: 0.77}
    with pytest.raises(SamkitError, match="2 cells match"):
        claims_mod.arm_values(folder, "sweep", {"cell": {"shard_size": 8}}, "test_acc")

    dln = tmp_path / "dln"
    runs = [{"seed": s, "alpha": 0.1, "lr": 0.05, "methods": {
        "gd": {"rho": [0.0], "test_loss": [1e-2], "l1": [2.0], "diverged": [False]},
        "1sam": {"rho": [0.1, 1.0], "test_loss": [1e-3, None], "l1": [1.5, 0.0],
                 "diverged": [False, True]}}} for s in (1, 0)]  # fmt: skip
    dln.mkdir()
    run_files.write_json(dln / "results.json", {"settings": {"alpha": [0.1], "lr": [0.05]},
                                                "seconds": 1.0, "runs": runs})  # fmt: skip
    desc, vals = claims_mod.arm_values(dln, "dln", {"method": "1sam", "rho": 0.1},
                                       "log10_test_loss")  # fmt: skip
    assert desc == "1-SAM rho=0.1" and vals == {0: pytest.approx(-3.0), 1: pytest.approx(-3.0)}
    assert claims_mod.arm_values(dln, "dln", {"method": "1sam", "rho": 1.0}, "l1")[1] == {}


def test_claims_are_data_with_known_studies_and_selection_by_tag():
    for quick in (True, False):
        ids = {s.id for s in studies(quick=quick)}
        assert all(c.study in ids for c in CLAIMS)
        for spec in studies(quick=quick):  # every source runs before the study that starts from it
            order = [s.id for s in studies(quick=quick)]
            assert all(order.index(dep) < order.index(spec.id) for dep in spec.needs())
    demo = select_claims(["demo"], CLAIMS)
    assert {c.study for c in demo} == {"noise-40", "finetune-noisy", "dln"}
    assert [c.id for c in select_claims(["fsam-acc"], CLAIMS)] == ["fsam-acc"]
    with pytest.raises(SamkitError, match="unknown claim.*choose claim ids or tags"):
        select_claims(["nope"], CLAIMS)
    _, specs, _ = suites.plan("quick", ["finetune-noisy"])
    assert [s.id for s in specs] == ["noise-40", "finetune-noisy"]  # the source comes along


def test_reproduce_runs_sources_first_and_reuses_finished_runs(harness, tmp_path, monkeypatch):
    tiny = {k: v for k, v in tiny_config().to_dict().items() if v is not None}
    fake_studies = [
        StudySpec("src", "compare", {**tiny, "label_noise": 0.4, "epochs": 1}, "source",
                  methods=("sgd",), seeds=(0, 1)),
        StudySpec("ft", "compare", {**tiny, "label_noise": 0.4, "epochs": 1,
                                    "init_from": "{suite}/src/sgd-seed{seed}"},
                  "fine-tune", methods=("sgd", "sam"), seeds=(0, 1)),
        StudySpec("dln", "dln", {"n": 10, "d": 15, "k": 2, "alpha": 0.1, "lr": 0.05,
                                 "steps": 50, "rho": [0.1]}, "theory", seeds=(0, 1)),
    ]  # fmt: skip
    fake_claims = (
        Claim("ft", "SAM fine-tuning helps", "A&F", "ft", "test_acc", {"label": "sam"},
              {"label": "sgd"}, +1, 0.005, ("demo",)),
        Claim("d", "1-SAM sparser", "A&F", "dln", "l1", {"method": "1sam", "rho": 0.1},
              {"method": "gd"}, -1),
    )  # fmt: skip
    monkeypatch.setitem(suites.SUITES, "quick", lambda: Suite(fake_claims, tuple(fake_studies)))
    out = tmp_path / "suite"
    table = reproduce_mod.reproduce(out, claim_ids=["demo"], quiet=True)
    assert "| `ft` | MNIST-1D | **" in table and not (out / "dln").exists()  # only what it needs
    cfg = json.loads(json.dumps(run_files.read_json(out / "ft" / "study.json")))
    sources = [r["dir"] for r in cfg["runs"]]
    assert sources == ["sgd-seed0", "sgd-seed1", "sam-seed0", "sam-seed1"]
    from samkit.train import load_config

    ft = load_config(out / "ft" / "sam-seed1" / "config.yaml")
    assert ft.init_from == str(out / "src" / "sgd-seed1")  # the same seed's source
    before = (out / "ft" / "sam-seed0" / "checkpoint.pt").read_bytes()
    for source in (out / "src").glob("*/checkpoint.pt"):
        source.unlink()  # as in a committed suite: the sources' weights are not kept
    reproduce_mod.reproduce(out, quiet=True)  # all claims now: adds the dln study only
    assert (out / "ft" / "sam-seed0" / "checkpoint.pt").read_bytes() == before  # reused
    record = run_files.read_json(out / "suite.json")
    assert {c["id"] for c in record["claims"]} == {"ft", "d"} and len(record["sessions"]) == 2
    rows = list(csv.DictReader(open(out / "verdicts.csv")))
    assert [r["claim"] for r in rows] == ["ft", "d"] and rows[1]["n"] == "2"
    with pytest.raises(SamkitError, match="holds the 'quick' suite"):
        reproduce_mod.reproduce(out, suite="full", quiet=True)


@pytest.mark.parametrize("suite", ["quick", "full"])
def test_committed_verdict_tables_regenerate_from_their_run_files(tmp_path, suite):
    committed = ROOT / "docs" / "report" / suite
    if not (committed / "suite.json").is_file():
        pytest.skip(f"no committed {suite} suite")
    copy = tmp_path / suite
    shutil.copytree(committed, copy)
    table = write_report(copy, plots=False)  # the numbers; the figures are drawn from the same
    # intervals go through the platform's libm: equal up to rounding on another CPU (committed.py)
    assert_csv_agrees(copy / "verdicts.csv", committed / "verdicts.csv")
    assert_text_contains(table, (committed / "verdicts.md").read_text())
    from samkit.study import dln

    dln_table = dln.write_report(copy / "dln", plots=False)  # the theory study's, from its results.json
    assert_text_contains(dln_table, (committed / "dln" / "report.md").read_text())
    for study in committed.iterdir():
        if (study / "results.csv").is_file():  # copied from the run files: equal to the byte
            assert (copy / study.name / "results.csv").read_text() == (
                study / "results.csv"
            ).read_text()


def test_ctrl_c_in_a_suite_says_how_to_finish_the_suite(harness, tmp_path, monkeypatch):
    import os
    import signal

    import samkit.train.loop as loop
    from samkit.train import RunInterrupted

    real_step, calls = loop.train_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kwargs)

    tiny = {k: v for k, v in tiny_config().to_dict().items() if v is not None}
    spec = StudySpec("s", "compare", {**tiny, "epochs": 1}, "tiny", methods=("sgd",), seeds=(0,))
    claim = Claim("c", "x", "y", "s", "test_acc", {"label": "sgd"}, {"label": "sgd"}, +1)
    monkeypatch.setitem(suites.SUITES, "quick", lambda: Suite((claim,), (spec,)))
    monkeypatch.setattr(loop, "train_step", step)
    out = tmp_path / "suite"
    with pytest.raises(RunInterrupted, match=f"study s.*samkit reproduce command again with --out {out}"):
        reproduce_mod.reproduce(out, quiet=True)
    assert len(run_files.read_json(out / "suite.json")["sessions"]) == 1  # its time is kept


def test_reproduce_refuses_a_folder_that_is_not_a_suite_and_touches_nothing(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SamkitError, match=r"not a claims-suite folder \(no suite.json\)"):
        reproduce_mod.reproduce(tmp_path, claim_ids=["dln"], quiet=True)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_tuned_study_chooses_rho_on_its_tuning_seeds_and_judges_on_the_others(
    harness, tmp_path, monkeypatch
):
    tiny = {k: v for k, v in tiny_config().to_dict().items() if v is not None}
    rhos = (0.01, 0.5)
    fake_studies = [
        StudySpec("src", "compare", {**tiny, "epochs": 2}, "source", methods=("sgd", "sam"),
                  seeds=(0, 1), tune=(("sam", rhos),), tune_seeds=(7, 8)),
        StudySpec("ft", "compare", {**tiny, "epochs": 1, "init_from": "{suite}/src/sgd-seed{seed}"},
                  "fine-tune", methods=("sgd", "sam"), seeds=(0, 1), tune_from="src"),
    ]  # fmt: skip
    fake_claims = (
        Claim("c", "SAM helps", "A", "src", "test_acc", {"label": "sam"}, {"label": "sgd"}, +1),
        Claim("f", "SAM fine-tuning helps", "A", "ft", "test_acc", {"label": "sam"},
              {"label": "sgd"}, +1),
    )  # fmt: skip
    monkeypatch.setitem(suites.SUITES, "quick", lambda: Suite(fake_claims, tuple(fake_studies)))
    out = tmp_path / "suite"
    _, specs, _ = suites.plan("quick", ["f"])
    assert [s.id for s in specs] == ["src", "ft"]  # the study whose rho it takes runs first
    reproduce_mod.reproduce(out, quiet=True)
    tune = run_files.read_json(out / "src-tune" / "study.json")
    assert sorted({r["seed"] for r in tune["runs"]}) == [7, 8]  # only the tuning seeds
    assert sorted({r["label"] for r in tune["runs"]}) == ["sam.rho=0.01", "sam.rho=0.5"]
    means = {}
    for rho in rhos:  # the choice, recomputed from the tuning runs' summaries
        accs = [run_files.read_json(out / "src-tune" / f"sam.rho={rho:g}-seed{s}" / "summary.json")
                ["test_acc"] for s in (7, 8)]  # fmt: skip
        means[rho] = sum(accs) / 2
    best = max(rhos, key=lambda r: (means[r], -rhos.index(r)))
    from samkit.train import load_config

    for study in ("src", "ft"):  # the verdict runs: the verdict seeds, at the chosen rho
        record = run_files.read_json(out / study / "study.json")
        assert sorted({r["seed"] for r in record["runs"]}) == [0, 1]
        assert load_config(out / study / "sam-seed1" / "config.yaml").rho == pytest.approx(best)
    text = (out / "verdicts.md").read_text()
    assert "## How rho was chosen" in text and f"sam rho {best:g}" in text
    assert f"**{best:g}: {means[best]:.4f}**" in text and "seeds 7, 8" in text
    assert "rho as chosen for [`src`]" in text  # the fine-tuning study says where its rho is from
    assert (out / "src-tune" / "report.md").is_file()


def test_tuning_choice_ties_and_seed_sets(tmp_path):
    from samkit.study import tuning

    with pytest.raises(SamkitError, match=r"tuning seeds \[1\] are also verdict seeds"):
        StudySpec("s", "compare", {}, "x", methods=("sam",), seeds=(0, 1),
                  tune=(("sam", (0.1,)),), tune_seeds=(1, 2))  # fmt: skip
    with pytest.raises(SamkitError, match="needs tune_seeds"):
        StudySpec("s", "compare", {}, "x", methods=("sam",), tune=(("sam", (0.1,)),))
    assert tuning.method_label("sam:shard_size=8,label=m8") == "m8"
    assert tuning.candidates(("sgd", "msam:shards=4"), {"msam": (0.05, 0.1)}) == [
        "msam:shards=4,rho=0.05,label=msam.rho=0.05", "msam:shards=4,rho=0.1,label=msam.rho=0.1"]
    with pytest.raises(SamkitError, match="not methods of the study"):
        tuning.candidates(("sgd",), {"sam": (0.1,)})
    fake_compare(tmp_path / "t", {  # 0.1 and 0.2 tie: the earlier candidate of the grid
        "sam.rho=0.05": accs(0.70, 0.72), "sam.rho=0.1": accs(0.74, 0.76),
        "sam.rho=0.2": accs(0.76, 0.74)}, seeds=(5, 6))  # fmt: skip
    chosen = tuning.choose(tmp_path / "t", {"sam": (0.05, 0.1, 0.2)})
    assert chosen["sam"]["rho"] == 0.1 and chosen["sam"]["seeds"] == [5, 6]
    assert chosen["sam"]["means"][0.05] == pytest.approx(0.71)
    assert tuning.tuned_methods(("sgd", "sam"), chosen) == ["sgd", "sam:rho=0.1"]


def test_a_claim_on_two_datasets_says_where_it_holds():
    from samkit.study.stats import summarize as s
    from samkit.study.suite_report import across_datasets

    def outcome(cid, family, dataset, v):
        return {"claim": {"id": cid, "family": family, "metric": "test_acc"}, "dataset": dataset,
                "verdict": v, "gap": s([0.01, 0.02])}  # fmt: skip

    lines = across_datasets([
        outcome("a", "", "mnist1d", REPRODUCED), outcome("digits-a", "a", "digits", REPRODUCED),
        outcome("b", "", "mnist1d", INCONCLUSIVE), outcome("digits-b", "b", "digits", REPRODUCED),
        outcome("c", "", "mnist1d", NOT_REPRODUCED), outcome("digits-c", "c", "digits", INCONCLUSIVE),
        outcome("d", "", "dln", REPRODUCED),  # tested once: no line
    ])  # fmt: skip
    assert [ln.split(" | ")[1] for ln in lines[2:]] == [
        "**reproduced on both**", "**reproduced on digits only**", "**reproduced on neither**"]
    assert len(lines) == 5


def test_an_unfinished_tuning_study_is_said_not_to_have_finished(tmp_path):
    from samkit.study.tuning_report import tuning_markdown

    fake_compare(tmp_path / "s-tune", {"sam.rho=0.1": accs(0.7, 0.7)}, seeds=(5, 6))
    spec = {"id": "s", "kind": "compare", "methods": ["sgd", "sam", "msam"], "seeds": [0, 1],
            "tune": [["sam", [0.1]], ["msam", [0.1]]], "tune_seeds": [5, 6]}  # fmt: skip
    lines = tuning_markdown(tmp_path, {"studies": [spec]})
    assert any("`s`**: its tuning has not finished" in ln for ln in lines)  # msam never ran
    spec["tune"] = [["sam", [0.1]]]
    assert any("sam rho 0.1 [**0.1: 0.7000**]" in ln for ln in tuning_markdown(
        tmp_path, {"studies": [spec]}))  # fmt: skip
