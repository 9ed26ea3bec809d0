"""What ``samkit dln`` shows of a grid (:mod:`samkit.theory.figures`) says what it shows."""

from __future__ import annotations

from samkit.theory import figures as dln_figures


def _payload():
    def method(rhos, test, l1):  # final values, and two records (steps 0 and 10) per rho
        return {"rho": rhos, "test_loss": test, "l1": l1, "alpha_eff_mean": [0.1] * len(rhos),
                "trajectory": {"steps": [0, 10], "test_loss": [[0.5] * len(rhos), test],
                               "l1": [[0.0] * len(rhos), l1], "dist": [[1.0] * len(rhos)] * 2}}  # fmt: skip

    run = {"seed": 0, "alpha": 0.1, "lr": 0.05, "methods": {
        "gd": method([0.0], [0.01], [1.7]),
        "nsam": method([0.1, 0.3, 1.0], [0.009, 0.008, 0.005], [1.7, 1.7, 1.7]),
        "1sam": method([0.1, 0.3, 1.0, 3.0], [0.003, None, 0.5, 0.5], [1.6, None, 1e-8, 0.0]),
    }}  # fmt: skip (None: diverged, as results.json holds it)
    return {"settings": {"steps": 10}, "runs": [run, {**run, "alpha": 0.2}]}


def test_dln_figures_say_what_they_show(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(dln_figures._atomic, "save_figure", lambda fig, path, **kw: figures.append(fig))
    dln_figures.plot(_payload(), tmp_path)
    by_rho, curves, l1 = figures
    title = by_rho._suptitle.get_text()
    assert "α = 0.1" in title and "lr = 0.05" in title and "first of 2" in title
    notes = [t for ax in by_rho.axes for t in ax.texts]
    assert [t.get_text() for t in notes] == ["collapsed to β = 0"]
    assert notes[0].xy == (1.0, 0.0)  # the first rho that collapses (||beta||_1 ~ 1e-8, not 0)
    legend = [t.get_text() for t in by_rho.axes[0].get_legend().get_texts()]
    assert "1-SAM diverged" in legend  # rho = 0.3 diverged: marked, not a silent gap
    for fig in (curves, l1):
        ax_title = fig.axes[0].get_title()
        assert "ρ = 0.1" in ax_title and "final test loss is lowest" in ax_title
        labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert labels == ["GD", "n-SAM (ρ = 0.1)", "1-SAM (ρ = 0.1)"]


def test_final_values_only_draw_one_figure_and_the_table_marks_what_is_missing(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(dln_figures._atomic, "save_figure", lambda fig, path, **kw: figures.append(fig))
    payload = _payload()
    for run in payload["runs"]:
        for res in run["methods"].values():
            res.pop("trajectory", None)  # as the dln study of a suite records them (runs share them)
    dln_figures.plot(payload, tmp_path)
    assert len(figures) == 1  # no curves to draw
    table = dln_figures.summary_table(payload)
    assert "| 1-SAM | 0.3 | nan | nan | – | 0.1 |" in table  # diverged; no distance recorded
    assert "| GD | 0 | 0.01 | 1.7 | – | 0.1 |" in table
