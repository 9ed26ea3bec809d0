"""The bad-input campaign's Python side (issue 30): every option of every optimizer constructor.

The constructors and their parameters are read from samkit itself — ``samkit.SAM`` and
``samkit.FriendlySAM``'s keyword arguments, every name of ``create_optimizer``, every rule class of
``samkit.rules``, every cadence of ``samkit.cadence.CADENCES``, the functions of ``samkit.scope``
and the settings a param group may override (``inspect.signature``, ``Rule.hyperparameters``) — so
a new rule, cadence or parameter is covered without touching this file. Each parameter gets values
generated from its annotation: wrong type, a bool where a number is meant, negative, zero, NaN,
±inf, huge (1e300, 10**30), empty, unknown names; and each constructor an unknown keyword. Each
value, on top of an otherwise valid call, must raise :class:`SamkitError`, ``ValueError`` or
``TypeError`` whose message names the parameter — any other exception, a message that does not
name it, or an accepted value is a defect — and write no file (the working folder, a fresh one,
stays empty). Values that are valid for a parameter (zero for ``eta``, a huge ``shards``) are
listed in ``VALID`` with the reason and are not tried there (a test checks that they construct). A
rule or cadence is built and then given to ``samkit.SAM``, so a value that only the optimizer's
checks would refuse counts as refused.

The default suite tries a seeded sample of the inputs (``SAMPLE``); ``pytest -m slow`` tries all.
The counts of the last run are printed (``-s``) and stated in docs/reliability.md.
"""

from __future__ import annotations

import collections
import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

import samkit
from samkit import SamkitError
from samkit.optim import registry
from samkit.optim.rules.base import Rule

SAMPLE = 300  # inputs of the default suite (a seeded sample of all); pytest -m slow: all
NAN, INF = float("nan"), float("inf")


def _number_values() -> dict[str, Any]:
    return {"text": "0.1", "empty": "", "list": [0.1], "object": object(), "bool": True,
            "negative": -1.0, "zero": 0.0, "nan": NAN, "inf": INF, "-inf": -INF, "huge": 1e300,
            "huge int": 10**30}  # fmt: skip


def _count_values() -> dict[str, Any]:
    return {"text": "2", "empty": "", "list": [2], "object": object(), "bool": True,
            "fraction": 1.5, "negative": -1, "zero": 0, "nan": NAN, "inf": INF, "huge": 10**30,
            "huge float": 1e300}  # fmt: skip


def _flag_values() -> dict[str, Any]:
    return {"text": "yes", "empty": "", "int": 1, "fraction": 0.5, "list": [True],
            "object": object(), "nan": NAN}  # fmt: skip


def _choice_values() -> dict[str, Any]:
    return {"unknown": "nosuch", "empty": "", "int": 5, "list": [], "object": object()}


def _rule_values() -> dict[str, Any]:
    return {"name": "gsam", "empty": "", "class": samkit.rules.GSAM, "int": 5, "object": object()}


def _cadence_values() -> dict[str, Any]:
    return {"unknown": "nosuch", "empty": "", "bad option": "every:k=0",
            "unknown option": "every:nosuch=1", "class": samkit.cadence.Every, "int": 5,
            "list": [], "object": object()}  # fmt: skip


def _module_values() -> dict[str, Any]:
    return {"text": "mlp", "int": 5, "list": [], "object": object()}


def _callable_values() -> dict[str, Any]:
    return {"unknown": "nosuch", "empty": "", "int": 5, "list": [], "object": object()}


VALUES: dict[str, Callable[[], dict[str, Any]]] = {
    "number": _number_values, "count": _count_values, "flag": _flag_values,
    "choice": _choice_values, "rule": _rule_values, "cadence": _cadence_values,
    "module": _module_values, "callable": _callable_values,
    "sam only": lambda: {"given": 1},  # a SAM knob given to a plain optimizer: any value
}  # fmt: skip

# What a generated value means for a parameter where it is valid: never tried there. Each entry
# says why; a parameter missing here gets every value of its kind (and fails if one is accepted).
VALID = {
    "zero": {"rho", "eta", "sigma", "lmbda", "alpha", "gamma", "noise", "mix", "adapt", "beta",
             "seed", "delta", "lambda1", "lambda2", "start", "p"},  # a value with a meaning (no
    # perturbation, plain SAM, no EMA, no noise, the first seed, never switch, from the start)
    "negative": {"lambda1", "lambda2"},  # AE-SAM's thresholds are any real numbers
    "huge": {"rho", "eta", "sigma", "alpha", "noise", "adapt", "lambda1", "lambda2", "rate",
             "step_size", "max_grad_norm", "shards", "shard_size", "micro_batch_size", "k",
             "max_gap", "steps", "total_steps", "sync_perturbation_group_size"},  # a large radius,
    # scale or count: finite; a batch or world size that cannot hold it is refused at the step
    "huge int": {"rho", "eta", "sigma", "alpha", "noise", "adapt", "lambda1", "lambda2", "rate",
                 "step_size", "max_grad_norm"},  # the same, written as an int
}  # fmt: skip
# Parameters that take any value: never tried.
FREE = {"what"}  # scope.select's what only names the selection in its error message
# A rule's settings that are the same for every param group: a group may only repeat them.
RULE_WIDE = {"steps", "step_size"}
# A valid value of each required parameter (a constructor's parameter without default).
REQUIRED = {"k": 2, "p": 0.5, "start": 0.5}
# Other names a message may use for a parameter.
ALIASES = {"name": ("optimizer",)}


