r"""SAMPa (Xie, Pethick & Cevher, "SAMPa: Sharpness-aware Minimization Parallelized", NeurIPS 2024).

SAM's two gradients depend on each other (the perturbation needs the first). SAMPa takes the
perturbation from the gradient at an auxiliary point :math:`y_t` computed one step earlier, so the
step's two gradients are independent and can run at the same time:

.. math::
    \tilde w_t = w_t + \rho\, \frac{T^2 \nabla L(y_t)}{\lVert T \nabla L(y_t) \rVert}, \qquad
    y_{t+1} = w_t - \eta_t\, u_t(\nabla L(y_t)), \qquad
    w_{t+1} = \operatorname{base\_step}\big(w_t,\
        (1 - \lambda)\nabla L(\tilde w_t) + \lambda \nabla L(y_{t+1})\big)

with :math:`u_t(g)` the step the base optimizer would take with gradient :math:`g` (for SGD with
momentum :math:`\mu`, dampening, Nesterov and weight decay, exactly torch's
:math:`g' = g + \text{wd}\, w,\ b' = \mu b + (1-\text{damp}) g',\ u = b'` or :math:`g' + \mu b'`;
for any other base :math:`u = g`, the paper's equation). :math:`\nabla L(y_{t+1})` is kept for the
next step's perturbation. ``mix`` is the paper's :math:`\lambda` (their code's ``--og``, 0.2 in
their CIFAR runs; :math:`\lambda = 0` is plain SAMPa).

Both gradients of step :math:`t` use batch :math:`t` (the authors' code takes the perturbed
gradient on the previous batch, the one :math:`\nabla L(y_t)` came from, which a ``train_step``
that sees one batch cannot hold). The first step has no :math:`y` gradient yet: it is a plain step
at :math:`w_0` (one pass), whose gradient becomes :math:`\nabla L(y_1)` (:math:`y_1 = w_0`). Every
other step costs two forward-backward passes, which ``execution="vectorized"`` runs as one batched
pass over the stacked pair (two parameter copies). BatchNorm's running statistics come from the
pass at :math:`y_{t+1}` (the point the optimizer is heading to), and so does the loss.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from samkit.errors import SamkitError
from samkit.optim.rules.base import Point, Rule, RuleContext, check_number

__all__ = ["SAMPa"]


class SAMPa(Rule):
    """SAMPa: the perturbation from last step's gradient at ``y``; two independent passes.

    Example::

        opt = samkit.SAM(params, torch.optim.SGD, rho=0.1, rule=samkit.rules.SAMPa(mix=0.2),
                         lr=0.1, momentum=0.9, execution="vectorized")
    """

    name = "sampa"
    ascent_passes = 0
    descent_passes = 2
    shardable = False

    def __init__(self, mix: float = 0.2, *, adaptive: bool = False, eta: float = 0.0) -> None:
        super().__init__(adaptive=adaptive, eta=eta)
        self.mix = mix
        self._sgd_like = False
        self.validate({"rho": 0.0, **self.hyperparameters()})

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "mix": self.mix}

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        check_number("mix", group["mix"], low=0.0, high=1.0)

    def check_base(self, base_optimizer: torch.optim.Optimizer) -> None:
        """SGD's step is predicted exactly (momentum, dampening, Nesterov, weight decay); any other
        base gets the paper's ``y = w - lr * g``."""
        self._sgd_like = isinstance(base_optimizer, torch.optim.SGD)
        if self._sgd_like and any(g.get("maximize") for g in base_optimizer.param_groups):
            raise SamkitError("SAMPa predicts a descent step: SGD(maximize=True) is not supported")

    def descent_points(self, ctx: RuleContext) -> tuple[list[Point], Tensor]:
        kept = [[s.get("sampa_gy") for s in states] for states in ctx.state]
        device = ctx.params[0][0].device
        gy = [[g for g in group if g is not None] for group in kept]
        if any(len(a) < len(b) for a, b in zip(gy, kept, strict=True)):
            return [(None, 1.0)], torch.zeros((), device=device)  # the first step: w_0 = y_1
        e, norm = ctx.geometry_of(gy)
        d = [self._predicted(group, params, grads, base)
             for group, params, grads, base in zip(ctx.groups, ctx.params, gy, ctx.base_state, strict=True)]
        mixes = {g["mix"] for g in ctx.groups}
        if len(mixes) > 1:
            raise SamkitError(f"SAMPa mixes the two gradients of every group alike: one mix, got {mixes}")
        mix = mixes.pop()
        return [(e, 1.0 - mix), (d, mix)], norm

    def _predicted(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                   base: list[dict[str, Any]]) -> list[Tensor]:
        """``y - w = -lr * u(g)``: the base optimizer's step with gradient ``g`` (not taken)."""
        lr = float(group["lr"])
        if not self._sgd_like:
            return list(torch._foreach_mul(grads, -lr))
        wd, mu = group.get("weight_decay", 0.0), group.get("momentum", 0.0)
        damp, nesterov = group.get("dampening", 0.0), group.get("nesterov", False)
        g = list(torch._foreach_add(grads, [p.detach() for p in params], alpha=wd)) if wd else list(grads)
        if mu:
            bufs = [s.get("momentum_buffer") for s in base]
            b = [x.clone() if buf is None else buf * mu + x * (1 - damp)
                 for x, buf in zip(g, bufs, strict=True)]
            u = list(torch._foreach_add(g, b, alpha=mu)) if nesterov else b
        else:
            u = g
        return list(torch._foreach_mul(u, -lr))

    def stats_point(self, points: int) -> int:
        return points - 1  # the pass at y (at w_0 on the first step)

    def observe(self, full_grads: Any, ctx: RuleContext) -> None:
        at_y = ctx.scratch["points"][-1]  # the gradient at y_{t+1}: next step's perturbation
        for states, grads in zip(ctx.state, at_y, strict=True):
            for s, g in zip(states, grads, strict=True):
                s["sampa_gy"] = g.detach().clone()
