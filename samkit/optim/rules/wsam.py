r"""WSAM: weighted sharpness as a regularisation term (Yue et al., "Sharpness-Aware Minimization
Revisited: Weighted Sharpness as a Regularization Term", KDD 2023).

The objective weighs SAM's sharpness :math:`\max_{\lVert e\rVert \le \rho} L(w+e) - L(w)` by
:math:`\gamma / (1 - \gamma)`:

.. math::
    L^\text{WSAM}(w) = L(w) + \frac{\gamma}{1-\gamma}\big(L(w + e) - L(w)\big)
                     = \frac{1 - 2\gamma}{1-\gamma} L(w) + \frac{\gamma}{1-\gamma} L(w + e)

so with :math:`g = \nabla L(w)` and :math:`h = \nabla L(w + e)` its gradient is
:math:`((1 - 2\gamma)\, g + \gamma\, h) / (1 - \gamma)`. ``gamma = 1/2`` is SAM; ``gamma = 0`` the
base optimizer. Two forms, as in the paper:

* ``decouple=False`` — the base optimizer steps with that gradient;
* ``decouple=True`` (the paper's "weight decouple", its default) — the base optimizer steps with
  :math:`g` and the sharpness term is applied after it, outside the base optimizer's momentum and
  adaptivity: :math:`w \leftarrow w - \text{lr}\, \frac{\gamma}{1-\gamma} (h - g)`.

The paper recommends ``gamma`` in ``[0.8, 0.95]``.
"""

from __future__ import annotations

from typing import Any

import torch

from samkit._checks import check_flag
from samkit.errors import SamkitError
from samkit.optim.distributed import local_tensors
from samkit.optim.rules.base import Groups, Rule, RuleContext, check_number

__all__ = ["WSAM"]


class WSAM(Rule):
    r"""WSAM: descent gradient :math:`((1-2\gamma) g + \gamma h)/(1-\gamma)`, optionally decoupled.

    Example::

        opt = samkit.SAM(params, torch.optim.SGD, rho=0.05, rule=samkit.rules.WSAM(gamma=0.9), lr=0.1)
    """

    name = "wsam"
    needs_full_grad = True
    transforms_descent = True

    def __init__(self, gamma: float = 0.9, decouple: bool = True, *, adaptive: bool = False,
                 eta: float = 0.0) -> None:
        super().__init__(adaptive=adaptive, eta=eta)
        check_flag("decouple", decouple)
        self.gamma, self.decouple = gamma, decouple
        self.validate({"rho": 0.0, **self.hyperparameters()})

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "gamma": self.gamma}

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        check_number("gamma", group["gamma"], low=0.0)
        if group["gamma"] >= 1:
            raise SamkitError(
                "gamma must be in [0, 1) (the sharpness weight is gamma / (1 - gamma)), "
                f"got {group['gamma']!r}"
            )

    def descent(self, grads: Groups, full_grads: Groups | None, ctx: RuleContext) -> None:
        assert full_grads is not None
        sharpness: Groups = []
        for hs, gs, group in zip(grads, full_grads, ctx.groups, strict=True):
            gamma = group["gamma"]
            weight = gamma / (1.0 - gamma)
            if self.decouple:
                sharpness.append(list(torch._foreach_sub(hs, gs)) if hs else [])
                torch._foreach_copy_(local_tensors(hs), local_tensors(gs))  # FSDP: shard by shard
            elif hs:
                # ((1 - 2 gamma) g + gamma h) / (1 - gamma) = weight h + (1 - weight) g
                torch._foreach_mul_(hs, weight)
                torch._foreach_add_(hs, gs, alpha=1.0 - weight)
        if self.decouple:
            ctx.scratch["sharpness"] = sharpness

    def observe(self, full_grads: Groups | None, ctx: RuleContext) -> None:
        if not self.decouple:
            return
        with torch.no_grad():
            for ws, ss, group in zip(ctx.params, ctx.scratch.pop("sharpness"), ctx.groups, strict=True):
                gamma = group["gamma"]
                if ws and gamma:
                    torch._foreach_add_(ws, ss, alpha=-group["lr"] * gamma / (1.0 - gamma))
