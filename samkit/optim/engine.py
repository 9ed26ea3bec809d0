"""The loop execution: one shard after another, weights perturbed in place and restored by copy.

For each shard ``s`` (weight ``w_s = n_s / n``), split into micro-batches ``j`` (weight ``v_j``)
when ``micro_batch_size`` asks for it:

1. ascent: ``g_s = sum_j v_j grad L_sj(w)`` (via ``autograd.grad``, so the descent gradients
   accumulating in ``.grad`` are untouched; under FSDP2 via ``backward``, whose hooks
   reduce-scatter into ``.grad``), repeated at the last perturbation for rules with several ascent
   passes, skipped for rules with none;
2. the rule turns ``g_s`` into ``e_s`` and the weights move to ``w + e_s``;
3. descent: ``w_s v_j grad L_sj(w + e_s)`` is added to ``.grad`` for every micro-batch;
4. the weights are restored by copy (bit-exact).

Under DDP the ascent runs under ``no_sync()`` and only the step's last backward all-reduces.
BatchNorm: the first pass over each piece (the ascent, or the descent for a rule without ascent)
contributes its statistics to one merged update; every other pass leaves them as they were (see
:mod:`samkit.optim.batchnorm`).

The engine sees a :class:`StepContext` — the rule, its context, the sharding and a weight backup —
never the optimizer.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from samkit.errors import SamkitError
from samkit.optim.batchnorm import RunningStats
from samkit.optim.distributed import (
    PerturbationGroups,
    all_reduce_mean_,
    ddp_of,
    full_value,
    is_fsdp,
    local_tensors,
    no_sync,
)
from samkit.optim.rules.base import Groups, Rule, RuleContext
from samkit.optim.sharding import Sharding, micro_batches, shard_batch, split_groups

LossFn = Callable[[nn.Module, Any], Tensor]


def weights_moved() -> None:
    """Call after changing weights in place: ``torch.autocast`` caches the low-precision copy of every
    weight for the whole autocast region, and would serve a pass at ``w + e`` the cached copy of
    ``w`` (SAM would silently become the base optimizer under mixed precision)."""
    torch.clear_autocast_cache()  # cheap when autocast is off: an empty cache


class WeightBackup:
    """A copy of the weights in a reused buffer, put back by copy (so bit-exactly)."""

    def __init__(self) -> None:
        self._copy: list[Tensor] | None = None

    def save(self, flat: list[Tensor]) -> None:
        flat = local_tensors(flat)
        b = self._copy
        if b is None or len(b) != len(flat) or any(
            x.shape != p.shape or x.dtype != p.dtype or x.device != p.device
            for x, p in zip(b, flat, strict=True)
        ):
            self._copy = [p.detach().clone() for p in flat]
        else:
            torch._foreach_copy_(b, [p.detach() for p in flat])

    def restore(self, flat: list[Tensor]) -> None:
        assert self._copy is not None
        with torch.no_grad():
            torch._foreach_copy_(local_tensors(flat), self._copy)
        weights_moved()


@dataclass
class StepContext:
    """Everything an engine needs for one step: the rule and how to perturb, split and restore."""

    rule: Rule
    rules: RuleContext
    sharding: Sharding
    micro_batch_size: int | None = None
    backup: WeightBackup = field(default_factory=WeightBackup)
    sync: PerturbationGroups = field(default_factory=lambda: PerturbationGroups(1))

    @property
    def params(self) -> Groups:
        return self.rules.params

    @property
    def flat(self) -> list[Tensor]:
        return [p for group in self.rules.params for p in group]

    def perturbation(
        self, grads: Groups | None, stacked: bool = False, previous: Groups | None = None
    ) -> tuple[Groups | None, Tensor]:
        """The rule's perturbation per group (``None``: none this step) and its norm (plain tensor)."""
        e, norm = self.rule.perturbation(grads, self.rules, stacked=stacked, previous=previous)
        return e, full_value(norm)


@dataclass
class PassResult:
    """What the passes of one step produced (the descent gradient itself is in ``.grad``)."""

    loss: Tensor  # mean loss at w (at w + e for a rule without ascent pass), detached
    perturbed_loss: Tensor  # mean loss at w + e, detached
    ascent_norm: Tensor  # sum of the norms the rule reported: non-finite iff an ascent value is
    full_grads: Groups | None  # the batch's ascent gradient per group, when the rule keeps it


