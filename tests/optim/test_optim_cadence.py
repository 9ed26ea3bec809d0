"""Cadences: decisions match their definitions, skipped ascents are base steps, LookSAM's update is
the paper's, resume mid-cycle is exact, and the pass counts are exact."""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch
from optim_helpers import assert_states, ce, make_batch, make_cnn, make_mlp, state_of
from rule_reference import EPS, _dot, _norm

from samkit import SAM, SamkitError, cadence, rules

LR = 0.1


def run(steps=6, model=None, **kw):
    model = model if model is not None else make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, momentum=0.9, rho=0.1, **kw)
    pattern = []
    for s in range(steps):
        opt.train_step(model, ce, make_batch(seed=s))
        pattern.append(opt.last_step.ascended)
    return model, opt, pattern


def test_always_is_todays_sam_bit_for_bit():
    a, opt, pattern = run(cadence=cadence.Always())
    b, _, _ = run()
    assert_states(state_of(a), state_of(b))
    # the default is Always too, so the states alone cannot tell a cadence that skips: count
    assert pattern == [True] * 6 and opt.ascent_steps == 6 and opt.passes == 12


def test_a_cadence_that_overrides_ascends_is_asked_at_every_step():
    # Always's decision is built once (the plan does not ask it per step); a subclass that decides
    # step by step must not inherit that shortcut.
    class Odd(cadence.Always):
        def ascends(self, step):
            return step % 2 == 1

    assert cadence.Always().every_step() is not None and Odd().every_step() is None
    _, opt, pattern = run(cadence=Odd())
    assert pattern == [s % 2 == 1 for s in range(6)] and opt.ascent_steps == 3


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda: cadence.Every(3), [s % 3 == 0 for s in range(10)]),
        (lambda: cadence.Window(0.5, 0.8, total_steps=10), [5 <= s < 8 for s in range(10)]),
        (lambda: cadence.RandomSwitch(0.3, seed=7), None),
    ],
    ids=["every", "window", "random"],
)
def test_decisions_follow_the_definition(make, expected):
    if expected is None:  # the seeded stream, drawn once per step
        stream = random.Random(7)
        expected = [stream.random() < 0.3 for _ in range(10)]
    model, opt, pattern = run(10, cadence=make())
    assert pattern == expected and any(pattern) and not all(pattern)
    assert opt.ascent_steps == sum(expected)
    assert opt.passes == 10 + sum(expected)  # one pass per step plus one per ascent: exact
    assert opt.example_passes == 8 * (10 + sum(expected))


@pytest.mark.parametrize("shards,execution", [(1, "loop"), (3, "loop"), (3, "vectorized")])
def test_a_skipped_ascent_is_a_base_optimizer_step_on_the_same_batch(shards, execution):
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, momentum=0.9, rho=0.1, shards=shards,
              execution=execution, cadence=cadence.Every(2))
    opt.train_step(model, ce, make_batch(seed=0))  # step 0: SAM
    twin = copy.deepcopy(model)
    base = torch.optim.SGD(twin.parameters(), lr=LR, momentum=0.9)
    base.load_state_dict(copy.deepcopy(opt.base_optimizer.state_dict()))  # load aliases tensors
    loss = opt.train_step(model, ce, make_batch(seed=1))  # step 1: no ascent
    base.zero_grad()
    plain = ce(twin, make_batch(seed=1))
    plain.backward()
    base.step()
    assert not opt.last_step.ascended and torch.equal(loss, plain.detach())
    assert_states(state_of(model), state_of(twin))  # weights and BatchNorm statistics, bit for bit


def test_every_with_vectorized_shards_equals_the_loop():
    a, _, _ = run(shards=3, execution="loop", cadence=cadence.Every(2))
    b, opt, _ = run(shards=3, execution="vectorized", cadence=cadence.Every(2))
    assert_states(state_of(b), state_of(a), atol=1e-10)


def sgd_step(params, grads, lr=LR):
    with torch.no_grad():
        for p, g in zip(params, grads):
            p -= lr * g


def gradient_at(model, params, e, batch):
    """The gradient at w + e, the weights put back to w afterwards."""
    w = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, ei in zip(params, e):
            p += ei
    h = list(torch.autograd.grad(ce(model, batch), params))
    with torch.no_grad():
        for p, wi in zip(params, w):
            p.copy_(wi)
    return h


def test_reused_perturbation_is_the_last_ascent_steps():
    model = make_mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, rho=0.1,
              cadence=cadence.Every(3, reuse="perturbation"))
    ref = make_mlp()
    params = list(ref.parameters())
    e = None
    for s in range(5):
        batch = make_batch(seed=s)
        opt.train_step(model, ce, batch)
        if s % 3 == 0:
            g = torch.autograd.grad(ce(ref, batch), params)
            e = [0.1 * x / (_norm(g) + EPS) for x in g]
        sgd_step(params, gradient_at(ref, params, e, batch))
    assert_states(state_of(model), state_of(ref), atol=1e-12)
    assert opt.passes == 5 + 2


