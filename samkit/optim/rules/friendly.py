r"""Friendly-SAM (Li et al., "Friendly Sharpness-Aware Minimization", CVPR 2024).

Perturbs along the minibatch gradient minus an EMA of the full-batch gradient:

.. math::
    d = g - \sigma m, \qquad e = \rho\,\frac{T^2 d}{\lVert T d \rVert}, \qquad
    m \leftarrow \lambda m + (1 - \lambda)\, g_\text{full}

in the order of the authors' released optimizer: ``m`` starts at the first gradient it sees (so the
first step is plain SAM) and is updated *after* it is used. With several shards each shard perturbs
along ``g_s - sigma * m`` and ``m`` tracks the full-batch gradient ``sum_s w_s g_s``; under DDP the
all-reduced one, so the EMA is identical on every rank. ``sigma=0`` is SAM.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from samkit.errors import SamkitError
from samkit.optim.rules.base import Groups, Rule, RuleContext, check_number

__all__ = ["FriendlySAM"]


def friendly_direction(grads: list[Tensor], ema: list[Tensor] | None, sigma: float) -> list[Tensor]:
    r"""Friendly-SAM direction :math:`d = g - \sigma m` (``m`` the EMA before this step's update).

    ``ema is None`` means the EMA has not seen a gradient yet: the direction is ``g`` (plain SAM).
    Returns new tensors; ``grads`` is not modified.
    """
    if ema is None or sigma == 0.0:
        return grads
    return list(torch._foreach_add(grads, ema, alpha=-sigma))


def friendly_update(ema: list[Tensor] | None, full_grads: list[Tensor], lmbda: float) -> list[Tensor]:
    r"""EMA of the full-batch gradient: :math:`m \leftarrow \lambda m + (1 - \lambda) g`.

    The first call returns a copy of ``full_grads`` (the EMA starts at the first gradient).
    """
    if ema is None:
        return [g.detach().clone() for g in full_grads]
    torch._foreach_lerp_(ema, list(full_grads), 1.0 - lmbda)
    return ema


class FriendlySAM(Rule):
    r"""Friendly-SAM's direction :math:`g - \sigma m` and its EMA :math:`m` (state key ``"ema"``).

    ``sigma`` weighs the EMA subtracted from the gradient; ``lmbda`` in ``[0, 1)`` is the EMA decay.
    ``samkit.FriendlySAM(params, base, rho=..., sigma=..., lmbda=...)`` is ``samkit.SAM`` with this
    rule. The authors use ``rho=0.2``, ``sigma=1``, ``lmbda=0.6`` on CIFAR with SGD.
    """

    name = "fsam"
    needs_full_grad = True

    def __init__(self, sigma: float = 1.0, lmbda: float = 0.9, *, adaptive: bool = False,
                 eta: float = 0.0) -> None:
        super().__init__(adaptive=adaptive, eta=eta)
        self.sigma, self.lmbda = sigma, lmbda
        self.validate({"rho": 0.0, **self.hyperparameters()})

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "sigma": self.sigma, "lmbda": self.lmbda}

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        check_number("sigma", group["sigma"], low=0.0)
        lmbda = group["lmbda"]
        if isinstance(lmbda, bool) or not isinstance(lmbda, (int, float)) or not 0 <= lmbda < 1:
            raise SamkitError(
                f"lmbda must be in [0, 1) (the EMA decay of the full-gradient estimate), got {lmbda!r}"
            )

    @staticmethod
    def _ema(state: list[dict[str, Any]]) -> list[Tensor | None]:
        return [s.get("ema") for s in state]

    def direction(self, grads: Groups, ctx: RuleContext, stacked: bool = False) -> Groups:
        out = []
        for group, states, g in zip(ctx.groups, ctx.state, grads, strict=True):
            ema = self._ema(states)
            if all(m is not None for m in ema):
                out.append(friendly_direction(g, ema, group["sigma"]))  # type: ignore[arg-type]
            elif all(m is None for m in ema):
                out.append(g)  # the EMA has seen no gradient yet: plain SAM
            else:  # a parameter that got its first gradient late: per tensor
                out.append([x if m is None else x - group["sigma"] * m for x, m in zip(g, ema, strict=True)])
        return out

    def observe(self, full_grads: Groups | None, ctx: RuleContext) -> None:
        assert full_grads is not None
        for group, states, g in zip(ctx.groups, ctx.state, full_grads, strict=True):
            ema = self._ema(states)
            if all(m is not None for m in ema):
                friendly_update(ema, g, group["lmbda"])  # type: ignore[arg-type]
                continue
            for s, m, x in zip(states, ema, g, strict=True):
                if m is None:
                    s["ema"] = x.detach().clone()
                else:
                    m.lerp_(x, 1.0 - group["lmbda"])

