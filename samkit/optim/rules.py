r"""Perturbation rules: how the ascent step ``e`` is made from a gradient.

Every rule is split into two small, pure pieces over *lists* of tensors (one entry per parameter):

1. a **direction** ``d`` built from the ascent gradient ``g`` (and the rule's explicit state):

   * SAM / ASAM: :math:`d = g`
   * Friendly-SAM (Li et al., CVPR 2024): :math:`d = g - \sigma\, m` where :math:`m` is an EMA of the
     full-batch gradient, *before* it is updated with this step's gradient. The EMA starts at the first
     gradient it sees, so the first step has :math:`d = g` (plain SAM), exactly as in the authors'
     released optimizer. The update :math:`m \leftarrow \lambda m + (1-\lambda) g_\text{full}` happens
     after the step (:func:`friendly_update`).

2. a **geometry** that turns ``d`` into the perturbation of radius ``rho``:

   .. math::
       e = \rho\, \frac{T^2 d}{\lVert T d \rVert_2 + \epsilon}, \qquad
       T = \begin{cases} |w| + \eta & \text{adaptive (ASAM)} \\ 1 & \text{otherwise} \end{cases}

   The norm is one global norm over all parameters of all groups (one fused ``_foreach_norm``);
   ``rho`` may differ per parameter group. With ``eta = 0`` the adaptive rule is the "adaptive"
   option of the widely used SAM implementations.

No function here synchronises with the host: norms stay tensors, so the rules run under
``torch.compile`` and CUDA graphs. A new rule (GSAM, ...) is one more direction function.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

EPS = 1e-12


def global_norm(tensors: Sequence[Tensor]) -> Tensor:
    r""":math:`\lVert (t_1, \dots, t_n) \rVert_2` as a 0-d tensor, computed with one fused kernel.

    Accumulates in at least float32 so that bf16/fp16 parameters do not lose the norm.
    """
    if len(tensors) == 0:
        raise ValueError("global_norm of an empty list: no parameter has a gradient")
    norms = torch._foreach_norm(list(tensors))
    dtype = torch.promote_types(norms[0].dtype, torch.float32)
    if any(n.dtype != dtype or n.device != norms[0].device for n in norms):
        device = norms[0].device
        norms = [n.to(device=device, dtype=dtype) for n in norms]
    return torch.linalg.vector_norm(torch.stack(norms))


def sam_direction(grads: list[Tensor]) -> list[Tensor]:
    """SAM / ASAM direction: the ascent gradient itself (no copy)."""
    return grads


def friendly_direction(grads: list[Tensor], ema: list[Tensor] | None, sigma: float) -> list[Tensor]:
    r"""Friendly-SAM direction :math:`d = g - \sigma m` (``m`` the EMA before this step's update).

    ``ema is None`` means the EMA has not seen a gradient yet: the direction is ``g`` (plain SAM).
    Returns new tensors; ``grads`` is not modified.
    """
    if ema is None or sigma == 0.0:
        return grads
    return torch._foreach_add(grads, ema, alpha=-sigma)


def friendly_update(ema: list[Tensor] | None, full_grads: list[Tensor], lmbda: float) -> list[Tensor]:
    r"""EMA of the full-batch gradient: :math:`m \leftarrow \lambda m + (1 - \lambda) g`.

    The first call returns a copy of ``full_grads`` (the EMA starts at the first gradient).
    """
    if ema is None:
        return [g.detach().clone() for g in full_grads]
    torch._foreach_lerp_(ema, list(full_grads), 1.0 - lmbda)
    return ema


def shard_norms(tensors: Sequence[Tensor]) -> Tensor:
    r"""Per-shard global norms ``[k]`` of tensors that all carry a leading shard dimension ``k``.

    One fused ``_foreach_norm`` over the per-shard slices (views, no copy).
    """
    k = tensors[0].shape[0]
    norms = torch._foreach_norm([s for t in tensors for s in t.unbind(0)])
    dtype = torch.promote_types(norms[0].dtype, torch.float32)
    return torch.linalg.vector_norm(torch.stack(norms).to(dtype).view(len(tensors), k), dim=0)


def perturbation(
    directions: Sequence[Sequence[Tensor]],
    params: Sequence[Sequence[Tensor]],
    rhos: Sequence[float],
    adaptive: Sequence[bool],
    etas: Sequence[float],
    *,
    stacked: bool = False,
) -> tuple[list[list[Tensor]], Tensor]:
    r"""The perturbation :math:`e = \rho\, T^2 d / (\lVert T d \rVert + \epsilon)` per parameter group.

    ``directions`` and ``params`` are lists of per-group tensor lists; ``rhos``, ``adaptive`` and
    ``etas`` hold one value per group. The norm is global across groups. With ``stacked=True`` every
    direction has a leading shard dimension and each shard is normalised on its own (the vectorized
    m-sharpness path); ``params`` stay unstacked. Returns the perturbation (new tensors, per group)
    and the norm :math:`\lVert T d \rVert` (0-d, or ``[k]`` when stacked; non-finite exactly when
    some direction entry is).
    """
    scaled: list[list[Tensor]] = []  # T d per group
    metric: list[list[Tensor] | None] = []  # T per group (None when T = 1)
    for d, w, ada, eta in zip(directions, params, adaptive, etas, strict=True):
        if ada:
            t = torch._foreach_abs([p.detach() for p in w])
            if eta:
                torch._foreach_add_(t, eta)
            if stacked:
                t = [x.unsqueeze(0) for x in t]
            scaled.append(torch._foreach_mul(t, list(d)))
            metric.append(t)
        else:
            scaled.append(list(d))
            metric.append(None)
    flat = [x for group in scaled for x in group]
    norm = shard_norms(flat) if stacked else global_norm(flat)
    inv = 1.0 / (norm + EPS)
    out: list[list[Tensor]] = []
    for td, t, rho in zip(scaled, metric, rhos, strict=True):
        factor: Tensor | list[Tensor] = (
            [inv.view(-1, *([1] * (x.dim() - 1))) for x in td] if stacked else inv
        )
        if t is None:
            e = torch._foreach_mul(td, factor)
        else:
            e = torch._foreach_mul(td, t)  # T (T d) = T^2 d
            torch._foreach_mul_(e, factor)
        torch._foreach_mul_(e, rho)
        out.append(e)
    return out, norm