@pytest.mark.parametrize("shards,execution", [(1, "loop"), (2, "loop"), (3, "vectorized")])
def test_looksam_in_between_update_equals_the_reference(shards, execution):
    """At SAM steps g_v = h - <g,h>/||g||^2 g; in between g + alpha ||g|| / ||g_v|| g_v. With shards,
    h is the shards' SAM gradients weighted by size (each at its own e_s) and g the batch's gradient."""
    alpha = 0.7
    model = make_mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, rho=0.1, shards=shards, execution=execution,
              cadence=cadence.Every(2, reuse="looksam", alpha=alpha))
    ref = make_mlp()
    params = list(ref.parameters())
    gv = None
    for s in range(5):
        batch = make_batch(seed=s)
        opt.train_step(model, ce, batch)
        g = list(torch.autograd.grad(ce(ref, batch), params))
        if s % 2 == 0:
            n = len(batch[1])
            h = [torch.zeros_like(p) for p in params]
            for part in torch.tensor_split(torch.arange(n), shards):
                piece = (batch[0][part], batch[1][part])
                gs = torch.autograd.grad(ce(ref, piece), params)
                hs = gradient_at(ref, params, [0.1 * x / (_norm(gs) + EPS) for x in gs], piece)
                h = [hi + len(part) / n * x for hi, x in zip(h, hs)]
            gv = [hi - _dot(g, h) / (_dot(g, g) + EPS) * gi for hi, gi in zip(h, g)]
            update = h
        else:
            update = [gi + alpha * _norm(g) / (_norm(gv) + EPS) * vi for gi, vi in zip(g, gv)]
        sgd_step(params, update)
    assert_states(state_of(model), state_of(ref), atol=1e-12)


def test_gradnorm_trigger_decisions_follow_ae_sam():
    """The running mean/variance and the linear threshold, against a hand-written loop."""
    trigger = cadence.GradNormTrigger(total_steps=8, delta=0.7, lambda1=-0.5, lambda2=1.5)
    norms = [4.0, 3.0, 9.0, 2.0, 2.5, 7.0, 1.0, 1.2]
    mu = var = 0.0
    expected = []
    for t, s in enumerate(norms):
        mu = 0.7 * mu + 0.3 * s
        var = 0.7 * var + 0.3 * (s - mu) ** 2
        c = -0.5 + 2.0 * t / 7
        expected.append(s >= mu + c * math.sqrt(var))
    assert [trigger.decide(s, t) for t, s in enumerate(norms)] == expected
    assert any(expected) and not all(expected)


@pytest.mark.parametrize("make", [lambda: cadence.GradNormTrigger(total_steps=6), lambda: cadence.Drift(k=2)],
                         ids=["gradnorm", "drift"])
def test_a_decision_after_the_gradient_reads_one_host_number(make):
    # the engine hands the cadence a float (not a tensor): its running state stays plain numbers
    _, opt, pattern = run(cadence=make())
    state = opt.state_dict()["samkit"]["cadence"]
    numbers = {k: v for k, v in state.items() if k in ("mean", "var", "threshold")}
    assert numbers and all(type(v) is float for v in numbers.values()), numbers
    assert pattern[0] and opt.ascent_steps == sum(pattern)


@pytest.mark.parametrize("threshold,twin", [(-1e9, "sam"), (1e9, "sgd")])
def test_gradnorm_trigger_steps_are_sam_or_base_steps(threshold, twin):
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, momentum=0.9, rho=0.1,
              cadence=cadence.GradNormTrigger(total_steps=4, lambda1=threshold, lambda2=threshold))
    other = make_cnn()
    if twin == "sam":
        other_opt = SAM(other.parameters(), torch.optim.SGD, lr=LR, momentum=0.9, rho=0.1)
    else:
        other_opt = torch.optim.SGD(other.parameters(), lr=LR, momentum=0.9)
    for s in range(4):
        batch = make_batch(seed=s)
        opt.train_step(model, ce, batch)
        if twin == "sam":
            other_opt.train_step(other, ce, batch)
        else:
            other_opt.zero_grad()
            ce(other, batch).backward()
            other_opt.step()
    assert_states(state_of(model), state_of(other))
    assert opt.passes == (8 if twin == "sam" else 4)


