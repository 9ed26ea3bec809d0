"""Friendly-SAM: the SAM pipeline with the Friendly-SAM direction and its EMA (the only changes)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from samkit.errors import SamkitError
from samkit.optim import rules
from samkit.optim.sam import SAM


class FriendlySAM(SAM):
    r"""Friendly-SAM (Li et al., "Friendly Sharpness-Aware Minimization", CVPR 2024).

    Perturbs along the minibatch gradient minus an EMA of the full-batch gradient:

    .. math::
        d = g - \sigma m, \qquad e = \rho\,\frac{T^2 d}{\lVert T d \rVert}, \qquad
        m \leftarrow \lambda m + (1 - \lambda)\, g_\text{full}

    in the order of the authors' released optimizer: ``m`` starts at the first gradient (so the
    first step is plain SAM) and is updated after it is used. With several shards each shard
    perturbs along ``g_s - sigma * m`` and ``m`` tracks the full-batch gradient ``sum_s w_s g_s``.
    ``sigma=0`` is SAM. All other arguments are :class:`SAM`'s.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer: type[Optimizer],
        *,
        rho: float = 0.05,
        sigma: float = 1.0,
        lmbda: float = 0.9,
        **kwargs: Any,
    ) -> None:
        self._fsam = {"sigma": sigma, "lmbda": lmbda}
        super().__init__(params, base_optimizer, rho=rho, **kwargs)

    def _rule_defaults(self) -> dict[str, Any]:
        return dict(self._fsam)

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        if isinstance(group["sigma"], bool) or not isinstance(group["sigma"], (int, float)):
            raise SamkitError(f"sigma must be a number, got {group['sigma']!r}")
        lmbda = group["lmbda"]
        if isinstance(lmbda, bool) or not isinstance(lmbda, (int, float)) or not 0 <= lmbda < 1:
            raise SamkitError(
                f"lmbda must be in [0, 1) (the EMA decay of the full-gradient estimate), got {lmbda!r}"
            )

    @property
    def _needs_full_grad(self) -> bool:
        return True

    def _ema(self, params: list[Tensor]) -> list[Tensor | None]:
        return [self.state[p].get("ema") for p in params]

    def _directions(
        self, params: list[list[Tensor]], grads: list[list[Tensor]]
    ) -> list[list[Tensor]]:
        out = []
        for group, w, g in zip(self.param_groups, params, grads, strict=True):
            ema = self._ema(w)
            if all(m is not None for m in ema):
                out.append(rules.friendly_direction(g, ema, group["sigma"]))  # type: ignore[arg-type]
            elif all(m is None for m in ema):
                out.append(g)  # the EMA has seen no gradient yet: plain SAM
            else:  # a parameter that got its first gradient late: per tensor
                out.append([x if m is None else x - group["sigma"] * m for x, m in zip(g, ema, strict=True)])
        return out

    def _observe(self, params: list[list[Tensor]], full_grads: list[list[Tensor]]) -> None:
        for group, w, g in zip(self.param_groups, params, full_grads, strict=True):
            ema = self._ema(w)
            if all(m is not None for m in ema):
                rules.friendly_update(ema, g, group["lmbda"])  # type: ignore[arg-type]
                continue
            for p, m, x in zip(w, ema, g, strict=True):
                if m is None:
                    self.state[p]["ema"] = x.detach().clone()
                else:
                    m.lerp_(x, 1.0 - group["lmbda"])
