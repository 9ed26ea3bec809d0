"""Bridges between the torch releases samkit supports (2.5 to the newest), each gap in one place.

Every bridge names the release that closed the gap; ``tests/test_compat.py`` pins each one, so a
torch upgrade that moves an API again fails there, loudly, not somewhere deep in a step.
"""

from __future__ import annotations

from typing import Any

import torch


def fsdp2() -> Any:
    """The module that holds FSDP2's ``fully_shard`` and ``FSDPModule``, or None without FSDP2.

    ``torch.distributed.fsdp`` exports them from torch 2.6; torch 2.4-2.5 had them only in
    ``torch.distributed._composable.fsdp`` (the same classes, so a model sharded by either passes
    the other's ``isinstance``).
    """
    try:
        from torch.distributed import fsdp

        if hasattr(fsdp, "fully_shard"):
            return fsdp
        from torch.distributed._composable import fsdp as composable  # torch < 2.6

        return composable
    except ImportError:  # a torch built without distributed support
        return None


def reduced(value: Any) -> Any:
    """A reduction of DTensors (FSDP2: a norm, a sum) completed over the ranks; a plain tensor as it is.

    Torch 2.8 leaves a reduction of sharded DTensors pending (``Partial``: each rank holds its
    shard's sum, ``_NormPartial``: its shard's norm) and applies a later op with a scalar to every
    rank's part before completing it: on 2 ranks ``sum + eps`` came out as ``sum + 2 eps`` and
    ``norm + eps`` as about ``norm + 1.4 eps`` (so SAM's ``rho / (norm + eps)``, GSAM's projection
    and gradient clipping were off). Torch 2.11 and newer complete the reduction first (measured on
    2.8 and 2.11-2.14; 2.9 and 2.10 not measured). A pending value is redistributed to
    ``Replicate`` here, on every release: one all-reduce, which its first use costs anyway, and a
    no-op where torch already replicated it.
    """
    placements = getattr(value, "placements", None)
    if placements is None or not any(p.is_partial() for p in placements):
        return value
    from torch.distributed.tensor import Replicate

    return value.redistribute(placements=[Replicate()] * len(placements))


def clip_grad_norm_(params: list[Any], max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)``, right for DTensor grads.

    With DTensor gradients (FSDP2) torch's ``clip_grad_norm_`` adds its ``1e-6`` to the pending
    total norm on torch 2.8 (:func:`reduced`): the gradients were scaled by
    ``max_norm / (norm + about 1.4e-6)`` on 2 ranks. The same computation here, with the total norm
    reduced first (``get_total_norm`` and ``clip_grads_with_norm_`` from torch 2.6; their steps
    spelled out before).
    """
    utils = torch.nn.utils
    grads = [p.grad for p in params if p.grad is not None]
    if all(type(g) is torch.Tensor for g in grads):
        utils.clip_grad_norm_(params, max_norm, foreach=True)
        return
    if hasattr(utils, "get_total_norm"):
        total = reduced(utils.get_total_norm(grads, 2.0, foreach=True))
        utils.clip_grads_with_norm_(params, max_norm, total, foreach=True)
        return
    total = reduced(torch.linalg.vector_norm(torch.stack(list(torch._foreach_norm(grads, 2.0)))))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
