"""The run config names optimizers through the registry: options, micro-batches, clipping, hashes."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import pytest
import torch
from torch import nn

import samkit
from samkit.errors import SamkitError
from samkit.optim.sharding import batch_size
from samkit.train import TrainConfig, config_hash, load_config
from samkit.train.setup import build_optimizer, step_counters, train_step

ROOT = Path(__file__).resolve().parents[2]


def test_rule_options_reach_the_rule():
    model = nn.Linear(4, 3)
    cfg = TrainConfig(optimizer="gsam", optimizer_options={"alpha": 0.3}, max_grad_norm=1.0,
                      micro_batch_size=16).validated()
    opt = build_optimizer(cfg, model)
    assert opt.rule.alpha == 0.3 and opt.max_grad_norm == 1.0 and opt.micro_batch_size == 16
    fsam = build_optimizer(TrainConfig(optimizer="fsam", sigma=0.4, lmbda=0.6).validated(), model)
    assert fsam.param_groups[0]["sigma"] == 0.4 and fsam.param_groups[0]["lmbda"] == 0.6
    assert TrainConfig(optimizer="multistep_sam", optimizer_options={"steps": 3}).passes_per_step == 4
    assert TrainConfig(optimizer="momentum_sam").passes_per_step == 1
    assert TrainConfig(optimizer="sgd").passes_per_step == 1


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"optimizer": "gsam", "optimizer_options": {"beta": 1}},
         "optimizer 'gsam' does not take option.*beta.*accepts: adaptive, alpha"),
        ({"optimizer": "fsam", "optimizer_options": {"sigma": 1}}, "sigma are run settings of their own"),
        ({"optimizer": "gsam", "optimizer_options": {"alpha": "big"}}, "alpha must be a finite number"),
        ({"optimizer": "wsam", "optimizer_options": {"gamma": 1.5}}, r"gamma must be in \[0, 1\)"),
        ({"optimizer": "sgd", "optimizer_options": {"alpha": 1}}, "does not take option"),
        ({"micro_batch_size": 0}, "micro_batch_size must be a positive integer"),
        ({"max_grad_norm": 0.0}, "max_grad_norm must be > 0"),
        ({"optimizer": "lion"}, "optimizer must be one of sgd, adamw, sam"),
    ],
)
def test_bad_optimizer_settings_are_refused_up_front(kw, match):
    with pytest.raises(SamkitError, match=match):
        TrainConfig(**kw).validated()


def test_plain_optimizer_micro_batches_and_clipping_equal_the_whole_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    twin = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    twin.load_state_dict(model.state_dict())
    x, y = torch.randn(10, 6, dtype=torch.float64), torch.randint(0, 3, (10,))

    def loss_fn(m, b):
        return nn.functional.cross_entropy(m(b[0]), b[1])

    opt_a = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    opt_b = torch.optim.SGD(twin.parameters(), lr=0.5, momentum=0.9)
    for _ in range(3):
        la = train_step(opt_a, model, loss_fn, (x, y), micro_batch_size=3, max_grad_norm=0.1)
        opt_b.zero_grad()
        lb = loss_fn(twin, (x, y))
        lb.backward()
        assert torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.1) > 0.1  # clipping acts
        opt_b.step()
        torch.testing.assert_close(la, lb.detach(), atol=1e-12, rtol=0)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert batch_size((x, y)) == 10
    # the same counters and step record as a SAM optimizer's: one step each, every pass counted
    counts = step_counters(opt_a, 3, 0.1)
    assert (counts.steps, counts.passes, counts.example_passes) == (3, 3.0, 30)
    assert step_counters(opt_a, 3, 0.1) is counts


def test_one_set_of_counters_for_plain_and_sam_optimizers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))

    def loss_fn(m, b):
        return nn.functional.cross_entropy(m(b[0]), b[1])

    sam = samkit.SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    for opt in (sam, sgd, sgd):
        train_step(opt, model, loss_fn, (x, y), micro_batch_size=4)
    assert step_counters(sam) is sam.counts and sam.counts.passes == 2.0
    counts = step_counters(sgd, 4)
    assert (counts.steps, counts.passes, counts.example_passes) == (2, 2.0, 16)
    # the step kept for a plain optimizer does not keep the optimizer alive
    gone = weakref.ref(sgd)
    del sgd, opt
    gc.collect()
    assert gone() is None


def test_new_settings_at_their_defaults_keep_old_run_hashes():
    """Run folders saved before optimizer_options / micro_batch_size / max_grad_norm existed keep
    their config hash, so studies continue instead of refusing their own folders."""
    folders = [p.parent for p in (ROOT / "docs" / "report").rglob("summary.json")]
    assert folders
    for folder in folders:
        saved = json.loads((folder / "summary.json").read_text())["config_hash"]
        assert config_hash(load_config(folder / "config.yaml")) == saved, folder
    base = TrainConfig(optimizer="gsam")
    assert config_hash(base) != config_hash(TrainConfig(optimizer="gsam", optimizer_options={"alpha": 0.2}))
    assert config_hash(base) != config_hash(TrainConfig(optimizer="gsam", max_grad_norm=1.0))
    assert config_hash(base) != config_hash(TrainConfig(optimizer="gsam", micro_batch_size=8))
