"""The route one optimizer step takes through samkit: files entered, cross-file calls, Python calls.

A step that is hard to follow costs Python calls as well as reading time. This traces one
``train_step`` (the second, so that one-time set-up is not counted) with ``sys.setprofile`` on a
small BatchNorm CNN and counts, among the Python functions defined in ``samkit/``:

* **files**: the samkit source files a call enters;
* **cross-file calls**: calls from a function in one samkit file into a function in another (the
  front end's own entry, from the caller, is not one);
* **Python calls**: every call into a samkit function (properties and dataclass ``__init__``
  included; torch's and the loss function's calls are not samkit's and not counted).

    python benchmarks/step_route.py              # SAM, mSAM-4 looped, LookSAM every 2, SAM with SGD's step
    python benchmarks/step_route.py --edges      # also the cross-file edges, most frequent first
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import samkit  # noqa: E402

PACKAGE = str(Path(samkit.__file__).resolve().parent)


class CNN(nn.Module):
    """Two conv + BatchNorm blocks and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean(dim=(2, 3)))


def loss_fn(model: nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


ROWS: dict[str, dict[str, Any]] = {
    "sam": {},
    "msam-4-loop": {"shards": 4, "execution": "loop"},
    "msam-4-vectorized": {"shards": 4, "execution": "vectorized"},
    "every-2 (no ascent step)": {"cadence": "every:k=2"},
}


def _short(filename: str) -> str:
    return str(Path(filename).resolve().relative_to(PACKAGE))


def trace(kwargs: dict[str, Any], step: int = 2) -> dict[str, Any]:
    """Counts over the ``step``-th ``train_step`` (1-based) of a fresh optimizer."""
    torch.manual_seed(0)
    model = CNN()
    opt = samkit.SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9, rho=0.05, **kwargs)
    batch = (torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,)))
    for _ in range(step - 1):
        opt.train_step(model, loss_fn, batch)
    files: collections.Counter[str] = collections.Counter()
    edges: collections.Counter[tuple[str, str]] = collections.Counter()
    calls = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event != "call":
            return
        callee = frame.f_code.co_filename
        if not callee.startswith(PACKAGE):
            return
        calls += 1
        files[_short(callee)] += 1
        back = frame.f_back
        caller = back.f_code.co_filename if back is not None else ""
        if caller.startswith(PACKAGE) and caller != callee:
            edges[(_short(caller), _short(callee))] += 1

    sys.setprofile(profile)
    try:
        opt.train_step(model, loss_fn, batch)
    finally:
        sys.setprofile(None)
    return {"files": files, "edges": edges, "calls": calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", action="store_true", help="list the cross-file edges")
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    args = parser.parse_args()
    print(f"{'row':<26} {'files':>5} {'cross-file':>10} {'calls':>6}   files entered")
    for name in args.rows:
        out = trace(ROWS[name])
        print(f"{name:<26} {len(out['files']):>5} {sum(out['edges'].values()):>10} {out['calls']:>6}   "
              + ", ".join(sorted(out["files"])))
        if args.edges:
            for (a, b), k in out["edges"].most_common():
                print(f"    {k:>4}  {a} -> {b}")


if __name__ == "__main__":
    main()
