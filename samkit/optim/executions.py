"""The executions a ``train_step``'s passes can run on, and the choice among them.

``"loop"`` (:func:`samkit.optim.engine.loop_passes`, one shard after another) and ``"vectorized"``
(:func:`samkit.optim.vectorized.vectorized_passes`, the shards stacked and the forward mapped with
``torch.func``) run the same plan with the engine's one ascent routine and running totals
(:class:`~samkit.optim.engine.Totals`; a rule's descent points, which take no ascent, combine with
:func:`~samkit.optim.engine.combine_points` in both); they differ only in how a shard's gradient
is taken. ``"auto"`` vectorizes several shards on CUDA and
follows a measured rule on a CPU (:func:`auto_vectorizes`), within a memory budget
(:func:`shard_chunk`): the vectorized shards' stacked copies are mapped in chunks that fit it, and
``auto`` loops where not even two shards would. A new execution is one file and its line in
:data:`ENGINES`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from samkit._batch import LossFn, batch_size
from samkit.errors import SamkitError
from samkit.optim.batchnorm import RunningStats
from samkit.optim.distributed import is_distributed
from samkit.optim.engine import PassResult, WeightBackup, loop_passes
from samkit.optim.plan import StepPlan
from samkit.optim.vectorized import vectorized_passes

log = logging.getLogger("samkit")

# The executions a plan's passes can run on (Execution chooses among them).
ENGINES: dict[str, Callable[..., PassResult]] = {"loop": loop_passes, "vectorized": vectorized_passes}


def run_passes(
    plan: StepPlan,
    execution: Execution,
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    scaler: torch.amp.GradScaler | None,
    stats: RunningStats | None,
    backup: WeightBackup,
) -> PassResult:
    """Every pass of a ``train_step`` with the execution chosen for it (vectorized falls back to the
    loop under ``auto`` when the model cannot be mapped)."""
    choice = execution.choose(plan, model, batch)
    result = None
    if choice != "loop":
        try:
            chunked = {"chunk": execution.chunk} if choice == "vectorized" else {}
            result = ENGINES[choice](plan, model, loss_fn, batch, scaler, stats, backup, **chunked)
        except Exception as exc:  # an op without a vmap rule, ...: the loop always works
            for p in plan.all_flat:
                p.grad = None
            if execution.asked == choice and stats:
                stats.clear()
            execution.failed(exc)
            choice = "loop"
    if result is None:
        result = loop_passes(plan, model, loss_fn, batch, scaler, stats, backup)
    execution.used = choice
    return result


def _inputs_per_example(batch: Any, n: int) -> int:
    """Values per example of the batch's first floating-point tensor (0 when there is none)."""
    for t in pytree.tree_leaves(batch):
        if isinstance(t, Tensor) and t.is_floating_point() and n:
            return t.numel() // n
    return 0



# execution="auto" on a CPU, from benchmarks/results/step_time_cpu.md (one thread, 2-core Intel
# Xeon; 2-core AMD EPYC for cnn-small): the vectorized shards win when the shards are small and
# the model is a small convolution network — mSAM-8 on cnn1d (MNIST-1D, 40 inputs per example)
# 1.74x SAM vectorized against 2.68x looped, on cnn2d (digits, 64 inputs) 1.87x against 2.38x —
# and lose with 2 shards (at 4 they tie with shards of 32 examples), on an MLP (its batched
# matmuls cost more than the loop's), and on CIFAR-sized images (cnn-small: 1.22x against 1.10x).
CPU_MAX_SHARD_EXAMPLES = 16
CPU_MAX_INPUTS_PER_EXAMPLE = 1024


