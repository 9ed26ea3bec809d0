"""m-sharpness against closed forms of a quadratic, and its grouping/weighting conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from measure_helpers import Quadratic, bn_mlp, ce, class_data, error_rate, quad_loss

from samkit.measure import sharpness

A = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.5]], dtype=torch.float64)
LMAX = torch.linalg.eigvalsh(A)[-1].item()


def quadratic():
    return Quadratic(A, torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64))


@pytest.mark.parametrize("rho", [0.05, 1.0])
def test_worst_case_at_minimum_is_half_rho_squared_lambda_max(rho):
    # On the sphere, normalized ascent + projection is power iteration on I + (eta/|A d|) A:
    # with eta = rho the Rayleigh-quotient error shrinks by ((1 + l2/l1) / 2)^2 ~ 0.6 per step,
    # so 60 steps leave < 1e-12 relative: the tolerance below is rounding-level, not fitted.
    res = sharpness(quadratic(), quad_loss, torch.zeros(8, 1), rho=rho, steps=60, progress=False)
    assert res.loss_increase == pytest.approx(rho**2 * LMAX / 2, rel=1e-9)
    assert res.base_loss == pytest.approx(0.0, abs=1e-15)
    assert res.num_groups == 1 and res.num_examples == 8


def test_worst_case_linf_at_minimum_is_max_of_box_corners():
    # max over the box |d_i| <= rho of d^T A d / 2 is attained at a corner: brute force 8 corners.
    rho = 0.1
    corners = torch.cartesian_prod(*[torch.tensor([-rho, rho], dtype=torch.float64)] * 3)
    best = max(0.5 * (c @ A @ c).item() for c in corners)
    res = sharpness(
        quadratic(),
        quad_loss,
        torch.zeros(4, 1),
        rho=rho,
        norm="linf",
        steps=30,
        step_size=rho,
        progress=False,
    )
    assert res.loss_increase == pytest.approx(best, rel=1e-9)


def test_adaptive_ball_is_the_scaled_ball():
    # With T = diag(|w|) at w = c, the worst case is rho^2 lambda_max(T A T) / 2
    # (here T A T has eigenvalues ~8.7, 2.3, 0.13: a wide gap, so 80 steps converge fully).
    q = Quadratic(A, torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    t = torch.diag(q.c.abs())
    rho = 0.2
    res = sharpness(
        q, quad_loss, torch.zeros(4, 1), rho=rho, adaptive=True, steps=80, progress=False
    )
    assert res.loss_increase == pytest.approx(
        rho**2 * torch.linalg.eigvalsh(t @ A @ t)[-1].item() / 2, rel=1e-8
    )


def test_average_case_matches_closed_form_within_standard_errors():
    # E[d^T A d]/2 with d ~ N(0, rho^2/d I) is rho^2 tr(A) / (2 d); shard_size=1 on 200 examples
    # gives 200 groups, so stderr over groups is a real spread.
    rho = 0.5
    res = sharpness(
        quadratic(),
        quad_loss,
        torch.zeros(200, 1),
        rho=rho,
        kind="average",
        shard_size=1,
        num_samples=5,
        seed=3,
        progress=False,
    )
    true = rho**2 * torch.trace(A).item() / (2 * 3)
    assert res.num_groups == 200
    assert res.loss_increase_stderr > 0
    assert abs(res.loss_increase - true) <= 3 * res.loss_increase_stderr


def test_groups_are_consecutive_and_weighted_by_size():
    model = bn_mlp()
    x, y = class_data(n=10)
    kw = dict(rho=0.1, steps=3, seed=0, progress=False)
    res = sharpness(model, ce, [(x[:7], y[:7]), (x[7:], y[7:])], shard_size=3, **kw)
    assert [g[0] for g in res.per_group] == [3, 3, 1, 3]
    incs = np.array([g[1] for g in res.per_group])
    assert res.loss_increase == pytest.approx(np.average(incs, weights=[3, 3, 1, 3]))
    assert all(i >= 0 for i in incs)  # delta = 0 is in the ball
    # shard_size=None: one perturbation per batch, equal to shard_size = batch size
    whole = sharpness(model, ce, (x, y), shard_size=None, **kw)
    same = sharpness(model, ce, (x, y), shard_size=10, **kw)
    assert whole.loss_increase == same.loss_increase and whole.num_groups == 1


def test_error_increase_and_seed_reproducibility():
    model = bn_mlp()
    x, y = class_data(n=12)
    kw = dict(
        rho=2.0, kind="average", shard_size=4, num_samples=3, error_fn=error_rate, progress=False
    )
    a = sharpness(model, ce, (x, y), seed=5, **kw)
    b = sharpness(model, ce, (x, y), seed=5, **kw)
    c = sharpness(model, ce, (x, y), seed=6, **kw)
    assert a.per_group == b.per_group and a.per_group != c.per_group
    assert a.base_error == pytest.approx(error_rate(model.eval(), (x, y)).item())
    # errors are fractions of 4 examples averaged over 3 draws: multiples of 1/12
    for _, _, e in a.per_group:
        assert -1 <= e <= 1 and abs(e * 12 - round(e * 12)) < 1e-9
    assert a.error_increase == pytest.approx(np.mean([g[2] for g in a.per_group]))


def test_rho_zero_gives_zero_sharpness():
    model = bn_mlp()
    x, y = class_data()
    for kind in ("worst", "average"):
        res = sharpness(model, ce, (x, y), rho=0.0, kind=kind, steps=2, progress=False)
        assert res.loss_increase == 0.0
