"""Perturbation scope (``perturb=False`` groups, ``samkit.scope``) against the float64 reference.

The reference (``rule_reference.Reference(scope=...)``) takes the ascent gradient of the scoped
parameters only: the others get no share of the norm and no perturbation, and are stepped with the
gradient at the perturbed point of the scoped ones. SAM-ON (Mueller et al., NeurIPS 2023) is the
scope of the normalisation layers.
"""

from __future__ import annotations

import copy

import pytest
import torch
from optim_helpers import assert_states, ce, make_batch, make_cnn, state_of
from rule_reference import Reference

from samkit import SAM, SamkitError, cadence, rules, scope

LR = 0.1
STEPS = 3
SCOPES = {"norm_layers": scope.norm_layers, "last_layer": scope.last_layer,
          "weights_only": scope.weights_only}
RULES = {
    "sam": (rules.SAM, {"rho": 0.05}, {"rule": "sam", "rho": 0.05}),
    "asam": (lambda: rules.ASAM(eta=0.01), {"rho": 0.5},
             {"rule": "asam", "rho": 0.5, "adaptive": True, "eta": 0.01}),
    "fsam": (lambda: rules.FriendlySAM(sigma=0.7, lmbda=0.6), {"rho": 0.1},
             {"rule": "fsam", "rho": 0.1, "sigma": 0.7, "lmbda": 0.6}),
    "multistep": (lambda: rules.MultiStepSAM(steps=2, step_size=0.6), {"rho": 0.1},
                  {"rule": "multistep", "rho": 0.1, "steps": 2, "step_size": 0.6}),
}
LAYOUTS = {"1_shard": (1, [8], "loop"), "3_shards_loop": (3, [3, 3, 2], "loop"),
           "3_shards_vectorized": (3, [3, 3, 2], "vectorized")}


def mask_of(model, groups):
    perturbed = {id(p) for g in groups if g.get("perturb", True) for p in g["params"]}
    return [id(p) in perturbed for p in model.parameters()]


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("where", list(SCOPES))
@pytest.mark.parametrize("name", list(RULES))
def test_a_scoped_rule_matches_its_float64_reference(name, where, layout):
    factory, opt_kw, ref_kw = RULES[name]
    shards, sizes, execution = LAYOUTS[layout]
    model = make_cnn()
    groups = SCOPES[where](model)
    opt = SAM(groups, torch.optim.SGD, lr=LR, rule=factory(), shards=shards, execution=execution,
              **opt_kw)
    for s in range(STEPS):
        opt.train_step(model, ce, make_batch(seed=s))
    assert opt.execution_used == execution
    ref_model = make_cnn()
    ref = Reference(ref_model, lr=LR, scope=mask_of(ref_model, SCOPES[where](ref_model)), **ref_kw)
    for s in range(STEPS):
        ref.step(make_batch(seed=s), sizes)
    assert_states(state_of(model), state_of(ref_model), atol=1e-10)
    # the scope really differs from SAM over all parameters (the test could fail)
    full = make_cnn()
    full_ref = Reference(full, lr=LR, **ref_kw)
    for s in range(STEPS):
        full_ref.step(make_batch(seed=s), sizes)
    assert (state_of(full)["conv1.weight"] - state_of(model)["conv1.weight"]).abs().max() > 1e-6


def test_momentum_sam_with_a_scope_perturbs_only_the_scope():
    model, ref_model = make_cnn(), make_cnn()
    opt = SAM(scope.last_layer(model), torch.optim.SGD, lr=LR, rho=0.5, momentum=0.9,
              rule=rules.MomentumSAM())
    ref = Reference(ref_model, rule="momentum", lr=LR, rho=0.5, momentum=0.9,
                    scope=mask_of(ref_model, scope.last_layer(ref_model)))
    for s in range(STEPS):
        opt.train_step(model, ce, make_batch(seed=s))
        ref.step(make_batch(seed=s), [8])
    assert_states(state_of(model), state_of(ref_model), atol=1e-10)


@pytest.mark.parametrize("front", ["two_call", "closure"])
def test_the_two_call_and_closure_front_ends_follow_the_scope(front):
    model, other = make_cnn(), make_cnn()
    opts = [SAM(scope.norm_layers(m), torch.optim.SGD, lr=LR, rho=0.1, model=m) for m in (model, other)]
    for s in range(STEPS):
        batch = make_batch(seed=s)
        opts[0].train_step(model, ce, batch)
        if front == "two_call":
            ce(other, batch).backward()
            opts[1].first_step(zero_grad=True)
            with samkit_frozen(other):
                ce(other, batch).backward()
            opts[1].second_step(zero_grad=True)
        else:
            def closure(batch=batch):
                loss = ce(other, batch)
                loss.backward()
                return loss

            opts[1].zero_grad()  # torch's convention: step(closure) starts without gradients
            opts[1].step(closure)
    assert_states(state_of(model), state_of(other), atol=1e-12)


