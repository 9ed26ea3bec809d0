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
from torch.utils import _pytree as pytree

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
from samkit.optim.rules.base import Groups, Rule, RuleContext, global_norm
from samkit.optim.sharding import Sharding, batch_size, micro_batches, shard_batch, split_groups

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
    """Everything an engine needs for one step: the rule and how to perturb, split and restore.

    The cadence's decisions arrive as plain values: ``ascend`` (take the rule's ascent passes),
    ``fixed`` (the perturbation of a step without ascent: a reused ``e``, or none), ``sample`` (the
    examples of a shard the ascent gradient is taken on) and ``decide`` (for a decision that needs
    the step's squared gradient norm, e.g. AE-SAM).
    """

    rule: Rule
    rules: RuleContext
    sharding: Sharding
    micro_batch_size: int | None = None
    backup: WeightBackup = field(default_factory=WeightBackup)
    sync: PerturbationGroups = field(default_factory=lambda: PerturbationGroups(1))
    ascend: bool = True
    fixed: Groups | None = None
    sample: Callable[[int, torch.device], Tensor | None] | None = None
    decide: Callable[[Tensor], bool] | None = None
    keep_full: bool = False  # keep the batch's ascent gradient (for the rule or the cadence)

    @property
    def params(self) -> Groups:
        return self.rules.params

    @property
    def flat(self) -> list[Tensor]:
        return [p for group in self.rules.params for p in group]

    @property
    def ascent_passes(self) -> int:
        """Ascent passes this step: the rule's, or none when the cadence skips the ascent."""
        return self.rule.ascent_passes if self.ascend else 0

    def perturbation(
        self, grads: Groups | None, stacked: bool = False, previous: Groups | None = None
    ) -> tuple[Groups | None, Tensor]:
        """The perturbation per group (``None``: none this step) and its norm (a plain tensor).

        Without an ascent pass: the rule's own (Momentum-SAM) if it needs none, else ``fixed``.
        """
        if grads is None and self.rule.ascent_passes > 0:
            device = self.flat[0].device
            return self.fixed, torch.zeros((), device=device)
        e, norm = self.rule.perturbation(grads, self.rules, stacked=stacked, previous=previous)
        return e, full_value(norm)


@dataclass
class PassResult:
    """What the passes of one step produced (the descent gradient itself is in ``.grad``)."""

    loss: Tensor | None  # mean loss at w (at w + e when no pass at w was taken), detached
    perturbed_loss: Tensor | None  # mean loss at w + e, detached (None: no perturbed pass)
    ascent_norm: Tensor  # sum of the norms the rule reported: non-finite iff an ascent value is
    full_grads: Groups | None  # the batch's ascent gradient per group, when kept
    ascended: bool = True  # whether an ascent pass shaped this step's perturbation
    perturbation: Groups | None = None  # e of the step (one shard only), for a cadence to reuse
    norm_mean: Tensor | None = None  # mean over shards of the first ascent pass's norm
    examples: int = 0  # examples through every forward-backward pass of the step
    passes: float = 0.0  # forward-backward passes over the batch (examples / batch size)


