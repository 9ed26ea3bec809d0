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
most two runs of equal size; each run is one mapped call (per micro-batch: with
``micro_batch_size`` every shard's examples are taken in pieces of that many, all shards at once,
and the gradients accumulated). Rules with several ascent passes map each pass the same way, at
the stacked perturbed weights ``w + e_s``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils import _pytree as pytree

from samkit._batch import batch_size
from samkit.errors import SamkitError
from samkit.optim.batchnorm import RunningStats
from samkit.optim.engine import (
    PassResult,
    Totals,
    WeightBackup,
    ascend,
    check_dense,
    combine_points,
    unscale_,
)
from samkit.optim.plan import StepPlan
from samkit.optim.rules.base import Groups
from samkit.optim.sharding import micro_batches, piece_sizes


class _Bound(nn.Module):
    """``loss_fn`` bound to ``model`` as a module, so ``functional_call`` can swap its tensors."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> Tensor:
        return self.loss_fn(self.model, batch)


def equal_runs(sizes: list[int], limit: int | None = None) -> list[tuple[int, int, int]]:
    """Consecutive shards of equal size as ``(first example, number of shards, shard size)``, each
    run of at most ``limit`` shards (the chunks a memory budget allows; None: no limit)."""
    runs: list[tuple[int, int, int]] = []
    start = 0
    for s in sizes:
        if runs and runs[-1][2] == s and (limit is None or runs[-1][1] < limit):
            first, count, _ = runs[-1]
            runs[-1] = (first, count + 1, s)
        else:
            runs.append((start, 1, s))
        start += s
    return runs


def chunks(size: int, micro_batch_size: int | None) -> list[tuple[int, int]]:
    """``(start, length)`` of the pieces a shard of ``size`` examples is taken in (the loop's)."""
    lengths = piece_sizes(size, micro_batch_size)
    starts = [sum(lengths[:j]) for j in range(len(lengths))]
    return list(zip(starts, lengths, strict=True))


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
    ctx: StepPlan,
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    batch: Any,
    scaler: torch.amp.GradScaler | None,
    stats: RunningStats | None,
    backup: WeightBackup,
    chunk: int | None = None,
) -> PassResult:
    """Ascent and descent passes for all shards; leaves ``sum_s w_s h_s`` in ``.grad``.

    ``chunk``: map at most that many shards at once (their stacked copies are what a vectorized
    step holds over the loop's; :class:`~samkit.optim.executions.Execution` sizes it to a memory
    budget). The chunks' sums are the same sums, in more calls.

    The ascent is the engine's :func:`~samkit.optim.engine.ascend` and the totals its
    :class:`~samkit.optim.engine.Totals`; what is this execution's own is how shard ``j``'s gradient
    is taken (``take``: every shard of a run at once, mapped) and the stacked descent. Writes the
    merged running statistics into ``stats``.
    """
    if ctx.knobs.points:
        return vectorized_points(ctx, model, loss_fn, batch, scaler, stats, backup)
    flat = ctx.flat
    others, every = ctx.others, ctx.all_flat
    sizes = ctx.knobs.sharding.sizes(batch_size(batch))
    if ctx.ascents < 1 or ctx.decide is not None:
        raise SamkitError(
            "a step without ascent pass (or one decided after the gradient) has nothing to "
            "vectorize: use execution='loop'"
        )
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

    def scaled(target: Tensor) -> Tensor:
        return scaler.scale(target) if scaler is not None else target

    totals = Totals(ctx, ctx.keep_full)
    merged: list[Tensor] | None = None
    for first, count, size in equal_runs(sizes, chunk):
        w = size / n
        sub = pytree.tree_map(
            lambda t, first=first, count=count, size=size: t[first : first + count * size].reshape(
                count, size, *t.shape[1:]
            )
            if isinstance(t, Tensor)
            else t,
            batch,
        )
        pieces = _pieces(sub, size, ctx.knobs.micro_batch_size)
        ascent_pieces = _pieces(*_sampled(sub, count, size, ctx), ctx.knobs.micro_batch_size)

        def take(j: int, e: Groups | None, count: int = count, w: float = w,
                 ascent_pieces: Any = ascent_pieces) -> tuple[Tensor | None, list[Tensor]]:
            """Every shard's gradient of ascent pass ``j`` at once (stacked ``[count, ...]``), and
            the shards' summed loss (its weight ``v_j`` per piece; the totals weigh it by ``w``)."""
            nonlocal merged
            grads: list[Tensor] | None = None
            loss: Tensor | None = None
            for piece, v in ascent_pieces:
                if j == 0:
                    # Ascent at w for every shard: the stacked copies are expanded views (no memory).
                    stacked = [p.detach().unsqueeze(0).expand(count, *p.shape).requires_grad_() for p in flat]
                else:  # a later ascent pass, at w + e_s
                    stacked = _perturbed(e, flat)
                buffers = stacked_stats(count)
                losses = mapped(dict(zip(names, stacked, strict=True)), buffers, piece)
                target = losses.sum() if v == 1.0 else losses.sum() * v
                piece_grads = list(
                    torch.autograd.grad(scaled(target), stacked, allow_unused=True, materialize_grads=True)
                )
                check_dense(piece_grads)
                if scaler is not None:
                    unscale_(piece_grads, scaler)
                if grads is None:
                    grads = piece_grads
                else:
                    torch._foreach_add_(grads, piece_grads)
                del stacked, piece_grads
                totals.examples += count * _size_of(piece)
                if j > 0:
                    continue
                part = losses.detach().sum() * v if v != 1.0 else losses.detach().sum()
                loss = part if loss is None else loss + part
                if stats:
                    weight = w * v if v != 1.0 else w
                    vals = [buffers[name] for name in stat_names]
                    n_float = len(stats.floats)
                    summed = [x.sum(0) * weight for x in vals[:n_float]]
                    if merged is None:
                        merged = summed + [x[0] for x in vals[n_float:]]
                    else:
                        torch._foreach_add_(merged[:n_float], summed)
            assert grads is not None
            return loss, grads

        ascent = ascend(ctx, take, backup=None, stacked=True, owned=True)
        totals.ascent(ascent, w)
        assert ascent.e is not None
        offsets = [t for group in ascent.e for t in group]
        del ascent  # e lives on in offsets only (the totals keep one shard's e at most): freed per chunk
        # Descent at w + e_s for every shard; running statistics go to throw-away copies. The
        # stacked weights are one leaf per parameter (w), expanded, plus e_s: autograd sums the
        # shards' gradients into the leaf layer by layer (the expand's backward), so the shards'
        # descent gradients are never all held at once; the last piece makes w + e_s in e's own
        # storage (e is read no more).
        bases = [p.detach().requires_grad_() for p in flat]
        for k, (piece, v) in enumerate(pieces):
            last = k == len(pieces) - 1
            perturbed = [o.detach().add_(b.unsqueeze(0)) if last else o + b.unsqueeze(0)
                         for o, b in zip(offsets, bases, strict=True)]
            losses = mapped(dict(zip(names, perturbed, strict=True)), stacked_stats(count), piece)
            weight = w * v if v != 1.0 else w
            target = losses.sum() * weight
            totals.descent(losses.detach().sum() * weight)
            # The parameters outside the perturbation scope are the model's own (not mapped): their
            # gradient comes out summed over the shards already.
            summed = list(torch.autograd.grad(
                scaled(target), [*bases, *others], allow_unused=True, materialize_grads=True
            ))
            totals.examples += count * _size_of(piece)
            del perturbed
            current = [p.grad for p in every]
            if any(g is None for g in current):
                for p, h in zip(every, summed, strict=True):
                    p.grad = h if p.grad is None else p.grad + h
            else:
                torch._foreach_add_([g for g in current if g is not None], summed)
            del summed, current  # in .grad now: not held through the next chunk's passes
        del offsets
    if stats and merged is not None:
        stats.set_merged(merged)
    return totals.result(ddp=False, shards=len(sizes), n=n)


