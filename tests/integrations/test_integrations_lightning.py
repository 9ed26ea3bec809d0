"""samkit under PyTorch Lightning: automatic and manual optimization equal samkit's own train_step
(BatchNorm, shards, micro-batches, rules), global_step and max_steps, hooks, step records, resume
from a Lightning checkpoint, DDP on 2 gloo processes, and the errors that say what to do instead."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")
import lightning.pytorch as L  # noqa: E402
from lightning_helpers import STEPS, Net, batches, ce, make_data, reference_opt  # noqa: E402

from samkit import SamkitError, rules  # noqa: E402

HERE = Path(__file__).resolve().parent


def trainer(**kw) -> L.Trainer:
    settings = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, max_epochs=1)
    return L.Trainer(**{**settings, **kw})


def loader(x, y, n=8):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=n)


@pytest.fixture(autouse=True)
def _quiet_lightning():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def reference(kw, steps, model=None):
    """samkit's own train_step on the same batches; returns the model, optimizer, losses and records."""
    model = copy.deepcopy(Net().net) if model is None else model
    opt = reference_opt(model, **kw)
    x, y = make_data()
    losses, records = [], []
    for batch in batches(x, y)[:steps]:
        losses.append(float(opt.train_step(model, ce, batch)))
        records.append(opt.last_step)
    return model, opt, losses, records


CASES = {
    "auto": (False, {}),
    "auto_fsam": (False, {"rule": rules.FriendlySAM(lmbda=0.5)}),
    "auto_multistep": (False, {"rule": rules.MultiStepSAM(steps=2, step_size=0.5)}),
    "manual": (True, {}),
    "manual_shards_micro": (True, {"shards": 2, "micro_batch_size": 2}),
}


@pytest.mark.parametrize("case", CASES)
def test_lightning_step_equals_train_step(case):
    """Weights, BatchNorm statistics, losses Lightning sees and logs, counters: all samkit's.

    max_steps=3 of 4 batches: Lightning stops there, and global_step counts optimizer steps."""
    manual, kw = CASES[case]
    net = Net(manual=manual, **kw)
    tr = trainer(max_steps=3)
    tr.fit(net, loader(*make_data()))
    sam = tr.optimizers[0]
    model, opt, losses, records = reference(kw, steps=3)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(net.net.state_dict()[k], v, atol=1e-12, rtol=0, msg=k)
    assert tr.global_step == sam.steps == opt.steps == 3
    assert (sam.passes, sam.ascent_steps) == (opt.passes, opt.ascent_steps)
    # Lightning's step output and self.log hold the loss at w, not at w + e
    assert net.outputs == pytest.approx(losses, abs=1e-12)
    assert float(tr.logged_metrics["train_loss"]) == pytest.approx(losses[-1], abs=1e-12)
    rec, want = sam.last_step, records[-1]
    assert rec.ascended and rec.taken and rec.passes == want.passes
    torch.testing.assert_close(rec.ascent_norm, want.ascent_norm, atol=1e-12, rtol=0)
    if manual:  # train_step sees the loss at w + e; a closure's losses are Lightning's
        torch.testing.assert_close(rec.perturbed_loss, want.perturbed_loss, atol=1e-12, rtol=0)


@pytest.mark.parametrize("manual", [False, True], ids=["auto", "manual"])
def test_step_hooks_fire_once_per_lightning_step(manual):
    net = Net(manual=manual)
    calls = []
    make = net.configure_optimizers

    def configure():
        opt = make()
        opt.register_step_pre_hook(lambda o, a, k: calls.append(("pre", o.steps)))
        opt.register_step_post_hook(lambda o, a, k: calls.append(("post", o.steps)))
        return opt

    net.configure_optimizers = configure
    trainer(max_steps=2).fit(net, loader(*make_data()))
    assert calls == [("pre", 0), ("post", 1), ("pre", 1), ("post", 2)]