def test_ascent_fraction_takes_the_ascent_gradient_on_a_sampled_share():
    model = make_mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, rho=0.1,
              cadence=cadence.Always(ascent_fraction=0.5))
    ref = make_mlp()
    params = list(ref.parameters())
    sampler = torch.Generator().manual_seed(0)
    for s in range(3):
        x, y = make_batch(seed=s)
        opt.train_step(model, ce, (x, y))
        idx = torch.randperm(8, generator=sampler)[:4].sort().values
        g = torch.autograd.grad(ce(ref, (x[idx], y[idx])), params)
        sgd_step(params, gradient_at(ref, params, [0.1 * gi / (_norm(g) + EPS) for gi in g], (x, y)))
    assert_states(state_of(model), state_of(ref), atol=1e-12)
    assert opt.passes == 3 * 1.5 and opt.example_passes == 3 * (4 + 8)


def test_ascent_fraction_per_shard_vectorized_equals_loop():
    kw = dict(shards=2, cadence=None)
    a, _, _ = run(**{**kw, "execution": "loop", "cadence": cadence.Always(ascent_fraction=0.5)})
    b, opt, _ = run(**{**kw, "execution": "vectorized", "cadence": cadence.Always(ascent_fraction=0.5)})
    assert_states(state_of(b), state_of(a), atol=1e-10)
    assert opt.passes == 6 * 1.5


@pytest.mark.parametrize(
    "make",
    [lambda: cadence.Every(3, reuse="looksam"), lambda: cadence.RandomSwitch(0.5, seed=3),
     lambda: cadence.Every(3, reuse="perturbation"), lambda: cadence.Always(ascent_fraction=0.5),
     lambda: cadence.GradNormTrigger(total_steps=6)],
    ids=["looksam", "random", "reuse", "fraction", "gradnorm"],
)
def test_resume_mid_cycle_is_bit_exact(make):
    full, _, _ = run(6, cadence=make())
    model, opt, _ = run(2, cadence=make())
    saved = copy.deepcopy({"m": model.state_dict(), "o": opt.state_dict()})
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, momentum=0.9, rho=0.1, cadence=make())
    model.load_state_dict(saved["m"])
    opt.load_state_dict(saved["o"])
    for s in range(2, 6):
        opt.train_step(model, ce, make_batch(seed=s))
    assert_states(state_of(model), state_of(full))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"rule": rules.MomentumSAM(), "momentum": 0.9, "cadence": cadence.Every(2)}, "nothing to skip"),
        ({"shards": 2, "cadence": cadence.Every(2, reuse="perturbation")}, "use shards=1"),
        ({"shards": 2, "cadence": cadence.GradNormTrigger(total_steps=4)}, "use shards=1"),
        ({"cadence": 5}, "samkit.cadence object"),
        ({"cadence": "every"}, r"cadence 'every' needs k \(e.g. every:k=...; its options: k, reuse"),
    ],
)
def test_cadences_refuse_what_they_cannot_do(kw, match):
    with pytest.raises(SamkitError, match=match):
        SAM(make_cnn().parameters(), torch.optim.SGD, lr=LR, **kw)


def test_a_cadence_given_by_its_spec_is_the_cadence_object():
    """``cadence="every:k=2,reuse=looksam"`` (the CLI's spelling) steps as ``Every(2, reuse=...)``."""
    models, opts = [], []
    for spec in ("every:k=2,reuse=looksam", cadence.Every(2, reuse="looksam")):
        model = make_cnn()
        models.append(model)
        opts.append(SAM(model.parameters(), torch.optim.SGD, lr=LR, momentum=0.9, cadence=spec))
    assert repr(opts[0].cadence) == repr(opts[1].cadence)
    for s in range(4):
        for model, opt in zip(models, opts):
            opt.train_step(model, ce, make_batch(seed=s))
    assert_states(state_of(models[0]), state_of(models[1]))


@pytest.mark.parametrize(
    "make,match",
    [(lambda: cadence.Every(0), "k must be a positive integer"),
     (lambda: cadence.Every(2, reuse="half"), "reuse must be one of"),
     (lambda: cadence.RandomSwitch(1.5), "p must be <= 1"),
     (lambda: cadence.Window(0.9, 0.2), "start < end"),
     (lambda: cadence.Always(ascent_fraction=0.0), r"ascent_fraction must be in \(0, 1\]")],
)
def test_bad_cadence_settings(make, match):
    with pytest.raises(SamkitError, match=match):
        make()


def test_a_window_without_total_steps_says_how_to_give_it():
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, cadence=cadence.Window(0.8))
    with pytest.raises(SamkitError, match="give it total_steps"):
        opt.train_step(model, ce, make_batch())
    opt.cadence.set_total_steps(10)
    opt.train_step(model, ce, make_batch())
    assert not opt.last_step.ascended


