"""Mixed precision: bf16 autocast runs; a GradScaler is honoured and skips exactly on inf/NaN."""

from __future__ import annotations

import functools
import itertools

import pytest
import torch
from optim_helpers import assert_states, ce, make_batch, make_cnn, state_of
from torch import nn

from samkit import SAM, FriendlySAM, rules


def _update(autocast: bool, rho: float, steps: int = 3, **kw) -> torch.Tensor:
    """The total weight change of a few steps, with or without bf16 autocast around train_step."""
    model = make_cnn().float()
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, rho=rho, **kw)
    for s in range(steps):
        x, y = make_batch(seed=s)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = opt.train_step(model, ce, (x.float(), y))
        assert torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    return torch.cat([(p.detach() - w).flatten() for p, w in zip(model.parameters(), w0)])


@pytest.mark.parametrize("kw", [{}, {"shards": 2}, {"rule": rules.FriendlySAM(lmbda=0.5)}])
def test_bf16_autocast_takes_the_sam_step_not_the_sgd_step(kw):
    """Autocast caches the bf16 copy of each weight: a descent pass at w + e (weights changed in
    place) must not be served the cached copy of w. The bf16 update is close to the fp32 SAM update
    (bf16 rounding of the gradients and of w + e: a few %), far from the fp32 SGD update."""
    sam16 = _update(True, rho=0.2, **kw)
    sam32 = _update(False, rho=0.2, **kw)
    sgd32 = _update(False, rho=0.0, **kw)
    assert (sam16 - sam32).norm() < 0.1 * (sgd32 - sam32).norm()
    assert (sam16 - sam32).norm() < 0.06 * sam32.norm()


def scaled_run(scaler, cls=SAM, steps=3, **kw):
    """The model's state after a few steps with ``scaler`` (or none)."""
    model = make_cnn()
    opt = cls(model.parameters(), torch.optim.SGD, lr=0.1, **{"momentum": 0.9, "shards": 2, **kw})
    for s in range(steps):
        opt.train_step(model, ce, make_batch(seed=s), scaler=scaler)
    return state_of(model)


@pytest.mark.parametrize("cls", [SAM, FriendlySAM])
def test_grad_scaler_equals_unscaled_update(cls):
    """Power-of-two scaling is exact in float64, so the update is the same to rounding."""
    run = functools.partial(scaled_run, cls=cls)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    assert_states(run(scaler), run(None), atol=1e-13)
    assert scaler.get_scale() == 2.0**10  # nothing was skipped


def test_grad_scaler_skips_on_inf_in_descent_and_ascent():
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = state_of(model)
    x, y = make_batch()
    x[0] = float("inf")
    opt.train_step(model, ce, (x, y), scaler=scaler)  # no exception: the scaler's way
    assert_states(state_of(model), before)
    assert scaler.get_scale() == 2.0**9 and opt.skipped_steps == 1

    calls = itertools.count()

    def inf_on_first_pass(m, b):  # only the ascent pass is non-finite
        loss = ce(m, b)
        return loss * float("inf") if next(calls) == 0 else loss

    opt.train_step(model, inf_on_first_pass, make_batch(), scaler=scaler)
    assert_states(state_of(model), before)
    assert scaler.get_scale() == 2.0**8 and opt.skipped_steps == 2 and opt.steps == 0
    opt.train_step(model, ce, make_batch(), scaler=scaler)
    assert opt.steps == 1 and not torch.equal(model.head.weight, before["head.weight"])


@pytest.mark.parametrize(
    "kw",
    [
        {"rule": rules.GSAM(alpha=0.3)},
        {"rule": rules.WSAM(gamma=0.8)},
        {"rule": rules.GCSAM()},
        {"rule": rules.MultiStepSAM(steps=2, step_size=0.7)},
        {"rule": rules.MomentumSAM(), "shards": 1},
        {"rule": rules.UnnormalizedSAM(), "rho": 0.5},
        {"max_grad_norm": 0.1, "micro_batch_size": 3},
    ],
    ids=["gsam", "wsam", "gcsam", "multistep", "momentum", "usam", "clip_micro"],
)
def test_grad_scaler_equals_unscaled_update_for_every_rule(kw):
    run = functools.partial(scaled_run, **kw)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    assert_states(run(scaler), run(None), atol=1e-13)
    assert scaler.get_scale() == 2.0**10


def test_friendly_sam_with_a_scale_that_changes_every_step():
    """F-SAM mixes this step's gradient with an EMA of earlier ones: both must be unscaled, or the
    direction depends on the scale (SAM's normalised direction would hide a missing unscale)."""

    run = functools.partial(scaled_run, cls=FriendlySAM, steps=4, sigma=0.9, lmbda=0.5, momentum=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4, growth_interval=1)
    assert_states(run(scaler), run(None), atol=1e-13)
    assert scaler.get_scale() == 2.0**8  # it really changed at every step


def test_disabled_grad_scaler_is_a_no_op():
    """``GradScaler(enabled=use_amp)`` with use_amp False (and torch's own disabling) must just work."""

    assert_states(scaled_run(torch.amp.GradScaler("cpu", enabled=False)), scaled_run(None))


def test_channels_last_with_grad_scaler_skips_a_non_finite_step():
    """The non-finite marker must not need a ``view`` of the gradient (channels_last has none)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    model = model.to(memory_format=torch.channels_last)
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = state_of(model)
    calls = itertools.count()
    x = torch.randn(8, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (8,))

    def inf_on_first_pass(m, b):
        loss = ce(m, b)
        return loss * float("inf") if next(calls) == 0 else loss

    w = model[0].weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    opt.train_step(model, inf_on_first_pass, (x, y), scaler=scaler)
    assert_states(state_of(model), before)
    assert opt.skipped_steps == 1 and scaler.get_scale() == 2.0**9
