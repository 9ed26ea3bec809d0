r"""Unnormalized SAM (USAM): the ascent step is the gradient itself, scaled by ``rho``.

.. math:: e = \rho\, T^2 g, \qquad h = \nabla L(w + e)

This is the form Andriushchenko & Flammarion ("Towards Understanding Sharpness-Aware Minimization",
ICML 2022) analyse in their convergence results (their ``--sam_no_grad_norm``), the form samkit's
diagonal-linear-network lab runs, and the "USAM" of later work on SAM's normalisation (e.g. Dai et
al., NeurIPS 2023). Without the normalisation the perturbation vanishes at a minimum, so ``rho``
here is a step size, not a radius: for comparable behaviour it is ``rho_SAM / ||g||``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from samkit.optim.rules.base import Groups, Rule, RuleContext, global_norm, metric, shard_norms

__all__ = ["UnnormalizedSAM"]


class UnnormalizedSAM(Rule):
    r"""USAM: :math:`e = \rho\, T^2 g` (no normalisation; ``T = 1`` unless ``adaptive``).

    Example::

        opt = samkit.SAM(params, torch.optim.SGD, rho=0.01, rule=samkit.rules.UnnormalizedSAM(), lr=0.1)
    """

    name = "usam"

    def perturbation(self, grads: Groups | None, ctx: RuleContext, *, stacked: bool = False,
                     previous: Groups | None = None) -> tuple[Groups | None, Tensor]:
        assert grads is not None
        flat = [x for group in grads for x in group]
        norm = shard_norms(flat) if stacked else global_norm(flat)  # before e may take g's storage
        directions = self.direction(grads, ctx, stacked)
        inplace = ctx.consume and directions is grads
        out: Groups = []
        for d, w, group in zip(directions, ctx.params, ctx.groups, strict=True):
            if inplace:
                e = list(d)
                torch._foreach_mul_(e, group["rho"])
            else:
                e = list(torch._foreach_mul(list(d), group["rho"]))
            if group["adaptive"]:
                t = metric(w, group["eta"], stacked)
                torch._foreach_mul_(e, t)
                torch._foreach_mul_(e, t)
            out.append(e)
        return out, norm