def samkit_frozen(model):
    from samkit import frozen_running_stats

    return frozen_running_stats(model)


def test_the_ascent_asks_autograd_only_for_the_perturbed_parameters():
    """Last-layer SAM: the ascent's backward stops at the head, so a convolution weight's gradient is
    computed once per step (the descent), against twice for SAM over all parameters."""
    calls = {}
    for where in ("all", "last_layer"):
        model = make_cnn()
        count = [0]
        model.conv1.weight.register_hook(lambda g, count=count: count.__setitem__(0, count[0] + 1))
        params = model.parameters() if where == "all" else scope.last_layer(model)
        opt = SAM(params, torch.optim.SGD, lr=LR, rho=0.05)
        for s in range(STEPS):
            opt.train_step(model, ce, make_batch(seed=s))
        calls[where] = count[0]
    assert calls == {"all": 2 * STEPS, "last_layer": STEPS}


def test_a_scope_leaves_the_rest_out_of_the_norm_unlike_rho_zero():
    """rho=0 on a group keeps its gradient in the norm (SAM's definition over every parameter);
    perturb=False takes it out: the head's perturbation is larger with the scope."""
    batch = make_batch(seed=0)
    radii = {}
    for how in ("rho0", "scope"):
        model = make_cnn()
        head = list(model.head.parameters())
        rest = [p for n, p in model.named_parameters() if not n.startswith("head.")]
        out = {"rho0": {"params": rest, "rho": 0.0}, "scope": {"params": rest, "perturb": False}}[how]
        opt = SAM([{"params": head}, out], torch.optim.SGD, lr=LR, rho=0.05)
        before = [p.detach().clone() for p in head]
        seen = []

        def loss_fn(m, b, seen=seen, head=head, before=before):
            seen.append(sum(((p.detach() - q) ** 2).sum() for p, q in zip(head, before)).sqrt())
            return ce(m, b)

        opt.train_step(model, loss_fn, batch)
        radii[how] = float(seen[1])  # the descent pass: the head sits at w + e
    assert radii["scope"] == pytest.approx(0.05, rel=1e-9)
    assert radii["rho0"] < 0.05 * (1 - 1e-3)


@pytest.mark.parametrize(
    "make,match",
    [(lambda p: SAM(p, torch.optim.SGD, lr=LR, rule=rules.GSAM(alpha=0.1)), "perturb every group"),
     (lambda p: SAM(p, torch.optim.SGD, lr=LR, cadence=cadence.Every(2, reuse="looksam")),
      "perturbation scope"),
     (lambda p: SAM(p, torch.optim.SGD, lr=LR, cadence=cadence.GradNormTrigger(total_steps=4)),
      "decides from the gradient of every parameter")],
)
def test_rules_and_cadences_that_need_every_gradient_refuse_a_scope(make, match):
    with pytest.raises(SamkitError, match=match):
        make(scope.norm_layers(make_cnn()))


def test_scope_errors_say_what_to_do():
    model = make_cnn()
    with pytest.raises(SamkitError, match="no param group is perturbed"):
        SAM([{"params": model.parameters(), "perturb": False}], torch.optim.SGD, lr=LR)
    with pytest.raises(SamkitError, match="perturb must be True or False"):
        SAM([{"params": model.parameters(), "perturb": "no"}], torch.optim.SGD, lr=LR)
    with pytest.raises(SamkitError, match="no affine normalisation layer"):
        scope.norm_layers(torch.nn.Linear(3, 2))
    with pytest.raises(SamkitError, match="no nn.Linear"):
        scope.last_layer(torch.nn.Conv2d(1, 1, 1))


def test_a_scoped_optimizer_resumes_exactly():
    model, resumed_model = make_cnn(), make_cnn()
    opt = SAM(scope.norm_layers(model), torch.optim.SGD, lr=LR, rho=0.1, momentum=0.9,
              rule=rules.FriendlySAM(sigma=0.5, lmbda=0.6))
    for s in range(2):
        opt.train_step(model, ce, make_batch(seed=s))
    resumed_model.load_state_dict(model.state_dict())
    resumed = SAM(scope.norm_layers(resumed_model), torch.optim.SGD, lr=LR, rho=0.1, momentum=0.9,
                  rule=rules.FriendlySAM(sigma=0.5, lmbda=0.6))
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))  # as from a file: no shared buffers
    for s in range(2, 4):
        opt.train_step(model, ce, make_batch(seed=s))
        resumed.train_step(resumed_model, ce, make_batch(seed=s))
    assert_states(state_of(model), state_of(resumed_model))
