"""A small float64 LightningModule and data shared by the Lightning tests and their DDP worker."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import samkit
from samkit.integrations.lightning import SAMModule

N, STEPS = 8, 4  # examples per (global) batch, batches in the data


def make_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).double()


def make_data(n: int = N * STEPS, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def ce(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def batches(x, y, n=N, part=slice(None)):
    """The consecutive batches of ``n`` examples (``part``: this rank's slice of each)."""
    return [(x[i : i + n][part], y[i : i + n][part]) for i in range(0, len(x), n)]


class Net(SAMModule):
    """``training_step`` in automatic or manual optimization; records what Lightning saw."""

    def __init__(self, manual: bool = False, scheduler: bool = False, **sam_kw):
        super().__init__()
        self.net = make_net()
        self.automatic_optimization = not manual
        self.scheduler, self.sam_kw = scheduler, sam_kw
        self.outputs: list[float] = []  # the loss Lightning hands on_train_batch_end

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if not self.automatic_optimization:
            loss = self.sam_step(batch, ce)
            if self.scheduler:
                self.lr_schedulers().step()
            self.log("train_loss", loss)
            return loss
        loss = ce(self, batch)
        self.log("train_loss", loss)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.outputs.append(float(outputs["loss"]))

    def configure_optimizers(self):
        opt = samkit.SAM(self.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9, rho=0.1, **self.sam_kw)
        if not self.scheduler:
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def reference_opt(model: nn.Module, **sam_kw) -> samkit.SAM:
    """The same optimizer as :class:`Net`'s, for samkit's own ``train_step``."""
    return samkit.SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9, rho=0.1, **sam_kw)