def _kind(annotation: Any, default: Any) -> str:
    """The kind of values a parameter takes, from its annotation (a string: postponed annotations)."""
    text = str(annotation)
    for word, kind in (("Rule", "rule"), ("Cadence", "cadence"), ("Module", "module"),
                       ("Callable", "callable"), ("BaseOptimizer", "callable"), ("bool", "flag"),
                       ("float", "number"), ("int", "count"), ("str", "choice")):  # fmt: skip
        if word in text:
            return kind
    raise AssertionError(f"no kind for annotation {text!r} (default {default!r}): add it to _kind")


@dataclass
class Parameter:
    name: str
    kind: str
    none_ok: bool


def _parameters(fn: Callable[..., Any], skip: tuple[str, ...] = ()) -> list[Parameter]:
    """The named parameters of ``fn`` (not ``self``, ``*args``, ``**kwargs`` or ``skip``)."""
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("self", *skip) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        none_ok = "None" in str(p.annotation) or p.default is None
        out.append(Parameter(p.name, _kind(p.annotation, p.default), none_ok))
    return out


# ---- the constructors ----------------------------------------------------------------------------
def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))


def _sam(params: Any = None, **kwargs: Any) -> samkit.SAM:
    base = kwargs.pop("base_optimizer", torch.optim.SGD)
    params = _model().parameters() if params is None else params
    return samkit.SAM(params, base, lr=0.1, momentum=0.9, **kwargs)


@dataclass
class Target:
    """One constructor: its name, its parameters, and how to call it with some of them set."""

    name: str
    parameters: list[Parameter]
    build: Callable[..., Any]
    group: bool = False  # its keywords are a param group's settings, which may hold any other key


SAM_KNOBS = _parameters(samkit.SAM.__init__, skip=("params",))


def _rule_classes() -> list[type[Rule]]:
    return [obj for name in samkit.rules.__all__ if isinstance(obj := getattr(samkit.rules, name), type)
            and issubclass(obj, Rule)]  # fmt: skip


def _group_parameters(rule: Rule) -> list[Parameter]:
    """The settings a param group may set with ``rule``: rho, the rule's hyperparameters, perturb."""
    own = {p.name: p for p in _parameters(type(rule).__init__) + SAM_KNOBS}
    return [Parameter(key, own[key].kind, False) for key in ("rho", *rule.hyperparameters())] + [
        Parameter("perturb", "flag", False)]


def targets() -> list[Target]:
    """Every constructor the campaign calls."""
    out = [
        Target("SAM", SAM_KNOBS, _sam),
        Target("FriendlySAM", _parameters(samkit.FriendlySAM.__init__, skip=("params", "base_optimizer")),
               lambda **kw: samkit.FriendlySAM(_model().parameters(), torch.optim.SGD, lr=0.1, **kw)),
        Target("create_optimizer", _parameters(samkit.create_optimizer, skip=("params",)),
               lambda **kw: samkit.create_optimizer(**{"name": "sam", "params": _model().parameters(),
                                                       **kw})),
    ]  # fmt: skip
    for name in registry.names():
        entry = registry.entry(name)
        if entry.is_sam:
            assert entry.rule is not None
            options = _parameters(entry.rule)
        else:  # a plain optimizer takes no SAM knob, whatever its value
            options = [Parameter(p.name, "sam only", True) for p in SAM_KNOBS
                       if p.name not in ("base_optimizer", "model")]  # fmt: skip
        base = {"momentum": 0.9} if entry.is_sam or name == "sgd" else {}  # sam's base: SGD
        out.append(Target(f"create_optimizer({name!r})", options,
                          lambda name=name, base=base, **kw: samkit.create_optimizer(
                              name, _model().parameters(), lr=0.1, **base, **kw)))  # fmt: skip
    for cls in _rule_classes():
        out.append(Target(f"rules.{cls.__name__}", _parameters(cls.__init__),
                          lambda cls=cls, **kw: _sam(rule=cls(**kw))))
        out.append(Target(f"param group with rules.{cls.__name__}", _group_parameters(cls()),
                          lambda cls=cls, **kw: _sam([{"params": _model().parameters(), **kw}],
                                                     rule=cls()), group=True))  # fmt: skip
    for cls in samkit.cadence.CADENCES.values():
        def cadence(cls=cls, **kw):
            args = {p.name: REQUIRED[p.name] for p in _parameters(cls.__init__)
                    if p.name in REQUIRED and p.name not in kw}  # fmt: skip
            return _sam(cadence=cls(**args, **kw))

        out.append(Target(f"cadence.{cls.__name__}", _parameters(cls.__init__), cadence))
    # a scope's options go on its group (perturb is the scope's own to set)
    group = [p for p in _group_parameters(samkit.rules.SAM()) if p.name != "perturb"]
    for name in samkit.scope.__all__:
        fn = getattr(samkit.scope, name)
        if not inspect.isfunction(fn):
            continue
        def scoped(fn=fn, **kw):
            model = kw.pop("model", _model())
            if fn is samkit.scope.select:
                kw.setdefault("perturb", lambda key, p: key.startswith("0."))  # the first layer
            return _sam(fn(model, **kw))

        params = _parameters(fn)
        names = {p.name for p in params}
        out.append(Target(f"scope.{name}", params + [p for p in group if p.name not in names], scoped,
                          group=True))
    return out


