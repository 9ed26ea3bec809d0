"""The vectorized execution computes what the loop computes (float64, BatchNorm, uneven shards)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from optim_helpers import assert_states, ce, make_batch, make_cnn, state_of
from torch import nn

from samkit import SAM, FriendlySAM, SamkitError, cadence, rules


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


class RecordingSAM(rules.SAM):
    """SAM that keeps the per-shard ascent gradients it is given (a rule is an extension point)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def perturbation(self, grads, ctx, *, stacked=False, previous=None):
        self.seen.append((stacked, [[g.detach().clone() for g in group] for group in grads]))
        return super().perturbation(grads, ctx, stacked=stacked, previous=previous)


def test_vectorized_dropout_draws_a_mask_per_shard():
    """vmap refuses random ops unless told how to draw them; each shard draws its own mask."""
    torch.manual_seed(0)
    model = DropoutMLP().double()
    x, y = make_batch(1)
    batch = (x.expand(4, *x.shape[1:]), y.expand(4))  # the same example in each of 4 shards
    rule = RecordingSAM()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, shards=4, execution="vectorized", rule=rule)
    loss = opt.train_step(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), batch)
    assert opt.execution_used == "vectorized" and torch.isfinite(loss)
    stacked, grads = rule.seen[0]
    assert stacked and grads[0][0].shape[0] == 4
    per_shard = grads[0][0].flatten(1)  # fc1.weight's gradient, one row per shard
    # same example, same weights: only the dropout masks can make the shards' gradients differ
    assert all(not torch.equal(per_shard[i], per_shard[j]) for i in range(4) for j in range(i))
    model.eval()  # and without dropout they are the same
    rule.seen.clear()
    opt.train_step(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), batch)
    per_shard = rule.seen[0][1][0][0].flatten(1)
    assert all(torch.equal(per_shard[0], per_shard[i]) for i in range(4))


