"""DDP on 2 CPU processes (gloo) equals single-process m-sharpness on the concatenated batch."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from optim_helpers import assert_states, ce, make_batch, make_cnn, make_mlp
from torch.nn.parallel import DistributedDataParallel as DDP

from samkit import SAM, FriendlySAM, cadence, rules

WORLD, N, STEPS = 2, 8, 3


SCENARIOS = {
    # name: (model, optimizer class, per-rank kwargs, single-process kwargs)
    "sam_bn": (make_cnn, SAM, {}, {"shards": 2}),
    "sam_mlp": (make_mlp, SAM, {}, {"shards": 2}),
    "local_shards": (make_cnn, SAM, {"shards": 2}, {"shards": 4}),
    "group_of_2": (make_mlp, SAM, {"sync_perturbation_group_size": 2}, {}),
    "fsam_bn": (make_cnn, FriendlySAM, {"sigma": 0.8, "lmbda": 0.6}, {"shards": 2, "sigma": 0.8,
                                                                       "lmbda": 0.6}),
    # descent-side rules see the all-reduced descent and ascent gradients
    "gsam_bn": (make_cnn, SAM, {"rule": rules.GSAM(alpha=0.3)},
                {"shards": 2, "rule": rules.GSAM(alpha=0.3)}),
    "wsam_mlp": (make_mlp, SAM, {"rule": rules.WSAM(gamma=0.8)},
                 {"shards": 2, "rule": rules.WSAM(gamma=0.8)}),
    "multistep_mlp": (make_mlp, SAM, {"rule": rules.MultiStepSAM(steps=2, step_size=0.7)},
                      {"shards": 2, "rule": rules.MultiStepSAM(steps=2, step_size=0.7)}),
    # no ascent pass: the global momentum perturbs every rank alike = one process on the whole batch
    "momentum_mlp": (make_mlp, SAM, {"rule": rules.MomentumSAM()}, {"rule": rules.MomentumSAM()}),
    # descent points: every point's gradient all-reduced, so the kept state (SAMPa's g_y, ARWP's F)
    # and the seeded noise are the same on every rank = one process on the whole batch
    "sampa_mlp": (make_mlp, SAM, {"rule": rules.SAMPa(mix=0.3)}, {"rule": rules.SAMPa(mix=0.3)}),
    "mrwp_mlp": (make_mlp, SAM, {"rule": rules.RWP(noise=0.05, mix=0.5, adapt=0.2)},
                 {"rule": rules.RWP(noise=0.05, mix=0.5, adapt=0.2)}),
    # micro-batches on each rank; clipping of the all-reduced gradient
    "micro_clip_mlp": (make_mlp, SAM, {"micro_batch_size": 3, "max_grad_norm": 0.05},
                       {"shards": 2, "max_grad_norm": 0.05}),
    # cadences: every rank takes the same decision from the same seeded state, no communication
    # (no BatchNorm: a step without ascent normalises the local batch, one shard per rank)
    "random_switch_mlp": (make_mlp, SAM, {"cadence": cadence.RandomSwitch(0.5, seed=1)},
                          {"shards": 2, "cadence": cadence.RandomSwitch(0.5, seed=1)}),
    "looksam_mlp": (make_mlp, SAM, {"cadence": cadence.Every(2, reuse="looksam")},
                   {"shards": 2, "cadence": cadence.Every(2, reuse="looksam")}),
    # AE-SAM reads the squared gradient norm, averaged over the ranks: no single-process twin
    "gradnorm_mlp": (make_mlp, SAM, {"cadence": cadence.GradNormTrigger(total_steps=STEPS, lambda1=-0.5)},
                     None),
    # the drift trigger reads the mean over ranks of the local drift: ranks decide alike
    "drift_mlp": (make_mlp, SAM, {"cadence": cadence.Drift(k=2, max_gap=2)}, None),
}
KW = dict(lr=0.1, momentum=0.9, rho=0.1)


def _worker(rank: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank,
                            world_size=WORLD)
    try:
        for name, (make, cls, kw, _) in SCENARIOS.items():
            model = DDP(make())
            opt = cls(model.parameters(), torch.optim.SGD, **KW, **kw)
            for s in range(STEPS):
                x, y = make_batch(N, seed=s)
                part = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
                opt.train_step(model, ce, (x[part], y[part]))
                if s == STEPS - 2 and rank == 0:  # a checkpoint, written by one rank
                    torch.save({"model": model.module.state_dict(), "opt": opt.state_dict()},
                               f"{out}/{name}_ckpt.pt")
            ema = [opt.state[p]["ema"] for p in model.parameters()] if cls is FriendlySAM else []
            torch.save({"model": model.module.state_dict(), "ema": ema, "ascents": opt.ascent_steps},
                       f"{out}/{name}_{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ddp"))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_worker, args=(out,), nprocs=WORLD, join=True)
    return out


def single_process(name, steps=STEPS, start=None):
    make, cls, _, kw = SCENARIOS[name]
    model = make()
    opt = cls(model.parameters(), torch.optim.SGD, **KW, **kw)
    if start is not None:
        model.load_state_dict(start["model"])
        opt.load_state_dict(start["opt"])
    for s in range(STEPS - steps, STEPS):
        opt.train_step(model, ce, make_batch(N, seed=s))
    return model, opt


@pytest.mark.parametrize("name", [n for n, v in SCENARIOS.items() if v[3] is not None])
def test_ddp_equals_single_process_msam(ddp_results, name):
    model, opt = single_process(name)
    ranks = [torch.load(f"{ddp_results}/{name}_{r}.pt") for r in range(WORLD)]
    assert_states(ranks[0]["model"], ranks[1]["model"])  # replicas agree bit for bit
    assert ranks[0]["ascents"] == ranks[1]["ascents"] == opt.ascent_steps
    expected = {k: v for k, v in model.state_dict().items()}
    assert_states(ranks[0]["model"], expected, atol=1e-10)  # weights and BatchNorm statistics
    if SCENARIOS[name][1] is FriendlySAM:
        for e0, e1, p in zip(ranks[0]["ema"], ranks[1]["ema"], model.parameters()):
            assert torch.equal(e0, e1)  # the EMA is identical on both ranks
            torch.testing.assert_close(e0, opt.state[p]["ema"], atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ["gradnorm_mlp", "drift_mlp"])
def test_ranks_decide_alike_with_a_trigger_that_reads_the_gradient(ddp_results, name):
    ranks = [torch.load(f"{ddp_results}/{name}_{r}.pt") for r in range(WORLD)]
    assert_states(ranks[0]["model"], ranks[1]["model"])
    assert ranks[0]["ascents"] == ranks[1]["ascents"]
    assert 0 < ranks[0]["ascents"] < STEPS or name == "gradnorm_mlp"  # the drift trigger also skipped


@pytest.mark.parametrize("name", ["sam_bn", "fsam_bn"])
def test_ddp_checkpoint_resumes_on_one_process(ddp_results, name):
    """The checkpoint of a 2-rank run continues in a 1-process run (shards=2) to the same weights."""
    ckpt = torch.load(f"{ddp_results}/{name}_ckpt.pt")
    model, _ = single_process(name, steps=1, start=ckpt)
    final = torch.load(f"{ddp_results}/{name}_0.pt")["model"]
    assert_states(model.state_dict(), final, atol=1e-10)


def test_group_size_must_divide_world(tmp_path):
    from samkit import SamkitError
    from samkit.optim.distributed import PerturbationGroups

    with pytest.raises(SamkitError, match="positive integer"):
        PerturbationGroups(0)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", rank=0, world_size=1)
    try:
        with pytest.raises(SamkitError, match="does not divide the world size 1: choose a divisor"):
            PerturbationGroups(2).group()
        assert PerturbationGroups(1).group() is not None
    finally:
        dist.destroy_process_group()
