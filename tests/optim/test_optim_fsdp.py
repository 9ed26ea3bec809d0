"""FSDP2 (fully_shard) on 2 CPU processes: SAM and F-SAM with the global gradient."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from optim_helpers import assert_states, make_batch
from torch import nn

from samkit import SAM, FriendlySAM, rules
from samkit._compat import fsdp2

fsdp = fsdp2()  # torch.distributed.fsdp from torch 2.6, its _composable home before
if fsdp is None:
    pytest.skip("this torch is built without torch.distributed", allow_module_level=True)
if tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) < (2, 8):
    # torch's own FSDP2 stops on the CPU there, before any samkit code runs
    pytest.skip("torch < 2.8: FSDP2 does not run on the CPU (2.5: 'FSDP requires CUDA for streams'; "
                "2.6: 'Stream' object has no attribute 'record_event'; 2.7 not measured); these "
                "2-process CPU tests run from torch 2.8", allow_module_level=True)
WORLD, N, STEPS = 2, 8, 3
CASES = {"sam": (SAM, {}), "fsam": (FriendlySAM, {"sigma": 0.8, "lmbda": 0.6}),
         "asam_2_local_shards": (SAM, {"adaptive": True, "shards": 2}),
         "gsam": (SAM, {"rule": rules.GSAM(alpha=0.3)}),
         "wsam_clipped": (SAM, {"rule": rules.WSAM(gamma=0.8), "max_grad_norm": 0.05}),
         "momentum_sam": (SAM, {"rule": rules.MomentumSAM()}),
         "multistep": (SAM, {"rule": rules.MultiStepSAM(steps=2, step_size=0.7)})}


def make_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def ce(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def _worker(rank: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank,
                            world_size=WORLD)
    try:
        for name, (cls, kw) in CASES.items():
            model = make_mlp()
            for layer in model:
                if isinstance(layer, nn.Linear):
                    fsdp.fully_shard(layer)
            fsdp.fully_shard(model)
            opt = cls(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9, rho=0.1, **kw)
            for s in range(STEPS):
                x, y = make_batch(N, seed=s)
                part = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
                opt.train_step(model, ce, (x[part], y[part]))
            full = {k: v.full_tensor() for k, v in model.state_dict().items()}
            if rank == 0:
                torch.save(full, f"{out}/{name}.pt")
        # both ranks leave together: a rank that tore gloo down while the other was still saving
        # aborted once ("terminate called without an active exception") on a loaded machine
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("fsdp"))
    mp.spawn(_worker, args=(out,), nprocs=WORLD, join=True)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_fsdp_equals_single_process_sam_on_the_global_batch(fsdp_results, name):
    """FSDP reduce-scatters every gradient: the perturbation is the global one (local shards kept)."""
    cls, kw = CASES[name]
    kw = dict(kw)
    local = kw.pop("shards", 1)
    model = make_mlp()
    opt = cls(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9, rho=0.1, shards=local, **kw)
    for s in range(STEPS):
        x, y = make_batch(N, seed=s)
        # local shard j of every rank shares one perturbation: put those examples together
        order = torch.cat([torch.arange(r * N // WORLD, (r + 1) * N // WORLD).tensor_split(local)[j]
                           for j in range(local) for r in range(WORLD)])
        opt.train_step(model, ce, (x[order], y[order]))
    got = torch.load(f"{fsdp_results}/{name}.pt")
    assert_states(got, model.state_dict(), atol=1e-10)
