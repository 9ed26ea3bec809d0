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


def test_make_demo_is_a_valid_reproduce_command_that_readme_describes():
    import shlex

    from samkit import cli
    from samkit.study.claims import plan

    makefile = (ROOT / "Makefile").read_text().splitlines()
    recipe = makefile[makefile.index("demo: install") + 1].strip()
    command = shlex.split(recipe.split("samkit ", 1)[1])
    readme = (ROOT / "README.md").read_text()
    assert command[0] == "reproduce" and command[-2:] == ["--out", "runs/demo"]
    assert f"`samkit {' '.join(command[:-2])}`" in readme and "`runs/demo/`" in readme
    args = cli.build_parser().parse_args(command)
    claims, studies = plan("quick" if args.quick else "full", args.claims)
    # the demo tests label noise, fine-tuning and the diagonal network, and nothing slow
    assert {s.id for s in studies} == {"noise-20", "noise-40", "finetune-noisy", "dln"}
    assert {c.id for c in claims} >= {"noise40-sam", "finetune-noisy", "dln-nsam-better"}
