"""fp16 with a real GradScaler under both trainers: the Hugging Face ``SAMTrainer`` (accelerate's
scaler) and Lightning's automatic and manual optimization (``precision="16-mixed"``).

Each run trains 3 steps under float16 autocast on the CPU with ``torch.amp.GradScaler("cpu")`` set so
that the second step overflows (the scale grows by 2**30 after the first step; the gradients of the
float16 activations then overflow): the run must take step 1, skip step 2 (weights, momentum and rule
state untouched, the scale backed off once), take step 3, update the scale exactly once per step,
and end at the weights of samkit's own ``opt.train_step(..., scaler=...)`` on the same batches.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import samkit

SCALER = dict(init_scale=2.0**10, growth_factor=2.0**30, backoff_factor=2.0**-30, growth_interval=1)
# taken (2**10 -> 2**40), overflow at 2**40 (skipped, -> 2**10), taken (-> 2**40)
TAKEN = [True, False, True]
FINAL_SCALE = 2.0**40


def scaler() -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cpu", **SCALER)


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 3))


def make_data(n: int = 12, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def fp16_ce(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    with torch.autocast("cpu", dtype=torch.float16, cache_enabled=False):
        return F.cross_entropy(model(x), y)


def sam(params, **kw) -> samkit.SAM:
    return samkit.SAM(params, torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9, **kw)


def reference(batches, lrs=None, **kw):
    """samkit's own train_step with its own GradScaler on the same batches (at the learning rates
    ``lrs``, if given)."""
    model = make_net()
    opt, sc = sam(model.parameters(), **kw), scaler()
    taken, losses = [], []
    for i, batch in enumerate(batches):
        if lrs is not None:
            opt.param_groups[0]["lr"] = lrs[i]
        losses.append(float(opt.train_step(model, fp16_ce, batch, scaler=sc)))
        taken.append(opt.last_step.taken)
    assert taken == TAKEN and sc.get_scale() == FINAL_SCALE  # the scenario is the one described
    return model, opt, losses


def assert_same_model(a: nn.Module, b: nn.Module) -> None:
    # The same float32 operations in the same order: equal up to float32 rounding.
    for k, v in b.state_dict().items():
        torch.testing.assert_close(a.state_dict()[k], v, atol=1e-6, rtol=1e-6, msg=k)


def assert_same_optimizer(a: samkit.SAM, b: samkit.SAM) -> None:
    assert (a.steps, a.skipped_steps, a.passes) == (b.steps, b.skipped_steps, b.passes) == (2, 1, 6.0)
    for sa, sb in zip(a.base_optimizer.state.values(), b.base_optimizer.state.values()):
        torch.testing.assert_close(sa["momentum_buffer"], sb["momentum_buffer"], atol=1e-6, rtol=1e-6)


# ---- Hugging Face Trainer ---------------------------------------------------------------------
class Classifier(nn.Module):
    """A model as the Trainer takes it: keyword inputs, a dict with the mean loss."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_net()

    def forward(self, x, labels):
        logits = self.net(x)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


