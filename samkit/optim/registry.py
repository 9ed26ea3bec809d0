"""Optimizer names: one table from a name to its construction and defaults (timm-style).

Shared by :func:`create_optimizer`, the run config (``TrainConfig.optimizer``), the CLI's
``--optimizer`` choices and the study methods (``--methods gsam:alpha=0.1``). A name is a plain
base optimizer (one forward-backward pass per step) or a SAM-family rule on a base optimizer; its
options are the rule's constructor arguments. Adding a rule: its file in ``samkit/optim/rules/``
and one :func:`register` line below.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer

from samkit.errors import SamkitError
from samkit.optim.plan import check_knobs
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


_OPTIMIZERS: Registry[OptimizerEntry] = Registry("optimizer", ordered=True)


def register(name: str, rule: Callable[..., Rule] | None, summary: str, **defaults: Any) -> None:
    """Add ``name`` to the table (a name is registered once)."""
    _OPTIMIZERS.add(name, OptimizerEntry(name, summary, rule, defaults))


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


def base_factory(base: str | type[Optimizer] | Callable[..., Optimizer]) -> Callable[..., Optimizer]:
    """A base optimizer by name (``"sgd"``, ``"adamw"``, ``"adam"``), or the class/callable itself."""
    if isinstance(base, str):
        if base not in BASES:
            raise SamkitError(f"unknown base optimizer {base!r}; known: {', '.join(BASES)}")
        return BASES[base]
    if not callable(base):
        raise SamkitError(f"base must be a name ({', '.join(BASES)}), an optimizer class or a callable")
    return base


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

__all__ = [
    "BASES", "OptimizerEntry", "base_factory", "check_settings", "create_optimizer", "entry", "names",
    "register",
]
