r"""Random weight perturbation: RWP, adaptive RWP and mixed RWP (Li, Tao, Yan, Lei, Wu, Fang, He &
Huang, "Revisiting Random Weight Perturbation for Efficiently Improving Generalization", TMLR 2024).

Instead of the worst case, a random perturbation, scaled filter by filter to the weights:

.. math::
    \epsilon_{ij} \sim \mathcal N\Big(0,\ \frac{\sigma^2 \lVert W_i \rVert^2}{1 + \eta F_i}\Big), \qquad
    h = \lambda\, \nabla L(w + \epsilon) + (1 - \lambda)\, \nabla L(w)

(the options: ``noise`` is :math:`\sigma`, ``mix`` :math:`\lambda`, ``adapt`` :math:`\eta`,
``beta`` :math:`\beta`; named apart from ASAM's ``eta`` and Friendly-SAM's ``sigma`` / ``lmbda``)
with :math:`W_i` the :math:`i`-th filter (row along the first dimension) of a weight of two or more
dimensions, or the whole tensor for a vector (the noise of each element of a vector is scaled by
the vector's norm). ``adapt = 0`` is RWP; ``adapt > 0`` is adaptive RWP (ARWP), whose
:math:`F \leftarrow \beta F + \nabla L(w + \epsilon)^2` is a running sum of the squared perturbed
gradient, summed over each filter (for a vector: per element) — no extra pass: the gradient is
the step's own. ``mix = 1`` takes one pass per step (at :math:`w + \epsilon`); ``mix < 1`` is
mixed RWP (m-RWP / m-ARWP): two independent passes (``execution="vectorized"`` batches them), where
the authors alternate batches instead. Their CIFAR settings: :math:`\sigma` 0.01-0.015,
:math:`\lambda` 0.5, :math:`\eta` 0.1, :math:`\beta` 0.99.

The noise comes from a seeded generator on the parameters' device, whose state is kept in the
optimizer's state (``state_dict``): a resumed run draws the noise the uninterrupted one would, and
every DDP rank draws the same. The running statistics of BatchNorm come from the unperturbed pass
(or the only pass, with ``mix = 1``), like the loss. ``rho`` plays no part.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from samkit._checks import check_seed
from samkit.optim.rules.base import Point, Rule, RuleContext, check_number

__all__ = ["RWP"]

_NOISE_FLOOR = 1e-16  # a vector of zeros (a bias at init) still gets a (tiny) perturbation


class RWP(Rule):
    """Random weight perturbation (RWP; adaptive with ``adapt > 0``; mixed with ``mix < 1``).

    Example::

        opt = samkit.SAM(params, torch.optim.SGD, rule=samkit.rules.RWP(noise=0.01, mix=0.5),
                         lr=0.1, momentum=0.9)
    """

    name = "rwp"
    ascent_passes = 0
    shardable = False

    def __init__(self, noise: float = 0.01, mix: float = 1.0, adapt: float = 0.0, beta: float = 0.9,
                 seed: int = 0) -> None:
        super().__init__()
        self.noise, self.mix, self.adapt, self.beta, self.seed = noise, mix, adapt, beta, seed
        check_number("noise", noise, low=0.0)
        check_number("mix", mix, low=0.0, high=1.0)
        check_number("adapt", adapt, low=0.0)
        check_number("beta", beta, low=0.0, high=1.0)
        check_seed("seed", seed)
        self.descent_passes = 2 if mix < 1 else 1

    def hyperparameters(self) -> dict[str, Any]:
        return {"adaptive": False, "eta": 0.0}  # (rho, adaptive and eta of the SAM ball play no part)

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)  # rho, and adaptive and eta: no part in RWP, but not nonsense

    def perturbation(self, grads: Any, ctx: RuleContext, *, stacked: bool = False,
                     previous: Any = None) -> tuple[Any, Tensor]:
        """With ``mix = 1``: the one pass's perturbation (the noise)."""
        return self._noise(ctx), torch.zeros((), device=ctx.params[0][0].device)

    def descent_points(self, ctx: RuleContext) -> tuple[list[Point], Tensor]:
        noise = self._noise(ctx)
        device = ctx.params[0][0].device
        zero = torch.zeros((), device=device)
        if self.mix >= 1:
            return [(noise, 1.0)], zero
        return [(None, 1.0 - self.mix), (noise, self.mix)], zero

    def _noise(self, ctx: RuleContext) -> list[list[Tensor]]:
        first = ctx.state[0][0]
        device = ctx.params[0][0].device
        gen = torch.Generator(device=device)
        if "rwp_rng" in first:  # bytes: torch's load_state_dict would cast a tensor to the param dtype
            gen.set_state(torch.frombuffer(bytearray(first["rwp_rng"]), dtype=torch.uint8))
        else:
            gen.manual_seed(self.seed)
        out = []
        for params, states in zip(ctx.params, ctx.state, strict=True):
            group = []
            for p, s in zip(params, states, strict=True):
                w = p.detach()
                if w.dim() > 1:
                    scale = w.reshape(w.shape[0], -1).norm(dim=1).view(-1, *([1] * (w.dim() - 1)))
                else:
                    scale = w.norm() + _NOISE_FLOOR
                std = self.noise * scale
                if self.adapt and "rwp_fisher" in s:
                    std = std / torch.sqrt(1 + self.adapt * _per_filter(s["rwp_fisher"]))
                group.append(torch.randn(w.shape, generator=gen, device=device, dtype=w.dtype) * std)
            out.append(group)
        first["rwp_rng"] = bytes(gen.get_state().numpy())
        return out

    def stats_point(self, points: int) -> int:
        return 0  # the unperturbed pass (the only one with mix = 1)

    def observe(self, full_grads: Any, ctx: RuleContext) -> None:
        if not self.adapt:
            return
        points = ctx.scratch.get("points")
        if points is None:  # one pass (mix = 1): the step's descent gradient is the noisy one
            noisy = [[p.grad for p in params] for params in ctx.params]
        else:
            noisy = points[-1]
        for states, grads in zip(ctx.state, noisy, strict=True):
            for s, g in zip(states, grads, strict=True):
                if g is None:
                    continue
                sq = g.detach().square()
                s["rwp_fisher"] = sq if "rwp_fisher" not in s else s["rwp_fisher"].mul_(self.beta).add_(sq)

    def __repr__(self) -> str:
        return (f"RWP(noise={self.noise}, mix={self.mix}, adapt={self.adapt}, beta={self.beta}, "
                f"seed={self.seed})")


def _per_filter(fisher: Tensor) -> Tensor:
    """``F`` summed over each filter (row along dim 0) of a weight, per element for a vector."""
    if fisher.dim() <= 1:
        return fisher
    return fisher.reshape(fisher.shape[0], -1).sum(dim=1).view(-1, *([1] * (fisher.dim() - 1)))
