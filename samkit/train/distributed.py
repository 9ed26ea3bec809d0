"""``torchrun --nproc-per-node N -m samkit train ...``: one process per device, DDP, rank 0 writes.

Under torchrun every process reads the same config and draws the same data order (the generators
are seeded from the config), so each step has one *global* batch of ``batch_size`` examples; rank
``r`` of ``R`` takes the ``r``-th contiguous slice of it. With a SAM optimizer this is
m-sharpness across ranks (see :mod:`samkit.optim.distributed`): a run on ``R`` ranks with
``shards=k`` computes what one process computes with ``shards=R*k`` on the same global batch. The
model, the optimizer state and the metrics are the same on every rank; rank 0 alone writes the run
folder, and a checkpoint resumes on any world size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from samkit.errors import SamkitError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job (world size 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def local_slice(self, batch_size: int) -> slice:
        """This rank's contiguous part of a global batch."""
        if batch_size % self.world_size:
            raise SamkitError(
                f"batch_size={batch_size} does not split evenly over {self.world_size} processes: "
                "use a batch size divisible by --nproc-per-node (it is the global batch)"
            )
        part = batch_size // self.world_size
        return slice(self.rank * part, (self.rank + 1) * part)


def is_main_process() -> bool:
    """False on ranks > 0 of a torchrun job: every rank trains, only rank 0 writes and prints."""
    return int(os.environ.get("WORLD_SIZE", "1")) <= 1 or int(os.environ.get("RANK", "0")) == 0


def from_environment(device: str) -> tuple[Ranks, str]:
    """Join the torchrun job if there is one; returns the ranks and this process's device.

    ``device="cuda"`` becomes ``cuda:<LOCAL_RANK>`` (NCCL); CPU processes use gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Ranks(rank=rank, world_size=world, local_rank=local), device


def wrap(model: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """DDP around the model when there are several processes (the model itself otherwise)."""
    if not ranks.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (for checkpoints and evaluation)."""
    return getattr(model, "module", model)
