"""Rules whose descent gradient is taken at several points: SAMPa and random weight perturbation.

Each against a hand-written float64 reference (the papers' equations, one parameter at a time, with
plain tensors), both executions (one point after another, or the stacked pair in one batched pass),
micro-batches, a GradScaler, exact resume, and the refusals.
"""

from __future__ import annotations

import copy

import pytest
import torch
from optim_helpers import assert_states, ce, make_batch, make_cnn, make_mlp, state_of
from rule_reference import EPS, _norm

from samkit import SAM, SamkitError, cadence, rules

LR, MOMENTUM, WD, RHO = 0.1, 0.9, 5e-4, 0.1
STEPS = 4
BN_KEYS = ("running", "num_batches")


def _grad_at(model, params, w, offset, batch, bn0):
    """Loss and gradient at ``w + offset`` from the step's starting BatchNorm statistics."""
    with torch.no_grad():
        for p, wi, oi in zip(params, w, offset):
            p.copy_(wi + oi)
    model.load_state_dict(bn0, strict=False)
    loss = ce(model, batch)
    return loss, list(torch.autograd.grad(loss, params))


class SGDMomentum:
    """torch.optim.SGD(momentum, weight_decay) written out."""

    def __init__(self):
        self.buf = None

    def direction(self, w, g):
        g = [gi + WD * wi for gi, wi in zip(g, w)]
        if self.buf is None:
            return [x.clone() for x in g]
        return [MOMENTUM * b + x for b, x in zip(self.buf, g)]

    def step(self, w, g):
        self.buf = self.direction(w, g)
        return [wi - LR * b for wi, b in zip(w, self.buf)]


def sampa_reference(model, batches, mix):
    """Xie et al.: e = rho g_y/||g_y||, y = w - lr u(g_y), h = (1-mix) grad(w+e) + mix grad(y);
    the first step is a plain step at w whose gradient becomes g_y; statistics from the y pass."""
    params = list(model.parameters())
    sgd, gy = SGDMomentum(), None
    for batch in batches:
        w = [p.detach().clone() for p in params]
        bn0 = {k: v.clone() for k, v in model.state_dict().items() if k.split(".")[-1].startswith(BN_KEYS)}
        zero = [torch.zeros_like(x) for x in w]
        if gy is None:
            _, h = _grad_at(model, params, w, zero, batch, bn0)
            gy = h
        else:
            norm = _norm(gy)
            e = [RHO * g / (norm + EPS) for g in gy]
            d = [-LR * u for u in sgd.direction(w, gy)]
            _, g1 = _grad_at(model, params, w, e, batch, bn0)
            _, g2 = _grad_at(model, params, w, d, batch, bn0)  # its statistics stay
            h = [(1 - mix) * a + mix * b for a, b in zip(g1, g2)]
            gy = g2
        new = sgd.step(w, h)
        with torch.no_grad():
            for p, x in zip(params, new):
                p.copy_(x)
    return gy


def rwp_reference(model, batches, noise, mix, adapt=0.0, beta=0.9, seed=0):
    """Li et al.: per filter std noise*||W_i|| / sqrt(1 + adapt*F_i); h = mix grad(w+eps) +
    (1-mix) grad(w); F <- beta F + grad(w+eps)^2; statistics from the clean (or only) pass."""
    params = list(model.parameters())
    sgd, gen, fisher = SGDMomentum(), torch.Generator().manual_seed(seed), None
    for batch in batches:
        w = [p.detach().clone() for p in params]
        bn0 = {k: v.clone() for k, v in model.state_dict().items() if k.split(".")[-1].startswith(BN_KEYS)}
        eps = []
        for i, wi in enumerate(w):
            if wi.dim() > 1:
                std = torch.stack([noise * wi[r].norm() for r in range(wi.shape[0])])
                std = std.view(-1, *([1] * (wi.dim() - 1)))
                f = None if fisher is None else torch.stack([fisher[i][r].sum() for r in range(wi.shape[0])])
                f = None if f is None else f.view(-1, *([1] * (wi.dim() - 1)))
            else:
                std = noise * (wi.norm() + 1e-16)
                f = None if fisher is None else fisher[i]
            if adapt and f is not None:
                std = std / torch.sqrt(1 + adapt * f)
            eps.append(torch.randn(wi.shape, generator=gen, dtype=wi.dtype) * std)
        zero = [torch.zeros_like(x) for x in w]
        if mix < 1:
            _, noisy = _grad_at(model, params, w, eps, batch, bn0)
            _, clean = _grad_at(model, params, w, zero, batch, bn0)  # its statistics stay
            h = [mix * a + (1 - mix) * b for a, b in zip(noisy, clean)]
        else:
            _, noisy = _grad_at(model, params, w, eps, batch, bn0)
            h = noisy
        if adapt:
            sq = [g.square() for g in noisy]
            fisher = sq if fisher is None else [beta * a + b for a, b in zip(fisher, sq)]
        new = sgd.step(w, h)
        with torch.no_grad():
            for p, x in zip(params, new):
                p.copy_(x)


def batches(n=STEPS):
    return [make_batch(seed=s) for s in range(n)]


def run(model, rule, execution="loop", micro=None, scaler=None, steps=STEPS):
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=MOMENTUM, weight_decay=WD,
              rule=rule, execution=execution, micro_batch_size=micro)
    for batch in batches(steps):
        opt.train_step(model, ce, batch, scaler=scaler)
    return opt