def loop_passes(
    ctx: StepContext,
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    scaler: torch.amp.GradScaler | None,
    stats: RunningStats | None,
) -> PassResult:
    """One shard after another: ascent, perturb, descent (into ``.grad``), exact restore."""
    rule, params, flat = ctx.rule, ctx.params, ctx.flat
    lengths = [len(g) for g in params]
    shards, weights = shard_batch(batch, ctx.sharding)
    pieces_of = [micro_batches(shard, ctx.micro_batch_size) for shard in shards]
    ctx.backup.save(flat)
    # With one shard the full-batch gradient is the ascent gradient itself: no accumulator.
    accumulate = rule.needs_full_grad and len(shards) > 1
    full = [[torch.zeros_like(p) for p in g] for g in params] if accumulate else None
    total: Tensor | None = None
    perturbed: Tensor | None = None
    norm_sum: Tensor | None = None
    ddp = ddp_of(model) is not None
    try:
        for i, (pieces, w) in enumerate(zip(pieces_of, weights, strict=True)):
            e: Groups | None = None
            for j in range(rule.ascent_passes):
                merge = stats if j == 0 else None  # later ascent passes leave the statistics alone
                loss, grads = ascent(model, loss_fn, pieces, flat, scaler, stats, merge, w, i == 0)
                if ddp:
                    ctx.sync.average_(grads)
                if j == 0:
                    total = loss * w if total is None else total + loss * w
                by_group = split_groups(grads, lengths)
                if j == 0 and accumulate:
                    for acc, g in zip(full, by_group, strict=True):
                        torch._foreach_add_(acc, g, alpha=w)
                elif j == 0 and rule.needs_full_grad:
                    full = by_group
                e, norm = ctx.perturbation(by_group, previous=e)
                norm_sum = norm if norm_sum is None else norm_sum + norm
                _move_to(ctx, flat, e, restore_first=j > 0)
                del grads, by_group
            if rule.ascent_passes == 0:
                e, norm = ctx.perturbation(None)
                norm_sum = norm if norm_sum is None else norm_sum + norm
                _move_to(ctx, flat, e, restore_first=False)
            del e
            for k, (piece, v) in enumerate(pieces):
                last = i == len(shards) - 1 and k == len(pieces) - 1
                scale = w * v if v != 1.0 else w
                # DDP all-reduces once: in the step's last backward, over the accumulated grads.
                with no_sync(model) if not last else nullcontext():
                    descent = loss_fn(model, piece)
                    part = descent.detach() * scale
                    perturbed = part if perturbed is None else perturbed + part
                    descent = descent * scale if scale != 1.0 else descent
                    (scaler.scale(descent) if scaler is not None else descent).backward()
                if stats:
                    if rule.ascent_passes == 0:  # the only pass: its statistics are the step's
                        stats.accumulate(scale, first=i == 0 and k == 0)
                    stats.restore()
            ctx.backup.restore(flat)
    except BaseException:
        ctx.backup.restore(flat)
        if stats:
            stats.restore()
            stats.clear()
        for p in flat:
            p.grad = None
        raise
    assert perturbed is not None and norm_sum is not None
    if ddp and full is not None:  # the rule's state tracks the global gradient on every rank
        all_reduce_mean_([t for g in full for t in g])
    return PassResult(
        loss=perturbed if total is None else total,
        perturbed_loss=perturbed,
        ascent_norm=norm_sum,
        full_grads=full,
    )


def _move_to(ctx: StepContext, flat: list[Tensor], e: Groups | None, restore_first: bool) -> None:
    """Weights to ``w + e`` (from ``w``, restored first when they sit at an earlier perturbation)."""
    if restore_first:
        ctx.backup.restore(flat)
    if e is not None:
        with torch.no_grad():
            torch._foreach_add_(flat, [t for group in e for t in group])
        weights_moved()


def ascent(
    model: nn.Module,
    loss_fn: LossFn,
    pieces: list[tuple[Any, float]],
    flat: list[Tensor],
    scaler: torch.amp.GradScaler | None,
    stats: RunningStats | None,
    merge: RunningStats | None,
    weight: float,
    first_shard: bool,
) -> tuple[Tensor, list[Tensor]]:
    """Mean loss and gradient of a shard at the current weights, accumulated over its pieces.

    ``.grad`` is not touched; gradients are unscaled. Each piece's BatchNorm statistics are put
    back, after being added to ``merge`` (with weight ``weight * v_j``) when it is given.
    """
    loss_sum: Tensor | None = None
    grad_sum: list[Tensor] | None = None
    for k, (piece, v) in enumerate(pieces):
        with no_sync(model):  # each rank perturbs with its own gradient
            loss, grads = gradient(model, loss_fn, piece, flat, scaler)
        if merge:
            merge.accumulate(weight * v if v != 1.0 else weight, first=first_shard and k == 0)
        if stats:
            stats.restore()
        if len(pieces) == 1:
            return loss, grads
        if grad_sum is None:
            loss_sum, grad_sum = loss * v, torch._foreach_mul(grads, v)
        else:
            loss_sum = loss_sum + loss * v
            torch._foreach_add_(grad_sum, grads, alpha=v)
    assert loss_sum is not None and grad_sum is not None
    return loss_sum, grad_sum


def gradient(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    flat: list[Tensor],
    scaler: torch.amp.GradScaler | None,
) -> tuple[Tensor, list[Tensor]]:
    """Loss and its gradient for one piece of data (unscaled, without touching ``.grad``)."""
    loss = loss_fn(model, batch)
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
    check_dense(grads)
    if scaler is not None:
        unscale_(grads, scaler)
    return loss.detach(), grads


def unscale_(grads: list[Tensor], scaler: torch.amp.GradScaler) -> None:
    """Divide by the scaler's current scale, read as a tensor through its public API (no sync)."""
    torch._foreach_div_(grads, scaler.scale(torch.ones((), device=grads[0].device)))


def check_dense(grads: list[Tensor]) -> None:
    """Sparse gradients (``nn.Embedding(sparse=True)``) have no norm or perturbation: say so."""
    if any(g.layout != torch.strided for g in grads):
        raise SamkitError(
            "a parameter has a sparse gradient (e.g. nn.Embedding(..., sparse=True)); the SAM "
            "family needs dense gradients to normalise and perturb: build the layer with "
            "sparse=False"
        )
