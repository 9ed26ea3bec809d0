"""A compiled step equals the eager step; on CUDA it makes no host sync."""

from __future__ import annotations

import pytest
import torch
from optim_helpers import assert_states, ce, make_batch, make_cnn, state_of

import samkit
from samkit import FriendlySAM


def run(compiled: bool, device: str = "cpu", steps: int = 3):
    model = make_cnn().to(device)
    opt = FriendlySAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9, shards=2,
                      adaptive=True, nonfinite="unchecked")
    step = samkit.compile_step(opt, model, ce) if compiled else (
        lambda b: opt.train_step(model, ce, b))
    losses = [step(tuple(t.to(device) for t in make_batch(seed=s))) for s in range(steps)]
    return model, torch.stack(losses)


def test_compiled_step_equals_eager():
    m_eager, l_eager = run(False)
    m_comp, l_comp = run(True)
    assert_states(state_of(m_comp), state_of(m_eager), atol=1e-10)
    torch.testing.assert_close(l_comp, l_eager, atol=1e-12, rtol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("execution", ["loop", "vectorized"])
def test_no_host_sync_in_the_step(execution):
    model = make_cnn().cuda()
    opt = samkit.SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9, shards=4,
                     execution=execution, nonfinite="unchecked")
    batch = tuple(t.cuda() for t in make_batch())
    opt.train_step(model, ce, batch)  # warm-up: lazy state allocation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        opt.train_step(model, ce, batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
