r"""GCSAM: gradient-centralised SAM (Hassan et al., "GCSAM: Gradient Centralized Sharpness Aware
Minimization", arXiv 2501.11584, 2025).

Gradient centralisation (Yong et al., ECCV 2020) removes from the gradient of every weight vector
its mean: for a weight tensor with at least two dimensions (a linear layer's ``[out, in]``, a
convolution's ``[out, in, k, k]``) each output unit's slice is centred,

.. math:: \Phi(G)_{o,\cdot} = G_{o,\cdot} - \operatorname{mean}(G_{o,\cdot})

and one-dimensional tensors (biases, norm scales) are left as they are. GCSAM perturbs along the
centralised ascent gradient and descends along the centralised gradient at the perturbed point:

.. math:: e = \rho\, \frac{\Phi(g)}{\lVert \Phi(g) \rVert}, \qquad
          \text{descent gradient} = \Phi(\nabla L(w + e))

(``descent=False`` keeps the plain descent gradient: centralisation of the ascent only).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from samkit._checks import check_flag
from samkit.optim.rules.base import Groups, Rule, RuleContext

__all__ = ["GCSAM", "centralize"]


def centralize(t: Tensor, stacked: bool = False) -> Tensor:
    """``t`` minus its mean over every dimension but the output one (a copy; 1-D tensors as they are).

    With ``stacked`` the first dimension is the shard and the second the output dimension.
    """
    first = 2 if stacked else 1
    if t.dim() - first < 1:
        return t
    return t - t.mean(dim=tuple(range(first, t.dim())), keepdim=True)


class GCSAM(Rule):
    r"""GCSAM: SAM on centralised gradients :math:`\Phi(g)`, descent :math:`\Phi(h)`.

    Example::

        opt = samkit.SAM(params, torch.optim.SGD, rho=0.05, rule=samkit.rules.GCSAM(), lr=0.1)
    """

    name = "gcsam"

    def __init__(self, descent: bool = True, *, adaptive: bool = False, eta: float = 0.0) -> None:
        super().__init__(adaptive=adaptive, eta=eta)
        check_flag("descent", descent)
        self.centralize_descent = descent
        self.transforms_descent = self.centralize_descent

    def hyperparameters(self) -> dict[str, Any]:
        return super().hyperparameters()

    def direction(self, grads: Groups, ctx: RuleContext, stacked: bool = False) -> Groups:
        return [[centralize(g, stacked) for g in group] for group in grads]

    def descent(self, grads: Groups, full_grads: Groups | None, ctx: RuleContext) -> None:
        for group in grads:
            for h in group:
                if h.dim() > 1:
                    h.copy_(centralize(h))

    def __repr__(self) -> str:
        return f"GCSAM(descent={self.centralize_descent})"
