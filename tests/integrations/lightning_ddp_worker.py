"""One rank of the 2-process Lightning DDP test: samkit's own DDP ``train_step`` and Lightning's
``strategy="ddp"`` (automatic and manual optimization) on the same data; states go to ``out``."""

from __future__ import annotations

import os
import sys
import warnings

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.dirname(__file__))
from lightning_helpers import N, Net, batches, ce, make_data, make_net, reference_opt  # noqa: E402

SCENARIOS = {"auto": {}, "manual_shards": {"shards": 2}, "auto_fp16": {}}


def fp16_ce(model, batch):
    with torch.autocast("cpu", dtype=torch.float16, cache_enabled=False):
        return ce(model, batch)


def scaler():
    return torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=1)


def main(out: str) -> None:
    warnings.filterwarnings("ignore")
    import lightning.pytorch as L

    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo")  # Lightning finds it initialised and uses it
    x, y = make_data()
    part = slice(rank * N // world, (rank + 1) * N // world)
    local = batches(x, y, part=part)
    for name, kw in SCENARIOS.items():
        fp16 = name.endswith("fp16")  # float32 weights, float16 autocast, a GradScaler
        model = DDP(make_net().float() if fp16 else make_net())
        opt = reference_opt(model, **kw)
        ref_scaler = scaler() if fp16 else None
        for batch in local:
            if fp16:
                batch = (batch[0].float(), batch[1])
            opt.train_step(model, fp16_ce if fp16 else ce, batch, scaler=ref_scaler)
        torch.save(model.module.state_dict(), f"{out}/{name}_samkit_{rank}.pt")

        net = Net(manual=not name.startswith("auto"), **kw)
        if fp16:
            from lightning.pytorch.plugins import MixedPrecision

            net.float()
            precision = {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=scaler())]}
        else:
            precision = {"precision": "64-true"}
        trainer = L.Trainer(
            accelerator="cpu", devices=world, strategy="ddp", **precision, max_steps=len(local),
            max_epochs=10, use_distributed_sampler=False, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
        )
        data = list(zip(*[torch.cat(t) for t in zip(*local)]))  # this rank's examples, in order
        if fp16:
            data = [(xi.float(), yi) for xi, yi in data]
        loader = torch.utils.data.DataLoader(data, batch_size=N // world)
        trainer.fit(net, loader)
        sam = trainer.optimizers[0]
        if fp16:  # one scale update per step, as samkit's own
            assert trainer.precision_plugin.scaler.get_scale() == ref_scaler.get_scale()
        torch.save({"state": net.net.state_dict(), "global_step": trainer.global_step, "steps": sam.steps},
                   f"{out}/{name}_lightning_{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
