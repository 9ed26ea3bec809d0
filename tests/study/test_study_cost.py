"""The cost-and-benefit section of a compare report (``--reference``), on a fabricated study."""

from __future__ import annotations

import pytest
from committed import line_agrees
from study_helpers import fake_compare

from samkit.study import write_report
from samkit.train import run_files


def test_cost_benefit_table_and_figure(tmp_path):
    accs = {"sgd": [0.80, 0.82, 0.81], "sam": [0.88, 0.89, 0.90], "every-4": [0.87, 0.87, 0.89]}
    passes = {"sgd": 100, "sam": 200, "every-4": 125}
    fake_compare(tmp_path, {k: [{"test_acc": a, "passes": passes[k]} for a in v] for k, v in accs.items()})
    study = run_files.read_json(tmp_path / "study.json")
    run_files.write_json(tmp_path / "study.json", {**study, "baseline": "sgd", "reference": "sam"})
    write_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "## Cost and benefit (reference: `sam`)" in text and (tmp_path / "gain_vs_cost.png").is_file()
    row = next(line for line in text.splitlines() if line.startswith("| `every-4` | 1.25x"))
    gain = (0.07 + 0.05 + 0.08) / 3
    share = gain / ((0.08 + 0.07 + 0.09) / 3)
    assert f"{gain:+.4f}" in row and f"{share:.0%}" in row  # 83% of SAM's gain at 1.25x
    assert f"{gain / 0.25:+.4f}" in row  # gain per extra pass
    sam_row = next(line for line in text.splitlines() if line.startswith("| `sam` | 2.00x"))
    assert sam_row.count("–") == 2  # no share of itself


def test_a_reference_that_is_not_a_method_is_refused(tmp_path):
    from samkit.errors import SamkitError
    from samkit.study import compare
    from samkit.train import TrainConfig

    with pytest.raises(SamkitError, match="--reference 'sam' is not one of the methods' labels"):
        compare(TrainConfig(), methods=["sgd"], reference="sam", out=tmp_path)


@pytest.mark.parametrize("name", ["cheap-sam", "cheap-sam-confirm"])
def test_committed_cheap_sam_studies_regenerate_from_their_run_files(tmp_path, name):
    import shutil
    from pathlib import Path

    committed = Path(__file__).resolve().parents[2] / "docs" / "report" / name
    copy = tmp_path / name
    shutil.copytree(committed, copy)
    write_report(copy, plots=False)
    assert (copy / "results.csv").read_text() == (committed / "results.csv").read_text()  # data
    section = lambda text: text.split("## Cost and benefit")[1].split("passes / baseline:")[0]  # noqa: E731
    got, want = (section((d / "report.md").read_text()).splitlines() for d in (copy, committed))
    assert len(got) == len(want) and all(map(line_agrees, got, want))  # up to the last digit


def test_a_time_ratio_above_the_pass_ratio_is_explained_from_the_runs():
    from samkit.study.stats import summarize
    from samkit.study.study_report import time_notes

    def group(time, passes, **row):
        return [{"train_time": time, "passes": passes, "_config": row.pop("config", {}), **row}]

    groups = {
        "sgd": group(1.0, 100),
        "msam": group(3.0, 200, shards=4, m=32, execution_used="loop"),  # 3.0x against 2.0x
        "frac": group(1.6, 125, config={"cadence": "always:ascent_fraction=0.25"}),
        "every": group(1.3, 125),  # 1.30x against 1.25x: within 10%, no note
        "odd": group(2.5, 200),  # 2.5x against 2.0x and nothing recorded to explain it
    }
    stats = {k: {key: summarize([r[key] for r in rows]) for key in ("train_time", "passes")}
             for k, rows in groups.items()}  # fmt: skip
    notes = time_notes(groups, stats, "sgd", loaded=False)
    assert [n.split("`")[1] for n in notes[1:]] == ["msam", "frac", "odd"]
    assert "3.00x against passes / `sgd` 2.00x" in notes[1] and "4 shards of 32" in notes[1]
    assert "fraction of the batch" in notes[2] and "not explained" in notes[3]
    assert "loaded" in time_notes(groups, stats, "sgd", loaded=True)[1]
    assert time_notes({"sgd": groups["sgd"]}, stats, "sgd", loaded=False) == []
