"""The vectorized execution computes what the loop computes (float64, BatchNorm, uneven shards)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from optim_helpers import assert_states, ce, make_batch, make_cnn, state_of
from torch import nn

from samkit import SAM, FriendlySAM, SamkitError


def trajectory(execution, cls=SAM, steps=3, n=8, scaler=None, **kw):
    model = make_cnn()
    opt = cls(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9, rho=0.1,
              execution=execution, **kw)
    losses = [opt.train_step(model, ce, make_batch(n, seed=s), scaler=scaler) for s in range(steps)]
    return model, opt, torch.stack(losses)


@pytest.mark.parametrize(
    "cls,kw",
    [
        (SAM, {"shards": 2}),
        (SAM, {"shards": 4}),
        (SAM, {"shards": 3}),  # 3 + 3 + 2: two runs of equal size
        (SAM, {"shard_size": 3}),  # 3 + 3 + 2 as well, via shard_size
        (SAM, {"shard_size": 1}),  # 1-SAM
        (SAM, {"shards": 4, "adaptive": True, "eta": 0.01}),
        (FriendlySAM, {"shards": 4, "sigma": 0.8, "lmbda": 0.6}),
    ],
)
def test_vectorized_equals_loop(cls, kw):
    m_loop, o_loop, l_loop = trajectory("loop", cls, **kw)
    m_vec, o_vec, l_vec = trajectory("vectorized", cls, **kw)
    assert o_loop.execution_used == "loop" and o_vec.execution_used == "vectorized"
    assert_states(state_of(m_vec), state_of(m_loop), atol=1e-10)  # weights and BatchNorm stats
    torch.testing.assert_close(l_vec, l_loop, atol=1e-12, rtol=0)
    if cls is FriendlySAM:
        for p_l, p_v in zip(m_loop.parameters(), m_vec.parameters()):
            torch.testing.assert_close(o_vec.state[p_v]["ema"], o_loop.state[p_l]["ema"],
                                       atol=1e-12, rtol=0)


def test_vectorized_with_grad_scaler_equals_loop():
    s1 = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    s2 = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    m_loop, _, _ = trajectory("loop", shards=4, scaler=s1)
    m_vec, _, _ = trajectory("vectorized", shards=4, scaler=s2)
    assert_states(state_of(m_vec), state_of(m_loop), atol=1e-10)


def test_vectorized_nan_leaves_weights_and_stats():
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, shards=4, execution="vectorized")
    before = state_of(model)
    x, y = make_batch()
    x[5] = float("nan")
    with pytest.raises(SamkitError):
        opt.train_step(model, ce, (x, y))
    assert_states(state_of(model), before)


def test_vectorized_in_eval_mode_and_with_frozen_params():
    """No running statistics to merge in eval mode; frozen parameters stay unbatched constants."""
    model_a, model_b = make_cnn(), make_cnn()
    for m in (model_a, model_b):
        m.eval()
        m.conv1.weight.requires_grad_(False)
    opts = [SAM([p for p in m.parameters() if p.requires_grad], torch.optim.SGD, lr=0.1, shards=2,
                execution=e) for m, e in ((model_a, "loop"), (model_b, "vectorized"))]
    for s in range(2):
        for m, o in zip((model_a, model_b), opts):
            o.train_step(m, ce, make_batch(seed=s))
    assert_states(state_of(model_b), state_of(model_a), atol=1e-10)


class DropoutMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(36, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(F.dropout(F.relu(self.fc1(x.flatten(1))), 0.5, self.training))


def test_vectorized_dropout_runs_with_random_masks():
    """vmap refuses random ops unless told how to draw them; each shard draws its own mask."""
    torch.manual_seed(0)
    model = DropoutMLP().double()
    before = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, shards=4, execution="vectorized")
    loss = opt.train_step(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), make_batch())
    assert opt.execution_used == "vectorized" and torch.isfinite(loss)
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_auto_picks_loop_on_cpu_and_says_so():
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, shards=2)
    opt.train_step(model, ce, make_batch())
    assert opt.execution == "auto" and opt.execution_used == "loop"


def test_vectorized_rejects_parameters_outside_the_model():
    model = make_cnn()
    extra = nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = SAM([*model.parameters(), extra], torch.optim.SGD, lr=0.1, shards=2, execution="vectorized")
    with pytest.raises(SamkitError, match="not parameters of the model"):
        opt.train_step(model, ce, make_batch())
