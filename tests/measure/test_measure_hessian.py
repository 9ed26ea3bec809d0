"""HVP, eigenvalues, trace and density against the exact Hessian of least squares, H = X^T X / n."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from measure_helpers import bn_mlp, ce, class_data, least_squares, mse_half

from samkit.measure import (
    HessianOperator,
    hessian_density,
    hessian_eigenvalues,
    hessian_trace,
    hessian_vector_product,
    plot_density,
)


@pytest.mark.parametrize("method", ["autograd", "func"])
def test_hvp_equals_exact_hessian(method):
    model, x, y, h = least_squares()
    v = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    hv = hessian_vector_product(model, mse_half, (x, y), v, method=method)
    torch.testing.assert_close(hv, h @ v, rtol=1e-12, atol=1e-12)
    hv_list = hessian_vector_product(model, mse_half, (x, y), [v.view(1, 5)], method=method)
    torch.testing.assert_close(hv_list[0].view(-1), h @ v, rtol=1e-12, atol=1e-12)


def test_batches_weighted_by_sample_count():
    # Uneven batches (7, 30, 3): the mean loss over all 40 examples has H = X^T X / 40.
    model, x, y, h = least_squares()
    batches = [(x[:7], y[:7]), (x[7:37], y[7:37]), (x[37:], y[37:])]
    v = torch.ones(5, dtype=torch.float64)
    for method in ("autograd", "func"):
        hv = hessian_vector_product(model, mse_half, batches, v, method=method)
        torch.testing.assert_close(hv, h @ v, rtol=1e-12, atol=1e-12)
    # generators are consumed once but the solver needs many passes: they are materialized
    res = hessian_eigenvalues(model, mse_half, (b for b in batches), k=1)
    assert res.eigenvalues[0] == pytest.approx(torch.linalg.eigvalsh(h)[-1].item(), rel=1e-6)


def test_both_hvp_paths_agree_on_a_nonlinear_net():
    model = bn_mlp()
    x, y = class_data()
    g = torch.Generator().manual_seed(3)
    v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in model.parameters()]
    a = hessian_vector_product(model, ce, (x, y), v, method="autograd")
    b = hessian_vector_product(model, ce, (x, y), v, method="func")
    for ai, bi in zip(a, b):
        torch.testing.assert_close(ai, bi, rtol=1e-10, atol=1e-12)
    # cached first-order graph (one batch, inside a context) == recomputed graph per matvec
    with HessianOperator(model, ce, (x, y), cache_graph=True) as op:
        c1, c2 = op.matvec(v), op.matvec(v)
    d = HessianOperator(model, ce, (x, y), cache_graph=False).matvec(v)
    for ai, ci, c2i, di in zip(a, c1, c2, d):
        torch.testing.assert_close(ci, ai, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(c2i, ai, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(di, ai, rtol=1e-12, atol=1e-14)


def test_hessian_over_one_layer_is_the_diagonal_block():
    model = bn_mlp()
    x, y = class_data()
    names = [n for n, _ in model.named_parameters()]
    full_dim = sum(p.numel() for p in model.parameters())
    with HessianOperator(model, ce, (x, y)) as op:
        full = torch.stack([op.matvec_flat(e) for e in torch.eye(full_dim, dtype=torch.float64)])
    last = [n for n in names if n.startswith("4.")]
    with HessianOperator(model, ce, (x, y), params=r"^4\.") as op:
        assert op.names == last and op.dim == 8 * 3 + 3
        block = torch.stack([op.matvec_flat(e) for e in torch.eye(op.dim, dtype=torch.float64)])
    torch.testing.assert_close(block, full[-op.dim :, -op.dim :], rtol=1e-10, atol=1e-12)
    # names, a predicate and parameter objects select the same thing
    for spec in (last, lambda n: n.startswith("4."), [model[4].weight, model[4].bias]):
        assert HessianOperator(model, ce, (x, y), params=spec).names == last


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_top_eigenvalues_match_exact(method):
    spectrum = [5.0, 3.0, 1.5, 0.4, 0.1, 0.05]
    model, x, y, h = least_squares(d=6, spectrum=spectrum)
    res = hessian_eigenvalues(
        model,
        mse_half,
        (x, y),
        k=3,
        method=method,
        tol=1e-9,
        max_iter=300,
        return_eigenvectors=True,
    )
    np.testing.assert_allclose(res.eigenvalues, spectrum[:3], rtol=1e-6)
    assert all(res.converged)
    for lam, vec, r in zip(res.eigenvalues, res.eigenvectors, res.residuals):
        v = vec[0].view(-1)
        assert v.norm().item() == pytest.approx(1.0, rel=1e-12)
        # the reported residual is the true one
        assert (h @ v - lam * v).norm().item() == pytest.approx(r, rel=1e-6, abs=1e-12)
        assert r <= 1e-9 * max(spectrum)


def test_largest_algebraic_vs_magnitude_with_negative_curvature():
    # A saddle: the largest-magnitude eigenvalue (-4) is not the largest algebraic one (2).
    from measure_helpers import Quadratic, quad_loss

    a = torch.diag(torch.tensor([2.0, -4.0, 1.0, 0.5], dtype=torch.float64))
    q = Quadratic(a, torch.zeros(4, dtype=torch.float64))
    data = torch.zeros(3, 1)
    for method in ("lanczos", "power"):
        la = hessian_eigenvalues(q, quad_loss, data, k=2, method=method, tol=1e-10, max_iter=500)
        np.testing.assert_allclose(la.eigenvalues, [2.0, 1.0], rtol=1e-6)
        lm = hessian_eigenvalues(q, quad_loss, data, k=1, method=method, which="LM", tol=1e-10)
        np.testing.assert_allclose(lm.eigenvalues, [-4.0], rtol=1e-6)
    sa = hessian_eigenvalues(q, quad_loss, data, k=1, which="SA", tol=1e-10)
    np.testing.assert_allclose(sa.eigenvalues, [-4.0], rtol=1e-6)


def test_repeated_eigenvalue():
    # Power iteration with deflation finds an exactly repeated eigenvalue twice; single-vector
    # Lanczos sees each distinct eigenvalue once (its Krylov space cannot hold both copies).
    model, x, y, _ = least_squares(d=4, spectrum=[2.0, 2.0, 1.0, 0.5])
    res = hessian_eigenvalues(model, mse_half, (x, y), k=3, method="power", tol=1e-10, max_iter=500)
    np.testing.assert_allclose(res.eigenvalues, [2.0, 2.0, 1.0], rtol=1e-6)
    res = hessian_eigenvalues(model, mse_half, (x, y), k=3, tol=1e-10)
    np.testing.assert_allclose(res.eigenvalues, [2.0, 1.0, 0.5], rtol=1e-6)


def test_unconverged_is_reported_not_hidden():
    spectrum = list(np.linspace(1.0, 2.0, 30))
    model, x, y, _ = least_squares(n=60, d=30, spectrum=spectrum)
    res = hessian_eigenvalues(model, mse_half, (x, y), k=1, method="power", tol=1e-10, max_iter=3)
    assert res.iterations == 3 and res.converged == [False]
    assert res.residuals[0] > 1e-10 * 2.0


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_trace_within_three_standard_errors(method):
    model, x, y, h = least_squares(n=50, d=12)
    res = hessian_trace(model, mse_half, (x, y), method=method, num_samples=30, seed=4)
    true = torch.trace(h).item()
    assert res.stderr > 0
    assert abs(res.estimate - true) <= 3 * res.stderr
    assert res.matvecs == 30 and res.dim == 12
    if method == "hutchinson":
        assert res.estimate == pytest.approx(np.mean(res.samples))
        assert res.stderr == pytest.approx(np.std(res.samples, ddof=1) / math.sqrt(30))


def test_hutchpp_exact_when_sketch_spans_the_space():
    model, x, y, h = least_squares(d=5)
    res = hessian_trace(model, mse_half, (x, y), method="hutch++", num_samples=18)
    assert res.estimate == pytest.approx(torch.trace(h).item(), rel=1e-10)
    assert res.stderr <= 1e-10


def test_density_reproduces_the_spectrum():
    spectrum = [4.0, 2.0, 1.0, 0.5, 0.25]
    model, x, y, h = least_squares(d=5, spectrum=spectrum)
    res = hessian_density(
        model, mse_half, (x, y), num_runs=4, lanczos_steps=10, num_points=4000, sigma=0.02, seed=1
    )
    # Krylov space of a generic start vector is the whole space: nodes are the eigenvalues
    for theta, tau in zip(res.nodes, res.weights):
        np.testing.assert_allclose(np.sort(theta), sorted(spectrum), rtol=1e-8)
        assert tau.sum() == pytest.approx(1.0, abs=1e-12)
    dx = res.grid[1] - res.grid[0]
    assert res.density.sum() * dx == pytest.approx(1.0, abs=1e-6)  # mass
    mean = (res.grid * res.density).sum() * dx
    assert mean == pytest.approx(res.mean(), abs=1e-6)
    # Closed form. With a Rademacher start s (entries +-1, ||s||^2 = d) the Lanczos weights are
    # tau_j = (u_j . s)^2 / d for the eigenvectors u_j of H: find the s of each run among the
    # 2^d sign vectors and check every weight against it.
    lam, u = np.linalg.eigh(h.numpy())  # ascending, as the sorted nodes
    signs = np.array(list(itertools.product((-1.0, 1.0), repeat=5)))  # [32, d]
    candidates = (signs @ u) ** 2 / 5  # [32, d]: the weights each start would give
    starts = []
    for theta, tau in zip(res.nodes, res.weights):
        tau = tau[np.argsort(theta)]
        k = int(np.abs(candidates - tau).max(axis=1).argmin())
        np.testing.assert_allclose(tau, candidates[k], atol=1e-10)
        starts.append(signs[k])
    exact_tau = np.mean([(s @ u) ** 2 / 5 for s in starts], axis=0)
    # the quadrature mean is s^T H s / d averaged over the starts (a Hutchinson estimate)
    hutchinson = np.mean([s @ h.numpy() @ s / 5 for s in starts])
    assert res.mean() == pytest.approx(hutchinson, rel=1e-10)
    # the mass within 0.1 = 5 sigma of each eigenvalue is its mean weight times the Gaussian's
    # mass in +-5 sigma (the other eigenvalues are >= 0.25 = 7.5 sigma from the window)
    inside = math.erf(0.1 / (0.02 * math.sqrt(2)))
    for lam_j, tau_j in zip(lam, exact_tau):
        near = np.abs(res.grid - lam_j) < 0.1
        assert res.density[near].sum() * dx == pytest.approx(tau_j * inside, abs=1e-6)


def test_plot_density_writes_file(tmp_path, monkeypatch):
    import samkit.measure.hessian as hessian_module

    model, x, y, _ = least_squares(d=5)
    res = hessian_density(model, mse_half, (x, y), lanczos_steps=5, num_points=50, sigma=0.02)
    out = plot_density(res, tmp_path / "d.png")
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
    figures = []
    monkeypatch.setattr(hessian_module, "save_figure", lambda fig, path: figures.append(fig))
    plot_density(res, tmp_path / "e.png")
    ax = figures[0].axes[0]
    # the bumps are the broadening's, not the spectrum's: the title says how wide it is
    assert "σ = 0.02" in ax.get_title() and "5 Lanczos steps" in ax.get_title()
    low, high = ax.get_ylim()  # a log axis spans what is there, not down to the 1e-12 floor
    assert low >= 1e-7 * res.density.max() and high >= res.density.max()
