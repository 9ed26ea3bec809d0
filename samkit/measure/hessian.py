r"""Hessian spectrum: top eigenvalues (Lanczos, power), trace (Hutchinson, Hutch++), density (SLQ).

Every solver talks to the Hessian only through :class:`~samkit.measure.HessianOperator`
(``v -> Hv``) and reports how sure it is: residual norms :math:`\|Hv-\lambda v\|`, standard
errors, iteration counts.

Convergence criterion (both eigensolvers): a Ritz pair :math:`(\lambda, v)`, :math:`\|v\|=1`,
is converged when :math:`\|Hv-\lambda v\| \le \mathrm{tol}\cdot \hat\sigma`, where
:math:`\hat\sigma` is the largest :math:`|\lambda|` found (an estimate of :math:`\|H\|_2`). By
the Bauer-Fike / Kato bounds this puts :math:`\lambda` within ``tol`` relative of a true
eigenvalue (and within :math:`\mathrm{tol}^2\hat\sigma/\text{gap}` for symmetric H).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from samkit._atomic import save_figure
from samkit._batch import LossFn
from samkit._checks import check_choice, check_number, check_positive_int
from samkit.errors import SamkitError
from samkit.measure._common import (
    ParamSpec,
    make_generator,
    progress_bar,
    unflatten,
)
from samkit.measure.hvp import HessianOperator

EIG_METHODS = ("lanczos", "power")
WHICH = ("LA", "LM", "SA")
TRACE_METHODS = ("hutchinson", "hutch++")


# --------------------------------------------------------------------------------------- results
@dataclass
class EigenResult:
    """Top-k Hessian eigenpairs.

    eigenvalues: sorted by ``which`` (LA: descending). residuals: true
    :math:`\\|Hv_i-\\lambda_i v_i\\|` with :math:`\\|v_i\\|=1`, recomputed with one extra matvec
    each. converged: residual <= tol * max|eigenvalue|. iterations: solver iterations (Lanczos
    steps, or power iterations summed over eigenvalues); matvecs: all Hessian-vector products
    including the residual checks. eigenvectors: per eigenvalue, a list of tensors shaped like
    the parameters named in ``param_names`` (only if asked for).
    """

    eigenvalues: list[float]
    residuals: list[float]
    converged: list[bool]
    iterations: int
    matvecs: int
    method: str
    which: str
    tol: float
    param_names: list[str]
    eigenvectors: list[list[Tensor]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as plain Python values, for JSON (without the eigenvectors)."""
        return {k: v for k, v in self.__dict__.items() if k != "eigenvectors"}


@dataclass
class TraceResult:
    """Stochastic trace estimate: ``estimate`` +- ``stderr`` (standard error of the mean of the
    random part), ``samples`` (the per-vector quadratic forms :math:`z^\\top H z`; for Hutch++
    of the deflated remainder), ``exact_part`` (Hutch++: :math:`\\mathrm{tr}(Q^\\top HQ)`,
    0 for Hutchinson), ``matvecs``, ``dim``."""

    estimate: float
    stderr: float
    samples: list[float]
    exact_part: float
    matvecs: int
    method: str
    dim: int

    def to_dict(self) -> dict[str, Any]:
        """The result as plain Python values, for JSON."""
        return dict(self.__dict__)


