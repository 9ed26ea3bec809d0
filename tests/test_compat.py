"""The torch-release bridges of samkit._compat: each still finds what it bridges on this torch."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from samkit._compat import clip_grad_norm_, fsdp2, reduced
from samkit.optim.distributed import is_fsdp
from samkit.optim.engine import WeightBackup
from samkit.optim.rules.base import global_norm


def test_fsdp2_is_found_on_every_supported_torch():
    """torch 2.5 keeps FSDP2 under torch.distributed._composable.fsdp; 2.6+ exports it publicly."""
    fsdp = fsdp2()
    assert fsdp is not None and callable(fsdp.fully_shard) and isinstance(fsdp.FSDPModule, type)
    public = torch.distributed.fsdp
    if hasattr(public, "fully_shard"):
        assert fsdp is public
    else:
        assert fsdp.__name__ == "torch.distributed._composable.fsdp"


def test_a_plain_module_is_not_taken_for_an_fsdp_one():
    assert not is_fsdp(nn.Linear(2, 2))


def test_reduced_leaves_a_plain_tensor_alone():
    t = torch.tensor(3.0)
    assert reduced(t) is t


def test_clip_grad_norm_is_torchs_on_plain_tensors():
    torch.manual_seed(0)
    ours, theirs = [nn.Parameter(torch.randn(4, 3)) for _ in range(2)], []
    for p in ours:
        p.grad = torch.randn_like(p)
        q = nn.Parameter(p.detach().clone())
        q.grad = p.grad.clone()
        theirs.append(q)
    clip_grad_norm_(ours, 0.5)
    torch.nn.utils.clip_grad_norm_(theirs, 0.5, foreach=True)
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p.grad, q.grad)


@pytest.fixture
def one_rank_mesh(tmp_path):
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs torch.distributed and no process group already in this process")
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def test_reduced_completes_a_pending_dtensor_norm_and_sum(one_rank_mesh):
    """Torch 2.8 leaves a norm of sharded DTensors pending (and adds a scalar to every rank's part);
    from 2.11 it comes back replicated. Either way ``reduced`` gives a replicated value."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    torch.manual_seed(0)
    a, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    da, db = (distribute_tensor(t, one_rank_mesh, [Shard(0)]) for t in (a, b))
    norm = reduced(global_norm([da, db]))  # global_norm reduces itself: twice is a no-op
    total = reduced((da * da).sum() + (db * db).sum())
    for value in (norm, total):
        assert value.placements == (Replicate(),)
    assert torch.allclose(norm.to_local(), torch.cat([a.flatten(), b]).norm(), rtol=1e-15)
    assert torch.allclose(total.to_local(), a.square().sum() + b.square().sum(), rtol=1e-15)


def test_weight_backup_restores_into_the_shard_the_model_holds_now():
    """Torch 2.8's first FSDP2 forward swaps an uneven shard's local tensor for a re-padded copy;
    the weights saved before it must go back into the new one, not the one seen at save()."""

    class Sharded:  # what WeightBackup needs of a DTensor parameter: its local shard
        def __init__(self, local: torch.Tensor) -> None:
            self.local = local

        def to_local(self) -> torch.Tensor:
            return self.local

    p = Sharded(torch.tensor([1.0, 2.0]))
    backup = WeightBackup()
    backup.save([p])  # type: ignore[list-item]
    p.local = torch.zeros(3)[:2].copy_(p.local)  # the lazy init's re-padded buffer
    p.local.add_(5.0)  # the weights moved to w + e
    backup.restore()
    assert p.to_local().tolist() == [1.0, 2.0]
