"""Every front end and every special case computes the update that the definition says."""

from __future__ import annotations

import copy

import pytest
import torch
from optim_helpers import assert_states, ce, make_batch, make_cnn, reference_step, state_of

import samkit
from samkit import SAM, FriendlySAM

LR, RHO = 0.1, 0.05


def run_train_step(opt_cls, steps=3, batches=None, **kw):
    model = make_cnn()
    opt = opt_cls(model.parameters(), torch.optim.SGD, lr=LR, rho=RHO, **kw)
    losses = []
    for s in range(steps):
        batch = batches[s] if batches else make_batch(seed=s)
        losses.append(opt.train_step(model, ce, batch))
    return model, opt, losses


def test_front_ends_give_the_same_trajectory():
    model_a, _, losses_a = run_train_step(SAM)

    model_b = make_cnn()
    opt_b = SAM(model_b.parameters(), torch.optim.SGD, lr=LR, rho=RHO)
    model_c = make_cnn()
    opt_c = SAM(model_c.parameters(), torch.optim.SGD, lr=LR, rho=RHO)
    for s in range(3):
        batch = make_batch(seed=s)
        # first_step / second_step, BatchNorm stats frozen by the user for the second pass
        loss_b = ce(model_b, batch)
        loss_b.backward()
        opt_b.first_step(zero_grad=True)
        with samkit.frozen_running_stats(model_b):
            ce(model_b, batch).backward()
        opt_b.second_step(zero_grad=True)
        # step(closure)
        ce(model_c, batch).backward()

        def closure(model=model_c, batch=batch):
            with samkit.frozen_running_stats(model):
                loss = ce(model, batch)
                loss.backward()
            return loss

        opt_c.step(closure)
        opt_c.zero_grad()
        torch.testing.assert_close(loss_b.detach(), losses_a[s], rtol=0, atol=1e-14)
    assert_states(state_of(model_b), state_of(model_c))  # the two-call surfaces are identical
    assert_states(state_of(model_a), state_of(model_b), atol=1e-13)


@pytest.mark.parametrize("adaptive,eta", [(False, 0.0), (True, 0.0), (True, 0.01)])
def test_single_shard_equals_reference_sam(adaptive, eta):
    model, _, _ = run_train_step(SAM, adaptive=adaptive, eta=eta)
    ref = make_cnn()
    for s in range(3):
        reference_step(ref, make_batch(seed=s), [8], LR, RHO, adaptive=adaptive, eta=eta)
    assert_states(state_of(model), state_of(ref), atol=1e-13)


@pytest.mark.parametrize(
    "kw,sizes",
    [({"shard_size": 1}, [1] * 8), ({"shards": 2}, [4, 4]), ({"shards": 3}, [3, 3, 2]),
     ({"shard_size": 3}, [3, 3, 2])],
)
def test_sharded_equals_per_shard_reference(kw, sizes):
    """shard_size=1 is per-example perturbation (1-SAM); uneven shards are weighted by size."""
    model, _, losses = run_train_step(SAM, **kw)
    ref = make_cnn()
    for s in range(3):
        reference_step(ref, make_batch(seed=s), sizes, LR, RHO)
    assert_states(state_of(model), state_of(ref), atol=1e-13)


def test_one_shard_of_the_whole_batch_is_sam_bit_exactly():
    """shard_size = batch size and shards=1 take the same single-shard path, bit for bit, and the
    two-call API (the definition of SAM on one batch) agrees with it."""
    a, _, _ = run_train_step(SAM, shard_size=8)
    b, _, _ = run_train_step(SAM, shards=1)
    assert_states(state_of(a), state_of(b))
    c = make_cnn()
    opt = SAM(c.parameters(), torch.optim.SGD, lr=LR, rho=RHO)
    for s in range(3):
        ce(c, make_batch(seed=s)).backward()
        opt.first_step(zero_grad=True)
        with samkit.frozen_running_stats(c):
            ce(c, make_batch(seed=s)).backward()
        opt.second_step(zero_grad=True)
    assert_states(state_of(c), state_of(b), atol=1e-14)


def test_friendly_sam_with_sigma_zero_is_sam():
    a, _, la = run_train_step(FriendlySAM, sigma=0.0, lmbda=0.5, steps=4, shards=2)
    b, _, lb = run_train_step(SAM, steps=4, shards=2)
    assert_states(state_of(a), state_of(b))
    assert all(torch.equal(x, y) for x, y in zip(la, lb))


@pytest.mark.parametrize("shards", [1, 2])
def test_friendly_sam_matches_reference(shards):
    """EMA starts at the first full gradient (plain SAM first), is used, then updated."""
    sigma, lmbda = 0.7, 0.6
    model, opt, _ = run_train_step(FriendlySAM, sigma=sigma, lmbda=lmbda, shards=shards, steps=4)
    ref = make_cnn()
    ema = None
    sizes = [8] if shards == 1 else [4, 4]
    for s in range(4):
        old = ema

        def direction(i, g, old=old):
            return g if old is None else [gi - sigma * mi for gi, mi in zip(g, old)]

        ascents = reference_step(ref, make_batch(seed=s), sizes, LR, RHO, directions=direction)
        full = [sum(w * g[j] for w, g in ascents) for j in range(len(ascents[0][1]))]
        ema = full if old is None else [lmbda * m + (1 - lmbda) * f for m, f in zip(old, full)]
    assert_states(state_of(model), state_of(ref), atol=1e-13)
    for p, m in zip(model.parameters(), ema):
        torch.testing.assert_close(opt.state[p]["ema"], m, rtol=0, atol=1e-13)


