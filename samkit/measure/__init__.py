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

__all__ = [
    "DensityResult",
    "EigenResult",
    "HessianOperator",
    "TraceResult",
    "hessian_density",
    "hessian_eigenvalues",
    "hessian_trace",
    "hessian_vector_product",
    "plot_density",
]