# ---- the inputs and their outcomes ----------------------------------------------------------------
def inputs() -> list[tuple[Target, str, str]]:
    """Every ``(target, parameter, what)`` the campaign tries (the values are made per case)."""
    out = []
    for target in targets():
        if not target.group:  # (torch keeps any key of a param group: a scheduler's, a name)
            out.append((target, "nosuch", "unknown keyword"))
        for p in target.parameters:
            if p.name in FREE:
                continue
            values = list(VALUES[p.kind]()) + ([] if p.none_ok else ["none"])
            out += [(target, p.name, what) for what in values if p.name not in VALID.get(what, ())]
    return out


def _value(target: Target, name: str, what: str) -> Any:
    if what == "unknown keyword":
        return 1
    if what == "none":
        return None
    kind = next(p.kind for p in target.parameters if p.name == name)
    return VALUES[kind]()[what]


def _outcome(target: Target, name: str, what: str) -> tuple[str, str]:
    value = _value(target, name, what)
    try:
        target.build(**{name: value})
    except (SamkitError, ValueError, TypeError) as exc:
        text = str(exc)
        if not any(n in text for n in (name, *ALIASES.get(name, ()))):
            return "refused without naming it", f"{type(exc).__name__}: {text}"
        return f"refused ({type(exc).__name__})", ""
    except Exception as exc:  # what a user would see as a traceback
        return "traceback", f"{type(exc).__name__}: {exc}"
    return "accepted", f"{value!r}"


def _try(cases, tmp_path, monkeypatch):
    """Run every case; the counts by outcome, and what went wrong."""
    monkeypatch.chdir(tmp_path)
    counts: collections.Counter = collections.Counter()
    wrong = []
    for target, name, what in cases:
        outcome, detail = _outcome(target, name, what)
        counts[outcome] += 1
        if not outcome.startswith("refused ("):
            wrong.append(f"{target.name} {name} ({what}): {outcome}: {detail[:300]}")
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert not written, f"the constructors wrote files: {written}"
    return counts, wrong


def _sample(cases, sample):
    if sample is not None and sample < len(cases):
        cases = random.Random(30).sample(cases, sample)
    return cases


def _report(title, counts, cases):
    constructors = len({c[0].name for c in cases})
    params = len({(c[0].name, c[1]) for c in cases})
    print(f"\n{title}: {len(cases)} inputs, {constructors} constructors, {params} parameters, "
          f"outcomes {dict(sorted(counts.items()))}")  # fmt: skip


def test_every_parameter_has_a_kind_and_every_required_one_a_valid_value():
    names = [t.name for t in targets()]
    assert len(names) == len(set(names))
    assert {"SAM", "FriendlySAM", "rules.GSAM", "cadence.Every", "scope.select"} <= set(names)
    for cls in samkit.cadence.CADENCES.values():
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.default is p.empty and p.name != "self":
                assert p.name in REQUIRED, f"{cls.__name__}({p.name}=?): add a valid value to REQUIRED"


def test_the_values_valid_lists_are_accepted_wherever_they_are_not_tried():
    """Every constructor builds with its defaults and with each value ``VALID`` lists for one of
    its parameters: the campaign never counts a refusal of a valid value."""
    tried = 0
    for target in targets():
        target.build()
        for p in target.parameters:
            if target.group and p.name in RULE_WIDE:
                continue
            for what in (w for w, names in VALID.items() if p.name in names and w in VALUES[p.kind]()):
                target.build(**{p.name: VALUES[p.kind]()[what]})
                tried += 1
    assert tried > 100


def test_every_option_refuses_bad_values(tmp_path, monkeypatch, capsys):
    cases = _sample(inputs(), SAMPLE)
    counts, wrong = _try(cases, tmp_path, monkeypatch)
    with capsys.disabled():
        _report("python options (sample)", counts, cases)
    assert not wrong, "\n".join(wrong)


@pytest.mark.slow
def test_the_whole_python_campaign(tmp_path, monkeypatch, capsys):
    cases = inputs()
    counts, wrong = _try(cases, tmp_path, monkeypatch)
    with capsys.disabled():
        _report("python options (all)", counts, cases)
    assert not wrong, "\n".join(wrong)

