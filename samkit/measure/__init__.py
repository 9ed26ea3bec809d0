"""samkit.measure: flatness and sharpness of a trained model, leaving the model untouched.

Hessian-vector products and an operator (:class:`HessianOperator`), top eigenvalues
(:func:`hessian_eigenvalues`), trace (:func:`hessian_trace`), spectral density
(:func:`hessian_density`), worst-case and average m-sharpness (:func:`sharpness`) and
filter-normalized loss landscapes (:func:`landscape_1d`, :func:`landscape_2d`).
"""

from samkit.measure.hessian import (
    DensityResult,
    EigenResult,
    TraceResult,
    hessian_density,
    hessian_eigenvalues,
    hessian_trace,
    plot_density,
)
from samkit.measure.hvp import HessianOperator, hessian_vector_product
from samkit.measure.landscape import (
    Landscape1D,
    Landscape2D,
    direction_between,
    landscape_1d,
    landscape_2d,
    plot_landscape_1d,
    plot_landscape_2d,
    random_direction,
)
from samkit.measure.sharpness import SharpnessResult, sharpness

__all__ = [
    "DensityResult",
    "EigenResult",
    "HessianOperator",
    "Landscape1D",
    "Landscape2D",
    "SharpnessResult",
    "TraceResult",
    "hessian_density",
    "hessian_eigenvalues",
    "hessian_trace",
    "hessian_vector_product",
    "direction_between",
    "landscape_1d",
    "landscape_2d",
    "plot_density",
    "plot_landscape_1d",
    "plot_landscape_2d",
    "random_direction",
    "sharpness",
]
