"""The optimizer layer's names, in one place: optimizers (each SAM-family name is a rule),
cadences, scopes, bases and executions, with their options, defaults and docs (timm-style).

Each kind is a :class:`samkit.registry.Registry` (:data:`KINDS`); names with options are written
in the spec language of :mod:`samkit.spec` (``gsam:alpha=0.1``, ``every:k=5,reuse=looksam``).
Everything that lists or checks these names is written from here: :func:`create_optimizer`, the
run config (``TrainConfig``: its choices, and the rule options it holds as settings of their own,
:data:`RUN_SETTING_OPTIONS`), the command line's choices and help (``samkit/cli/flags.py``,
``samkit optimizers``), the study methods (``--methods gsam:alpha=0.1``) and the API index
(``tools/docs/hooks.py``); ``tests/test_registry_generated.py`` fails when a name is missing from
any of them. A name is a plain base optimizer (one forward-backward pass per step) or a SAM-family
rule on a base optimizer; its options are the rule's constructor arguments. Adding a rule: its file
in ``samkit/optim/rules/`` and one :func:`register` line below.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer

from samkit.errors import SamkitError
from samkit.optim import scope
from samkit.optim.cadence import NAMES as CADENCES
from samkit.optim.plan import EXECUTIONS, check_knobs
from samkit.optim.rules.base import Rule
from samkit.optim.rules.friendly import FriendlySAM as FriendlySAMRule
from samkit.optim.rules.gcsam import GCSAM
from samkit.optim.rules.gsam import GSAM
from samkit.optim.rules.momentum import MomentumSAM
from samkit.optim.rules.multistep import MultiStepSAM
from samkit.optim.rules.rwp import RWP
from samkit.optim.rules.sam import ASAM
from samkit.optim.rules.sam import SAM as SAMRule
from samkit.optim.rules.sampa import SAMPa
from samkit.optim.rules.unnormalized import UnnormalizedSAM
from samkit.optim.rules.wsam import WSAM
from samkit.optim.sam import SAM
from samkit.registry import Registry

BASES: dict[str, type[Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
}


@dataclass(frozen=True)
class OptimizerEntry:
    """One name: a plain base optimizer (``rule is None``) or a rule with the SAM knobs it implies."""

    name: str
    summary: str
    rule: Callable[..., Rule] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)  # SAM knobs, e.g. msam: shards=4

    @property
    def is_sam(self) -> bool:
        """Whether it wraps a base optimizer with a SAM-family rule."""
        return self.rule is not None

    @property
    def options(self) -> dict[str, Any]:
        """The rule's options and their defaults (its constructor's keyword arguments)."""
        if self.rule is None:
            return {}
        params = inspect.signature(self.rule).parameters.values()
        return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}

    def passes_per_step(self, options: dict[str, Any] | None = None) -> int:
        """Forward-backward passes per step with these options (1 for a plain optimizer)."""
        if self.rule is None:
            return 1
        rule = self.rule(**(options or {}))
        return rule.ascent_passes + rule.descent_passes


_OPTIMIZERS: Registry[OptimizerEntry] = Registry("optimizer", ordered=True, target=lambda e: e.rule)


def register(name: str, rule: Callable[..., Rule] | None, summary: str, **defaults: Any) -> None:
    """Add ``name`` to the table (a name is registered once)."""
    _OPTIMIZERS.add(name, OptimizerEntry(name, summary, rule, defaults), summary=summary)


def names() -> tuple[str, ...]:
    """Every registered name, in registration order (plain optimizers first)."""
    return tuple(_OPTIMIZERS.names())


def entry(name: str) -> OptimizerEntry:
    """The entry for ``name``; a clear error listing the names for an unknown one."""
    return _OPTIMIZERS.get(name)


# SAM's own keyword knobs (everything but the params, the base optimizer and the rule).
_SAM_KNOBS = tuple(
    p.name
    for p in inspect.signature(SAM.__init__).parameters.values()
    if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "rule"
)


def _split(name: str, kwargs: dict[str, Any]) -> tuple[Rule | None, dict[str, Any], dict[str, Any]]:
    """``kwargs`` of a name cut three ways: the rule (built from its options, which checks them),
    samkit's knobs and the base optimizer's settings. A plain name takes no knob."""
    e = entry(name)
    kwargs = dict(kwargs)
    if not e.is_sam:
        given = sorted(set(kwargs) & set(_SAM_KNOBS))
        if given:
            raise SamkitError(
                f"{', '.join(given)} only {'applies' if len(given) == 1 else 'apply'} to the SAM family, "
                f"not to the plain optimizer {name!r} "
                "(one pass per step): choose a SAM-family name such as 'sam' (or 'msam' for shards)"
            )
        return None, {}, kwargs
    assert e.rule is not None
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in e.options}
    knobs = {k: kwargs.pop(k) for k in list(kwargs) if k in _SAM_KNOBS}
    if knobs.get("shards") is None and knobs.get("shard_size") is None:
        for key, value in e.defaults.items():  # the name's own settings (msam: 4 shards)
            if knobs.get(key) is None:
                knobs[key] = value
    try:
        rule = e.rule(**options)
    except TypeError as err:  # pragma: no cover - options are filtered by the signature
        raise SamkitError(f"optimizer {name!r}: {err}") from err
    return rule, knobs, kwargs


def create_optimizer(
    name: str,
    params: Iterable[Any],
    base: str | type[Optimizer] | Callable[..., Optimizer] = "sgd",
    **kwargs: Any,
) -> Optimizer:
    """Build an optimizer by name: ``create_optimizer("gsam", model.parameters(), base="sgd",
    alpha=0.1, rho=0.05, lr=0.1, momentum=0.9)``.

    ``kwargs`` are split three ways: the rule's options (``alpha``), samkit's knobs (``rho``,
    ``shards``, ``micro_batch_size``, ``max_grad_norm``, ``cadence``, ...) and the base optimizer's
    settings (``lr``, ``momentum``, ...). For a plain name (``"sgd"``, ``"adamw"``) ``base`` is
    ignored and every keyword goes to that optimizer. ``base`` may be a name, a class, a
    ``functools.partial`` or any callable ``f(param_groups, **settings)``.
    """
    rule, knobs, rest = _split(name, kwargs)
    if rule is None:
        return BASES[name](params, **rest)
    return SAM(params, base_factory(base), rule=rule, **knobs, **rest)


def check_settings(name: str, *, batch_size: int | None = None, **kwargs: Any) -> None:
    """The checks :func:`create_optimizer` makes of a name's rule options and samkit knobs, without
    parameters (a run configuration validates itself with them); with ``batch_size``, also that the
    sharding can split such a batch. The base optimizer's settings are its own to check."""
    rule, knobs, _ = _split(name, kwargs)
    if rule is not None:
        knobs.pop("model", None)
        check_knobs(batch_size=batch_size, rule=rule, **knobs)