def auto_vectorizes(device: torch.device, model: nn.Module | None = None, shard_examples: int = 0,
                    inputs_per_example: int = 0, points: bool = False, shards: int = 0) -> tuple[bool, str]:
    """What ``execution="auto"`` does with a step that could be vectorized, and why.

    CUDA: vectorize (the loop's small passes starve the device). A CPU: the measured rule above —
    vectorize 4 or more shards of at most :data:`CPU_MAX_SHARD_EXAMPLES` examples of a convolution
    network
    whose examples have at most :data:`CPU_MAX_INPUTS_PER_EXAMPLE` input values; a rule's descent
    points (SAMPa, m-RWP) loop (their batched pair was 1.4-1.5x their loop on every CPU row).
    """
    if device.type == "cuda":
        return True, "auto on CUDA: vectorized"
    if points:
        return False, "auto on a CPU: the descent points one after another (measured faster)"
    conv = model is not None and any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    small = (shards >= 4 and 0 < shard_examples <= CPU_MAX_SHARD_EXAMPLES
             and 0 < inputs_per_example <= CPU_MAX_INPUTS_PER_EXAMPLE)
    if conv and small:
        return True, (f"auto on a CPU: vectorized (shards of {shard_examples} examples of "
                      f"{inputs_per_example} inputs, a convolution network)")
    why = "no convolution" if not conv else (f"{shards} shards of {shard_examples} examples of "
                                             f"{inputs_per_example} inputs")
    return False, f"auto on a CPU: the loop ({why})"


# What one vectorized shard holds at its peak, in units of the perturbed weights' bytes: e_s (in
# which w + e_s is then made), the batched matmul's contiguous copy of its weights and, in the
# backward, a layer's stacked gradient before autograd sums it over the shards. Measured with
# benchmarks/memory.py on the 26 M-parameter MLP (weights dominate): mSAM-8 vectorized in chunks
# of 1, 2, 4 shards grows by 4.8, 7.6, 13.3 P over the model (SGD: 2 P), about 2.8 P per shard.
COPIES_PER_SHARD = 3
# The budget for those copies when none is given. CUDA: half the device's free memory at the first
# step. A CPU: 4 P, one shard's copies at a time for a large model (mSAM-8 vectorized then peaks at
# 1.45x SAM's own peak, weights included: within the 2x the memory benchmark holds it to), but at
# least CPU_MIN_BUDGET: small models (the studies' CNNs, under 1 MiB of weights) vectorize freely.
CPU_MIN_BUDGET = 256 * 2**20
CPU_BUDGET_IN_P = 4


def weight_bytes(params: list[Tensor]) -> int:
    """Bytes of the (local) tensors of ``params``."""
    return sum(p.numel() * p.element_size() for p in params)


