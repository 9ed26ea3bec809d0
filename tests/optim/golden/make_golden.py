"""Write ``trajectories.pt``: SAM / ASAM / F-SAM trajectories of the code at a given commit.

The refactor of the optimizer internals into rule objects (issue "An open SAM family") must not
change a single bit of the existing members. This script ran once on the commit before that
refactor (``git rev-parse HEAD`` is stored in the file) and ``test_optim_golden.py`` compares the
current code with it. Rerun it only on purpose: ``python tests/optim/golden/make_golden.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from optim_helpers import ce, make_batch, make_cnn  # noqa: E402

import samkit  # noqa: E402

# name -> (front end, dtype, base, base kwargs, SAM kwargs)
SCENARIOS = {
    "sam": ("SAM", torch.float64, "SGD", {"momentum": 0.9, "weight_decay": 5e-4}, {}),
    "sam_f32": ("SAM", torch.float32, "SGD", {"momentum": 0.9}, {}),
    "asam": ("SAM", torch.float64, "SGD", {"momentum": 0.9}, {"adaptive": True, "eta": 0.01, "rho": 0.5}),
    "fsam": ("FriendlySAM", torch.float64, "SGD", {"momentum": 0.9}, {"sigma": 1.0, "lmbda": 0.6}),
    "msam3_loop": ("SAM", torch.float64, "SGD", {"momentum": 0.9}, {"shards": 3, "execution": "loop"}),
    "msam_m3_vec": ("SAM", torch.float64, "SGD", {}, {"shard_size": 3, "execution": "vectorized"}),
    "fsam2_vec": ("FriendlySAM", torch.float64, "SGD", {"momentum": 0.9},
                  {"shards": 2, "execution": "vectorized", "lmbda": 0.5}),
    "fsam2_loop": ("FriendlySAM", torch.float64, "SGD", {"momentum": 0.9},
                   {"shards": 2, "execution": "loop", "lmbda": 0.5}),
    "asam_adamw": ("SAM", torch.float64, "AdamW", {"weight_decay": 0.05}, {"adaptive": True, "rho": 0.2}),
}
STEPS = 4


def run(name: str) -> dict:
    front, dtype, base, base_kw, kw = SCENARIOS[name]
    model = make_cnn().to(dtype)
    lr = 0.01 if base == "AdamW" else 0.1
    opt = getattr(samkit, front)(model.parameters(), getattr(torch.optim, base), lr=lr, **base_kw, **kw)
    losses = []
    for s in range(STEPS):
        x, y = make_batch(seed=s)
        losses.append(opt.train_step(model, ce, (x.to(dtype), y)))
    sd = opt.state_dict()
    rule_state = {i: {k: v for k, v in st.items()} for i, st in sd["state"].items()}
    base_state = {i: {k: v for k, v in st.items()} for i, st in sd["base"]["state"].items()}
    return {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "losses": torch.stack(losses),
        "rule_state": rule_state,
        "base_state": base_state,
    }


def main() -> None:
    torch.set_num_threads(1)  # as in the tests (tests/conftest.py): float32 sums depend on it
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE, check=True
    ).stdout.strip()
    out = {"commit": commit, "steps": STEPS, "runs": {name: run(name) for name in SCENARIOS}}
    torch.save(out, HERE / "trajectories.pt")
    print(f"wrote {HERE / 'trajectories.pt'} from {commit}")


if __name__ == "__main__":
    main()
