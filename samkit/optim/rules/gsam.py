r"""GSAM: surrogate-gap guided SAM (Zhuang et al., "Surrogate Gap Guided Sharpness-Aware
Minimization", ICLR 2022).

The perturbation is SAM's; the descent gradient also lowers the surrogate gap
:math:`L(w + e) - L(w)` by removing, from the ascent gradient :math:`g = \nabla L(w)`, its
component along :math:`h = \nabla L(w + e)` and descending along the rest with weight
:math:`-\alpha` (Algorithm 1 of the paper):

.. math::
    g_\parallel = \frac{\langle g, h\rangle}{\lVert h \rVert^2 + \epsilon}\, h, \qquad
    g_\perp = g - g_\parallel, \qquad
    \text{descent gradient} = h - \alpha\, g_\perp

Inner product and norm are global over all parameters (one vector, as in the paper). With shards,
DDP or micro-batches, ``g`` and ``h`` are the batch's (weighted means over shards and ranks), so
the projection is taken once per step. ``alpha = 0`` is SAM. The paper also schedules ``rho`` with
the learning rate; here ``rho`` is a per-group setting that a scheduler or the user may change.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from samkit._compat import reduced
from samkit.optim.rules.base import EPS, Groups, Rule, RuleContext, check_number

__all__ = ["GSAM"]


def inner(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """:math:`\\sum_i \\langle a_i, b_i \\rangle` as a 0-d tensor (at least float32), no host sync."""
    dtype = torch.promote_types(a[0].dtype, torch.float32) if a else torch.float32
    # DTensors (FSDP2): completed over the ranks before any use (torch 2.8 would add EPS per rank)
    terms = [torch.sum(x.to(dtype) * y.to(dtype)) for x, y in zip(a, b, strict=True)]
    return reduced(torch.stack(terms).sum())


class GSAM(Rule):
    r"""GSAM's descent gradient :math:`h - \alpha g_\perp` (``alpha`` per param group).

    Example::

        opt = samkit.SAM(params, torch.optim.SGD, rho=0.05, rule=samkit.rules.GSAM(alpha=0.1), lr=0.1)
    """

    name = "gsam"
    needs_full_grad = True
    transforms_descent = True

    def __init__(self, alpha: float = 0.1, *, adaptive: bool = False, eta: float = 0.0) -> None:
        super().__init__(adaptive=adaptive, eta=eta)
        check_number("alpha", alpha, low=0.0)
        self.alpha = alpha

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "alpha": self.alpha}

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        check_number("alpha", group["alpha"], low=0.0)

    def descent(self, grads: Groups, full_grads: Groups | None, ctx: RuleContext) -> None:
        assert full_grads is not None
        h = [x for group in grads for x in group]
        g = [x for group in full_grads for x in group]
        coef = inner(g, h) / (inner(h, h) + EPS)  # g_par = coef * h
        for hs, gs, group in zip(grads, full_grads, ctx.groups, strict=True):
            alpha = group["alpha"]
            if alpha == 0 or not hs:
                continue
            # h - alpha (g - coef h) = (1 + alpha coef) h - alpha g
            torch._foreach_mul_(hs, (1.0 + alpha * coef).to(hs[0].dtype))
            torch._foreach_add_(hs, gs, alpha=-alpha)
