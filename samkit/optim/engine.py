"""The loop execution: one shard after another, weights perturbed in place and restored by copy.

For each shard ``s`` (weight ``w_s = n_s / n``): the ascent pass at ``w`` gives the loss and
``g_s`` (via ``autograd.grad``, so the descent gradients accumulating in ``.grad`` are not
touched; under FSDP2 via ``backward``, whose hooks reduce-scatter into ``.grad``); the rule turns
``g_s`` into ``e_s``; the weights move to ``w + e_s``; the descent pass adds ``w_s * grad
L_s(w + e_s)`` to ``.grad``; the weights are restored by copy. Under DDP the ascent runs under
``no_sync()`` and only the last shard's descent backward all-reduces. BatchNorm statistics: see
:mod:`samkit.optim.batchnorm`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from samkit.errors import SamkitError
from samkit.optim.batchnorm import RunningStats
from samkit.optim.distributed import all_reduce_mean_, ddp_of, is_fsdp, no_sync
from samkit.optim.sharding import shard_batch, split_groups

if TYPE_CHECKING:
    from samkit.optim.sam import SAM


def loop_passes(
    opt: SAM,
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    batch: Any,
    params: list[list[Tensor]],
    scaler: torch.amp.GradScaler | None,
    stats: RunningStats | None,
) -> tuple[Tensor, Tensor, list[list[Tensor]] | None]:
    """One shard after another: ascent, perturb, descent (into ``.grad``), exact restore."""
    flat = [p for group in params for p in group]
    shards, weights = shard_batch(batch, opt.sharding)
    opt._save(flat)
    # With one shard the full-batch gradient is the ascent gradient itself: no accumulator.
    accumulate = opt._needs_full_grad and len(shards) > 1
    full = [[torch.zeros_like(p) for p in g] for g in params] if accumulate else None
    total: Tensor | None = None
    norm_sum: Tensor | None = None
    ddp = ddp_of(model) is not None
    try:
        for i, (shard, w) in enumerate(zip(shards, weights, strict=True)):
            with no_sync(model):  # each rank perturbs with its own gradient
                loss, grads = ascent(model, loss_fn, shard, flat, scaler)
            if ddp:
                opt.perturbation_groups.average_(grads)
            total = loss * w if total is None else total + loss * w
            if stats:
                stats.accumulate(w, first=i == 0)
                stats.restore()
            by_group = split_groups(grads, [len(g) for g in params])
            if accumulate:
                for acc, g in zip(full, by_group, strict=True):
                    torch._foreach_add_(acc, g, alpha=w)
            elif opt._needs_full_grad:
                full = by_group
            e, norm = opt._perturb(params, by_group)
            norm_sum = norm if norm_sum is None else norm_sum + norm
            with torch.no_grad():
                torch._foreach_add_(flat, e)
            del grads, by_group, e
            # DDP all-reduces once: in the backward of the last shard, over the accumulated grads.
            with no_sync(model) if i < len(shards) - 1 else nullcontext():
                descent = loss_fn(model, shard)
                descent = descent * w if w != 1.0 else descent
                (scaler.scale(descent) if scaler is not None else descent).backward()
            if stats:
                stats.restore()
            opt._restore(flat)
    except BaseException:
        opt._restore(flat)
        if stats:
            stats.restore()
            stats.clear()
        opt.zero_grad(set_to_none=True)
        raise
    assert total is not None and norm_sum is not None
    if ddp and full is not None:  # the rule's state tracks the global gradient on every rank
        all_reduce_mean_([t for g in full for t in g])
    return total, norm_sum, full


def ascent(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    shard: Any,
    flat: list[Tensor],
    scaler: torch.amp.GradScaler | None,
) -> tuple[Tensor, list[Tensor]]:
    """Unperturbed loss and its gradient for one shard (unscaled, without touching ``.grad``)."""
    loss = loss_fn(model, shard)
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        raise SamkitError(
            "loss_fn(model, batch) must return the mean loss as a 0-d tensor, got "
            f"{type(loss).__name__}{'' if not isinstance(loss, Tensor) else tuple(loss.shape)}"
        )
    if not loss.requires_grad:
        raise SamkitError(
            "the loss does not depend on any parameter that requires grad: compute it from "
            "model(...) inside loss_fn, not under torch.no_grad()"
        )
    target = scaler.scale(loss) if scaler is not None else loss
    if is_fsdp(model):
        # FSDP2 reduce-scatters the gradient into the sharded parameters' .grad in its backward
        # hooks (autograd.grad would not see them): run backward, take the grads, and put back
        # the descent gradients accumulated so far.
        accumulated = [p.grad for p in flat]
        for p in flat:
            p.grad = None
        target.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in flat]
        for p, g in zip(flat, accumulated, strict=True):
            p.grad = g
    else:
        grads = list(
            torch.autograd.grad(target, flat, allow_unused=True, materialize_grads=True)
        )
    if scaler is not None:
        torch._foreach_div_(grads, scaler._scale)  # the scale tensor: no host sync
    return loss.detach(), grads
