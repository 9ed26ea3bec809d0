r"""Momentum-SAM (Becker, Altrock & Risse, "Momentum-SAM: Sharpness Aware Minimization without
Computational Overhead", 2024).

Instead of an ascent pass, MSAM perturbs against the base optimizer's momentum :math:`v` (the
accumulated gradient, so :math:`-v` is where the next step goes, as in Nesterov's method):

.. math:: e = -\rho\, \frac{T^2 v}{\lVert T v \rVert}, \qquad h = \nabla L(w + e)

One forward-backward pass per step: the cost of the base optimizer. ``v`` is the momentum *before*
this step's gradient: SGD's ``momentum_buffer``, Adam/AdamW's ``exp_avg`` (the first-moment
estimate). The first step (no momentum yet) is a plain base-optimizer step. Since no ascent
gradient exists, the descent pass is the only pass: it updates BatchNorm statistics, and the loss
that ``train_step`` returns is the loss at ``w + e``. Per-shard perturbations would all be the
same, so ``shards > 1`` is refused. The paper uses much larger ``rho`` than SAM (around 0.3-3 for
SGD on CIFAR); tune it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from samkit.errors import SamkitError
from samkit.optim.rules.base import Groups, Rule, RuleContext

__all__ = ["MomentumSAM"]

MOMENTUM_KEYS = ("momentum_buffer", "exp_avg")


class MomentumSAM(Rule):
    """Momentum-SAM: perturb by ``-rho`` along the base optimizer's normalised momentum; one pass.

    Example::

        opt = samkit.SAM(params, torch.optim.SGD, rho=0.5, rule=samkit.rules.MomentumSAM(),
                         lr=0.1, momentum=0.9)
    """

    name = "momentum_sam"
    ascent_passes = 0
    shardable = False

    def perturbation(self, grads: Groups | None, ctx: RuleContext, *, stacked: bool = False,
                     previous: Groups | None = None) -> tuple[Groups | None, Tensor]:
        found = [[_momentum(s) for s in states] for states in ctx.base_state]
        momenta = [[v for v in group if v is not None] for group in found]
        if any(len(a) < len(b) for a, b in zip(momenta, found, strict=True)):
            device = ctx.params[0][0].device if ctx.params and ctx.params[0] else None
            return None, torch.zeros((), device=device)  # no momentum yet: a plain step
        directions = [list(torch._foreach_neg(group)) if group else [] for group in momenta]
        return ctx.geometry_of(directions, stacked)

    def check_base(self, base_optimizer: torch.optim.Optimizer) -> None:
        """Momentum-SAM needs a base optimizer that keeps a momentum."""
        for group in base_optimizer.param_groups:
            if "momentum" in group and not group["momentum"]:
                raise SamkitError(
                    "Momentum-SAM perturbs along the base optimizer's momentum, but it has "
                    "momentum=0: give the base optimizer momentum (e.g. torch.optim.SGD with "
                    "momentum=0.9) or use another rule"
                )


def _momentum(state: dict[str, Any]) -> Tensor | None:
    for key in MOMENTUM_KEYS:
        if state.get(key) is not None:
            return state[key]
    return None