def test_samtrainer_fp16_scaler_sees_both_passes_and_skips_the_overflowing_step(tmp_path):
    """accelerate's GradScaler under SAMTrainer (the CUDA setup, on the CPU: accelerate makes no
    scaler for a CPU, so the test gives it one and turns on its fp16 autocast, as it does on CUDA).

    Gradient accumulation 2 over micro-batches of 2: each step's 4 examples equal samkit's
    train_step with micro_batch_size=2; the scale is updated once per step; accelerate reports the
    skipped step, so the Trainer does not step its LR scheduler for it; the checkpoint's scaler.pt
    is the real scaler's state."""
    pytest.importorskip("accelerate")
    transformers = pytest.importorskip("transformers")
    from samkit.integrations.transformers import SAMTrainer

    x, y = make_data()
    data = [{"x": xi, "labels": int(yi)} for xi, yi in zip(x, y)]
    seen: list[dict] = []

    class Recording(SAMTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            seen.append({k: v.clone() for k, v in inputs.items()})
            return super().training_step(model, inputs, num_items_in_batch)

    targs = transformers.TrainingArguments(
        str(tmp_path / "out"), per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=3,
        use_cpu=True, fp16=True, optim="sgd", learning_rate=0.1, lr_scheduler_type="linear",
        weight_decay=0.0, max_grad_norm=0.0, report_to=[], save_strategy="steps", save_steps=3,
        logging_steps=1, disable_tqdm=True, seed=0,
    )
    model = Classifier()
    opt = sam(model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        trainer = Recording(model=model, args=targs, train_dataset=data, optimizers=(opt, None))
        real = scaler()
        trainer.accelerator.scaler, trainer.accelerator.native_amp = real, True  # as accelerate on CUDA
        trainer.train()

    steps = [seen[i : i + 2] for i in range(0, len(seen), 2)]
    batches = [(torch.cat([m["x"] for m in s]), torch.cat([m["labels"] for m in s])) for s in steps]
    # The skipped step does not advance the linear schedule: steps 2 and 3 run at its second value.
    lrs = [0.1, 0.1 * 2 / 3, 0.1 * 2 / 3]
    ref_model, ref_opt, _ = reference(batches, lrs, micro_batch_size=2)
    assert_same_model(model.net, ref_model)
    assert_same_optimizer(opt, ref_opt)
    assert real.get_scale() == FINAL_SCALE  # one update per SAM step (two would grow it twice)
    assert trainer.state.global_step == 3  # the Trainer counts the skipped step, as it does in fp16
    assert trainer.lr_scheduler.last_epoch == 2  # 2 scheduler steps in 3 Trainer steps
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * (3 - 2) / 3)
    saved = torch.load(tmp_path / "out" / "checkpoint-3" / "scaler.pt", weights_only=True)
    assert float(saved["scale"]) == FINAL_SCALE


# ---- Lightning -------------------------------------------------------------------------------
@pytest.mark.parametrize("manual", [False, True], ids=["automatic", "manual"])
def test_lightning_16_mixed_scaler_sees_both_passes_and_skips_the_overflowing_step(manual):
    """precision="16-mixed" with Lightning's MixedPrecision plugin and a CPU GradScaler: both modes
    equal samkit's train_step with the scaler; the scaler Lightning checkpoints is the one samkit
    updated, once per step; self.log and on_train_batch_end see the loss at w."""
    pytest.importorskip("lightning")
    import lightning.pytorch as L
    from lightning.pytorch.plugins import MixedPrecision

    from samkit.integrations.lightning import SAMModule

    class Net(SAMModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_net()
            self.automatic_optimization = not manual
            self.outputs: list[float] = []

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            if manual:
                loss = self.sam_step(batch, fp16_ce)
            else:
                loss = F.cross_entropy(self(batch[0]), batch[1])  # under Lightning's autocast
            self.log("train_loss", loss)
            return loss

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.outputs.append(float(outputs["loss"]))

        def configure_optimizers(self):
            return sam(self.parameters())

    x, y = make_data()
    net, sc = Net(), scaler()
    tr = L.Trainer(accelerator="cpu", devices=1, max_steps=3, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False,
                   plugins=[MixedPrecision("16-mixed", "cpu", scaler=sc)])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr.fit(net, loader)
    ref_model, ref_opt, losses = reference([(x[i : i + 4], y[i : i + 4]) for i in range(0, 12, 4)])
    assert_same_model(net.net, ref_model)
    assert_same_optimizer(tr.optimizers[0], ref_opt)
    assert sc.get_scale() == FINAL_SCALE and tr.precision_plugin.state_dict()["scale"] == FINAL_SCALE
    assert tr.global_step == 3  # Lightning counts the skipped step, as it does in fp16
    # Automatic optimization counts passes, not examples (samkit never sees Lightning's batch).
    assert ref_opt.example_passes > 0
    assert tr.optimizers[0].example_passes == (ref_opt.example_passes if manual else 0)
    assert net.outputs == pytest.approx(losses, rel=1e-6)
    assert float(tr.logged_metrics["train_loss"]) == pytest.approx(losses[-1], rel=1e-6)


def test_lightning_16_mixed_automatic_refuses_what_it_cannot_do():
    """Under 16-mixed automatic optimization the step is samkit's train_step over Lightning's
    closure, which cannot draw a share of the batch for the ascent: say to use manual optimization."""
    pytest.importorskip("lightning")
    import lightning.pytorch as L
    from lightning.pytorch.plugins import MixedPrecision

    from samkit import SamkitError
    from samkit.integrations.lightning import SAMModule

    class Net(SAMModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_net()

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return sam(self.parameters(), cadence=samkit.cadence.Always(ascent_fraction=0.5))

    net = Net()
    before = copy.deepcopy(net.state_dict())
    tr = L.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False,
                   plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler())])
    x, y = make_data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    with warnings.catch_warnings(), pytest.raises(SamkitError, match="ascent_fraction.*manual optimization"):
        warnings.simplefilter("ignore")
        tr.fit(net, loader)
    for k, v in before.items():
        assert torch.equal(net.state_dict()[k], v), k
