"""Perturbation rules of the SAM family, one file each (``samkit.rules``).

A rule is a :class:`Rule`: the perturbation direction from ascent gradients, what it observes after
a taken step, and an optional descent-side transform — with explicit per-parameter state. Pass one
to any samkit optimizer: ``samkit.SAM(params, torch.optim.SGD, rule=samkit.rules.GSAM(alpha=0.1))``.

Every module of this package is imported here and its ``__all__`` re-exported, so a new rule is a
new file (plus its name in :mod:`samkit.optim.registry`).
"""

from __future__ import annotations

import importlib
import pkgutil

from samkit.optim.rules.base import (
    EPS,
    Rule,
    RuleContext,
    check_number,
    global_norm,
    perturbation,
    shard_norms,
)

__all__ = ["EPS", "Rule", "RuleContext", "check_number", "global_norm", "perturbation", "shard_norms"]

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        _module = importlib.import_module(f"{__name__}.{_info.name}")
        for _name in _module.__all__:
            globals()[_name] = getattr(_module, _name)
            __all__.append(_name)