class DataDependent(nn.Module):
    """A forward with data-dependent control flow: vmap has no rule for it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(36, 3)

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out if out.sum() > -1e9 else -out


def test_auto_falls_back_to_the_loop_when_vectorizing_fails(monkeypatch, caplog):
    import samkit.optim.executions as plan_module

    monkeypatch.setattr(plan_module, "auto_vectorizes", lambda *a, **k: (True, "as on CUDA"))
    torch.manual_seed(0)
    model = DataDependent().double()
    twin = copy.deepcopy(model)
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, shards=2)
    ref = SAM(twin.parameters(), torch.optim.SGD, lr=0.1, shards=2, execution="loop")
    with caplog.at_level("WARNING", logger="samkit"):
        for s in range(2):
            opt.train_step(model, ce, make_batch(seed=s))
            ref.train_step(twin, ce, make_batch(seed=s))
    assert opt.execution_used == "loop" and "vectorized execution failed" in caplog.text
    assert caplog.text.count("vectorized execution failed") == 1  # tried once, then the loop
    assert_states(state_of(model), state_of(twin))


def test_explicit_vectorized_execution_that_fails_says_what_to_do():
    torch.manual_seed(0)
    model = DataDependent().double()
    before = state_of(model)
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, shards=2, execution="vectorized")
    with pytest.raises(SamkitError, match="execution='vectorized' failed for this model .*execution='loop'"):
        opt.train_step(model, ce, make_batch())
    assert_states(state_of(model), before)
    assert all(p.grad is None for p in model.parameters())


SYNCS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist")


def count_host_syncs(monkeypatch):
    """Count Python-level reads of tensor values (each one a host sync on a GPU)."""
    calls = []
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


@pytest.mark.parametrize(
    "kw",
    [
        {"shards": 2},
        {"shards": 2, "execution": "vectorized"},
        {"rule": rules.FriendlySAM(), "shards": 2, "execution": "vectorized"},
        {"rule": rules.GSAM(alpha=0.2), "max_grad_norm": 0.1},
        {"rule": rules.WSAM(gamma=0.8), "micro_batch_size": 3},
        {"rule": rules.MultiStepSAM(steps=2, step_size=1.5), "shards": 2},
        {"rule": rules.MomentumSAM(), "momentum": 0.9},
        {"adaptive": True, "eta": 0.01, "rule": rules.GCSAM()},
        {"cadence": cadence.Every(2, reuse="looksam")},
        {"cadence": cadence.RandomSwitch(0.5), "shards": 2, "execution": "vectorized"},
        {"cadence": cadence.Every(2, reuse="perturbation", ascent_fraction=0.5)},
    ],
    ids=["loop", "vectorized", "fsam", "gsam_clip", "wsam_micro", "multistep", "momentum", "gcsam",
         "looksam", "random", "reuse_fraction"],
)
def test_unchecked_step_reads_no_tensor_value_on_the_host(monkeypatch, kw):
    """CPU proxy of "no host sync": with nonfinite='unchecked' a step reads no tensor value."""
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, nonfinite="unchecked", **kw)
    opt.train_step(model, ce, make_batch(seed=0))  # first step: lazy state is created
    calls = count_host_syncs(monkeypatch)
    for s in range(1, 3):
        opt.train_step(model, ce, make_batch(seed=s))
    assert calls == []
    # the proxy does see a sync (a copy of the settings: a cadence drives one optimizer at a time)
    checked = SAM(model.parameters(), torch.optim.SGD, lr=0.1, **copy.deepcopy(kw))
    checked.train_step(model, ce, make_batch(seed=3))
    assert calls


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


def test_auto_follows_the_measured_rule_and_says_why():
    """CUDA vectorizes; a CPU vectorizes small shards of a small convolution network only (the rule
    measured in benchmarks/results/step_time_cpu.md), and loops for an MLP, big shards, big inputs
    and a rule's descent points."""
    from torch import nn

    from samkit.optim.executions import auto_vectorizes

    cpu, conv = torch.device("cpu"), nn.Sequential(nn.Conv1d(1, 4, 3), nn.Flatten(), nn.Linear(152, 3))
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(40, 3))
    assert auto_vectorizes(torch.device("cuda"), mlp, 64, 3072, shards=2)[0]
    assert auto_vectorizes(cpu, conv, 16, 40, shards=8)[0]
    assert not auto_vectorizes(cpu, conv, 16, 40, shards=2)[0]
    assert not auto_vectorizes(cpu, conv, 32, 40, shards=4)[0]
    assert not auto_vectorizes(cpu, conv, 16, 3072, shards=8)[0]
    assert not auto_vectorizes(cpu, mlp, 16, 40, shards=8)[0]
    assert not auto_vectorizes(cpu, conv, 64, 40, points=True)[0]
    # the optimizer applies it per step and records the reason
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(152, 3)).double()
    x, y = torch.randn(64, 1, 40, dtype=torch.float64), torch.randint(0, 3, (64,))
    for shards, used in ((2, "loop"), (4, "vectorized"), (8, "vectorized")):
        opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, shards=shards)
        opt.train_step(model, ce, (x, y))
        assert opt.execution_used == used and "auto on a CPU" in opt.execution_reason
        assert ("vectorized" in opt.execution_reason) == (used == "vectorized")


# ---- memory: the vectorized shards in chunks that fit a budget -------------------------------------
def _budget_for(model, shards):
    """The memory_budget that lets exactly ``shards`` shards' stacked copies in at once."""
    from samkit.optim.executions import COPIES_PER_SHARD, weight_bytes

    return COPIES_PER_SHARD * weight_bytes(list(model.parameters())) * shards


def test_equal_runs_are_cut_into_chunks_of_the_limit():
    from samkit.optim.vectorized import equal_runs

    assert equal_runs([3, 3, 3, 3, 3, 2]) == [(0, 5, 3), (15, 1, 2)]
    assert equal_runs([3, 3, 3, 3, 3, 2], 2) == [(0, 2, 3), (6, 2, 3), (12, 1, 3), (15, 1, 2)]
    assert equal_runs([4] * 4, 4) == [(0, 4, 4)]
    assert equal_runs([4] * 4, 1) == [(i * 4, 1, 4) for i in range(4)]


