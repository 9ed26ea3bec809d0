"""samkit.theory: solvable models that explain SAM (diagonal linear networks)."""

from samkit.theory.dln import METHODS, Problem, Trajectory, make_problem, predicted_interpolator, step, train

__all__ = ["METHODS", "Problem", "Trajectory", "make_problem", "predicted_interpolator", "step", "train"]
