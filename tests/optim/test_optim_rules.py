"""Every rule against its hand-written float64 reference, and the identities its math gives.

References: ``rule_reference.Reference`` (the definitions written out per shard and per parameter).
The model has BatchNorm; shards of 3 on 8 examples are uneven (3, 3, 2), so the vectorized path
runs two mapped groups.
"""

from __future__ import annotations

import pytest
import torch
from optim_helpers import assert_states, ce, make_batch, make_cnn, state_of
from rule_reference import Reference
from torch import nn

from samkit import SAM, FriendlySAM, SamkitError, rules

LR = 0.1
STEPS = 3

# name: (rule factory, optimizer kwargs, reference kwargs)
RULES = {
    "sam": (rules.SAM, {"rho": 0.05}, {"rule": "sam", "rho": 0.05}),
    "asam": (lambda: rules.ASAM(eta=0.01), {"rho": 0.5},
             {"rule": "asam", "rho": 0.5, "adaptive": True, "eta": 0.01}),
    "fsam": (lambda: rules.FriendlySAM(sigma=0.7, lmbda=0.6), {"rho": 0.1},
             {"rule": "fsam", "rho": 0.1, "sigma": 0.7, "lmbda": 0.6}),
    "gsam": (lambda: rules.GSAM(alpha=0.3), {"rho": 0.1}, {"rule": "gsam", "rho": 0.1, "alpha": 0.3}),
    "gsam_adaptive": (lambda: rules.GSAM(alpha=0.3, adaptive=True, eta=0.01), {"rho": 0.5},
                      {"rule": "gsam", "rho": 0.5, "alpha": 0.3, "adaptive": True, "eta": 0.01}),
    "wsam": (lambda: rules.WSAM(gamma=0.8, decouple=False), {"rho": 0.1},
             {"rule": "wsam", "rho": 0.1, "gamma": 0.8}),
    "wsam_decoupled": (lambda: rules.WSAM(gamma=0.8), {"rho": 0.1},
                       {"rule": "wsam", "rho": 0.1, "gamma": 0.8, "decouple": True}),
    "gcsam": (rules.GCSAM, {"rho": 0.1}, {"rule": "gcsam", "rho": 0.1}),
    "gcsam_ascent_only": (lambda: rules.GCSAM(descent=False), {"rho": 0.1},
                          {"rule": "gcsam", "rho": 0.1, "descent_gc": False}),
    "usam": (rules.UnnormalizedSAM, {"rho": 0.5}, {"rule": "usam", "rho": 0.5}),
    "multistep": (lambda: rules.MultiStepSAM(steps=3, step_size=0.6), {"rho": 0.1},
                  {"rule": "multistep", "rho": 0.1, "steps": 3, "step_size": 0.6}),
    "multistep_big_steps": (lambda: rules.MultiStepSAM(steps=2, step_size=1.5), {"rho": 0.1},
                            {"rule": "multistep", "rho": 0.1, "steps": 2, "step_size": 1.5}),
}
LAYOUTS = {"1_shard": (None, [8], "loop"), "3_shards_loop": (3, [3, 3, 2], "loop"),
           "3_shards_vectorized": (3, [3, 3, 2], "vectorized")}


def run_samkit(rule, opt_kw, shards=None, execution="loop", model=None, steps=STEPS, **kw):
    model = model if model is not None else make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, rule=rule, shards=shards or 1,
              execution=execution, **opt_kw, **kw)
    for s in range(steps):
        opt.train_step(model, ce, make_batch(seed=s))
    return model, opt


def run_reference(ref_kw, sizes, micro=None, model=None, steps=STEPS, **kw):
    model = model if model is not None else make_cnn()
    ref = Reference(model, lr=LR, **ref_kw, **kw)
    for s in range(steps):
        ref.step(make_batch(seed=s), sizes, micro=micro)
    return model, ref


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", list(RULES))
def test_rule_matches_its_float64_reference(name, layout):
    factory, opt_kw, ref_kw = RULES[name]
    shards, sizes, execution = LAYOUTS[layout]
    model, opt = run_samkit(factory(), opt_kw, shards, execution)
    assert opt.execution_used == execution
    ref_model, ref = run_reference(ref_kw, sizes)
    assert_states(state_of(model), state_of(ref_model), atol=1e-10)
    if name == "fsam":
        for p, m in zip(model.parameters(), ref.ema):
            torch.testing.assert_close(opt.state[p]["ema"], m, rtol=0, atol=1e-10)


