r"""SAM (Foret et al., ICLR 2021) and ASAM (Kwon et al., ICML 2021).

SAM perturbs along the ascent gradient, :math:`e = \rho\, g / \lVert g \rVert`; ASAM measures the
ball in the scale-invariant metric :math:`T = |w| + \eta`, :math:`e = \rho\, T^2 g / \lVert T g
\rVert`. Both are the shared geometry of :mod:`samkit.optim.rules.base` applied to ``d = g``.
"""

from __future__ import annotations

from samkit.optim.rules.base import Rule

__all__ = ["SAM", "ASAM"]


class SAM(Rule):
    r"""SAM: :math:`e = \rho\, g / (\lVert g \rVert + 10^{-12})`, descent gradient :math:`\nabla L(w+e)`.

    ``adaptive=True`` (with ``eta``) measures the ball in ASAM's metric; see :class:`ASAM`.

    Example::

        opt = samkit.SAM(model.parameters(), torch.optim.SGD, rho=0.05, rule=samkit.rules.SAM(),
                         lr=0.1, momentum=0.9)
    """

    name = "sam"


class ASAM(SAM):
    r"""ASAM: :math:`e = \rho\, T^2 g / \lVert T g \rVert` with :math:`T = |w| + \eta` (element-wise).

    The ball :math:`\lVert T^{-1} e \rVert \le \rho` grows with the weights, so the perturbation is
    invariant to rescaling a layer. Kwon et al. use ``eta = 0.01`` and ``rho`` about 10x SAM's
    (e.g. 0.5 on CIFAR-10). ``samkit.SAM(..., adaptive=True, eta=...)`` is the same rule.
    """

    name = "asam"

    def __init__(self, eta: float = 0.0) -> None:
        super().__init__(adaptive=True, eta=eta)
