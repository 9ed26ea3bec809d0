"""Micro-batches are memory, not math; gradient clipping is a hand-clipped step.

Without BatchNorm a batch's gradient is the example-weighted mean of its micro-batches' gradients,
so micro-batched SAM / mSAM equal whole-batch SAM / mSAM (to rounding). With BatchNorm every
micro-batch normalises itself: the reference does the same.
"""

from __future__ import annotations

import pytest
import torch
from optim_helpers import assert_states, ce, make_batch, make_cnn, make_mlp, state_of
from rule_reference import Reference

from samkit import SAM, frozen_running_stats, rules

LR = 0.1


def train(model, steps=3, scaler=None, **kw):
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, **kw)
    losses = [opt.train_step(model, ce, make_batch(seed=s), scaler=scaler) for s in range(steps)]
    return model, opt, losses


@pytest.mark.parametrize(
    "kw",
    [
        {"rho": 0.1},
        {"rho": 0.1, "shards": 2},
        {"rho": 0.1, "shards": 2, "execution": "vectorized"},
        {"rho": 0.1, "rule": rules.FriendlySAM(sigma=0.5, lmbda=0.5)},
        {"rho": 0.1, "rule": rules.GSAM(alpha=0.2), "shards": 2},
        {"rho": 0.1, "rule": rules.MultiStepSAM(steps=2, step_size=0.7), "shards": 2,
         "execution": "vectorized"},
    ],
    ids=["sam", "msam2", "msam2_vectorized", "fsam", "gsam_msam2", "multistep_vectorized"],
)
@pytest.mark.parametrize("micro", [1, 3])
def test_micro_batches_equal_the_whole_batch_without_batchnorm(kw, micro):
    whole, _, whole_losses = train(make_mlp(), **kw)  # a rule object holds settings only: reusable
    pieces, opt, piece_losses = train(make_mlp(), micro_batch_size=micro, **kw)
    assert_states(state_of(pieces), state_of(whole), atol=1e-10)
    for a, b in zip(piece_losses, whole_losses):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "shards,sizes,execution", [(1, [8], "loop"), (2, [4, 4], "loop"), (2, [4, 4], "vectorized")]
)
def test_micro_batches_with_batchnorm_equal_the_per_micro_batch_reference(shards, sizes, execution):
    model, opt, _ = train(make_cnn(), rho=0.1, shards=shards, micro_batch_size=3, execution=execution)
    assert opt.execution_used == execution
    ref = make_cnn()
    reference = Reference(ref, lr=LR, rho=0.1)
    for s in range(3):
        reference.step(make_batch(seed=s), sizes, micro=3)
    assert_states(state_of(model), state_of(ref), atol=1e-10)


def test_micro_batches_with_batchnorm_differ_from_the_whole_batch():
    """The documented caveat is real: per-micro-batch normalisation changes the update."""
    a, _, _ = train(make_cnn(), rho=0.1, micro_batch_size=3)
    b, _, _ = train(make_cnn(), rho=0.1)
    assert not torch.allclose(a.conv1.weight, b.conv1.weight, atol=1e-6)


def _descent_norm(model, rule_kw):
    """Global norm of the unclipped descent gradient of the first step (to know clipping acts)."""
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.0, **rule_kw)
    opt.train_step(model, ce, make_batch(seed=0))
    return torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters())).item()


@pytest.mark.parametrize(
    "rule_kw,ref_kw",
    [({"rho": 0.1}, {"rule": "sam", "rho": 0.1}),
     ({"rho": 0.1, "rule": rules.GSAM(alpha=0.3)}, {"rule": "gsam", "rho": 0.1, "alpha": 0.3})],
)
def test_clipped_step_equals_the_hand_clipped_reference(rule_kw, ref_kw):
    clip = 0.5 * _descent_norm(make_cnn(), {"rho": 0.1})
    model, _, _ = train(make_cnn(), max_grad_norm=clip, **rule_kw)
    ref = make_cnn()
    reference = Reference(ref, lr=LR, max_grad_norm=clip, **ref_kw)
    for s in range(3):
        reference.step(make_batch(seed=s), [8])
    assert_states(state_of(model), state_of(ref), atol=1e-10)
    unclipped, _, _ = train(make_cnn(), **rule_kw)
    assert not torch.allclose(model.head.weight, unclipped.head.weight, atol=1e-6)


def test_clipping_with_a_grad_scaler_clips_the_unscaled_gradient():
    clip = 0.3 * _descent_norm(make_cnn(), {"rho": 0.1})
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    a, _, _ = train(make_cnn(), rho=0.1, shards=2, max_grad_norm=clip, scaler=scaler)
    b, _, _ = train(make_cnn(), rho=0.1, shards=2, max_grad_norm=clip)
    assert_states(state_of(a), state_of(b), atol=1e-13)
    assert scaler.get_scale() == 2.0**12


def test_clipping_in_the_two_call_api_and_step_closure():
    clip = 0.5 * _descent_norm(make_cnn(), {"rho": 0.1})
    ref, _, _ = train(make_cnn(), rho=0.1, max_grad_norm=clip)
    for use_closure in (False, True):
        model = make_cnn()
        opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, rho=0.1, max_grad_norm=clip)
        for s in range(3):
            batch = make_batch(seed=s)
            ce(model, batch).backward()
            if use_closure:
                def closure(batch=batch, model=model):
                    with frozen_running_stats(model):
                        loss = ce(model, batch)
                        loss.backward()
                    return loss

                opt.step(closure)
            else:
                opt.first_step(zero_grad=True)
                with frozen_running_stats(model):
                    ce(model, batch).backward()
                opt.second_step()
            opt.zero_grad()
        assert_states(state_of(model), state_of(ref), atol=1e-13)


@pytest.mark.parametrize("n,b,sizes", [(16, 5, [4, 4, 4, 4]), (8, 3, [3, 3, 2]), (10, 5, [5, 5]),
                                       (11, 5, [4, 4, 3]), (7, 1, [1] * 7), (4, 9, [4])])
def test_micro_batches_are_as_few_and_as_even_as_the_size_allows(n, b, sizes):
    """ceil(n / b) pieces of at most b examples, sizes differing by at most one: never a last piece
    of one example that BatchNorm cannot normalise when b does not divide the batch."""
    from samkit.optim.sharding import micro_batches

    batch = (torch.arange(n), torch.arange(n))
    pieces = micro_batches(batch, b)
    assert [len(p[1]) for p, _ in pieces] == sizes
    assert [w for _, w in pieces] == [s / n for s in sizes]
    assert torch.equal(torch.cat([p[0] for p, _ in pieces]), batch[0])  # consecutive, in order


def test_micro_batch_size_that_does_not_divide_the_batch_with_batchnorm1d():
    """16 examples in micro-batches of at most 5 with BatchNorm1d: 4 pieces of 4 (greedy 5+5+5+1 made
    BatchNorm fail on a single example), equal to the per-micro-batch reference."""
    def bn_mlp():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 8), torch.nn.BatchNorm1d(8),
                                   torch.nn.ReLU(), torch.nn.Linear(8, 3)).double()

    model = bn_mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, rho=0.1, micro_batch_size=5)
    ref = bn_mlp()
    reference = Reference(ref, lr=LR, rho=0.1)
    for s in range(3):
        opt.train_step(model, ce, make_batch(n=16, seed=s))
        reference.step(make_batch(n=16, seed=s), [16], micro=5)
    assert_states(state_of(model), state_of(ref), atol=1e-10)