def test_weights_restored_bit_exactly_after_perturbation():
    model = make_cnn()
    before = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.0, rho=0.5, shards=2)
    opt.train_step(model, ce, make_batch())
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    # and between first_step and second_step the weights really were moved
    ce(model, make_batch()).backward()
    opt2 = SAM(model.parameters(), torch.optim.SGD, lr=0.0, rho=0.5)
    opt2.first_step()
    assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    opt2.second_step()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_perturbation_has_radius_rho_across_groups():
    """One global norm over all groups: the body moves rho * ||g_body|| / ||g|| (the head's gradient
    is in the norm although its group has rho = 0), and the head does not move at all."""
    model = make_cnn()
    names = [n for n, _ in model.named_parameters()]
    head = list(model.head.parameters())
    body = [p for n, p in model.named_parameters() if not n.startswith("head")]
    opt = SAM([{"params": body}, {"params": head, "rho": 0.0}], torch.optim.SGD, lr=LR, rho=0.3)
    before = [p.detach().clone() for p in model.parameters()]
    ce(model, make_batch()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.first_step()
    moved = {n: p.detach() - b for n, p, b in zip(names, model.parameters(), before)}
    opt.second_step()
    assert all(torch.count_nonzero(moved[n]) == 0 for n in names if n.startswith("head"))
    g_norm = torch.sqrt(sum((g**2).sum() for g in grads.values()))
    g_body = torch.sqrt(sum((g**2).sum() for n, g in grads.items() if not n.startswith("head")))
    body_norm = torch.sqrt(sum((m**2).sum() for n, m in moved.items() if not n.startswith("head")))
    torch.testing.assert_close(body_norm, 0.3 * g_body / (g_norm + 1e-12), atol=1e-12, rtol=0)
    assert body_norm < 0.3 * (1 - 1e-3)  # the head's share of the norm is real


@pytest.mark.parametrize("opt_cls,base,kw", [
    (FriendlySAM, torch.optim.SGD, {"momentum": 0.9, "weight_decay": 5e-4, "shards": 2}),
    (SAM, torch.optim.AdamW, {"adaptive": True}),
])
def test_resume_from_state_dict_reproduces_the_run(opt_cls, base, kw):
    def build():
        model = make_cnn()
        opt = opt_cls(model.parameters(), base, lr=0.01, rho=RHO, **kw)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        return model, opt, sched

    model, opt, sched = build()
    for s in range(5):
        opt.train_step(model, ce, make_batch(seed=s))
        sched.step()
    full = state_of(model)

    model, opt, sched = build()
    for s in range(2):
        opt.train_step(model, ce, make_batch(seed=s))
        sched.step()
    saved = copy.deepcopy({"m": model.state_dict(), "o": opt.state_dict(), "s": sched.state_dict()})
    assert "ema" not in str(saved["o"]["base"])  # the rule state is ours, the base keeps its own
    assert all("backup" not in k for k in saved["o"])  # no transient weight copies
    model, opt, sched = build()
    model.load_state_dict(saved["m"])
    opt.load_state_dict(saved["o"])
    sched.load_state_dict(saved["s"])
    assert opt.base_optimizer.param_groups is opt.param_groups
    for s in range(2, 5):
        opt.train_step(model, ce, make_batch(seed=s))
        sched.step()
    assert_states(state_of(model), full)
    assert opt.steps == 5


@pytest.mark.parametrize("on_base", [False, True])
def test_lr_scheduler_on_either_optimizer(on_base):
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=1.0, rho=RHO)
    sched = torch.optim.lr_scheduler.StepLR(opt.base_optimizer if on_base else opt, 1, gamma=0.5)
    for s in range(3):
        opt.train_step(model, ce, make_batch(seed=s))
        sched.step()
    assert opt.param_groups[0]["lr"] == opt.base_optimizer.param_groups[0]["lr"] == 0.125


def test_add_param_group_reaches_the_base_optimizer():
    model = make_cnn()
    opt = SAM(model.head.parameters(), torch.optim.SGD, lr=LR, rho=RHO, momentum=0.9)
    opt.add_param_group({"params": model.conv1.parameters(), "rho": 0.1})
    assert len(opt.base_optimizer.param_groups) == 2
    assert opt.param_groups[1]["rho"] == 0.1 and opt.param_groups[1]["momentum"] == 0.9


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_optimizer_continues_as_the_original(how):
    """copy.deepcopy(model, opt) (an in-memory snapshot) and pickling keep everything a step needs:
    base optimizer, rule state (F-SAM's EMA), cadence stream, counters; the copies' groups are
    shared with their base as in the original."""
    import io

    def copied(obj):
        if how == "deepcopy":
            return copy.deepcopy(obj)
        buf = io.BytesIO()
        torch.save(obj, buf)
        buf.seek(0)
        return torch.load(buf, weights_only=False)

    model = make_cnn()
    opt = FriendlySAM(model.parameters(), torch.optim.SGD, lr=LR, momentum=0.9, rho=RHO, shards=2,
                      cadence=samkit.cadence.RandomSwitch(0.5, seed=1, ascent_fraction=0.5))
    for s in range(2):
        opt.train_step(model, ce, make_batch(seed=s))
    twin_model, twin = copied((model, opt))
    assert twin.base_optimizer.param_groups is twin.param_groups
    assert twin.param_groups[0]["params"][0] is next(twin_model.parameters())
    for s in range(2, 5):
        opt.train_step(model, ce, make_batch(seed=s))
        twin.train_step(twin_model, ce, make_batch(seed=s))
    assert_states(state_of(twin_model), state_of(model))
    assert (twin.steps, twin.passes, twin.ascent_steps) == (opt.steps, opt.passes, opt.ascent_steps)
