"""Diagonal linear networks: every update against autograd, special cases, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samkit import SamkitError
from samkit.theory import dln


def tiny(seed=0, noise=0.0):
    return dln.make_problem(n=4, d=5, k=2, noise=noise, n_test=50, seed=seed)


def loss(u, v, X, y):
    return 0.5 * torch.mean((X @ (u * v) - y) ** 2)


def torch_run(P, method, rho, lr, alpha, steps, normalized=False):
    """The same updates written with autograd, one example at a time for 1-SAM."""
    X, y = torch.tensor(P.X), torch.tensor(P.y)
    d = X.shape[1]
    u, v = torch.full((d,), alpha, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)

    def grad(u, v, X, y):
        u, v = u.clone().requires_grad_(), v.clone().requires_grad_()
        return torch.autograd.grad(loss(u, v, X, y), (u, v))

    def perturbed(u, v, X, y):
        gu, gv = grad(u, v, X, y)
        s = rho / (torch.sqrt((gu**2).sum() + (gv**2).sum()) + 1e-12) if normalized else rho
        return grad(u + s * gu, v + s * gv, X, y)

    for _ in range(steps):
        if method == "gd":
            gu, gv = grad(u, v, X, y)
        elif method == "nsam":
            gu, gv = perturbed(u, v, X, y)
        else:
            per = [perturbed(u, v, X[i : i + 1], y[i : i + 1]) for i in range(len(y))]
            gu = torch.stack([p[0] for p in per]).mean(0)
            gv = torch.stack([p[1] for p in per]).mean(0)
        u, v = u - lr * gu, v - lr * gv
    return (u * v).numpy()


@pytest.mark.parametrize("method", dln.METHODS)
@pytest.mark.parametrize("normalized", [False, True])
def test_trajectory_matches_autograd(method, normalized):
    P = tiny(noise=0.1)
    ours = dln.train(P, method, rho=0.3, lr=0.1, alpha=0.5, steps=40, normalized=normalized)
    ref = torch_run(P, method, 0.3, 0.1, 0.5, 40, normalized=normalized)
    np.testing.assert_allclose(ours.beta, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("normalized", [False, True])
def test_one_sam_update_is_the_average_of_per_example_sam_updates(normalized):
    P = tiny(seed=3)
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(5), rng.standard_normal(5)
    nu, nv = dln.step(u, v, P.X, P.y, "1sam", lr=0.1, rho=0.2, normalized=normalized)
    singles = [dln.step(u, v, P.X[i : i + 1], P.y[i : i + 1], "nsam", lr=0.1, rho=0.2,
                        normalized=normalized) for i in range(4)]
    np.testing.assert_allclose(nu, np.mean([s[0] for s in singles], axis=0), rtol=0, atol=1e-14)
    np.testing.assert_allclose(nv, np.mean([s[1] for s in singles], axis=0), rtol=0, atol=1e-14)


@pytest.mark.parametrize("method", ["nsam", "1sam"])
@pytest.mark.parametrize("normalized", [False, True])
def test_rho_zero_is_gd_exactly(method, normalized):
    P = dln.make_problem(seed=1, n_test=100)
    gd = dln.train(P, "gd", lr=0.05, steps=300)
    sam = dln.train(P, method, rho=0.0, lr=0.05, steps=300, normalized=normalized)
    assert np.array_equal(gd.beta, sam.beta)
    assert np.array_equal(gd.test_loss, sam.test_loss)


def test_gradient_flow_lands_on_the_predicted_interpolator():
    """Small steps ~ gradient flow: the limit is the hyperbolic-entropy interpolator."""
    P = dln.make_problem(n=5, d=8, k=2, n_test=10, seed=2)
    run = dln.train(P, "gd", lr=0.02, alpha=0.3, steps=40_000, every=40_000)
    assert run.train_loss[-1] < 1e-14
    pred = dln.predicted_interpolator(P.X, P.y, run.alpha_eff)
    np.testing.assert_allclose(P.X @ pred, P.y, atol=1e-8)
    np.testing.assert_allclose(pred, run.beta, atol=2e-3)
    # a much smaller scale predicts a different (sparser) interpolator: the check can fail
    other = dln.predicted_interpolator(P.X, P.y, np.full(8, 0.01))
    assert np.abs(other).sum() < np.abs(pred).sum() and np.abs(other - run.beta).max() > 1e-2


def test_batched_grid_equals_separate_runs():
    P = tiny()
    rhos = np.array([0.0, 0.1, 0.5])
    grid = dln.train(P, "1sam", rho=rhos, lr=0.1, alpha=0.5, steps=30, every=10)
    for i, rho in enumerate(rhos):
        one = dln.train(P, "1sam", rho=rho, lr=0.1, alpha=0.5, steps=30, every=10)
        # a batched matmul may round differently from a single one: agreement to rounding
        np.testing.assert_allclose(grid.beta[i], one.beta, rtol=0, atol=1e-14)
        np.testing.assert_allclose(grid.l1[:, i], one.l1, rtol=1e-13)


def test_deterministic_for_a_seed():
    a, b, c = dln.make_problem(seed=5), dln.make_problem(seed=5), dln.make_problem(seed=6)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.theta, b.theta)
    assert not np.array_equal(a.X, c.X)
    assert np.count_nonzero(a.theta) == 3 and (a.theta >= 0).all()
    assert abs(np.linalg.norm(a.theta) - 1) < 1e-12


def test_divergence_is_flagged_not_spread():
    P = tiny()
    run = dln.train(P, "nsam", rho=np.array([0.0, 1e4]), lr=0.5, alpha=0.5, steps=200)
    assert list(run.diverged) == [False, True]
    assert np.isfinite(run.test_loss[-1, 0]) and np.isnan(run.test_loss[-1, 1])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: dln.make_problem(d=3, k=4), "do not fit"),
        (lambda: dln.make_problem(noise=-1), "noise must be >= 0"),
        (lambda: dln.train(tiny(), "sgd"), "unknown method"),
        (lambda: dln.train(tiny(), "gd", rho=-0.1), "rho must be >= 0"),
        (lambda: dln.train(tiny(), "gd", steps=0), "steps must be a positive integer"),
    ],
)
def test_errors(call, match):
    with pytest.raises(SamkitError, match=match):
        call()
