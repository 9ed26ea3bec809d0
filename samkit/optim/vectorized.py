r"""Vectorized m-sharpness: every shard's ascent and descent pass at once.

The loop path runs ``2k`` forward-backward passes for ``k`` shards, one after another. Here the
``k`` equal-sized shards are stacked into a leading dimension and the model's forward is mapped
over it with ``torch.func.vmap`` + ``functional_call``, against *stacked per-shard parameter
copies* ``P[s] = w`` (ascent) or ``P[s] = w + e_s`` (descent). Per-shard gradients come from one
ordinary autograd call on ``sum_s L_s(P[s])`` (``L_s`` depends on ``P[s]`` only), so this is two
batched passes per step whatever ``k`` is. Convolutions and matmuls under ``vmap`` become grouped /
batched kernels, which keeps a GPU busy where ``k`` small passes would starve it.

Why the forward only is mapped (not ``vmap(grad(...))``): ordinary autograd through the mapped
forward works under ``torch.autocast`` (bf16), where ``torch.func.grad`` inside ``vmap`` fails with
a dtype mismatch in the backward.

BatchNorm in train mode sees per-shard batch statistics (each shard is its own batch, as in the
loop). Running statistics are stacked per shard, updated in place under ``vmap`` by the ascent
pass, and merged once, weighted by shard size; the descent pass updates throw-away copies. The real
weights are never moved: there is nothing to restore.

Shards of unequal size (``shards=3`` on 8 examples, or a smaller last ``shard_size`` shard) form at
most two runs of equal size; each run is one mapped call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils import _pytree as pytree

from samkit.errors import SamkitError
from samkit.optim.batchnorm import RunningStats
from samkit.optim.sharding import split_groups

if TYPE_CHECKING:
    from samkit.optim.sam import SAM


class _Bound(nn.Module):
    """``loss_fn`` bound to ``model`` as a module, so ``functional_call`` can swap its tensors."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> Tensor:
        return self.loss_fn(self.model, batch)


def equal_runs(sizes: list[int]) -> list[tuple[int, int, int]]:
    """Consecutive shards of equal size as ``(first example, number of shards, shard size)``."""
    runs: list[tuple[int, int, int]] = []
    start = 0
    for s in sizes:
        if runs and runs[-1][2] == s:
            first, count, _ = runs[-1]
            runs[-1] = (first, count + 1, s)
        else:
            runs.append((start, 1, s))
        start += s
    return runs


def parameter_names(model: nn.Module, flat: list[Tensor]) -> list[str]:
    """The model's name of every optimizer parameter (error if one is not the model's)."""
    names = {id(p): n for n, p in model.named_parameters()}
    missing = [i for i, p in enumerate(flat) if id(p) not in names]
    if missing:
        raise SamkitError(
            f"{len(missing)} optimizer parameter(s) are not parameters of the model passed to "
            "train_step: the vectorized execution needs them by name; use execution='loop'"
        )
    return ["model." + names[id(p)] for p in flat]


def vectorized_passes(
    opt: SAM,
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    batch: Any,
    sizes: list[int],
    params: list[list[Tensor]],
    scaler: torch.amp.GradScaler | None,
    stats: RunningStats | None,
) -> tuple[Tensor, Tensor, list[list[Tensor]] | None]:
    """Ascent and descent passes for all shards; leaves ``sum_s w_s h_s`` in ``.grad``.

    Returns the unperturbed mean loss, the sum of the per-shard ascent norms (non-finite iff some
    ascent gradient is) and, when the rule needs it, the full-batch ascent gradient per group.
    Writes the merged running statistics into ``stats``.
    """
    flat = [p for group in params for p in group]
    names = parameter_names(model, flat)
    bound = _Bound(model, loss_fn)
    stat_names = ["model." + name for name in stats.names] if stats else []
    n = sum(sizes)

    def shard_loss(p: dict[str, Tensor], b: dict[str, Tensor], shard: Any) -> Tensor:
        return functional_call(bound, (p, b), (shard,), strict=False)

    mapped = vmap(shard_loss, in_dims=(0, 0, 0), randomness="different")

    def stacked_stats(count: int) -> dict[str, Tensor]:
        return {
            name: b.unsqueeze(0).expand(count, *b.shape).clone()
            for name, b in zip(stat_names, stats.tensors if stats else [], strict=True)
        }

    full = [[torch.zeros_like(p) for p in g] for g in params] if opt._needs_full_grad else None
    merged: list[Tensor] | None = None
    total: Tensor | None = None
    norm_sum: Tensor | None = None
    sizes_per_group = [len(g) for g in params]
    for first, count, size in equal_runs(sizes):
        w = size / n
        sub = pytree.tree_map(
            lambda t, first=first, count=count, size=size: t[first : first + count * size].reshape(
                count, size, *t.shape[1:]
            )
            if isinstance(t, Tensor)
            else t,
            batch,
        )
        # Ascent at w for every shard: the stacked copies are expanded views (no memory).
        stacked = [p.detach().unsqueeze(0).expand(count, *p.shape).requires_grad_() for p in flat]
        buffers = stacked_stats(count)
        losses = mapped(dict(zip(names, stacked, strict=True)), buffers, sub)
        target = losses.sum()
        grads = list(
            torch.autograd.grad(
                scaler.scale(target) if scaler is not None else target,
                stacked,
                allow_unused=True,
                materialize_grads=True,
            )
        )
        if scaler is not None:
            torch._foreach_div_(grads, scaler._scale)
        part = losses.detach().sum() * w
        total = part if total is None else total + part
        if stats:
            vals = [buffers[name] for name in stat_names]
            n_float = len(stats.floats)
            summed = [v.sum(0) * w for v in vals[:n_float]]
            if merged is None:
                merged = summed + [v[0] for v in vals[n_float:]]
            else:
                torch._foreach_add_(merged[:n_float], summed)
        by_group = split_groups(grads, sizes_per_group)
        if full is not None:
            for acc, g in zip(full, by_group, strict=True):
                torch._foreach_add_(acc, [x.sum(0) for x in g], alpha=w)
        e, norms = opt._perturb(params, by_group, stacked=True)
        del grads, by_group, stacked
        norm_sum = norms.sum() if norm_sum is None else norm_sum + norms.sum()
        # Descent at w + e_s for every shard; running statistics go to throw-away copies.
        perturbed = torch._foreach_add(e, [p.detach().unsqueeze(0) for p in flat])
        del e
        for t in perturbed:
            t.requires_grad_()
        losses = mapped(dict(zip(names, perturbed, strict=True)), stacked_stats(count), sub)
        target = losses.sum() * w
        descent = torch.autograd.grad(
            scaler.scale(target) if scaler is not None else target,
            perturbed,
            allow_unused=True,
            materialize_grads=True,
        )
        del perturbed
        summed = [h.sum(0) for h in descent]
        if flat[0].grad is None:
            for p, h in zip(flat, summed, strict=True):
                p.grad = h
        else:
            torch._foreach_add_([p.grad for p in flat], summed)
    if stats and merged is not None:
        stats.set_merged(merged)
    assert total is not None and norm_sum is not None
    return total, norm_sum, full