register("sgd", None, "SGD (torch.optim.SGD): one pass per step")
register("adamw", None, "AdamW (torch.optim.AdamW): one pass per step")
register("sam", SAMRule, "SAM (Foret et al., ICLR 2021)")
register("asam", ASAM, "ASAM (Kwon et al., ICML 2021): SAM in the metric |w| + eta")
register("msam", SAMRule, "mSAM / m-sharpness: one SAM perturbation per shard (4 shards unless "
         "shards or shard_size is set)", shards=4)
register("fsam", FriendlySAMRule, "Friendly-SAM (Li et al., CVPR 2024): d = g - sigma * EMA")
register("gsam", GSAM, "GSAM (Zhuang et al., ICLR 2022): descent h - alpha * g_perp")
register("wsam", WSAM, "WSAM (Yue et al., KDD 2023): sharpness weighted by gamma/(1-gamma)")
register("gcsam", GCSAM, "GCSAM (Hassan et al., 2025): SAM on centralised gradients")
register("momentum_sam", MomentumSAM, "Momentum-SAM (Becker et al., 2024): perturb against "
         "the momentum, one pass per step")
register("usam", UnnormalizedSAM, "unnormalized SAM: e = rho * g (Andriushchenko & "
         "Flammarion, ICML 2022)")
