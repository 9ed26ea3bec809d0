"""Small float64 models, data and hand-written reference updates for the optimizer tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SmallCNN(nn.Module):
    """Conv + BatchNorm + linear head: small enough for float64 equivalence tests."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean(dim=(2, 3)))


class MLP(nn.Module):
    """Two linear layers, no BatchNorm: a batch's loss is the mean of its examples' losses."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(36, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


def make_mlp(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP().double()


def make_cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN().double()


def make_batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def ce(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_states(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0.0:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


def reference_step(model, batch, sizes, lr, rho, adaptive=False, eta=0.0, directions=None):
    """m-SAM with plain SGD written out directly, one shard at a time, as the definition reads.

    ``directions(i, g)`` may replace the ascent gradient of shard ``i`` by a direction (F-SAM).
    Returns the per-shard ascent gradients (for EMA references).
    """
    params = [p for p in model.parameters()]
    n = sum(sizes)
    start = 0
    w0 = [p.detach().clone() for p in params]
    bn0 = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    merged = {k: torch.zeros_like(v) for k, v in bn0.items()}
    descent = [torch.zeros_like(p) for p in params]
    ascents = []
    for i, m in enumerate(sizes):
        shard = tuple(t[start : start + m] for t in batch)
        start += m
        weight = m / n
        model.load_state_dict(bn0, strict=False)
        g = torch.autograd.grad(ce(model, shard), params)
        ascents.append((weight, g))
        for k in bn0:
            v = model.state_dict()[k]
            merged[k] = v.clone() if "num_batches" in k else merged[k] + weight * v
        d = directions(i, g) if directions is not None else g
        if adaptive:
            t = [w.abs() + eta for w in w0]
            norm = torch.sqrt(sum(((ti * di) ** 2).sum() for ti, di in zip(t, d)))
            e = [rho * ti * ti * di / (norm + 1e-12) for ti, di in zip(t, d)]
        else:
            norm = torch.sqrt(sum((di**2).sum() for di in d))
            e = [rho * di / (norm + 1e-12) for di in d]
        with torch.no_grad():
            for p, w, ei in zip(params, w0, e):
                p.copy_(w + ei)
        h = torch.autograd.grad(ce(model, shard), params)
        for acc, hi in zip(descent, h):
            acc += weight * hi
        with torch.no_grad():
            for p, w in zip(params, w0):
                p.copy_(w)
    model.load_state_dict(merged, strict=False)
    with torch.no_grad():
        for p, w, gr in zip(params, w0, descent):
            p.copy_(w - lr * gr)
    return ascents
