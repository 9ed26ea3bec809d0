"""Closures in torch's convention, step hooks for every front end, and the step record."""

from __future__ import annotations

import pytest
import torch
from optim_helpers import assert_states, ce, make_batch, make_cnn, state_of
from rule_reference import _norm
from torch.optim.optimizer import register_optimizer_step_post_hook

from samkit import SAM, cadence, rules

LR = 0.1


def closure_for(model, opt, batch, calls=None):
    def closure():
        opt.zero_grad()
        loss = ce(model, batch)
        loss.backward()
        if calls is not None:
            calls.append(float(loss.detach()))
        return loss

    return closure


@pytest.mark.parametrize(
    "kw",
    [{}, {"rule": rules.FriendlySAM(lmbda=0.5)}, {"rule": rules.GSAM(alpha=0.3)},
     {"rule": rules.MultiStepSAM(steps=3, step_size=0.6)}, {"rule": rules.MomentumSAM(), "momentum": 0.9},
     {"max_grad_norm": 0.05}],
    ids=["sam", "fsam", "gsam", "multistep", "momentum", "clip"],
)
def test_torch_convention_closure_equals_train_step(kw):
    """Lightning and LBFGS-style code call ``opt.step(closure)`` with no gradient computed yet."""
    a, b = make_cnn(), make_cnn()
    opt_a = SAM(a.parameters(), torch.optim.SGD, lr=LR, rho=0.1, **kw)
    opt_b = SAM(b.parameters(), torch.optim.SGD, lr=LR, rho=0.1, model=b, **kw)
    for s in range(3):
        batch = make_batch(seed=s)
        loss_a = opt_a.train_step(a, ce, batch)
        opt_b.zero_grad(set_to_none=True)
        loss_b = opt_b.step(closure_for(b, opt_b, batch))
        torch.testing.assert_close(loss_b.detach(), loss_a, atol=1e-14, rtol=0)  # the loss at w
    assert_states(state_of(b), state_of(a), atol=1e-13)  # BatchNorm statistics included
    assert opt_b.passes == opt_a.passes == 3 * opt_a.passes_per_step


def test_popular_sam_convention_still_works():
    """Gradients present when step is called: the caller did the first backward."""
    a, b = make_cnn(), make_cnn()
    opt_a = SAM(a.parameters(), torch.optim.SGD, lr=LR, rho=0.1)
    opt_b = SAM(b.parameters(), torch.optim.SGD, lr=LR, rho=0.1, model=b)
    for s in range(3):
        batch = make_batch(seed=s)
        opt_a.train_step(a, ce, batch)
        ce(b, batch).backward()
        calls = []
        opt_b.step(closure_for(b, opt_b, batch, calls))
        opt_b.zero_grad()
        assert len(calls) == 1
    assert_states(state_of(b), state_of(a), atol=1e-13)
    assert opt_b.passes == 6.0


def test_closure_step_without_ascent_skips_the_second_call():
    """A cadence step without ascent: one closure call (torch) or none (gradients present)."""
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, model=model, cadence=cadence.Every(2))
    plain = make_cnn()
    base = torch.optim.SGD(plain.parameters(), lr=LR)
    counts = []
    for s in range(4):
        calls = []
        batch = make_batch(seed=s)
        opt.zero_grad(set_to_none=True)
        opt.step(closure_for(model, opt, batch, calls))
        counts.append(len(calls))
        if s == 0:  # after the first (SAM) step, a plain step must match SGD from the same point
            plain.load_state_dict(model.state_dict())
        elif s == 1:
            base.zero_grad()
            ce(plain, batch).backward()
            base.step()
            assert_states(state_of(model), state_of(plain))
    assert counts == [2, 1, 2, 1] and opt.passes == 6.0 and opt.ascent_steps == 2


@pytest.mark.parametrize("front", ["train_step", "two_call", "closure_torch", "closure_sam"])
def test_step_hooks_fire_once_per_step_for_every_front_end(front):
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, model=model)
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(("pre", o.steps)))
    opt.register_step_post_hook(lambda o, args, kwargs: seen.append(("post", o.steps)))
    handle = register_optimizer_step_post_hook(
        lambda o, args, kwargs: seen.append(("global", type(o).__name__)) if o is opt else None)
    try:
        for s in range(2):
            batch = make_batch(seed=s)
            if front == "train_step":
                opt.train_step(model, ce, batch)
            elif front == "two_call":
                ce(model, batch).backward()
                opt.first_step(zero_grad=True)
                ce(model, batch).backward()
                opt.second_step(zero_grad=True)
            elif front == "closure_torch":
                opt.zero_grad(set_to_none=True)
                opt.step(closure_for(model, opt, batch))
            else:
                ce(model, batch).backward()
                opt.step(closure_for(model, opt, batch))
                opt.zero_grad()
    finally:
        handle.remove()
    # once per step whatever the front end (the base optimizer's own step fires only its own hooks)
    assert seen == [("pre", 0), ("post", 1), ("global", "SAM"), ("pre", 1), ("post", 2), ("global", "SAM")]


def test_step_record_of_a_sam_step_and_a_skipped_ascent():
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.0, rho=0.1, cadence=cadence.Every(2))
    batch = make_batch(seed=0)
    losses = []

    def spy(m, b):
        loss = ce(m, b)
        losses.append(loss.detach())
        return loss

    g = torch.autograd.grad(ce(model, batch), list(model.parameters()))
    returned = opt.train_step(model, spy, batch)
    rec = opt.last_step
    assert rec.ascended and rec.taken and rec.passes == 2.0
    assert torch.equal(rec.loss, returned) and torch.equal(rec.loss, losses[0])
    assert torch.equal(rec.perturbed_loss, losses[1]) and losses[1] > losses[0]  # uphill at w + e
    torch.testing.assert_close(rec.ascent_norm, _norm(g), atol=1e-12, rtol=0)
    opt.train_step(model, spy, batch)  # Every(2): no ascent at step 1
    rec = opt.last_step
    assert not rec.ascended and rec.passes == 1.0 and rec.perturbed_loss is None
    assert torch.equal(rec.loss, losses[2]) and len(losses) == 3


def test_step_record_of_multistep_closure_equals_train_step():
    """The record's ascent norm is the first ascent pass's in every front end (was the sum of all
    passes' norms in step(closure))."""
    a, b = make_cnn(), make_cnn()
    rule = dict(rule=rules.MultiStepSAM(steps=3, step_size=0.6))
    opt_a = SAM(a.parameters(), torch.optim.SGD, lr=LR, rho=0.1, **rule)
    opt_b = SAM(b.parameters(), torch.optim.SGD, lr=LR, rho=0.1, model=b, **rule)
    batch = make_batch(seed=0)
    opt_a.train_step(a, ce, batch)
    opt_b.step(closure_for(b, opt_b, batch))
    torch.testing.assert_close(opt_b.last_step.ascent_norm, opt_a.last_step.ascent_norm, atol=1e-13, rtol=0)
    assert opt_b.last_step.passes == opt_a.last_step.passes == 4.0
