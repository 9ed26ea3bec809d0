"""samkit.theory: solvable models that explain SAM (diagonal linear networks).

:mod:`samkit.theory.dln` is the model and its three training methods; :mod:`samkit.theory.grid`
the one runner of its experiments (``samkit dln`` and the ``dln`` study of ``samkit reproduce``)
and their ``results.json``; :mod:`samkit.theory.figures` what ``samkit dln`` shows of them.
"""

from samkit.theory.dln import (
    LABELS,
    METHODS,
    Problem,
    Trajectory,
    make_problem,
    predicted_interpolator,
    step,
    train,
)
from samkit.theory.grid import GridSettings, read_grid, rho_grid, run_grid

__all__ = [
    "LABELS",
    "METHODS",
    "GridSettings",
    "Problem",
    "Trajectory",
    "make_problem",
    "predicted_interpolator",
    "read_grid",
    "rho_grid",
    "run_grid",
    "step",
    "train",
]
