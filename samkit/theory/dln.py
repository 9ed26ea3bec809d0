r"""Diagonal linear networks: the implicit bias of GD, n-SAM and 1-SAM.

The setting of Andriushchenko & Flammarion, "Towards Understanding Sharpness-Aware Minimization"
(ICML 2022), sparse regression section. Data: ``n`` Gaussian inputs ``x_i ~ N(0, I_d)``, a
``k``-sparse, non-negative, unit-norm target ``theta*``, labels ``y = X theta* (+ noise)``. The
network is ``beta = u * v`` (elementwise), the loss

.. math::  L(u, v) = \frac{1}{2n} \lVert X (u \odot v) - y \rVert^2
           = \frac1n \sum_i \ell_i, \quad \ell_i = \tfrac12 (x_i^\top (u\odot v) - y_i)^2,

initialised at ``u = alpha * 1, v = 0``, trained with full-batch updates of step size ``lr``:

* **GD**: :math:`w \leftarrow w - \gamma \nabla L(w)` with ``w = (u, v)``.
* **n-SAM**: :math:`w \leftarrow w - \gamma \nabla L(w + \rho \nabla L(w))` — one perturbation from
  the full-batch gradient.
* **1-SAM**: :math:`w \leftarrow w - \gamma \frac1n \sum_i \nabla \ell_i(w + \rho \nabla \ell_i(w))`
  — every example is perturbed along *its own* gradient :math:`\nabla \ell_i`.

That is the paper's unnormalised SAM (perturbation ``rho * gradient``). ``normalized=True`` uses
``rho * g / ||g||`` instead, with ``g`` the same gradient (full-batch for n-SAM, per example for
1-SAM). With :math:`r = X\beta - y` the gradients are
:math:`\nabla_u L = (X^\top r / n) \odot v`, :math:`\nabla_v L = (X^\top r / n) \odot u` and
:math:`\nabla_u \ell_i = r_i x_i \odot v`, :math:`\nabla_v \ell_i = r_i x_i \odot u`.

Every update is vectorised over examples and over a leading batch of configurations (e.g. a whole
``rho`` grid at once); nothing loops over examples.

**Effective initialisation.** Under gradient *flow* ``u^2 - v^2`` is conserved
(:math:`\tfrac{d}{dt}(u^2 - v^2) = -2 u g v + 2 v g u = 0`), so it equals ``alpha^2``; the flow then
converges to the interpolator minimising the hyperbolic-entropy potential of scale ``alpha``
(Woodworth et al., 2020). Discrete steps, and SAM much more so, shrink it; the paper's implicit-bias
result is that SAM behaves like gradient flow from a smaller *effective* initialisation. samkit
tracks :math:`\alpha_\text{eff} = \sqrt{|u^2 - v^2|}` along the trajectory and computes the
interpolator that the potential with that scale predicts (:func:`predicted_interpolator`), so the
prediction can be compared with where each method actually lands.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import optimize

from samkit.errors import SamkitError

METHODS = ("gd", "nsam", "1sam")
LABELS = {"gd": "GD", "nsam": "n-SAM", "1sam": "1-SAM"}  # how reports and figures name them


@dataclass(frozen=True)
class Problem:
    """A sparse regression instance: train set, a large test set and the target."""

    X: np.ndarray  # [n, d]
    y: np.ndarray  # [n]
    X_test: np.ndarray  # [n_test, d]
    y_test: np.ndarray  # [n_test] (noiseless)
    theta: np.ndarray  # [d], k-sparse, non-negative, unit norm


def make_problem(
    n: int = 20, d: int = 30, k: int = 3, noise: float = 0.0, n_test: int = 10_000, seed: int = 0
) -> Problem:
    """Gaussian inputs, a k-sparse non-negative unit-norm ``theta*``, optional label noise."""
    for name, value, low in (("n", n, 1), ("d", d, 1), ("k", k, 1), ("n_test", n_test, 1)):
        if not isinstance(value, int) or value < low:
            raise SamkitError(f"{name} must be a positive integer, got {value!r}")
    if k > d:
        raise SamkitError(f"k={k} non-zero coordinates do not fit in d={d} dimensions")
    if noise < 0:
        raise SamkitError(f"noise must be >= 0 (the label noise standard deviation), got {noise}")
    rng = np.random.default_rng(seed)
    theta = np.zeros(d)
    support = rng.choice(d, size=k, replace=False)
    theta[support] = np.abs(rng.standard_normal(k))
    theta /= np.linalg.norm(theta)
    X = rng.standard_normal((n, d))
    y = X @ theta + noise * rng.standard_normal(n)
    X_test = rng.standard_normal((n_test, d))
    return Problem(X=X, y=y, X_test=X_test, y_test=X_test @ theta, theta=theta)


def gradients(u: np.ndarray, v: np.ndarray, X: np.ndarray, y: np.ndarray):
    """Full-batch ``(grad_u, grad_v)`` of ``L``; ``u, v`` may carry leading batch dims ``[..., d]``."""
    r = (u * v) @ X.T - y  # [..., n]
    xr = r @ X / X.shape[0]  # [..., d]
    return xr * v, xr * u


def _per_example_perturbed_grads(u, v, X, y, rho, normalized):
    r"""``(1/n) sum_i grad l_i(w + s_i grad l_i(w))`` in closed form, for ``u, v`` of shape ``[..., d]``.

    With :math:`r_i = x_i^\top(u \odot v) - y_i` the perturbed point of example ``i`` is
    :math:`u_i = u + s_i r_i x_i \odot v`, :math:`v_i = v + s_i r_i x_i \odot u`, its residual

    .. math:: \tilde r_i = r_i + s_i r_i\, (x_i^2)^\top (u^2 + v^2) + s_i^2 r_i^2\, (x_i^3)^\top (u v)

    and :math:`\nabla_u \ell_i = \tilde r_i x_i \odot v_i = \tilde r_i x_i \odot v + s_i r_i \tilde r_i
    x_i^2 \odot u` (symmetrically for ``v``). Averaging over ``i`` gives matrix products only — no
    ``[n, d]`` intermediate, no loop over examples — and with ``s = 0`` exactly GD's arithmetic.
    ``s_i = rho`` (or ``rho / ||grad l_i||`` when normalised, with
    :math:`\lVert \nabla \ell_i \rVert^2 = r_i^2 (x_i^2)^\top (u^2 + v^2)`).
    """
    n = X.shape[0]
    X2 = X * X
    r = (u * v) @ X.T - y  # [..., n]
    uv2 = (u * u + v * v) @ X2.T  # (x_i^2)^T (u^2 + v^2): [..., n]
    rho = np.asarray(rho, dtype=float)
    s = rho.reshape(rho.shape + (1,) * (r.ndim - rho.ndim))
    if normalized:
        s = s / (np.abs(r) * np.sqrt(uv2) + 1e-12)
    sr = s * r
    rp = r + sr * uv2 + sr * sr * ((u * v) @ (X2 * X).T)
    common = rp @ X / n
    cross = (sr * rp) @ X2 / n
    return common * v + cross * u, common * u + cross * v


def _scale(rho, normalized: bool, gu, gv, axis):
    """``rho`` or ``rho / ||(gu, gv)||`` broadcast against the gradients (batch dims in front)."""
    rho = np.asarray(rho, dtype=float)
    rho = rho.reshape(rho.shape + (1,) * (gu.ndim - rho.ndim))
    if not normalized:
        return rho
    norm = np.sqrt(np.sum(gu**2, axis=axis, keepdims=True) + np.sum(gv**2, axis=axis, keepdims=True))
    return rho / (norm + 1e-12)


def step(u, v, X, y, method: str, lr, rho, normalized: bool = False):
    """One full-batch update of ``method`` in {gd, nsam, 1sam}; returns new ``(u, v)``.

    ``lr`` and ``rho`` are scalars or arrays broadcasting against the leading batch dims of ``u``.
    """
    lr = np.asarray(lr, dtype=float)
    lr = lr.reshape(lr.shape + (1,) * (u.ndim - lr.ndim))
    if method == "gd":
        gu, gv = gradients(u, v, X, y)
    elif method == "nsam":
        gu, gv = gradients(u, v, X, y)
        s = _scale(rho, normalized, gu, gv, axis=(-1,))
        gu, gv = gradients(u + s * gu, v + s * gv, X, y)
    elif method == "1sam":
        gu, gv = _per_example_perturbed_grads(u, v, X, y, rho, normalized)
    else:
        raise SamkitError(f"unknown method {method!r}: choose one of {METHODS}")
    return u - lr * gu, v - lr * gv


@dataclass
class Trajectory:
    """Metrics recorded every ``every`` steps; arrays are ``[records, *batch]``."""

    steps: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    l1: np.ndarray
    dist: np.ndarray
    alpha_eff_min: np.ndarray
    alpha_eff_mean: np.ndarray
    beta: np.ndarray = field(repr=False)  # final beta [*batch, d]
    alpha_eff: np.ndarray = field(repr=False)  # final sqrt|u^2 - v^2| [*batch, d]
    diverged: np.ndarray = field(repr=False)  # [*batch] bool

    def to_dict(self) -> dict:
        return {k: np.asarray(v).tolist() for k, v in asdict(self).items()}


def train(
    problem: Problem,
    method: str,
    *,
    rho=0.0,
    lr=0.05,
    alpha=0.1,
    steps: int = 10_000,
    normalized: bool = False,
    every: int = 100,
) -> Trajectory:
    """Run ``method`` from ``u = alpha, v = 0``; ``rho``/``lr``/``alpha`` may be arrays (a batch).

    A configuration whose iterates overflow is frozen at its last finite values and flagged in
    ``diverged`` (its metrics are then NaN), so one bad ``rho`` never spoils the rest of a grid.
    """
    if method not in METHODS:
        raise SamkitError(f"unknown method {method!r}: choose one of {METHODS}")
    if not isinstance(steps, int) or steps < 1:
        raise SamkitError(f"steps must be a positive integer, got {steps!r}")
    if np.any(np.asarray(rho) < 0):
        raise SamkitError(f"rho must be >= 0, got {rho!r}")
    if np.any(np.asarray(lr) <= 0) or np.any(np.asarray(alpha) <= 0):
        raise SamkitError("lr and alpha must be > 0")
    X, y = problem.X, problem.y
    d = X.shape[1]
    batch = np.broadcast_shapes(np.shape(rho), np.shape(lr), np.shape(alpha))
    a = np.broadcast_to(np.asarray(alpha, dtype=float), batch)
    u = np.broadcast_to(a[..., None], batch + (d,)).copy()
    v = np.zeros(batch + (d,))
    rho_b = np.broadcast_to(np.asarray(rho, dtype=float), batch)
    lr_b = np.broadcast_to(np.asarray(lr, dtype=float), batch)
    diverged = np.zeros(batch, dtype=bool)
    rec: dict[str, list] = {k: [] for k in ("steps", "train_loss", "test_loss", "l1", "dist",
                                            "alpha_eff_min", "alpha_eff_mean")}

    def record(t: int) -> None:
        beta = u * v
        ae = np.sqrt(np.abs(u**2 - v**2))
        nan = np.where(diverged, np.nan, 1.0)
        rec["steps"].append(t)
        rec["train_loss"].append(nan * 0.5 * np.mean((beta @ X.T - y) ** 2, axis=-1))
        rec["test_loss"].append(
            nan * 0.5 * np.mean((beta @ problem.X_test.T - problem.y_test) ** 2, axis=-1)
        )
        rec["l1"].append(nan * np.sum(np.abs(beta), axis=-1))
        rec["dist"].append(nan * np.linalg.norm(beta - problem.theta, axis=-1))
        rec["alpha_eff_min"].append(nan * ae.min(axis=-1))
        rec["alpha_eff_mean"].append(nan * ae.mean(axis=-1))

    record(0)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, steps + 1):
            nu, nv = step(u, v, X, y, method, lr_b, rho_b, normalized)
            bad = ~(np.isfinite(nu).all(-1) & np.isfinite(nv).all(-1)) | (np.abs(nu).max(-1) > 1e6)
            diverged |= bad
            keep = diverged[..., None]
            u, v = np.where(keep, u, nu), np.where(keep, v, nv)
            if t % every == 0 or t == steps:
                record(t)
    return Trajectory(
        **{k: np.asarray(val) for k, val in rec.items()},
        beta=u * v,
        alpha_eff=np.sqrt(np.abs(u**2 - v**2)),
        diverged=diverged,
    )


def predicted_interpolator(X: np.ndarray, y: np.ndarray, alpha_eff: np.ndarray, iters: int = 500):
    r"""The interpolator that gradient flow from effective scale ``alpha_eff`` converges to.

    For ``beta = u * v`` rotate to ``a = (u + v)/sqrt2``, ``b = (u - v)/sqrt2``: then
    ``2 beta = a^2 - b^2`` and gradient flow conserves ``a b = (u^2 - v^2)/2``. By Woodworth et al.
    (2020) the flow from ``a = b`` converges to the interpolator (``X beta = y``) that minimises the
    hyperbolic-entropy potential; its optimality condition reads
    :math:`\beta = c \odot \sinh(X^\top \nu)` with :math:`c = \alpha^2 / 2`, and ``nu`` is found by
    minimising the convex dual :math:`\sum_i c_i \cosh((X^\top\nu)_i) - \nu^\top y`, whose
    gradient is :math:`X \beta(\nu) - y` (trust-region Newton over ``n`` unknowns).
    Smaller ``alpha`` gives a sparser, more l1-like interpolator. ``alpha_eff``: ``[d]``.
    """
    c = np.asarray(alpha_eff, dtype=float) ** 2 / 2

    def dual(nu):  # convex; its gradient X beta(nu) - y vanishes at the interpolator
        z = np.clip(X.T @ nu, -700, 700)
        return float(c @ np.cosh(z) - nu @ y), X @ (c * np.sinh(z)) - y

    def hess(nu):
        z = np.clip(X.T @ nu, -700, 700)
        return (X * (c * np.cosh(z))) @ X.T

    res = optimize.minimize(dual, np.zeros(X.shape[0]), jac=True, hess=hess, method="trust-exact",
                            options={"gtol": 1e-12, "maxiter": iters})
    return c * np.sinh(np.clip(X.T @ res.x, -700, 700))