@pytest.mark.parametrize("execution", ["loop", "vectorized"])
@pytest.mark.parametrize("mix", [0.0, 0.3])
def test_sampa_matches_its_float64_reference(mix, execution):
    model, ref = make_cnn(), make_cnn()
    opt = run(model, rules.SAMPa(mix=mix), execution)
    assert opt.execution_used == execution
    gy = sampa_reference(ref, batches(), mix)
    assert_states(state_of(model), state_of(ref), atol=1e-10)
    for p, g in zip(model.parameters(), gy):
        torch.testing.assert_close(opt.state[p]["sampa_gy"], g, rtol=0, atol=1e-10)
    # honest passes: one for the first step, two for each other
    assert opt.passes == 1 + 2 * (STEPS - 1)


@pytest.mark.parametrize("execution", ["loop", "vectorized"])
@pytest.mark.parametrize("kw", [{"noise": 0.05}, {"noise": 0.05, "mix": 0.5},
                                {"noise": 0.05, "mix": 0.5, "adapt": 0.3, "beta": 0.8},
                                {"noise": 0.05, "adapt": 0.3, "seed": 7}])
def test_rwp_matches_its_float64_reference(kw, execution):
    model, ref = make_cnn(), make_cnn()
    opt = run(model, rules.RWP(**kw), execution)
    rwp_reference(ref, batches(), mix=kw.get("mix", 1.0), **{k: v for k, v in kw.items() if k != "mix"})
    assert_states(state_of(model), state_of(ref), atol=1e-10)
    assert opt.passes == STEPS * (2 if kw.get("mix", 1.0) < 1 else 1)


def test_sampa_without_momentum_or_with_another_base_predicts_the_plain_step():
    """AdamW: y = w - lr g_y (the paper's equation), not AdamW's step."""
    model = make_mlp()
    opt = SAM(model.parameters(), torch.optim.AdamW, rho=RHO, lr=0.01, rule=rules.SAMPa(mix=1.0))
    opt.train_step(model, ce, make_batch(seed=0))
    gy = [opt.state[p]["sampa_gy"].clone() for p in model.parameters()]
    w = [p.detach().clone() for p in model.parameters()]
    points, _ = opt.rule.descent_points(opt._plan(with_grad=False).rules)
    for d, g in zip([t for group in points[1][0] for t in group], gy):
        torch.testing.assert_close(d, -0.01 * g, rtol=0, atol=0)
    assert all(torch.equal(a, b.detach()) for a, b in zip(w, model.parameters()))


@pytest.mark.parametrize("rule", [lambda: rules.SAMPa(mix=0.3), lambda: rules.RWP(noise=0.05, mix=0.5)])
def test_micro_batches_are_memory_not_math(rule):
    """No BatchNorm: the mean loss of the pieces is the batch's; equal to the whole batch."""
    a, b = make_mlp(), make_mlp()
    run(a, rule(), micro=3)
    run(b, rule())
    assert_states(state_of(a), state_of(b), atol=1e-10)


@pytest.mark.parametrize("rule", [lambda: rules.SAMPa(mix=0.3),
                                  lambda: rules.RWP(noise=0.05, mix=0.5, adapt=0.2)])
def test_resume_mid_run_continues_exactly(rule):
    model, other = make_cnn(), make_cnn()
    opt = run(model, rule(), steps=2)
    other.load_state_dict(model.state_dict())
    resumed = SAM(other.parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=MOMENTUM, weight_decay=WD,
                  rule=rule())
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))  # as read from a checkpoint file
    for batch in batches(4)[2:]:
        opt.train_step(model, ce, batch)
        resumed.train_step(other, ce, batch)
    assert_states(state_of(model), state_of(other))


@pytest.mark.parametrize("rule", [lambda: rules.SAMPa(mix=0.3), lambda: rules.RWP(noise=0.05, mix=0.5)])
def test_a_grad_scaler_unscales_every_point_and_skips_an_overflow(rule):
    """float32: the scaled run equals the unscaled one to rounding; an overflow is skipped, the weights
    and statistics stay, the scale backs off."""
    def float_batch(seed):
        x, y = make_batch(seed=seed)
        return x.float(), y

    models, opts = [], []
    for _ in range(2):
        models.append(make_mlp().float())
        opts.append(SAM(models[-1].parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=MOMENTUM,
                        rule=rule()))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for s in range(STEPS):
        opts[0].train_step(models[0], ce, float_batch(s), scaler=scaler)
        opts[1].train_step(models[1], ce, float_batch(s))
    assert_states(state_of(models[0]), state_of(models[1]), atol=1e-5)
    before, scale = state_of(models[0]), scaler.get_scale()
    x, y = float_batch(0)
    opts[0].train_step(models[0], ce, (x * float("inf"), y), scaler=scaler)
    assert scaler.get_scale() < scale and opts[0].last_step.taken is False
    assert_states(before, state_of(models[0]))


def test_points_rules_refuse_what_they_cannot_do():
    model = make_mlp()
    for rule in (rules.SAMPa(), rules.RWP(mix=0.5)):
        with pytest.raises(SamkitError, match="use shards=1"):
            SAM(model.parameters(), torch.optim.SGD, lr=LR, rule=rule, shards=2)
        with pytest.raises(SamkitError, match="nothing to skip"):
            SAM(model.parameters(), torch.optim.SGD, lr=LR, rule=type(rule)(), cadence=cadence.Every(2))
        opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, rule=type(rule)(mix=0.5))
        ce(model, make_batch()).backward()
        with pytest.raises(SamkitError, match="at 2 points, which needs the loss function"):
            opt.first_step()
    with pytest.raises(SamkitError, match="mix must be <= 1"):
        rules.SAMPa(mix=1.5)
    with pytest.raises(SamkitError, match="noise must be a non-negative"):
        rules.RWP(noise=-1.0)
