"""Bad input gets an error that says what to do; a non-finite step leaves nothing behind."""

from __future__ import annotations

import copy

import pytest
import torch
from optim_helpers import assert_states, ce, make_batch, make_cnn, state_of

from samkit import SAM, FriendlySAM, NonFiniteError, SamkitError


def params():
    return make_cnn().parameters()


@pytest.mark.parametrize(
    "cls,kw,match",
    [
        (SAM, {"rho": -0.1}, "rho must be a non-negative"),
        (SAM, {"eta": -1.0}, "eta must be a non-negative"),
        (SAM, {"shards": 0}, "shards must be a positive integer"),
        (SAM, {"shards": 2.5}, "shards must be a positive integer"),
        (SAM, {"shard_size": 0}, "shard_size must be a positive integer"),
        (SAM, {"shards": 2, "shard_size": 4}, "either shards=2 or shard_size=4, not both"),
        (FriendlySAM, {"lmbda": 1.0}, r"lmbda must be in \[0, 1\)"),
        (FriendlySAM, {"lmbda": -0.1}, r"lmbda must be in \[0, 1\)"),
        (SAM, {"execution": "gpu"}, "execution must be one of"),
        (SAM, {"nonfinite": "ignore"}, "nonfinite must be one of"),
    ],
)
def test_bad_arguments(cls, kw, match):
    with pytest.raises(SamkitError, match=match):
        cls(params(), torch.optim.SGD, lr=0.1, **kw)


def test_group_with_negative_rho():
    model = make_cnn()
    with pytest.raises(SamkitError, match="rho must be a non-negative"):
        SAM([{"params": model.head.parameters(), "rho": -1}], torch.optim.SGD, lr=0.1)


def test_base_optimizer_must_be_a_class():
    model = make_cnn()
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(SamkitError, match="optimizer class such as torch.optim.SGD"):
        SAM(model.parameters(), base)


def test_batch_smaller_than_shards():
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, shards=4)
    with pytest.raises(SamkitError, match="the batch has 3 examples but shards=4"):
        opt.train_step(model, ce, make_batch(3))


def test_batch_tensors_must_share_leading_dim():
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    x, y = make_batch(4)
    with pytest.raises(SamkitError, match="share the leading batch dimension"):
        opt.train_step(model, ce, (x, y[:3]))


def test_step_without_closure():
    opt = SAM(params(), torch.optim.SGD, lr=0.1)
    with pytest.raises(SamkitError, match="needs a closure"):
        opt.step()


def test_first_step_without_gradients():
    opt = SAM(params(), torch.optim.SGD, lr=0.1)
    with pytest.raises(SamkitError, match="call loss.backward\\(\\) before first_step"):
        opt.first_step()


def test_second_step_without_first_step():
    opt = SAM(params(), torch.optim.SGD, lr=0.1)
    with pytest.raises(SamkitError, match="without first_step"):
        opt.second_step()


def test_first_step_with_shards_points_to_train_step():
    opt = SAM(params(), torch.optim.SGD, lr=0.1, shards=2)
    with pytest.raises(SamkitError, match="use train_step"):
        opt.first_step()


def test_loss_without_grad():
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)

    def no_grad_loss(m, b):
        with torch.no_grad():
            return ce(m, b)

    with pytest.raises(SamkitError, match="does not depend on any parameter"):
        opt.train_step(model, no_grad_loss, make_batch())