def vectorized_points(
    plan: StepPlan,
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    batch: Any,
    scaler: torch.amp.GradScaler | None,
    stats: RunningStats | None,
    backup: WeightBackup,
) -> PassResult:
    """A rule's descent points as one batched pass: every parameter stacked ``[k, ...]`` at
    ``w + o_i`` (the points' offsets; the parameters outside the scope at ``w``), the forward mapped
    over the points on the same batch, each point's gradient from one autograd call (what
    ``engine.points_passes`` computes one point after another). SAMPa's two gradients do not depend
    on each other: this is its parallel pair on one device.
    """
    flat, every = plan.flat, plan.all_flat
    points, norm = plan.knobs.rule.descent_points(plan.rules)
    k, at = len(points), plan.knobs.rule.stats_point(len(points))
    names = parameter_names(model, every)
    bound = _Bound(model, loss_fn)
    stat_names = ["model." + name for name in stats.names] if stats else []

    def point_loss(p: dict[str, Tensor], b: dict[str, Tensor], piece: Any) -> Tensor:
        return functional_call(bound, (p, b), (piece,), strict=False)

    mapped = vmap(point_loss, in_dims=(0, 0, None), randomness="different")
    offsets = [[t for group in o for t in group] if o is not None else None for o, _ in points]
    grads: list[Tensor] | None = None
    losses: Tensor | None = None
    merged: list[Tensor] | None = None
    for piece, v in micro_batches(batch, plan.knobs.micro_batch_size):
        stacked = []
        for j, p in enumerate(every):
            rows = [p.detach() + o[j] if (o is not None and j < len(flat)) else p.detach() for o in offsets]
            stacked.append(torch.stack(rows).requires_grad_())
        buffers = {name: b.unsqueeze(0).expand(k, *b.shape).clone()
                   for name, b in zip(stat_names, stats.tensors if stats else [], strict=True)}
        out = mapped(dict(zip(names, stacked, strict=True)), buffers, piece)
        target = out.sum() if v == 1.0 else out.sum() * v
        target = scaler.scale(target) if scaler is not None else target
        piece_grads = list(torch.autograd.grad(target, stacked, allow_unused=True, materialize_grads=True))
        check_dense(piece_grads)
        if scaler is not None:
            unscale_(piece_grads, scaler)
        grads = piece_grads if grads is None else list(torch._foreach_add(grads, piece_grads))
        part = out.detach() * v
        losses = part if losses is None else losses + part
        if stats:
            vals = [buffers[name][at] for name in stat_names]
            n_float = len(stats.floats)
            if merged is None:
                merged = [x * v for x in vals[:n_float]] + vals[n_float:]
            else:
                torch._foreach_add_(merged[:n_float], vals[:n_float], alpha=v)
    assert grads is not None and losses is not None
    if stats and merged is not None:
        stats.set_merged(merged)
    per_point = [[g[i] for g in grads] for i in range(k)]
    return combine_points(plan, points, per_point, list(losses.unbind(0)), at, norm, scaler,
                          batch_size(batch))