register("sampa", SAMPa, "SAMPa (Xie et al., NeurIPS 2024): the perturbation from last step's "
         "gradient at y, two independent passes")
register("rwp", RWP, "random weight perturbation (Li et al., TMLR 2024): noise scaled per filter; "
         "adapt > 0: ARWP; mix < 1: m-RWP (two passes)")
register("multistep_sam", MultiStepSAM, "SAM with k projected ascent steps (Andriushchenko & "
         "Flammarion, ICML 2022): k + 1 passes")


_BASES: Registry[type[Optimizer]] = Registry("base optimizer", ordered=True, target=lambda c: None)
for _name, _cls in BASES.items():
    _BASES.add(_name, _cls, summary=f"torch.optim.{_cls.__name__}")

_SCOPES: Registry[Callable[..., Any]] = Registry("scope", ordered=True, target=lambda f: None)
_SCOPES.add("norm", scope.norm_layers, summary="the normalisation layers' affine parameters only, SAM-ON")
_SCOPES.add("last", scope.last_layer, summary="the last linear layer only, the classifier head")
_SCOPES.add("weights", scope.weights_only, summary="every parameter but biases and normalisation parameters")

_EXECUTION_DOCS = {
    "auto": "vectorized where it was measured to pay, several shards on CUDA or 4+ small shards of a "
            "convolution network on a CPU, else the loop; the loop from a failed vectorized step on",
    "loop": "one shard after another; portable, always works",
    "vectorized": "the shards stacked and the forward mapped with torch.func, BatchNorm included",
}
_EXECUTIONS: Registry[str] = Registry("execution", ordered=True, target=lambda e: None)
for _name in EXECUTIONS:
    _EXECUTIONS.add(_name, _name, summary=_EXECUTION_DOCS[_name])

# Every kind of name, by the run config's key that takes it (a cadence is a spec with options; the
# others are plain names).
KINDS: dict[str, Registry[Any]] = {
    "optimizer": _OPTIMIZERS,
    "base": _BASES,
    "cadence": CADENCES,
    "scope": _SCOPES,
    "execution": _EXECUTIONS,
}

# Rule options a run config holds as settings of their own (YAML keys and flags --eta, --sigma,
# --lmbda since the first saved runs; their config hash depends on it): the option, the name whose
# rule defines it (and its default) and what it does. Every other rule option is an
# ``optimizer_options`` entry (--optimizer-option alpha=0.1).
RUN_SETTING_OPTIONS: dict[str, tuple[str, str]] = {
    "eta": ("asam", "ASAM: offset in the metric T = |w| + eta"),
    "sigma": ("fsam", "Friendly-SAM: weight of the EMA subtracted from the gradient"),
    "lmbda": ("fsam", "Friendly-SAM: EMA decay of the full gradient"),
}


def kind(name: str) -> Registry[Any]:
    """The registry of one kind of name (a key of :data:`KINDS`)."""
    return KINDS[name]


def run_setting_default(option: str) -> Any:
    """The default of a rule option held as a run setting (its rule's own default)."""
    owner, _ = RUN_SETTING_OPTIONS[option]
    return entry(owner).options[option]


def base_factory(base: str | type[Optimizer] | Callable[..., Optimizer]) -> Callable[..., Optimizer]:
    """A base optimizer by name (``"sgd"``, ``"adamw"``, ``"adam"``), or the class/callable itself."""
    if isinstance(base, str):
        return _BASES.get(base)
    if not callable(base):
        raise SamkitError(f"base must be a name ({', '.join(BASES)}), an optimizer class or a callable")
    return base


__all__ = [
    "BASES", "KINDS", "RUN_SETTING_OPTIONS", "OptimizerEntry", "base_factory", "check_settings",
    "create_optimizer", "entry", "kind", "names", "register", "run_setting_default",
]