@pytest.mark.parametrize("manual", [False, True], ids=["auto", "manual"])
def test_resume_from_a_lightning_checkpoint_equals_the_uninterrupted_run(manual, tmp_path):
    """Weights, momentum, samkit counters and the LR schedule continue where they stopped.

    Two batches per epoch, a checkpoint every 2 steps: the resume point is an epoch's end (Lightning
    itself restarts an epoch's data from its first batch when resumed mid-epoch)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    x, y = make_data(16)
    whole = Net(manual=manual, scheduler=True)
    every = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1, filename="{step}")
    tr = trainer(max_steps=4, max_epochs=2, enable_checkpointing=True, callbacks=[every])
    tr.fit(whole, loader(x, y))
    saved = torch.load(tmp_path / "step=2.ckpt", weights_only=False)["optimizer_states"][0]["samkit"]
    assert saved["steps"] == 2 and saved["passes"] == 4.0  # the real optimizer's counters

    resumed = Net(manual=manual, scheduler=True)
    tr2 = trainer(max_steps=4, max_epochs=2)
    tr2.fit(resumed, loader(x, y), ckpt_path=tmp_path / "step=2.ckpt")
    assert resumed.outputs == whole.outputs[2:]  # the same batches at the same weights
    for k, v in whole.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[k], v, atol=1e-14, rtol=0, msg=k)
    sam, sam_whole = tr2.optimizers[0], tr.optimizers[0]
    assert tr2.global_step == sam.steps == sam_whole.steps == 4
    assert sam.param_groups[0]["lr"] == sam_whole.param_groups[0]["lr"] == pytest.approx(0.1 / 5)


@pytest.mark.parametrize(
    "kw, trainer_kw, match",
    [
        ({"shards": 2}, {}, "cannot be split into shards: use manual optimization"),
        ({}, {"accumulate_grad_batches": 2}, "micro_batch_size= on the samkit optimizer"),
        ({}, {"gradient_clip_val": 1.0}, "pass max_grad_norm= to the samkit optimizer"),
    ],
    ids=["shards", "accumulate", "clip"],
)
def test_automatic_optimization_refuses_what_it_cannot_do(kw, trainer_kw, match):
    net = Net(**kw)
    before = copy.deepcopy(net.net.state_dict())
    with pytest.raises(SamkitError, match=match):
        trainer(max_steps=1, **trainer_kw).fit(net, loader(*make_data()))
    for k, v in before.items():
        assert torch.equal(net.net.state_dict()[k], v), k  # nothing was changed


def test_sam_step_needs_manual_optimization_and_a_samkit_optimizer():
    class Auto(Net):
        def training_step(self, batch, batch_idx):
            return self.sam_step(batch, ce)

    with pytest.raises(SamkitError, match="set self.automatic_optimization = False"):
        trainer(max_steps=1).fit(Auto(), loader(*make_data()))

    class PlainSGD(Net):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(SamkitError, match="needs a samkit optimizer .*returned SGD"):
        trainer(max_steps=1).fit(PlainSGD(manual=True), loader(*make_data()))


def test_a_plain_optimizer_steps_as_lightning_steps_it():
    """SAMModule leaves other optimizers alone: automatic SGD equals a hand-written SGD loop."""

    class PlainSGD(Net):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    net = PlainSGD()
    model = copy.deepcopy(net.net)
    trainer(max_steps=2).fit(net, loader(*make_data()))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = make_data()
    for batch in batches(x, y)[:2]:
        opt.zero_grad()
        ce(model, batch).backward()
        opt.step()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(net.net.state_dict()[k], v, atol=1e-14, rtol=0, msg=k)


def test_import_without_lightning_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "samkit.integrations.lightning")
    with pytest.raises(ImportError, match=r"pip install 'samkit\[lightning\]'"):
        import samkit.integrations.lightning  # noqa: F401


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Two gloo processes: samkit's DDP train_step and Lightning's strategy='ddp' on the same data."""
    out = tmp_path_factory.mktemp("lightning_ddp")
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "NODE_RANK": "0", "GLOO_SOCKET_IFNAME": "lo",
               "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
        procs.append(subprocess.Popen([sys.executable, str(HERE / "lightning_ddp_worker.py"), str(out)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-4000:]
    return out


@pytest.mark.slow  # two fresh processes each import Lightning: ~35 s on a shared 2-core machine
@pytest.mark.parametrize("name", ["auto", "manual_shards", "auto_fp16"])
def test_lightning_ddp_replicas_agree_and_equal_samkit_ddp(ddp_run, name):
    """Per-rank perturbation (m-sharpness) as samkit's own DDP train_step, BatchNorm included; under
    16-mixed automatic optimization with a GradScaler too (the worker checks the scales agree)."""
    lightning = [torch.load(ddp_run / f"{name}_lightning_{r}.pt") for r in range(2)]
    samkit_ddp = torch.load(ddp_run / f"{name}_samkit_0.pt")
    for k, v in samkit_ddp.items():
        assert torch.equal(lightning[0]["state"][k], lightning[1]["state"][k]), k  # bit-identical replicas
        torch.testing.assert_close(lightning[0]["state"][k], v, atol=1e-6, rtol=0, msg=k)
    assert [r["global_step"] for r in lightning] == [r["steps"] for r in lightning] == [STEPS, STEPS]