@pytest.mark.parametrize(
    "chunk,kw",
    [
        (2, {"shards": 5}),  # 4 + 4 + 4 + 4 + 4 on 20: chunks of 2, 2, 1
        (3, {"shards": 6, "micro_batch_size": 2}),  # 4 + 4 + 3 + 3 + 3 + 3 on 20, in pieces
        (2, {"shards": 4, "rule": rules.MultiStepSAM(steps=2)}),  # two ascent passes per chunk
        (1, {"shards": 4, "adaptive": True, "eta": 0.01}),
    ],
)
def test_chunked_vectorized_equals_the_loop(chunk, kw):
    """Chunks of shards (a budget smaller than every shard's copies) compute the loop's update:
    weights, BatchNorm running statistics and losses in float64, over 3 steps."""
    model = make_cnn()
    budget = _budget_for(model, chunk)
    m_loop, _, l_loop = trajectory("loop", n=20, **kw)
    m_vec, o_vec, l_vec = trajectory("vectorized", n=20, memory_budget=budget, **kw)
    assert o_vec.execution_used == "vectorized" and o_vec.execution_chunk == chunk
    assert f"{chunk} at a time" in o_vec.execution_reason
    assert_states(state_of(m_vec), state_of(m_loop), atol=1e-10)
    torch.testing.assert_close(l_vec, l_loop, atol=1e-12, rtol=0)


def test_auto_loops_when_the_budget_holds_fewer_than_two_shards():
    """A convolution network with 8 small shards on a CPU vectorizes by the speed rule; with room
    for one shard's copies only, auto takes the loop and says it was for memory."""
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(152, 3)).double()
    x, y = torch.randn(64, 1, 40, dtype=torch.float64), torch.randint(0, 3, (64,))
    roomy = SAM(model.parameters(), torch.optim.SGD, lr=0.1, shards=8)
    roomy.train_step(model, ce, (x, y))
    assert roomy.execution_used == "vectorized" and roomy.execution_chunk is None
    tight = SAM(model.parameters(), torch.optim.SGD, lr=0.1, shards=8,
                memory_budget=_budget_for(model, 1))
    tight.train_step(model, ce, (x, y))
    assert tight.execution_used == "loop" and "for memory" in tight.execution_reason
    halved = SAM(model.parameters(), torch.optim.SGD, lr=0.1, shards=8,
                 memory_budget=_budget_for(model, 4))
    halved.train_step(model, ce, (x, y))
    assert halved.execution_used == "vectorized" and halved.execution_chunk == 4


def test_vectorized_that_cannot_fit_one_shard_refuses_before_any_pass():
    model = make_cnn()
    before = state_of(model)
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, shards=4, execution="vectorized",
              memory_budget=_budget_for(model, 1) - 1)
    with pytest.raises(SamkitError, match="does not fit its memory budget.*execution='loop'"):
        opt.train_step(model, ce, make_batch())
    assert_states(state_of(model), before, atol=0)
    assert opt.steps == 0 and all(p.grad is None for p in model.parameters())


def test_memory_budget_must_be_a_positive_number_of_bytes():
    model = make_cnn()
    for bad in (0, -5, 1.5, "1GiB"):
        with pytest.raises(SamkitError, match="memory_budget"):
            SAM(model.parameters(), torch.optim.SGD, lr=0.1, memory_budget=bad)


def test_the_default_budget_is_read_at_the_first_step_only(monkeypatch):
    """The budget (on CUDA: the free memory) is read once, at the first vectorized step, as the
    docs say: later steps keep its chunk instead of asking again on every step."""
    from samkit.optim import executions

    calls = []
    real = executions.default_budget

    def counted(device, weights):
        calls.append(weights)
        return real(device, weights)

    monkeypatch.setattr(executions, "default_budget", counted)
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, shards=4, execution="vectorized")
    for s in range(3):
        opt.train_step(model, ce, make_batch(8, seed=s))
    assert opt.execution_used == "vectorized" and len(calls) == 1
