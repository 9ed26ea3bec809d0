"""One rank of the 2-process Hugging Face Trainer DDP test: SAMTrainer under accelerate's DDP
(gloo), then samkit's own DDP ``train_step`` on the micro-batches this rank was given, with one
perturbation per rank and with one for all ranks; states to ``out``."""

from __future__ import annotations

import copy
import os
import sys
import warnings

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.dirname(__file__))
from transformers_helpers import gpt2, lm_data, lm_loss, tokens  # noqa: E402

BATCH, ACCUMULATE, STEPS, CLIP, RHO = 2, 2, 3, 0.05, 0.1


def main(out: str) -> None:
    warnings.filterwarnings("ignore")
    import transformers
    from transformers import Trainer, TrainingArguments

    from samkit import SAM
    from samkit.integrations.transformers import SAMTrainer

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    class Recording(SAMTrainer):
        """SAMTrainer that keeps the micro-batches each step of this rank was given."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            self.seen.append({k: v.detach().clone() for k, v in inputs.items()})
            return super().training_step(model, inputs, num_items_in_batch)

    start = gpt2()
    targs = TrainingArguments(
        f"{out}/trainer", per_device_train_batch_size=BATCH, gradient_accumulation_steps=ACCUMULATE,
        max_steps=STEPS, use_cpu=True, ddp_backend="gloo", report_to=[], save_strategy="no",
        learning_rate=0.05, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=CLIP,
        disable_tqdm=True, seed=0, logging_steps=1,
    )
    # "per_rank": samkit's default under DDP, one perturbation per rank (m-sharpness across ranks);
    # "global": sync_perturbation_group_size=world, the ascent averaged over the ranks (plain SAM).
    saved = {}
    for name, group in (("per_rank", 1), ("global", world)):
        trainer = Recording(model=copy.deepcopy(start), args=targs, train_dataset=lm_data(tokens(48)),
                            sam_kwargs={"rho": RHO, "sync_perturbation_group_size": group})
        trainer.seen = []
        trainer.train()
        assert dist.is_initialized() and dist.get_world_size() == world  # accelerate's process group

        # samkit's own DDP train_step on the micro-batches this rank was given, same settings
        ref = DDP(copy.deepcopy(start))
        base, base_kw = Trainer.get_optimizer_cls_and_kwargs(targs, ref.module)
        opt = SAM(ref.parameters(), base, rho=RHO, micro_batch_size=BATCH, max_grad_norm=CLIP,
                  sync_perturbation_group_size=group, weight_decay=0.0, **base_kw)
        for s in range(STEPS):
            window = trainer.seen[s * ACCUMULATE:(s + 1) * ACCUMULATE]
            batch = tuple(torch.cat([w[k] for w in window]) for k in ("input_ids", "labels"))
            opt.train_step(ref, lm_loss, batch)
        saved[name] = {
            "trainer": trainer.model.state_dict(), "samkit": ref.module.state_dict(),
            "global_step": trainer.state.global_step, "steps": trainer.sam.steps,
            "ids": torch.cat([w["input_ids"] for w in trainer.seen]),
        }
    torch.save(saved, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
