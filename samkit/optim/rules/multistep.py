r"""Multi-step ascent: ``k`` projected normalised-gradient steps inside the ``rho`` ball.

Andriushchenko & Flammarion (ICML 2022, ``--sam_iters``) run the inner maximisation of SAM with
several steps, each from the gradient at the current perturbation:

.. math::
    e_0 = 0, \qquad
    e_j = \Pi_\rho\Big(e_{j-1} + s\, \frac{T^2 g_j}{\lVert T g_j \rVert}\Big), \quad
    g_j = \nabla L(w + e_{j-1}), \qquad h = \nabla L(w + e_k)

with step :math:`s = \text{step\_size} \cdot \rho` (their ``--sam_step_size_mult``, 1 by default)
and :math:`\Pi_\rho` the projection onto the ball :math:`\sum_i \lVert T_i^{-1} e_i \rVert^2 /
\rho_i^2 \le 1` (``i`` over parameter groups; with one ``rho`` this is :math:`\lVert T^{-1} e
\rVert \le \rho`). Each step is one forward-backward pass, so a step of the optimizer costs
``k + 1`` passes. With ``steps=1`` (and ``step_size <= 1``) this is SAM, bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from samkit._checks import check_number, check_positive_int
from samkit.errors import SamkitError
from samkit.optim.rules.base import Groups, Rule, RuleContext, metric, per_shard

__all__ = ["MultiStepSAM"]


class MultiStepSAM(Rule):
    """SAM whose perturbation comes from ``steps`` projected ascent steps (``steps + 1`` passes).

    Example::

        opt = samkit.SAM(params, torch.optim.SGD, rho=0.05, rule=samkit.rules.MultiStepSAM(steps=3), lr=0.1)
    """

    name = "multistep_sam"

    def __init__(self, steps: int = 2, step_size: float = 1.0, *, adaptive: bool = False,
                 eta: float = 0.0) -> None:
        super().__init__(adaptive=adaptive, eta=eta)
        check_positive_int("steps", steps, hint="ascent passes per step")
        check_number("step_size", step_size, low=0.0, low_open=True)  # a multiple of rho
        self.steps = steps
        self.step_size = float(step_size)
        self.ascent_passes = steps

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "steps": self.steps, "step_size": self.step_size}

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        check_positive_int("steps", group["steps"], hint="ascent passes per step")
        check_number("step_size", group["step_size"], low=0.0, low_open=True)
        # the passes of a step are the rule's, not a group's: a group's own value would be ignored
        if group["steps"] != self.steps or group["step_size"] != self.step_size:
            raise SamkitError(
                "steps and step_size are the same for every param group: set them in "
                f"MultiStepSAM(steps=..., step_size=...), not in a group (got steps={group['steps']!r}, "
                f"step_size={group['step_size']!r})"
            )

    def perturbation(self, grads: Groups | None, ctx: RuleContext, *, stacked: bool = False,
                     previous: Groups | None = None) -> tuple[Groups | None, Tensor]:
        assert grads is not None
        step, norm = ctx.geometry_of(self.direction(grads, ctx, stacked), stacked)
        if self.step_size != 1.0:
            for e in step:
                torch._foreach_mul_(e, self.step_size)
        if previous is None and self.step_size <= 1.0:
            return step, norm  # one normalised step of length <= rho is inside the ball already
        if previous is not None:
            for e, p in zip(step, previous, strict=True):
                torch._foreach_add_(e, p)
        return self._project(step, ctx, stacked), norm

    def _project(self, e: Groups, ctx: RuleContext, stacked: bool) -> Groups:
        """Scale ``e`` onto the ball when it is outside: ``e / max(1, r)``, r its radius in rhos."""
        squares: list[Tensor] = []
        for x, w, group in zip(e, ctx.params, ctx.groups, strict=True):
            if group["rho"] == 0 or not x:
                continue
            scaled = torch._foreach_div(x, metric(w, group["eta"], stacked)) if group["adaptive"] else x
            dims = [tuple(range(1, t.dim())) if stacked else None for t in scaled]
            for t, d in zip(scaled, dims, strict=True):
                sq = t.double().square() if t.dtype == torch.float64 else t.float().square()
                squares.append((sq.sum(d) if d else sq.sum()) / group["rho"] ** 2)
        if not squares:
            return e
        radius = torch.stack(squares).sum(0).sqrt()
        inv = 1.0 / radius.clamp(min=1.0)
        for x in e:
            if x:
                torch._foreach_mul_(x, per_shard(inv, x) if stacked else inv)
        return e