def loop_passes(
    ctx: StepContext,
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    scaler: torch.amp.GradScaler | None,
    stats: RunningStats | None,
) -> PassResult:
    """One shard after another: ascent, perturb, descent (into ``.grad``), exact restore."""
    params, flat = ctx.params, ctx.flat
    lengths = [len(g) for g in params]
    passes = ctx.ascent_passes
    # Shards are about perturbations: a step without ascent is one pass over the whole batch.
    shards, weights = shard_batch(batch, ctx.sharding) if passes else ([batch], [1.0])
    pieces_of = [micro_batches(shard, ctx.micro_batch_size) for shard in shards]
    ctx.backup.save(flat)
    # With one shard the full-batch gradient is the ascent gradient itself: no accumulator.
    accumulate = ctx.keep_full and len(shards) > 1 and passes > 0
    full = [[torch.zeros_like(p) for p in g] for g in params] if accumulate else None
    total: Tensor | None = None
    perturbed: Tensor | None = None
    norm_sum: Tensor | None = None
    first_norms: Tensor | None = None
    examples = 0
    e: Groups | None = None
    ascended = passes > 0
    moved = False  # whether a descent pass ran at a perturbation
    ddp = ddp_of(model) is not None
    try:
        for i, (shard, pieces, w) in enumerate(zip(shards, pieces_of, weights, strict=True)):
            e = None
            ascent_pieces = _sampled(pieces, shard, ctx) if passes else pieces  # the same for every ascent
            for j in range(passes):
                merge = stats if j == 0 else None  # later ascent passes leave the statistics alone
                loss, grads = ascent(model, loss_fn, ascent_pieces, flat, scaler, stats, merge, w, i == 0)
                examples += sum(batch_size(p) for p, _ in ascent_pieces)
                if ddp:
                    ctx.sync.average_(grads)
                if j == 0:
                    total = loss * w if total is None else total + loss * w
                by_group = split_groups(grads, lengths)
                if j == 0 and ctx.decide is not None and not _decided(ctx, grads, ddp):
                    # A plain step after all (AE-SAM): the gradient at w is the update.
                    _to_grad(flat, grads, scaler, ddp)
                    ascended = False
                    del grads, by_group
                    break
                if j == 0 and accumulate:
                    for acc, g in zip(full, by_group, strict=True):
                        torch._foreach_add_(acc, g, alpha=w)
                elif j == 0 and ctx.keep_full:
                    full = by_group
                e, norm = ctx.perturbation(by_group, previous=e)
                norm_sum = norm if norm_sum is None else norm_sum + norm
                if j == 0:
                    first_norms = norm * w if first_norms is None else first_norms + norm * w
                _move_to(ctx, flat, e, restore_first=j > 0)
                del grads, by_group
            if not ascended and passes > 0:
                break  # decided against the ascent: the step's gradient is in .grad already
            if passes == 0:
                e, norm = ctx.perturbation(None)
                norm_sum = norm if norm_sum is None else norm_sum + norm
                _move_to(ctx, flat, e, restore_first=False)
            moved = moved or e is not None
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
                examples += batch_size(piece)
                if stats:
                    if passes == 0:  # the only pass: its statistics are the step's
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
    if norm_sum is None:
        norm_sum = torch.zeros((), device=flat[0].device)
    if ddp and full is not None and ascended:  # the rule's state tracks the global gradient
        all_reduce_mean_([t for g in full for t in g])
    loss = total if total is not None else perturbed
    assert loss is not None
    return PassResult(
        loss=loss,
        perturbed_loss=perturbed if moved else None,
        ascent_norm=norm_sum,
        full_grads=full if ascended else None,
        ascended=ascended,
        perturbation=e if len(shards) == 1 else None,
        norm_mean=first_norms,
        examples=examples,
    )


def _sampled(pieces: list[tuple[Any, float]], shard: Any, ctx: StepContext) -> list[tuple[Any, float]]:
    """The pieces the ascent gradient is taken on: all, or a random share of the shard."""
    if ctx.sample is None:
        return pieces
    n = batch_size(shard)
    device = next(t for t in pytree.tree_leaves(shard) if isinstance(t, Tensor)).device
    idx = ctx.sample(n, device)
    if idx is None:
        return pieces
    subset = pytree.tree_map(lambda t: t[idx] if isinstance(t, Tensor) else t, shard)
    return micro_batches(subset, ctx.micro_batch_size)


def _decided(ctx: StepContext, grads: list[Tensor], ddp: bool) -> bool:
    """Ask the cadence with this step's squared gradient norm (mean over ranks under DDP)."""
    assert ctx.decide is not None
    squared = global_norm(grads).square().reshape(1)
    if ddp:
        all_reduce_mean_([squared])
    return ctx.decide(full_value(squared)[0])


def _to_grad(flat: list[Tensor], grads: list[Tensor], scaler: torch.amp.GradScaler | None, ddp: bool) -> None:
    """Put a gradient computed with ``autograd.grad`` into ``.grad`` (all-reduced, scaled back)."""
    if ddp:
        all_reduce_mean_(grads)
    if scaler is not None:  # the base step unscales .grad itself
        torch._foreach_mul_(grads, scaler.scale(torch.ones((), device=grads[0].device)))
    for p, g in zip(flat, grads, strict=True):
        p.grad = g


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
