"""Two studies on one folder: the second waits for each run the first is training (and says so),
never trains a run twice, and both end with the results one study would have."""

from __future__ import annotations

import csv
import json

import pytest
from harness_fixtures import TrainingProcess

from samkit import cli

# The first run is long (100 short epochs: the second study surely meets it in training), the
# second short.
EPOCHS = {"sgd-seed0": 100, "sam-seed0": 2}
STUDY = [
    "compare", "--dataset", "mnist1d", "--model", "mlp", "--model-option", "width=16",
    "--epochs", "2", "--batch-size", "32", "--max-steps-per-epoch", "1", "--train-subset", "256",
    "--test-subset", "128", "--methods", "sgd:epochs=100", "sam", "--seeds", "0", "--no-flatness",
    "--quiet",
]  # fmt: skip


def test_a_second_study_waits_for_the_runs_the_first_trains(harness, tmp_path, capsys, monkeypatch):
    out = tmp_path / "study"
    first = TrainingProcess([*STUDY, "--out", str(out)], harness, out / "sgd-seed0")
    try:
        first.wait_for("checkpoint.pt")  # the first study is inside its first run
        monkeypatch.setenv("SAMKIT_CACHE", str(harness))
        assert cli.main([*STUDY, "--out", str(out)]) == 0  # the case: this one failed
        err = capsys.readouterr().err
        assert "waiting for sgd-seed0" in err and f"process {first.pid}" in err, err
        status, _, first_err = first.finish()
    finally:
        first.kill()
    assert status == 0, first_err
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["label"], r["status"]) for r in rows] == [("sgd", "complete"), ("sam", "complete")]
    for run, epochs in EPOCHS.items():
        env = json.loads((out / run / "env.json").read_text())
        assert "resumes" not in env  # trained by one session, once: reused by the other
        assert len((out / run / "metrics.jsonl").read_text().splitlines()) == epochs
    sessions = json.loads((out / "study.json").read_text())["sessions"]
    assert len(sessions) == 2  # both studies' time is on record


@pytest.mark.slow
def test_two_studies_with_jobs_train_each_run_once(harness, tmp_path):
    """Both studies with --jobs 2 on one folder, started together: every run trained once."""
    out = tmp_path / "study"
    args = [*STUDY, "--seeds", "0", "1", "--jobs", "2", "--out", str(out)]  # the last --seeds counts
    studies = [TrainingProcess(args, harness, out) for _ in range(2)]
    try:
        results = [s.finish(timeout=600) for s in studies]
    finally:
        for s in studies:
            s.kill()
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"complete"}
    for run in out.iterdir():
        if (run / "env.json").is_file():
            assert "resumes" not in json.loads((run / "env.json").read_text()), run
    assert len(json.loads((out / "study.json").read_text())["sessions"]) == 2
