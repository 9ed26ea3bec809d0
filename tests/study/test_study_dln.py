"""The diagonal-network study of the suite runs the one DLN runner: what ``samkit dln`` writes, the
study reads, and the two agree on the numbers."""

from __future__ import annotations

import math

import pytest

from samkit import cli
from samkit.errors import SamkitError
from samkit.study import dln

SETUP = {"n": 6, "d": 8, "k": 2, "alpha": 0.1, "lr": 0.05, "steps": 50, "rho": [0.1, 0.3]}


def test_the_study_and_samkit_dln_write_the_same_results(tmp_path, capsys):
    study = tmp_path / "study"
    dln.run(study, SETUP, [0, 4], quiet=True)
    table = dln.write_report(study, plots=False)
    assert "| 1-SAM | 0.3 |" in table and "2 seeds (0..4)" in (study / "report.md").read_text()
    out = tmp_path / "cli"
    assert cli.main(["dln", "--n", "6", "--d", "8", "--k", "2", "--n-test", "10000", "--steps",
                     "50", "--every", "25", "--rho", "0.1", "0.3", "--seed", "4", "--no-plots",
                     "--quiet", "--out", str(out)]) == 0  # fmt: skip
    capsys.readouterr()
    arm = {"method": "1sam", "rho": 0.3}
    desc, from_cli = dln.arm_values(out, arm, "log10_test_loss")
    _, from_study = dln.arm_values(study, arm, "log10_test_loss")
    assert desc == "1-SAM rho=0.3" and from_cli == {4: from_study[4]} and math.isfinite(from_cli[4])
    _, gd = dln.arm_values(study, {"method": "gd"}, "l1")
    assert set(gd) == {0, 4}


def test_the_study_refuses_a_grid_of_several_settings_and_an_unknown_rho(tmp_path):
    dln.run(tmp_path, {**SETUP, "alpha": [0.1, 0.2]}, [0], quiet=True)
    with pytest.raises(SamkitError, match="one alpha and one lr"):
        dln.write_report(tmp_path, plots=False)
    one = tmp_path / "one"
    dln.run(one, SETUP, [0], quiet=True)
    with pytest.raises(SamkitError, match="rho 0.2 was not run"):
        dln.arm_values(one, {"method": "nsam", "rho": 0.2}, "l1")
