"""Small models with known Hessians, and a bit-exact snapshot of everything a measure may touch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def least_squares(n: int = 40, d: int = 5, seed: int = 0, spectrum=None):
    """Linear regression ``L(w) = mean((Xw - y)^2) / 2`` in float64: H = X^T X / n exactly.

    With ``spectrum`` the design is built so that H has exactly those eigenvalues.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    if spectrum is not None:
        # X = U diag(sqrt(n * s)) V^T with orthonormal U (n x d), V (d x d): X^T X / n = V S V^T.
        u, _ = torch.linalg.qr(x)
        v, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        s = torch.as_tensor(spectrum, dtype=torch.float64)
        x = u @ torch.diag((n * s).sqrt()) @ v.T
    y = torch.randn(n, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))
    return model, x, y, x.T @ x / n


def mse_half(model, batch):
    x, y = batch
    return 0.5 * ((model(x).squeeze(-1) - y) ** 2).mean()


def ce(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def error_rate(model, batch):
    x, y = batch
    return (model(x).argmax(-1) != y).double().mean()


class Quadratic(nn.Module):
    """``L(w) = 1/2 (w - c)^T A (w - c)`` with ``c`` a buffer: the minimum is at ``w = c``.

    The batch only sets the sample count; the loss ignores it.
    """

    def __init__(self, a: torch.Tensor, c: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(c.clone())
        self.register_buffer("a", a)
        self.register_buffer("c", c.clone())

    def forward(self, x):
        r = self.w - self.c
        return 0.5 * r @ self.a @ r + 0 * x.sum()


def quad_loss(model, batch):
    return model(batch)


def bn_mlp(seed: int = 0, classes: int = 3):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(0.0), nn.Linear(8, classes)
    ).double()


def small_cnn(seed: int = 0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 2),
    ).double()


def class_data(n: int = 16, features: int = 4, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g, dtype=torch.float64)
    return x, torch.randint(0, classes, (n,), generator=g)


def snapshot(model: nn.Module):
    """Everything a measure promises to leave alone, as comparable data (bit-level for tensors)."""

    def bits(t):
        return None if t is None else (t.dtype, tuple(t.shape), t.detach().cpu().clone())

    return {
        "modes": [m.training for m in model.modules()],
        "params": [(n, id(p), p.requires_grad, bits(p)) for n, p in model.named_parameters()],
        "grads": [
            (n, id(p.grad) if p.grad is not None else None, bits(p.grad))
            for n, p in model.named_parameters()
        ],
        "buffers": [(n, id(b), bits(b)) for n, b in model.named_buffers()],
    }


def assert_same_state(before, after):
    assert before["modes"] == after["modes"]
    for key in ("params", "grads", "buffers"):
        assert len(before[key]) == len(after[key]), key
        for a, b in zip(before[key], after[key]):
            assert a[:-1] == b[:-1], (key, a[0])
            ta, tb = a[-1], b[-1]
            if ta is None or tb is None:
                assert ta is None and tb is None, (key, a[0])
            else:
                assert ta[:2] == tb[:2]
                # bit-identical: compare raw bytes, so -0.0 vs 0.0 and NaN payloads count too
                assert (
                    ta[2].reshape(-1).view(torch.uint8).equal(tb[2].reshape(-1).view(torch.uint8))
                ), (key, a[0])