def test_momentum_sam_matches_its_reference():
    """Momentum-SAM perturbs against the SGD momentum buffer of the previous step; one pass."""
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, momentum=0.9, rho=0.5, rule=rules.MomentumSAM())
    losses = [opt.train_step(model, ce, make_batch(seed=s)) for s in range(4)]
    ref_model, _ = run_reference({"rule": "momentum", "rho": 0.5, "momentum": 0.9}, [8], steps=4)
    assert_states(state_of(model), state_of(ref_model), atol=1e-10)
    assert opt.passes_per_step == 1 and opt.steps == 4
    # the loss it returns is the one at w + e: for the first step (no momentum yet) the plain loss
    plain = make_cnn()
    assert torch.equal(losses[0], ce(plain, make_batch(seed=0)).detach())


def bit_equal(a_model, b_model):
    assert_states(state_of(a_model), state_of(b_model))


@pytest.mark.parametrize("execution,shards", [("loop", 1), ("loop", 2), ("vectorized", 2)])
def test_gsam_with_alpha_zero_is_sam_bit_for_bit(execution, shards):
    a, _ = run_samkit(rules.GSAM(alpha=0.0), {"rho": 0.1}, shards, execution)
    b, _ = run_samkit(rules.SAM(), {"rho": 0.1}, shards, execution)
    bit_equal(a, b)


@pytest.mark.parametrize("execution,shards", [("loop", 1), ("vectorized", 2)])
def test_wsam_with_gamma_half_is_sam(execution, shards):
    a, _ = run_samkit(rules.WSAM(gamma=0.5, decouple=False), {"rho": 0.1}, shards, execution)
    b, _ = run_samkit(rules.SAM(), {"rho": 0.1}, shards, execution)
    bit_equal(a, b)
    # decoupled, with plain SGD: w - lr g - lr (h - g) = w - lr h (to rounding)
    c, _ = run_samkit(rules.WSAM(gamma=0.5), {"rho": 0.1}, shards, execution)
    assert_states(state_of(c), state_of(b), atol=1e-12)


@pytest.mark.parametrize("decouple", [False, True])
def test_wsam_with_gamma_zero_is_the_base_optimizer(decouple):
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, momentum=0.9, weight_decay=5e-4, rho=0.1,
              rule=rules.WSAM(gamma=0.0, decouple=decouple))
    plain = make_cnn()
    base = torch.optim.SGD(plain.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    for s in range(STEPS):
        loss = opt.train_step(model, ce, make_batch(seed=s))
        base.zero_grad()
        plain_loss = ce(plain, make_batch(seed=s))
        plain_loss.backward()
        base.step()
        assert torch.equal(loss, plain_loss.detach())
    bit_equal(model, plain)


@pytest.mark.parametrize("execution,shards", [("loop", 1), ("loop", 3), ("vectorized", 3)])
def test_multistep_with_one_step_is_sam_bit_for_bit(execution, shards):
    a, _ = run_samkit(rules.MultiStepSAM(steps=1), {"rho": 0.1}, shards, execution)
    b, _ = run_samkit(rules.SAM(), {"rho": 0.1}, shards, execution)
    bit_equal(a, b)


def test_multistep_perturbation_stays_in_the_ball():
    """After k projected steps ||e|| <= rho (and = rho when the steps point the same way)."""
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.0, rho=0.2,
              rule=rules.MultiStepSAM(steps=4, step_size=1.0))
    w0 = [p.detach().clone() for p in model.parameters()]
    seen = []

    def spy(m, b):
        seen.append(torch.sqrt(sum(((p.detach() - w) ** 2).sum() for p, w in zip(m.parameters(), w0))))
        return ce(m, b)

    opt.train_step(model, spy, make_batch())
    assert len(seen) == 5  # 4 ascent passes + 1 descent pass
    assert seen[0] == 0
    for r in seen[1:]:
        assert r <= 0.2 * (1 + 1e-12)
    torch.testing.assert_close(seen[-1], torch.tensor(0.2, dtype=torch.float64), atol=1e-3, rtol=0)