def _pieces(sub: Any, size: int, micro_batch_size: int | None) -> list[tuple[Any, float]]:
    """A stacked run ``[count, size, ...]`` cut along the example dimension, with weights."""
    return [
        (pytree.tree_map(lambda t, a=a, m=m: t[:, a : a + m] if isinstance(t, Tensor) else t, sub)
         if (a, m) != (0, size) else sub, m / size)
        for a, m in chunks(size, micro_batch_size)
    ]


def _sampled(sub: Any, count: int, size: int, ctx: StepPlan) -> tuple[Any, int]:
    """Each shard's examples for the ascent: all, or the cadence's random share (per shard)."""
    if ctx.knobs.sample is None:
        return sub, size
    device = next(t for t in pytree.tree_leaves(sub) if isinstance(t, Tensor)).device
    drawn = [ctx.knobs.sample(size, device) for _ in range(count)]
    rows_of = [d for d in drawn if d is not None]
    if len(rows_of) < count:
        return sub, size
    idx = torch.stack(rows_of)  # [count, m]
    rows = torch.arange(count, device=device).unsqueeze(1)
    return pytree.tree_map(lambda t: t[rows, idx] if isinstance(t, Tensor) else t, sub), idx.shape[1]


def _size_of(piece: Any) -> int:
    """Examples per shard of a stacked piece ``[count, m, ...]``."""
    return next(t for t in pytree.tree_leaves(piece) if isinstance(t, Tensor)).shape[1]


def _perturbed(e: Groups | None, flat: list[Tensor]) -> list[Tensor]:
    """Stacked leaf copies ``w + e_s`` (requiring grad) for every shard."""
    assert e is not None
    offsets = [t for group in e for t in group]
    stacked = list(torch._foreach_add(offsets, [p.detach().unsqueeze(0) for p in flat]))
    for t in stacked:
        t.requires_grad_()
    return stacked
