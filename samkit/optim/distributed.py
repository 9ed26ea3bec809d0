"""SAM under ``DistributedDataParallel``: per-rank perturbation is m-sharpness for free.

With DDP every rank holds ``n_r`` examples. samkit's ``train_step`` then

* runs each ascent pass under ``model.no_sync()``: every rank perturbs with its own gradient (and
  its local shards), i.e. mSAM with one shard per rank and local shard — no communication;
* optionally averages the ascent gradient over groups of ``sync_perturbation_group_size``
  consecutive ranks first (intermediate shard sizes; the world size gives plain SAM);
* accumulates the local descent gradients under ``no_sync`` except for the last shard, whose
  backward lets DDP all-reduce the accumulated gradient: one gradient all-reduce per step;
* for Friendly-SAM, all-reduces the full ascent gradient so that the EMA tracks the global
  gradient and stays identical on every rank;
* averages BatchNorm running statistics over ranks, weighted by examples, once per step.

DDP averages gradients over ranks with equal weight, so the update is the example-weighted mean
when every rank has the same number of examples (what ``DistributedSampler`` gives).

Under FSDP2 (``fully_shard``) every backward reduce-scatters, so there is no per-rank ascent: the
perturbation uses the global gradient (plain SAM on the global batch, plus any local shards), with
its norm reduced across the parameter shards (DTensor norms), and each shard of the weights is
perturbed and restored in place.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.nn.parallel import DistributedDataParallel

from samkit._compat import fsdp2
from samkit.errors import SamkitError


def ddp_of(model: nn.Module) -> DistributedDataParallel | None:
    """The model itself when it is a DDP wrapper, else None."""
    return model if isinstance(model, DistributedDataParallel) else None


def is_fsdp(model: nn.Module) -> bool:
    """Whether ``model`` is sharded with FSDP2 (``fully_shard``)."""
    fsdp = fsdp2()
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


def is_distributed(model: nn.Module) -> bool:
    """DDP- or FSDP-wrapped: the replicas must agree on running statistics."""
    return ddp_of(model) is not None or is_fsdp(model)


def full_value(t: Tensor) -> Tensor:
    """A replicated DTensor (e.g. a global norm under FSDP) as a plain tensor; others unchanged."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def local_tensors(tensors: list[Tensor]) -> list[Tensor]:
    """The local shards of DTensors (sharing their storage), other tensors as they are.

    Copies of the weights are taken and put back shard by shard; not every fused list op has a
    DTensor rule (``_foreach_copy_`` has none).
    """
    return [t.to_local() if hasattr(t, "to_local") else t for t in tensors]


def no_sync(model: nn.Module) -> Any:
    """``model.no_sync()`` for a DDP model, a null context otherwise."""
    ddp = ddp_of(model)
    return ddp.no_sync() if ddp is not None else nullcontext()


def all_reduce_mean_(tensors: list[Tensor], group: Any = None, weight: float | None = None) -> None:
    """In place: ``t <- sum_r weight_r t_r / sum_r weight_r`` over the ranks of ``group``.

    One flattened all-reduce for all tensors (per dtype). ``weight=None`` is the plain mean.
    """
    if not tensors:
        return
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for ts in by_dtype.values():
        flat = _flatten_dense_tensors(ts)
        if weight is None:
            dist.all_reduce(flat, group=group)
            flat /= dist.get_world_size(group)
        else:
            w = torch.tensor([weight], dtype=flat.dtype, device=flat.device)
            packed = torch.cat([flat * weight, w])
            dist.all_reduce(packed, group=group)
            flat = packed[:-1] / packed[-1]
        for t, v in zip(ts, _unflatten_dense_tensors(flat, ts), strict=True):
            t.copy_(v)


class PerturbationGroups:
    """Process groups of ``size`` consecutive ranks whose ascent gradients are averaged."""

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise SamkitError(
                f"sync_perturbation_group_size must be a positive integer (1: every rank perturbs "
                f"on its own), got {size!r}"
            )
        self.size = size
        self._group: Any = None

    def group(self) -> Any:
        """This rank's group (created on first use; every rank creates every group, in order)."""
        if self._group is None:
            world = dist.get_world_size()
            if world % self.size:
                raise SamkitError(
                    f"sync_perturbation_group_size={self.size} does not divide the world size "
                    f"{world}: choose a divisor of the number of ranks"
                )
            rank = dist.get_rank()
            for start in range(0, world, self.size):
                g = dist.new_group(list(range(start, start + self.size)))
                if start <= rank < start + self.size:
                    self._group = g
        return self._group

    def average_(self, grads: list[Tensor]) -> None:
        if self.size > 1:
            all_reduce_mean_(grads, group=self.group())