@dataclass
class DensityResult:
    """Spectral density from stochastic Lanczos quadrature.

    ``grid`` and ``density`` (same length; density integrates to about 1 over the grid),
    ``nodes`` and ``weights`` (per run: Ritz values and squared first components; each run's
    weights sum to 1), ``sigma`` (Gaussian broadening std), ``num_runs``, ``lanczos_steps``.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: list[np.ndarray]
    weights: list[np.ndarray]
    sigma: float
    num_runs: int
    lanczos_steps: int
    dim: int
    matvecs: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def mean(self) -> float:
        """Mean eigenvalue under the quadrature, :math:`\\approx \\mathrm{tr}(H)/d`."""
        return float(
            np.mean([np.dot(w, t) for w, t in zip(self.weights, self.nodes, strict=False)])
        )

    def to_dict(self) -> dict[str, Any]:
        """The result as plain Python values, for JSON."""
        return {
            "grid": self.grid.tolist(),
            "density": self.density.tolist(),
            "nodes": [n.tolist() for n in self.nodes],
            "weights": [w.tolist() for w in self.weights],
            "sigma": self.sigma,
            "num_runs": self.num_runs,
            "lanczos_steps": self.lanczos_steps,
            "dim": self.dim,
            "matvecs": self.matvecs,
        }


# ----------------------------------------------------------------------------------- the solvers
def _basis_dtype(op: HessianOperator) -> torch.dtype:
    return torch.float64 if op.dtype == torch.float64 else torch.float32


def _random_unit(op: HessianOperator, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    v = torch.randn(op.dim, generator=gen, dtype=torch.float64).to(op.device, dtype)
    return v / v.norm()


def _orthogonalize(w: Tensor, basis: list[Tensor]) -> Tensor:
    # Classical Gram-Schmidt applied twice ("twice is enough", Giraud et al. 2005): keeps the
    # Lanczos basis orthogonal to working precision, so no ghost eigenvalues appear.
    if basis:
        q = torch.stack(basis)
        for _ in range(2):
            w = w - q.T @ (q @ w)
    return w


def _select(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    if which == "LA":
        order = np.argsort(-theta, kind="stable")
    elif which == "SA":
        order = np.argsort(theta, kind="stable")
    else:
        order = np.argsort(-np.abs(theta), kind="stable")
    return order[:k]


def _lanczos(
    matvec: Callable[[Tensor], Tensor],
    q0: Tensor,
    steps: int,
    restart: Callable[[], Tensor] | None = None,
    stop: Callable[[np.ndarray, np.ndarray, float], bool] | None = None,
    bar: Any = None,
) -> tuple[np.ndarray, np.ndarray, list[Tensor]]:
    r"""Lanczos with full reorthogonalization: returns the diagonal ``alpha``, off-diagonal
    ``beta`` of :math:`T = Q^\top H Q` and the basis ``Q``.

    When an invariant subspace is found (:math:`\beta \approx 0`) and ``restart`` is given, the
    process continues from a fresh random vector orthogonal to Q (T gets a zero off-diagonal),
    so repeated eigenvalues are found too. ``stop(alpha, beta_with_last, beta_last)`` may end
    the iteration early.
    """
    dim = q0.numel()
    basis: list[Tensor] = []
    alpha: list[float] = []
    beta: list[float] = []
    q, b_prev, scale = q0, 0.0, 0.0
    for j in range(min(steps, dim)):
        basis.append(q)
        w = matvec(q)
        a = float(q @ w)
        w = w - a * q
        if j > 0:
            w = w - b_prev * basis[-2]
        w = _orthogonalize(w, basis)
        b = float(w.norm())
        alpha.append(a)
        scale = max(scale, abs(a), b)
        if bar is not None:
            bar.update(1)
        if stop is not None and stop(np.array(alpha), np.array(beta), b):
            break
        if j + 1 == min(steps, dim):
            break
        if b <= 1e-10 * max(scale, 1e-300):
            if restart is None:
                break
            w = _orthogonalize(restart(), basis)
            b_new = float(w.norm())
            if b_new <= 1e-10:
                break
            beta.append(0.0)
            q, b_prev = w / b_new, 0.0
            continue
        beta.append(b)
        q, b_prev = w / b, b
    return np.array(alpha), np.array(beta), basis


def _tridiag_eig(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.diag(alpha) + np.diag(beta[: len(alpha) - 1], 1) + np.diag(beta[: len(alpha) - 1], -1)
    return np.linalg.eigh(t)


def _check_eig_args(k: int, method: str, which: str, tol: float, max_iter: int) -> None:
    check_positive_int("k", k)
    check_choice("method", method, EIG_METHODS)
    check_choice("which", which, WHICH)
    check_number("tol", tol, low=0.0)
    check_positive_int("max_iter", max_iter)


def hessian_eigenvalues(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    k: int = 1,
    method: str = "lanczos",
    tol: float = 1e-4,
    max_iter: int = 100,
    return_eigenvectors: bool = False,
    seed: int = 0,
    *,
    which: str = "LA",
    params: ParamSpec = None,
    mode: str = "eval",
    hvp: str = "auto",
    progress: bool = False,
    generator: torch.Generator | None = None,
) -> EigenResult:
    r"""Top-``k`` eigenvalues of the Hessian :math:`H=\nabla^2_w L(w)` of the sample-weighted
    mean loss over ``data``.

    ``method="lanczos"``: Lanczos with full reorthogonalization from a seeded random start; after
    each step the Ritz values of the tridiagonal :math:`T_j=Q_j^\top HQ_j` are computed and the
    residual of each wanted Ritz pair is read off for free as :math:`\beta_j |s_{j,i}|`; it stops
    when the ``k`` wanted pairs meet the criterion (see module doc) or after ``max_iter`` steps.
    ``method="power"``: power iteration with deflation (each vector kept orthogonal to those
    already found), stopping per eigenvalue on the same residual criterion. Power iteration
    converges to the largest *magnitude*; for ``which="LA"`` it is re-run on :math:`H+cI`,
    :math:`c=\max|\lambda|`, whenever a negative eigenvalue shows up among the k found.

    ``which``: ``"LA"`` largest algebraic (default), ``"LM"`` largest magnitude, ``"SA"``
    smallest algebraic (Lanczos only). Residuals reported are recomputed with explicit matvecs.
    Single-vector Lanczos sees an *exactly* repeated eigenvalue once (it would list the next
    distinct one instead); power iteration with deflation finds every copy. Hessians of real
    networks in floating point rarely have exact repeats.

    Example::

        res = hessian_eigenvalues(model, loss_fn, (x, y), k=3)
        res.eigenvalues, res.residuals, res.converged
    """
    _check_eig_args(k, method, which, tol, max_iter)
    if method == "power" and which == "SA":
        raise SamkitError("which='SA' needs method='lanczos' (power iteration finds the top).")
    op = HessianOperator(model, loss_fn, data, params, mode=mode, method=hvp)
    if k > op.dim:
        raise SamkitError(f"k={k} exceeds the number of parameters ({op.dim}); use k <= {op.dim}.")
    gen = make_generator(seed, generator)
    dtype = _basis_dtype(op)
    with op:
        bar = progress_bar(None, progress, total=max_iter, desc=f"hessian {method}")
        try:
            if method == "lanczos":
                values, vectors, iters = _lanczos_top(op, k, which, tol, max_iter, gen, dtype, bar)
            else:
                values, vectors, iters = _power_top(op, k, which, tol, max_iter, gen, dtype, bar)
        finally:
            bar.close()
        residuals = []
        for lam, vec in zip(values, vectors, strict=False):
            r = op.matvec_flat(vec) - lam * vec
            residuals.append(float(r.norm()))
        matvecs = op.num_matvecs
    scale = max(abs(v) for v in values)
    return EigenResult(
        eigenvalues=[float(v) for v in values],
        residuals=residuals,
        converged=[r <= tol * scale for r in residuals],
        iterations=iters,
        matvecs=matvecs,
        method=method,
        which=which,
        tol=tol,
        param_names=list(op.names),
        eigenvectors=[unflatten(v, op.params) for v in vectors] if return_eigenvectors else None,
    )


def _lanczos_top(op, k, which, tol, max_iter, gen, dtype, bar):
    def stop(alpha: np.ndarray, beta: np.ndarray, b_last: float) -> bool:
        if len(alpha) < k:
            return False
        theta, s = _tridiag_eig(alpha, beta)
        idx = _select(theta, k, which)
        scale = np.abs(theta).max()
        return bool(np.all(b_last * np.abs(s[-1, idx]) <= tol * scale))

    q0 = _random_unit(op, gen, dtype)
    alpha, beta, basis = _lanczos(
        op.matvec_flat,
        q0,
        max_iter,
        restart=lambda: _random_unit(op, gen, dtype),
        stop=stop,
        bar=bar,
    )
    theta, s = _tridiag_eig(alpha, beta)
    idx = _select(theta, k, which)
    q = torch.stack(basis)
    vectors = []
    for i in idx:
        v = q.T @ torch.as_tensor(s[:, i], dtype=dtype, device=q.device)
        vectors.append(v / v.norm())
    return [float(theta[i]) for i in idx], vectors, len(alpha)


def _power_top(op, k, which, tol, max_iter, gen, dtype, bar):
    values, vectors, iters = _power(op, k, tol, max_iter, gen, dtype, 0.0, bar)
    if which == "LA" and min(values) < 0:
        # Magnitude order differs from algebraic order: shift the spectrum to be non-negative.
        shift = max(abs(v) for v in values)
        values, vectors, more = _power(op, k, tol, max_iter, gen, dtype, shift, bar)
        iters += more
    order = _select(np.array(values), k, which)
    return [values[i] for i in order], [vectors[i] for i in order], iters


def _power(op, k, tol, max_iter, gen, dtype, shift, bar):
    values: list[float] = []
    vectors: list[Tensor] = []
    iters = 0
    for _ in range(k):
        v = _orthogonalize(_random_unit(op, gen, dtype), vectors)
        v = v / v.norm()
        lam = 0.0
        for _ in range(max_iter):
            w = op.matvec_flat(v)
            iters += 1
            if bar is not None:
                bar.update(1)
            lam = float(v @ w)
            scale = max([abs(lam)] + [abs(x) for x in values])
            if float((w - lam * v).norm()) <= tol * scale:
                break
            w = _orthogonalize(w + shift * v, vectors)
            norm = float(w.norm())
            if norm == 0.0:
                break  # v is in the null space of the deflated, shifted operator
            v = w / norm
        values.append(lam)
        vectors.append(v)
    return values, vectors, iters


# ---------------------------------------------------------------------------------------- trace
def _rademacher(op: HessianOperator, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    z = torch.randint(0, 2, (op.dim,), generator=gen, dtype=torch.int8)
    return z.to(op.device, dtype) * 2 - 1


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    method: str = "hutchinson",
    num_samples: int = 100,
    seed: int = 0,
    *,
    params: ParamSpec = None,
    mode: str = "eval",
    hvp: str = "auto",
    progress: bool = True,
    generator: torch.Generator | None = None,
) -> TraceResult:
    r"""Stochastic estimate of :math:`\mathrm{tr}(H)` using ``num_samples`` Hessian-vector products.

    ``"hutchinson"``: :math:`\mathrm{tr}(H) = \mathbb{E}[z^\top Hz]` with Rademacher
    :math:`z\in\{\pm1\}^d`; estimate = sample mean, stderr = sample std / :math:`\sqrt{m}`.

    ``"hutch++"`` (Meyer, Musco, Musco & Woodruff 2021): with :math:`s=\lfloor m/3\rfloor`
    Rademacher sketch vectors S, :math:`Q=\mathrm{orth}(HS)`, and
    :math:`\mathrm{tr}(H)=\mathrm{tr}(Q^\top HQ)+\mathrm{tr}((I-QQ^\top)H(I-QQ^\top))`; the
    first term is computed exactly (s matvecs), the second by Hutchinson with the remaining
    :math:`m-2s` vectors projected by :math:`I-QQ^\top`. stderr is that of the second term, so it
    shrinks as the top of the spectrum gets captured by Q (and is 0 once Q spans everything).
    """
    check_choice("method", method, TRACE_METHODS)
    check_positive_int("num_samples", num_samples, minimum=3 if method == "hutch++" else 1)
    op = HessianOperator(model, loss_fn, data, params, mode=mode, method=hvp)
    gen = make_generator(seed, generator)
    dtype = _basis_dtype(op)
    exact = 0.0
    samples: list[float] = []
    with op:
        bar = progress_bar(None, progress, total=num_samples, desc=f"trace {method}")
        try:
            if method == "hutch++":
                s = min(num_samples // 3, op.dim)
                sketch = [op.matvec_flat(_rademacher(op, gen, dtype)) for _ in range(s)]
                bar.update(s)
                q, _ = torch.linalg.qr(torch.stack(sketch, dim=1))
                for i in range(q.shape[1]):
                    exact += float(q[:, i] @ op.matvec_flat(q[:, i]))
                    bar.update(1)
                for _ in range(num_samples - s - q.shape[1]):
                    z = _rademacher(op, gen, dtype)
                    z = z - q @ (q.T @ z)
                    samples.append(float(z @ op.matvec_flat(z)))
                    bar.update(1)
            else:
                for _ in range(num_samples):
                    z = _rademacher(op, gen, dtype)
                    samples.append(float(z @ op.matvec_flat(z)))
                    bar.update(1)
        finally:
            bar.close()
        matvecs = op.num_matvecs
    arr = np.array(samples, dtype=np.float64)
    mean = float(arr.mean()) if len(arr) else 0.0
    if len(arr) > 1:
        stderr = float(arr.std(ddof=1) / math.sqrt(len(arr)))
    else:  # Hutch++ whose sketch spans the whole space is exact; otherwise one sample has no spread
        stderr = (
            0.0 if method == "hutch++" and min(num_samples // 3, op.dim) == op.dim else math.nan
        )
    return TraceResult(
        estimate=exact + mean,
        stderr=stderr,
        samples=samples,
        exact_part=exact,
        matvecs=matvecs,
        method=method,
        dim=op.dim,
    )


# -------------------------------------------------------------------------------------- density
def hessian_density(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    num_runs: int = 1,
    lanczos_steps: int = 80,
    num_points: int = 1000,
    sigma: float | None = None,
    seed: int = 0,
    *,
    params: ParamSpec = None,
    mode: str = "eval",
    hvp: str = "auto",
    progress: bool = True,
    generator: torch.Generator | None = None,
) -> DensityResult:
    r"""Eigenvalue density of the Hessian by stochastic Lanczos quadrature (Ghorbani et al. 2019).

    For each run r a Rademacher vector :math:`v_r/\|v_r\|` starts ``lanczos_steps`` steps of
    Lanczos; :math:`T_r = S\,\mathrm{diag}(\theta)\,S^\top` gives nodes :math:`\theta_{r,j}` and
    weights :math:`\tau_{r,j}=S_{1j}^2` (:math:`\sum_j\tau_{r,j}=1`). The density

    .. math:: \phi(t) = \frac{1}{R}\sum_r\sum_j \tau_{r,j}\,
              \frac{1}{\sigma\sqrt{2\pi}} e^{-(t-\theta_{r,j})^2/(2\sigma^2)}

    is an unbiased-in-expectation smoothing of the spectral measure
    :math:`\frac1d\sum_i\delta(t-\lambda_i)`: its moments up to :math:`2\cdot` steps - 1 match
    :math:`\mathbb{E}[v^\top H^p v]/\|v\|^2 = \mathrm{tr}(H^p)/d`. ``sigma`` defaults to 1% of
    the node range; the grid spans the nodes +- 5 sigma, so the density integrates to ~1.
    """
    check_positive_int("num_runs", num_runs)
    check_positive_int("lanczos_steps", lanczos_steps)
    check_positive_int("num_points", num_points, minimum=2)
    if sigma is not None and not sigma > 0:
        raise SamkitError(f"sigma must be positive (or None for automatic); got {sigma!r}.")
    op = HessianOperator(model, loss_fn, data, params, mode=mode, method=hvp)
    gen = make_generator(seed, generator)
    dtype = _basis_dtype(op)
    nodes, weights = [], []
    with op:
        bar = progress_bar(None, progress, total=num_runs * min(lanczos_steps, op.dim), desc="SLQ")
        try:
            for _ in range(num_runs):
                v = _rademacher(op, gen, dtype)
                # No restart: quadrature weights are defined for the Krylov space of v alone.
                alpha, beta, _ = _lanczos(op.matvec_flat, v / v.norm(), lanczos_steps, bar=bar)
                theta, s = _tridiag_eig(alpha, beta)
                nodes.append(theta)
                weights.append(s[0, :] ** 2)
        finally:
            bar.close()
        matvecs = op.num_matvecs
    lo = min(float(n.min()) for n in nodes)
    hi = max(float(n.max()) for n in nodes)
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 1e-3
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, num_points)
    density = np.zeros_like(grid)
    norm = 1.0 / (sigma * math.sqrt(2 * math.pi) * num_runs)
    for theta, tau in zip(nodes, weights, strict=False):
        density += norm * (
            tau[None, :] * np.exp(-((grid[:, None] - theta[None, :]) ** 2) / (2 * sigma**2))
        ).sum(1)
    return DensityResult(
        grid, density, nodes, weights, float(sigma), num_runs, lanczos_steps, op.dim, matvecs
    )


def plot_density(
    result: DensityResult, path: str | Path, log: bool = True, title: str | None = None
) -> Path:
    """Plot a :class:`DensityResult` (log-scale density by default) to PNG/PDF at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    peak = float(result.density.max())
    # on a log axis, show six decades below the peak: the Gaussian tails at the grid's ends
    # would otherwise stretch it down to the clip value and squash the spectrum
    floor = 1e-6 * peak if peak > 0 else 1e-12
    y = np.maximum(result.density, floor) if log else result.density
    ax.plot(result.grid, y)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(floor, 2 * peak if peak > 0 else 1.0)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (Gaussian-broadened)")
    runs = "1 run" if result.num_runs == 1 else f"{result.num_runs} runs"
    ax.set_title(
        title
        or f"Hessian spectral density\n(SLQ: {runs} x {result.lanczos_steps} Lanczos steps, "
        f"σ = {result.sigma:.2g})",
        fontsize="medium",
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    plt.close(fig)
    return path