def test_multistep_ascents_share_one_sampled_share_in_both_executions():
    """With ascent_fraction every ascent step of multi-step SAM uses the same examples."""
    kw = dict(shards=2, rule=rules.MultiStepSAM(steps=2, step_size=0.7))
    a, opt_a, _ = run(execution="loop", cadence=cadence.Always(ascent_fraction=0.5), **kw)
    b, _, _ = run(execution="vectorized", cadence=cadence.Always(ascent_fraction=0.5), **kw)
    assert_states(state_of(b), state_of(a), atol=1e-10)
    assert opt_a.passes == 6 * (0.5 + 0.5 + 1)  # two half-batch ascents and the descent, per step


def test_a_cadence_object_drives_one_optimizer():
    """A cadence holds a random stream and running statistics that move on as its optimizer steps:
    a second optimizer given the same object would draw on from the first one's stream (a silently
    different run), so it is refused, also once the first is gone; a copy taken before use drives a
    second optimizer as the original drove the first; a construction that fails binds nothing."""
    shared = cadence.RandomSwitch(0.5, seed=3, ascent_fraction=0.5)
    spare = copy.deepcopy(shared)
    first, _, pattern = run(6, model=make_mlp(), cadence=shared)
    with pytest.raises(SamkitError, match="already drives an optimizer"):
        SAM(make_mlp().parameters(), torch.optim.SGD, lr=LR, cadence=shared)
    del first
    with pytest.raises(SamkitError, match="give each optimizer its own cadence"):
        SAM(make_mlp().parameters(), torch.optim.SGD, lr=LR, cadence=shared)
    twin = make_mlp()
    _, _, again = run(6, model=twin, cadence=spare)
    assert again == pattern and any(pattern) and not all(pattern)
    unused = cadence.Every(2, reuse="perturbation")
    with pytest.raises(SamkitError, match="use shards=1"):
        SAM(make_mlp().parameters(), torch.optim.SGD, lr=LR, shards=2, cadence=unused)
    assert SAM(make_mlp().parameters(), torch.optim.SGD, lr=LR, cadence=unused).cadence is unused


def drift_reference(model, steps, k, alpha, rho, rate, max_gap):
    """The drift trigger written out: d = 1 - cos(g, g_a); ascend iff d > q (or the gap is full, or
    no ascent yet); q starts at the first d, then q *= exp(rate (1[d > q] - 1/k)); LookSAM between."""
    params = list(model.parameters())
    q, gap, g_a, g_v, pattern = None, 0, None, None, []
    for s in range(steps):
        batch = make_batch(seed=s)
        g = list(torch.autograd.grad(ce(model, batch), params))
        if g_a is None:
            d = 2.0
        else:
            d = float(1 - _dot(g, g_a) / (torch.sqrt(_dot(g, g) * _dot(g_a, g_a)) + EPS))
        if d >= 2.0:
            ascend = True
        else:
            q = d if q is None else q
            ascend = d > q or gap + 1 >= max_gap
            q *= math.exp(rate * (float(d > q) - 1.0 / k))
        gap = 0 if ascend else gap + 1
        pattern.append(ascend)
        if ascend:
            h = gradient_at(model, params, [rho * x / (_norm(g) + EPS) for x in g], batch)
            c = _dot(g, h) / (_dot(g, g) + EPS)
            g_v = [hi - c * gi for hi, gi in zip(h, g)]
            g_a = g
            update = h
        else:
            scale = alpha * _norm(g) / (_norm(g_v) + EPS)
            update = [gi + scale * vi for gi, vi in zip(g, g_v)]
        sgd_step(params, update)
    return pattern


def test_drift_cadence_equals_its_reference_and_ascends_where_the_direction_moved():
    steps, kw = 12, dict(k=3, alpha=0.3, rate=0.5, max_gap=5)
    model, ref = make_mlp(), make_mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, rho=0.1, cadence=cadence.Drift(**kw))
    pattern = []
    for s in range(steps):
        opt.train_step(model, ce, make_batch(seed=s))
        pattern.append(opt.last_step.ascended)
    expected = drift_reference(ref, steps, rho=0.1, **kw)
    assert pattern == expected and 1 < sum(pattern) < steps  # it both ascends and skips
    assert_states(state_of(model), state_of(ref), atol=1e-12)
    assert opt.passes == steps + sum(pattern)  # the decision's pass is the ascent's: none wasted


def test_drift_cadence_resumes_mid_run_exactly():
    model, other = make_mlp(), make_mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, rho=0.1, cadence=cadence.Drift(k=3))
    for s in range(5):
        opt.train_step(model, ce, make_batch(seed=s))
    other.load_state_dict(model.state_dict())
    resumed = SAM(other.parameters(), torch.optim.SGD, lr=LR, rho=0.1, cadence=cadence.Drift(k=3))
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    for s in range(5, 10):
        opt.train_step(model, ce, make_batch(seed=s))
        resumed.train_step(other, ce, make_batch(seed=s))
    assert_states(state_of(model), state_of(other))
    assert cadence.parse_cadence("drift:k=5,alpha=0.2,reuse=none").reuse_mode is None