def test_momentum_sam_with_rho_zero_is_sgd_with_momentum():
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, momentum=0.9, rho=0.0, rule=rules.MomentumSAM())
    plain = make_cnn()
    base = torch.optim.SGD(plain.parameters(), lr=LR, momentum=0.9)
    for s in range(STEPS):
        opt.train_step(model, ce, make_batch(seed=s))
        base.zero_grad()
        ce(plain, make_batch(seed=s)).backward()
        base.step()
    bit_equal(model, plain)


def test_momentum_sam_two_call_api_needs_no_first_backward():
    """first_step() perturbs from the momentum; one forward/backward at w + e; second_step()."""
    a = make_cnn()
    opt_a = SAM(a.parameters(), torch.optim.SGD, lr=LR, momentum=0.9, rho=0.5, rule=rules.MomentumSAM())
    b = make_cnn()
    opt_b = SAM(b.parameters(), torch.optim.SGD, lr=LR, momentum=0.9, rho=0.5, rule=rules.MomentumSAM())
    for s in range(3):
        opt_a.train_step(a, ce, make_batch(seed=s))
        opt_b.first_step()
        ce(b, make_batch(seed=s)).backward()  # BatchNorm: the only pass updates the statistics
        opt_b.second_step(zero_grad=True)
    assert_states(state_of(a), state_of(b), atol=1e-13)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"momentum": 0.9, "rule": rules.MomentumSAM(), "shards": 2}, "same perturbation: use shards=1"),
        ({"rule": rules.MomentumSAM()}, "momentum=0"),
        ({"rule": "gsam"}, "samkit.rules.Rule"),
        ({"rule": lambda: rules.GSAM(alpha=float("nan"))}, "alpha must be a finite"),
        ({"rule": lambda: rules.WSAM(gamma=1.0)}, r"gamma must be in \[0, 1\)"),
        ({"rule": lambda: rules.MultiStepSAM(steps=0)}, "steps must be a positive"),
        ({"rho": float("inf")}, "rho must be a finite number"),
        ({"rule": lambda: rules.FriendlySAM(sigma=float("nan"))}, "sigma must be a finite"),
        ({"micro_batch_size": 0}, "micro_batch_size must be a positive"),
        ({"max_grad_norm": -1.0}, "max_grad_norm must be a non-negative"),
        ({"max_grad_norm": 0.0}, "max_grad_norm must be > 0"),
    ],
)
def test_rules_refuse_what_they_cannot_do(kw, match):
    with pytest.raises(SamkitError, match=match):
        rule = kw.get("rule")
        if callable(rule) and not isinstance(rule, rules.Rule):
            kw = {**kw, "rule": rule()}  # building the rule is where a bad setting is caught
        SAM(make_cnn().parameters(), torch.optim.SGD, lr=0.1, **kw)


def test_friendly_sam_shortcut_checks_sigma():
    with pytest.raises(SamkitError, match="sigma must be a finite"):
        FriendlySAM(make_cnn().parameters(), torch.optim.SGD, lr=0.1, sigma=float("nan"))


def test_multistep_refuses_the_two_call_api():
    model = make_cnn()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, rule=rules.MultiStepSAM(steps=2))
    ce(model, make_batch()).backward()
    with pytest.raises(SamkitError, match="2 ascent passes, which need the loss function"):
        opt.first_step()


def test_rule_hyperparameters_are_per_group_settings():
    """A group may override a rule's hyperparameter; the other groups keep the rule's value."""
    model = make_cnn()
    head = list(model.head.parameters())
    body = [p for n, p in model.named_parameters() if not n.startswith("head")]
    opt = SAM([{"params": body}, {"params": head, "alpha": 0.0}], torch.optim.SGD, lr=0.1,
              rule=rules.GSAM(alpha=0.4))
    assert [g["alpha"] for g in opt.param_groups] == [0.4, 0.0]
    with pytest.raises(SamkitError, match="alpha must be a finite number"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(2))], "alpha": "big"})


def test_every_rule_module_is_exported_and_named():
    """The package re-exports every rule file's classes (a new rule is a new file)."""
    import pkgutil

    import samkit.optim.rules as pkg

    modules = [m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name != "base"]
    assert set(modules) >= {"sam", "friendly", "gsam", "wsam", "gcsam", "momentum", "unnormalized",
                            "multistep", "sampa", "rwp"}
    classes = [getattr(rules, n) for n in rules.__all__ if isinstance(getattr(rules, n), type)]
    names = [c.name for c in classes if issubclass(c, rules.Rule) and c is not rules.Rule]
    assert len(names) == len(set(names)) == 11
