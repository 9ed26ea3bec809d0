"""The one runner of diagonal-network grids: its results are the model's, in one file format."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from samkit.errors import SamkitError
from samkit.theory import dln, grid
from samkit.theory.grid import GridSettings, read_grid, run_grid

SMALL = dict(n=6, d=8, k=2, n_test=50, steps=60, rho=[0.05, 0.5])


def test_a_cell_holds_the_final_values_of_the_model_itself():
    settings = GridSettings(**SMALL, every=20)
    cell = grid.run_cell(settings, seed=3, alpha=0.2, lr=0.05)
    problem = dln.make_problem(6, 8, 2, 0.0, 50, 3)
    for method in dln.METHODS:
        rho = np.zeros(1) if method == "gd" else np.array([0.05, 0.5])
        traj = dln.train(problem, method, rho=rho, lr=0.05, alpha=0.2, steps=60, every=20)
        res = cell["methods"][method]
        assert res["rho"] == rho.tolist() and res["diverged"] == traj.diverged.tolist()
        for key in grid.FINAL:
            assert res[key] == traj.__dict__[key][-1].tolist(), (method, key)
        assert res["trajectory"]["steps"] == [0, 20, 40, 60]
        assert res["trajectory"]["dist"] == traj.dist.tolist()
        beta = dln.predicted_interpolator(problem.X, problem.y, traj.alpha_eff[0])
        assert res["predicted_l1"][0] == pytest.approx(np.abs(beta).sum(), rel=1e-12)
    # final values only: the same numbers, no curves
    plain = grid.run_cell(GridSettings(**SMALL), seed=3, alpha=0.2, lr=0.05)
    for method, res in plain["methods"].items():
        assert set(res) == {"rho", *grid.FINAL, "diverged"}
        assert all(res[k] == cell["methods"][method][k] for k in res)


def test_diverged_values_are_null_and_the_file_is_plain_json(tmp_path):
    settings = GridSettings(n=6, d=8, k=2, n_test=50, steps=200, rho=[0.1, 1e4], lr=[0.5])
    payload = run_grid(tmp_path, settings, seeds=[0], quiet=True)
    res = payload["runs"][0]["methods"]["1sam"]
    assert res["diverged"] == [False, True]
    assert res["test_loss"][1] is None and math.isfinite(res["test_loss"][0])
    text = (tmp_path / "results.json").read_text()
    assert "NaN" not in text and json.loads(text) == read_grid(tmp_path) == payload


def test_reuse_keeps_the_runs_of_the_same_settings_and_computes_only_the_new(tmp_path, monkeypatch):
    calls = []
    real = grid.run_cell

    def counted(settings, seed, alpha, lr):
        calls.append((seed, alpha, lr))
        return real(settings, seed, alpha, lr)

    monkeypatch.setattr(grid, "run_cell", counted)
    settings = GridSettings(**SMALL, alpha=[0.1, 0.2])
    first = run_grid(tmp_path, settings, seeds=[0], quiet=True)
    assert calls == [(0, 0.1, 0.05), (0, 0.2, 0.05)]
    again = run_grid(tmp_path, settings, seeds=[0, 1], reuse=True, quiet=True)
    assert calls[2:] == [(1, 0.1, 0.05), (1, 0.2, 0.05)]  # seed 0 is kept, not recomputed
    assert again["runs"][:2] == first["runs"] and again["seconds"] >= first["seconds"]
    other = run_grid(tmp_path, GridSettings(**{**SMALL, "steps": 30}), seeds=[0], reuse=True,
                     quiet=True)  # fmt: skip
    assert len(calls) == 5 and [r["seed"] for r in other["runs"]] == [0]  # other settings: anew
    replaced = run_grid(tmp_path, settings, seeds=[1], quiet=True)  # no reuse: the file is replaced
    assert [r["seed"] for r in replaced["runs"]] == [1, 1] and read_grid(tmp_path) == replaced


def test_settings_are_checked_and_stored_as_lists():
    s = GridSettings(alpha=0.3, lr=(0.01, 0.02), rho=np.array([0.1]))
    assert s.to_dict()["alpha"] == [0.3] and s.to_dict()["lr"] == [0.01, 0.02]
    assert s.to_dict()["rho"] == [0.1] and GridSettings().rho == tuple(grid.rho_grid())
    assert GridSettings().rho == tuple(np.logspace(-3, 0, 13))
    with pytest.raises(SamkitError, match="every must be >= 1"):
        GridSettings(every=0)
    with pytest.raises(SamkitError, match="unknown method.*sgd"):
        GridSettings(methods=("gd", "sgd"))


def test_reading_what_is_not_a_grid_is_a_clear_error(tmp_path):
    with pytest.raises(SamkitError, match="holds no results.json"):
        read_grid(tmp_path)
    (tmp_path / "results.json").write_text('{"seeds": {}}')
    with pytest.raises(SamkitError, match="not the results of a diagonal-network grid"):
        read_grid(tmp_path)