def default_budget(device: torch.device, weights: int) -> tuple[int, str]:
    """The memory the stacked shard copies may take when the user gave no budget, and how it was set."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2, f"half the free CUDA memory ({free / 2**20:.0f} MiB free)"
    budget = max(CPU_MIN_BUDGET, CPU_BUDGET_IN_P * weights)
    return budget, f"the CPU default, max(256 MiB, {CPU_BUDGET_IN_P} x the weights)"


def shard_chunk(shards: int, weights: int, budget: int) -> int:
    """How many shards' stacked copies fit ``budget`` bytes at once (0: not even one)."""
    per_shard = COPIES_PER_SHARD * weights
    return min(shards, budget // per_shard) if per_shard else shards


class Execution:
    """Which engine runs a step's passes: the one asked for, ``auto``'s choice, and what was used.

    ``auto`` follows :func:`auto_vectorizes` within the memory budget (``budget`` bytes for the
    vectorized shards' stacked copies; None: :func:`default_budget`): the shards are mapped in
    chunks of :attr:`chunk` that fit it, and ``auto`` loops where fewer than 4 would on a CPU (2
    on CUDA), where chunks were measured slower than the loop. Asked for
    ``vectorized`` where not one shard fits, the first step refuses before any pass. A vectorized
    step that fails (an operation without a ``vmap`` rule) makes ``auto`` loop from then on and
    ``vectorized`` raise. :attr:`reason` says why the last choice was made (the run record keeps it).
    """

    def __init__(self, asked: str, budget: int | None = None) -> None:
        self.asked = asked
        self.budget = budget
        self.used: str | None = None
        self.reason: str | None = None
        self.chunk: int | None = None  # shards mapped at once (None: all of them)
        self.error: str | None = None  # why vectorizing failed once (auto then loops)
        # the fit worked out at the first vectorized step, by (shards, perturbed tensors)
        self._fits: dict[tuple[int, int], tuple[int, str]] = {}

    def _fit(self, plan: StepPlan, shards: int) -> tuple[int, str]:
        """The chunk of shards the budget allows, and a sentence saying so (worked out once per
        shard count and parameter set: the budget, on CUDA the free memory, is read at the first
        step, not on every one)."""
        key = (shards, len(plan.flat))
        if key not in self._fits:
            self._fits[key] = self._work_out_fit(plan, shards)
        return self._fits[key]

    def _work_out_fit(self, plan: StepPlan, shards: int) -> tuple[int, str]:
        weights = weight_bytes(plan.flat)
        if self.budget is not None:
            budget, how = self.budget, "memory_budget"
        else:
            budget, how = default_budget(plan.flat[0].device, weights)
        chunk = shard_chunk(shards, weights, budget)
        per_shard = COPIES_PER_SHARD * weights
        return chunk, (f"{shards} shards x {per_shard / 2**20:.1f} MiB of stacked copies against "
                       f"{budget / 2**20:.0f} MiB ({how}): {chunk} at a time")

    def choose(self, plan: StepPlan, model: nn.Module, batch: Any = None) -> str:
        """``loop`` or ``vectorized`` for this step."""
        if not plan.vectorizable or (plan.knobs.sharding.shards == 1 and not plan.knobs.points):
            choice, reason = "loop", "nothing to vectorize (one shard, or no ascent this step)"
        elif self.asked == "loop":
            choice, reason = "loop", "asked: loop"
        elif self.error:
            choice, reason = "loop", f"auto: vectorizing failed once ({self.error})"
        elif is_distributed(model):  # under DDP/FSDP the loop runs one rank's shards
            choice, reason = "loop", "distributed: each rank loops over its own shards"
        elif self.asked == "vectorized":
            choice, reason = "vectorized", "asked: vectorized"
        else:
            n = batch_size(batch) if batch is not None else 0
            sizes = plan.knobs.sharding.sizes(n) if n else [0]
            inputs = _inputs_per_example(batch, n)
            vectorize, reason = auto_vectorizes(plan.flat[0].device, model, max(sizes), inputs,
                                                plan.knobs.points, len(sizes))
            choice = "vectorized" if vectorize else "loop"
        self.chunk = None
        if choice == "vectorized" and not plan.knobs.points:
            shards = len(plan.knobs.sharding.sizes(batch_size(batch))) if batch is not None else 0
            chunk, fits = self._fit(plan, shards)
            if self.asked == "vectorized" and chunk < 1:
                raise SamkitError(
                    f"execution='vectorized' does not fit its memory budget: {fits}. Give a larger "
                    "memory_budget, fewer shards, a perturbation scope (fewer perturbed weights), "
                    "or execution='loop' (one shard's copies at a time) or 'auto'"
                )
            # chunks of 2 or 3 shards were slower than the loop on a CPU (mSAM-8 on cnn1d, one
            # thread: chunks of 2 1.45x the loop, of 4 0.9x); on CUDA any two shards at once pay
            least = 2 if plan.flat[0].device.type == "cuda" else 4
            if self.asked == "auto" and chunk < min(least, shards):
                choice, reason = "loop", f"auto: the loop, for memory ({fits})"
            else:
                self.chunk = chunk if chunk < shards else None
                reason = f"{reason}; {fits}" if chunk < shards else reason
        if choice != self.used:
            log.debug("%s execution for %s (asked: %s; %s)", choice, plan.knobs.sharding, self.asked, reason)
        self.reason = reason
        return choice

    def failed(self, exc: Exception) -> None:
        """A vectorized step failed: raise for ``vectorized``, loop from now on for ``auto``."""
        if self.asked == "vectorized":
            if isinstance(exc, SamkitError):
                raise exc
            raise SamkitError(
                f"execution='vectorized' failed for this model ({type(exc).__name__}: "
                f"{exc}); some operations have no torch.func (vmap) rule. Use "
                "execution='loop', or 'auto', which falls back to the loop"
            ) from exc
        self.error = f"{type(exc).__name__}: {exc}"
        log.warning("vectorized execution failed (%s); using the loop from now on", self.error)
