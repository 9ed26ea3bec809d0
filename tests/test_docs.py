"""The README's quickstart runs as written (placeholders filled with a small model and loader)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_readme_quickstart_runs_and_trains():
    code = python_blocks(ROOT / "README.md")[0]
    assert "model = ..." in code and "opt.train_step(model, loss_fn, (x, y))" in code
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(64, 8)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    loader = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    scope = {"loader": loader}
    first_loss = None
    for _ in range(15):  # the block is one epoch: run it as a training loop
        scope["model"] = model
        exec(code.replace("model = ...", "model = model"), scope)
        first_loss = first_loss if first_loss is not None else float(scope["loss"])
    assert float(scope["loss"]) < first_loss  # it trains
    assert scope["opt"].base_optimizer.param_groups is scope["opt"].param_groups
