"""Mixed precision: bf16 autocast runs; a GradScaler is honoured and skips exactly on inf/NaN."""

from __future__ import annotations

import itertools

import pytest
import torch
from optim_helpers import assert_states, ce, make_batch, make_cnn, state_of

from samkit import SAM, FriendlySAM


def test_bf16_autocast_runs_and_tracks_fp32():
    def run(autocast: bool):
        model = make_cnn().float()
        opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, shards=2)
        x, y = make_batch()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = opt.train_step(model, ce, (x.float(), y))
        return model, loss

    m16, l16 = run(True)
    m32, l32 = run(False)
    assert torch.isfinite(l16) and all(p.dtype == torch.float32 for p in m16.parameters())
    assert abs(l16.float().item() - l32.item()) < 0.05
    for p16, p32 in zip(m16.parameters(), m32.parameters()):
        torch.testing.assert_close(p16, p32, atol=2e-2, rtol=0)


@pytest.mark.parametrize("cls", [SAM, FriendlySAM])
def test_grad_scaler_equals_unscaled_update(cls):
    """Power-of-two scaling is exact in float64, so the update is the same to rounding."""

    def run(scaler):
        model = make_cnn()
        opt = cls(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9, shards=2)
        for s in range(3):
            opt.train_step(model, ce, make_batch(seed=s), scaler=scaler)
        return state_of(model)

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
