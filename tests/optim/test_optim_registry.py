"""Optimizer names: one table builds every member; bases may be classes, partials or callables."""

from __future__ import annotations

import functools

import pytest
import torch
from optim_helpers import assert_states, ce, make_batch, make_cnn, state_of

import samkit
from samkit import SAM, SamkitError, create_optimizer, rules
from samkit.optim import registry


def trajectory(make_opt, steps=3):
    model = make_cnn()
    opt = make_opt(model.parameters())
    for s in range(steps):
        opt.train_step(model, ce, make_batch(seed=s))
    return state_of(model), opt


@pytest.mark.parametrize(
    "name,options,rule",
    [
        ("sam", {}, rules.SAM()),
        ("asam", {"eta": 0.01}, rules.ASAM(eta=0.01)),
        ("fsam", {"sigma": 0.5, "lmbda": 0.6}, rules.FriendlySAM(sigma=0.5, lmbda=0.6)),
        ("gsam", {"alpha": 0.2}, rules.GSAM(alpha=0.2)),
        ("wsam", {"gamma": 0.8, "decouple": False}, rules.WSAM(gamma=0.8, decouple=False)),
        ("gcsam", {}, rules.GCSAM()),
        ("momentum_sam", {}, rules.MomentumSAM()),
        ("usam", {}, rules.UnnormalizedSAM()),
        ("multistep_sam", {"steps": 3}, rules.MultiStepSAM(steps=3)),
    ],
)
def test_a_name_builds_the_same_optimizer_as_the_rule(name, options, rule):
    kw = {"lr": 0.1, "momentum": 0.9, "rho": 0.1}
    by_name, opt = trajectory(lambda p: create_optimizer(name, p, base="sgd", **options, **kw))
    direct, _ = trajectory(lambda p: SAM(p, torch.optim.SGD, rule=rule, **kw))
    assert_states(by_name, direct)
    assert type(opt.rule) is type(rule) and opt.rule.name in (name, "sam")
    assert opt.passes_per_step == registry.entry(name).passes_per_step(options)


def test_msam_defaults_to_four_shards_unless_told():
    model = make_cnn()
    assert str(create_optimizer("msam", model.parameters(), lr=0.1).sharding) == "shards=4"
    assert str(create_optimizer("msam", model.parameters(), lr=0.1, shard_size=2).sharding) == "shard_size=2"


def test_plain_names_are_the_base_optimizers():
    model = make_cnn()
    opt = create_optimizer("adamw", model.parameters(), lr=1e-3, weight_decay=0.05)
    assert type(opt) is torch.optim.AdamW and opt.defaults["weight_decay"] == 0.05
    with pytest.raises(SamkitError, match="rho only applies to the SAM family, not to the plain "
                                          "optimizer 'sgd'"):
        create_optimizer("sgd", model.parameters(), lr=0.1, rho=0.05)


@pytest.mark.parametrize(
    "base",
    [
        functools.partial(torch.optim.SGD, momentum=0.9),
        lambda groups, **kw: torch.optim.SGD(groups, momentum=0.9, **kw),
    ],
    ids=["partial", "callable"],
)
def test_base_optimizer_may_be_a_partial_or_any_callable(base):
    with_class, _ = trajectory(lambda p: SAM(p, torch.optim.SGD, lr=0.1, momentum=0.9, shards=2))
    other, opt = trajectory(lambda p: SAM(p, base, lr=0.1, shards=2))
    assert_states(other, with_class)
    assert opt.base_optimizer.param_groups is opt.param_groups
    by_name, _ = trajectory(lambda p: create_optimizer("sam", p, base=base, lr=0.1, shards=2))
    assert_states(by_name, with_class)


def test_a_base_built_on_other_parameters_is_refused():
    other = torch.nn.Linear(2, 2)
    with pytest.raises(SamkitError, match="on the param groups it is given"):
        SAM(make_cnn().parameters(), lambda groups, **kw: torch.optim.SGD(other.parameters(), **kw), lr=0.1)
    with pytest.raises(SamkitError, match="must build a torch.optim.Optimizer"):
        SAM(make_cnn().parameters(), lambda groups, **kw: None, lr=0.1)
    with pytest.raises(SamkitError, match="could not build the base optimizer"):
        SAM(make_cnn().parameters(), torch.optim.SGD, lr=0.1, betas=(0.9, 0.99))
    # a rule option given to the wrong rule: the message lists the options this rule has
    with pytest.raises(SamkitError, match=r"the gsam rule's \(adaptive, alpha, eta\) go to the base"):
        create_optimizer("gsam", make_cnn().parameters(), base="sgd", lr=0.1, gamma=0.3)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(SamkitError, match="unknown optimizer 'lookahead'; known optimizers: sgd, adamw, sam"):
        create_optimizer("lookahead", make_cnn().parameters())
    with pytest.raises(SamkitError, match="unknown base optimizer 'rmsprop'"):
        create_optimizer("sam", make_cnn().parameters(), base="rmsprop", lr=0.1)


def test_every_rule_class_has_a_name_in_the_table():
    rule_classes = {getattr(rules, n) for n in rules.__all__}
    rule_classes = {c for c in rule_classes if isinstance(c, type) and issubclass(c, rules.Rule)}
    registered = {registry.entry(n).rule for n in registry.names()} - {None}
    assert rule_classes - {rules.Rule} <= registered
    assert samkit.create_optimizer is create_optimizer