@pytest.mark.parametrize("cls", [SAM, FriendlySAM])
@pytest.mark.parametrize("shards", [1, 2])
def test_nan_input_leaves_weights_and_state_unchanged(cls, shards):
    model = make_cnn()
    opt = cls(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9, shards=shards)
    opt.train_step(model, ce, make_batch(seed=0))  # momentum and EMA exist now
    before = state_of(model)
    momenta = [opt.base_optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    emas = {p: opt.state[p]["ema"].clone() for p in model.parameters()} if cls is FriendlySAM else {}
    x, y = make_batch(seed=1)
    x[-1, 0, 0, 0] = float("nan")  # only in the last shard
    with pytest.raises(NonFiniteError, match="weights were restored"):
        opt.train_step(model, ce, (x, y))
    assert_states(state_of(model), before)  # weights and BatchNorm statistics
    assert all(p.grad is None for p in model.parameters())
    counters = opt.state_dict()["samkit"]
    assert (counters["steps"], counters["skipped_steps"], counters["ascent_steps"]) == (1, 1, 1)
    assert counters["passes"] == 4.0  # the skipped step's two passes were spent all the same
    for p, m in zip(model.parameters(), momenta):
        assert torch.equal(opt.base_optimizer.state[p]["momentum_buffer"], m)
        if cls is FriendlySAM:
            assert torch.equal(opt.state[p]["ema"], emas[p])  # unchanged, not only finite


@pytest.mark.parametrize("cls", [SAM, FriendlySAM])
def test_nonfinite_skip_leaves_everything_and_goes_on(cls):
    """nonfinite='skip': a warning, the counter, nothing changed; the next good step is taken."""
    model = make_cnn()
    opt = cls(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9, shards=2, nonfinite="skip")
    opt.train_step(model, ce, make_batch(seed=0))
    before = state_of(model)
    saved = copy.deepcopy(opt.state_dict())
    x, y = make_batch(seed=1)
    x[0, 0, 0, 0] = float("inf")
    with pytest.warns(RuntimeWarning, match="skipped a step with a non-finite"):
        opt.train_step(model, ce, (x, y))
    assert_states(state_of(model), before)
    now = opt.state_dict()
    assert (now["samkit"]["steps"], now["samkit"]["skipped_steps"]) == (1, 1)
    for key in ("state",):
        for i, entry in saved["base"][key].items():
            assert all(torch.equal(v, now["base"][key][i][k]) for k, v in entry.items())
        for i, entry in saved[key].items():  # the F-SAM EMA
            assert all(torch.equal(v, now[key][i][k]) for k, v in entry.items())
    opt.train_step(model, ce, make_batch(seed=2))
    assert opt.steps == 2 and not torch.equal(model.head.weight, before["head.weight"])


def test_sparse_gradients_get_a_clear_error():
    emb = torch.nn.EmbeddingBag(10, 4, mode="mean", sparse=True)
    head = torch.nn.Linear(4, 2)
    model = torch.nn.ModuleDict({"emb": emb, "head": head})
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)

    def loss_fn(m, b):
        idx, y = b
        return torch.nn.functional.cross_entropy(m["head"](m["emb"](idx)), y)

    batch = (torch.randint(0, 10, (6, 3)), torch.randint(0, 2, (6,)))
    with pytest.raises(SamkitError, match="sparse gradient .* sparse=False"):
        opt.train_step(model, loss_fn, batch)
    assert all(p.grad is None for p in model.parameters())
    loss_fn(model, batch).backward()
    with pytest.raises(SamkitError, match="sparse gradient"):
        opt.first_step()


# ---- issue 30 ----------------------------------------------------------------------------------
def test_gsam_refuses_a_negative_alpha():
    from samkit import rules

    with pytest.raises(SamkitError, match="alpha must be a non-negative number, got -1"):
        rules.GSAM(alpha=-1)
    model = make_cnn()
    with pytest.raises(SamkitError, match="alpha must be a non-negative"):  # a group's own value
        SAM([{"params": model.parameters(), "alpha": -0.5}], torch.optim.SGD, lr=0.1,
            rule=rules.GSAM())  # fmt: skip


def test_train_step_on_a_model_the_optimizer_does_not_hold_is_refused():
    model, other = make_cnn(), make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    before, other_before = state_of(model), state_of(other)
    with pytest.raises(SamkitError, match="holds none of the model's parameters"):
        opt.train_step(other, ce, make_batch())
    assert_states(state_of(model), before)
    assert_states(state_of(other), other_before)
    assert (opt.steps, opt.passes) == (0, 0)
    opt.train_step(model, ce, make_batch())  # the right model still trains
    assert opt.steps == 1


def test_an_option_for_the_cadence_given_to_sam_names_only_itself():
    with pytest.raises(SamkitError) as err:
        SAM(params(), torch.optim.SGD, lr=0.1, ascent_fraction=0.5)
    text = str(err.value)
    assert "ascent_fraction" in text and "'lr'" not in text and "lr" not in text.split(":")[0]
    assert "cadence=samkit.cadence.Always(ascent_fraction=0.5)" in text
