"""The passes of a step: ascent, perturb, descent, exact restore — one ascent routine for every
execution and front end, one set of running totals for every execution of ``train_step``.

What one pass is (:func:`gradient`): a loss and its gradient at the current weights, from
``autograd.grad`` (so ``.grad``, where descent gradients accumulate, is not touched; under FSDP2
from ``backward``, whose hooks reduce-scatter into ``.grad``), unscaled from a ``GradScaler``
through its public API (no host sync), and dense.

One shard's ascent is :func:`ascend`, whoever takes the gradients: ``train_step``'s executions
(the loop here, :mod:`~samkit.optim.vectorized`'s stacked shards), ``step(closure)`` (the closure)
and ``first_step`` (the gradient the caller left in ``.grad``) each supply only ``take(j, e)``, the
gradient of ascent pass ``j`` at the perturbation ``e`` of the pass before. For each ascent pass of
the rule it takes the gradient, asks a decision that waits for it (AE-SAM), keeps the batch's ascent
gradient when the plan says so, turns it into ``e_j`` and, for the executions that move the real
weights, moves them to ``w + e_j`` (exactly back by copy: :class:`WeightBackup`). A step without
ascent moves them by the plan's fixed (or the rule's own) perturbation. What the shards add up to
(the loss at ``w`` and at ``w + e``, the norms, the batch's ascent gradient, the examples) is kept
by :class:`Totals` for the loop and the vectorized shards; the two routes that add nothing up —
a rule's descent points (:func:`combine_points`, one batch, no ascent) and the closure / two-call
front ends (one shard, the caller's passes) — write their :class:`PassResult` directly.

The loop execution (:func:`loop_passes`), for each shard ``s`` (weight ``w_s = n_s / n``) split
into micro-batches ``j`` (weight ``v_j``) when ``micro_batch_size`` asks for it:

1. ascent: ``g_s = sum_j v_j grad L_sj(w)``, repeated at the last perturbation for rules with
   several ascent passes, skipped for rules with none;
2. the rule turns ``g_s`` into ``e_s`` and the weights move to ``w + e_s``;
3. descent: ``w_s v_j grad L_sj(w + e_s)`` is added to ``.grad`` for every micro-batch;
4. the weights are restored by copy.

A plain step (a cadence skipped the ascent, nothing reused) is the same loop with one shard, no
ascent and nothing moved: no backup, and its BatchNorm statistics kept as they come. Under DDP the
ascent runs under ``no_sync()`` and only the step's last backward all-reduces. BatchNorm: the first
pass over each piece (the ascent, or the descent for a rule without ascent) contributes its
statistics to one merged update; every other pass leaves them as they were (see
:mod:`samkit.optim.batchnorm`).

The engine sees a :class:`~samkit.optim.plan.StepPlan`, never the optimizer.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from samkit._batch import LossFn, batch_size
from samkit.errors import SamkitError
from samkit.optim.batchnorm import RunningStats
from samkit.optim.distributed import all_reduce_mean_, full_value, local_tensors
from samkit.optim.plan import StepPlan
from samkit.optim.rules.base import Groups, split_groups
from samkit.optim.sharding import micro_batches, split_batch

# take(j, e) -> (loss or None, flat gradient) of ascent pass j, at the perturbation e of pass j - 1
TakeGradient = Callable[[int, "Groups | None"], tuple["Tensor | None", list[Tensor]]]


# ---- the weights: to w + e in place, and back to w exactly ----------------------------------------
class WeightBackup:
    """A copy of the weights in a reused buffer, put back by copy (so bit-exactly), with the autocast
    weight cache cleared at each move (``torch.autocast`` would otherwise serve a pass at ``w + e``
    its cached low-precision copy of ``w``: SAM would silently become the base optimizer)."""

    def __init__(self) -> None:
        self._copy: list[Tensor] | None = None
        self._flat: list[Tensor] = []  # the weights saved
        self._sharded = False  # DTensors (FSDP2): saved and put back shard by shard

    def save(self, flat: list[Tensor]) -> None:
        # (comprehensions, not generators: once per parameter per step, a generator is a Python
        # call per item)
        sharded = self._sharded = not {type(p) for p in flat} <= {Tensor, nn.Parameter}
        self._flat = flat
        local = local_tensors(flat) if sharded else flat
        b = self._copy
        if b is None or [(x.shape, x.dtype, x.device) for x in b] != [
            (p.shape, p.dtype, p.device) for p in local
        ]:
            self._copy = [p.detach().clone() for p in local]
        else:
            torch._foreach_copy_(b, [p.detach() for p in local])

    def restore(self) -> None:
        """The saved weights back, bit-exactly."""
        assert self._copy is not None
        # The local shards are taken again, not kept from save(): FSDP2 may replace a parameter's
        # local tensor in between. Torch 2.8's first forward (lazy init) re-pads every unevenly
        # sharded parameter into a new buffer, so a copy into the shard taken at save() reached
        # nothing the model reads: those weights stayed at w + e (torch >= 2.11 keeps the buffer).
        local = local_tensors(self._flat) if self._sharded else self._flat
        with torch.no_grad():
            torch._foreach_copy_(local, self._copy)
        torch.clear_autocast_cache()  # cheap when autocast is off: an empty cache

    def move(self, flat: list[Tensor], e: Groups | None, restore_first: bool = False) -> None:
        """Weights to ``w + e`` (from ``w``: put back first when they sit at an earlier perturbation)."""
        if restore_first:
            self.restore()
        if e is not None:
            with torch.no_grad():
                torch._foreach_add_(flat, [t for group in e for t in group])
            torch.clear_autocast_cache()


# ---- what a step's passes produced, and where the shards are added up ----------------------------
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
    batch_examples: int = 0  # examples in the batch (this rank's)


@dataclass
class Ascent:
    """What the ascent passes of one shard (or of stacked shards) left."""

    e: Groups | None  # the perturbation (None: none; stacked: one per shard)
    ascended: bool  # False for a step without ascent, or one decided against after the gradient
    loss: Tensor | None  # the first ascent pass's loss (at w)
    norm: Tensor | None  # the first ascent pass's norm (None without ascent; [k] when stacked)
    norms: Tensor  # the sum of every pass's norm: non-finite iff an ascent value is
    full: Groups | None  # the first pass's gradient per group, when the plan keeps it
    declined: list[Tensor] | None = None  # the gradient at w of a step decided against the ascent
    stacked: bool = False  # every value carries a leading shard dimension (the vectorized shards)


class Totals:
    """A step's running totals over its shards — the loss at ``w`` and at ``w + e``, the ascent norms,
    the batch's ascent gradient, the examples — for every execution of ``train_step``."""

    def __init__(self, plan: StepPlan, accumulate_full: bool) -> None:
        self.plan = plan
        self.loss: Tensor | None = None  # sum_s w_s L_s(w)
        self.perturbed: Tensor | None = None  # sum_s w_s L_s(w + e_s)
        self.norms: Tensor | None = None  # every ascent pass's norm, summed
        self.first: Tensor | None = None  # sum_s w_s ||first ascent direction of s||
        self.examples = 0
        self.moved = False  # whether a descent pass ran at a perturbation
        self.ascended: bool | None = None  # whether the last shard's ascent shaped it (None: no shard)
        # the perturbation of a one-shard step, kept past its passes only for a cadence that reads
        # it (memory: e is otherwise in the weights, or in the stacked copies, and freed with them)
        self.e: Groups | None = None
        # several shards: sum_s w_s g_s in one buffer; one shard: its own gradient, no copy
        self.accumulate = accumulate_full
        self.full: Groups | None = (
            [[torch.zeros_like(p) for p in g] for g in plan.params] if accumulate_full else None
        )

    def ascent(self, a: Ascent, w: float) -> None:
        """Add a shard's ascent (stacked shards: each ``[k]`` value summed, every shard of weight ``w``)."""
        self.ascended = a.ascended
        if self.plan.knobs.cadence_observe is not None and self.plan.knobs.sharding.is_single:
            self.e = a.e
        if a.loss is not None:
            self.loss = a.loss * w if self.loss is None else self.loss + a.loss * w
        if a.declined is not None:
            return
        norms = a.norms.sum() if a.stacked else a.norms
        self.norms = norms if self.norms is None else self.norms + norms
        if a.norm is not None:
            first = (a.norm.sum() if a.stacked else a.norm) * w
            self.first = first if self.first is None else self.first + first
        if a.full is not None:
            full = [[x.sum(0) for x in g] for g in a.full] if a.stacked else a.full
            if self.accumulate and self.full is not None:
                for acc, g in zip(self.full, full, strict=True):
                    torch._foreach_add_(acc, g, alpha=w)
            else:
                self.full = full
        self.moved = self.moved or a.e is not None

    def descent(self, loss: Tensor) -> None:
        """Add a descent pass's (already weighted, detached) loss."""
        self.perturbed = loss if self.perturbed is None else self.perturbed + loss

    def result(self, ddp: bool, shards: int, n: int) -> PassResult:
        """The step's result (``n``: the examples of the batch, this rank's)."""
        ascended = bool(self.ascended)
        norms = self.norms if self.norms is not None else torch.zeros((), device=self.plan.flat[0].device)
        full = self.full if ascended else None
        if ddp and full is not None:  # the rule's state tracks the global gradient
            all_reduce_mean_([t for g in full for t in g])
        loss = self.loss if self.loss is not None else self.perturbed
        assert loss is not None and self.ascended is not None
        return PassResult(
            loss=loss,
            perturbed_loss=self.perturbed if self.moved else None,
            ascent_norm=norms,
            full_grads=full,
            ascended=ascended,
            perturbation=self.e if shards == 1 else None,
            norm_mean=self.first,
            examples=self.examples,
            passes=self.examples / n,
            batch_examples=n,
        )


def ascend(plan: StepPlan, take: TakeGradient, *, backup: WeightBackup | None, ddp: bool = False,
           stacked: bool = False, owned: bool = False) -> Ascent:
    """The ascent passes of one shard (the same for every execution and front end; module docstring).

    ``take(j, e)`` gives pass ``j``'s gradient at ``w + e`` (``e`` the perturbation of pass ``j - 1``;
    ``take(0, None)`` at ``w``). With a ``backup`` the real weights are moved to ``w + e`` after each
    pass (the loop, the closure); without one (stacked shards) the perturbation is only returned.
    Under DDP (``ddp``) a decision after the gradient uses the mean over ranks of its statistic.
    ``owned``: ``take``'s gradients are the ascent's own (not ``.grad``), so the perturbation may be
    made in their storage when nothing keeps them (memory: one full-size buffer fewer).
    """
    flat = plan.flat
    e: Groups | None = None
    loss: Tensor | None = None
    first: Tensor | None = None
    norms: Tensor | None = None
    full: Groups | None = None
    lengths = [len(g) for g in plan.rules.params]
    for j in range(plan.ascents):
        loss_j, grads = take(j, e)
        if j == 0:
            loss = loss_j
            if plan.decide is not None and not _decided(plan, grads, ddp):
                # A plain step after all (AE-SAM): the gradient at w is the update.
                zero = torch.zeros((), device=flat[0].device)
                return Ascent(None, False, loss, None, zero, None, declined=grads)
        by_group = split_groups(grads, lengths)
        if j == 0 and plan.keep_full:
            full = by_group
        plan.rules.consume = owned and not (j == 0 and plan.keep_full)
        try:
            e, norm = plan.knobs.rule.perturbation(by_group, plan.rules, stacked=stacked, previous=e)
        finally:
            plan.rules.consume = False
        if type(norm) is not Tensor:  # a DTensor norm (FSDP2): the global value
            norm = full_value(norm)
        norms = norm if norms is None else norms + norm
        if j == 0:
            first = norm
        if backup is not None:
            backup.move(flat, e, restore_first=j > 0)
        del grads, by_group
    if plan.ascents == 0:  # the rule's own perturbation, the cadence's reused one, or none
        e, norms = plan.perturbation()
        if backup is not None:
            backup.move(flat, e)
    assert norms is not None
    return Ascent(e, plan.ascents > 0, loss, first, norms, full, stacked=stacked)


def _decided(plan: StepPlan, grads: list[Tensor], ddp: bool) -> bool:
    """Ask the cadence with its statistic of this step's gradient (AE-SAM: the squared norm; the drift
    trigger: how far the direction moved), the mean over ranks under DDP."""
    assert plan.decide is not None and plan.statistic is not None
    value = plan.statistic(split_groups(grads, [len(g) for g in plan.params]), plan.rules)
    value = value.reshape(1)
    if ddp:
        all_reduce_mean_([value])
    return plan.decide(float(full_value(value)[0]))  # one number on the host


def rollback(plan: StepPlan, backup: WeightBackup | None, stats: RunningStats | None,
             grads: bool = True) -> None:
    """A step that raised part-way: weights, running statistics and (``grads``) ``.grad`` as before."""
    if backup is not None:
        backup.restore()
    if stats is not None:
        stats.restore()
        stats.clear()
    if grads:
        for p in plan.all_flat:
            p.grad = None


# ---- one pass ----------------------------------------------------------------------------------
def gradient(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    flat: list[Tensor],
    scaler: torch.amp.GradScaler | None,
    fsdp: bool = False,
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
    if fsdp:
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


def shard_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    pieces: list[tuple[Any, float]],
    flat: list[Tensor],
    scaler: torch.amp.GradScaler | None,
    stats: RunningStats | None,
    merge: RunningStats | None,
    weight: float,
    first_shard: bool,
    fsdp: bool = False,
    ddp: Any = None,
) -> tuple[Tensor, list[Tensor]]:
    """Mean loss and gradient of a shard at the current weights, accumulated over its pieces.

    ``.grad`` is not touched; gradients are unscaled. Each piece's BatchNorm statistics are put
    back, after being added to ``merge`` (with weight ``weight * v_j``) when it is given. Under DDP
    (``ddp``: the wrapper) each rank perturbs with its own gradient (``no_sync``).
    """
    loss_sum: Tensor | None = None
    grad_sum: list[Tensor] | None = None
    for k, (piece, v) in enumerate(pieces):
        with ddp.no_sync() if ddp is not None else nullcontext():
            loss, grads = gradient(model, loss_fn, piece, flat, scaler, fsdp)
        if merge is not None:
            merge.accumulate(weight * v if v != 1.0 else weight, first=first_shard and k == 0)
        if stats is not None:
            stats.restore()
        if len(pieces) == 1:
            return loss, grads
        if grad_sum is None or loss_sum is None:  # the first piece's gradient (ours) holds the sum
            torch._foreach_mul_(grads, v)
            loss_sum, grad_sum = loss * v, grads
        else:
            loss_sum = loss_sum + loss * v
            torch._foreach_add_(grad_sum, grads, alpha=v)
    assert loss_sum is not None and grad_sum is not None
    return loss_sum, grad_sum


def unscale_(grads: list[Tensor], scaler: torch.amp.GradScaler) -> None:
    """Divide by the scaler's current scale, read as a tensor through its public API (no sync)."""
    torch._foreach_div_(grads, scaler.scale(torch.ones((), device=grads[0].device)))


def check_dense(grads: list[Tensor]) -> None:
    """Sparse gradients (``nn.Embedding(sparse=True)``) have no norm or perturbation: say so."""
    if {g.layout for g in grads} - {torch.strided}:
        raise SamkitError(
            "a parameter has a sparse gradient (e.g. nn.Embedding(..., sparse=True)); the SAM "
            "family needs dense gradients to normalise and perturb: build the layer with "
            "sparse=False"
        )


def to_grad(flat: list[Tensor], grads: list[Tensor], scaler: torch.amp.GradScaler | None, ddp: bool) -> None:
    """Put a gradient computed with ``autograd.grad`` into ``.grad`` (all-reduced, scaled back)."""
    if ddp:
        all_reduce_mean_(grads)
    if scaler is not None:  # the base step unscales .grad itself
        torch._foreach_mul_(grads, scaler.scale(torch.ones((), device=grads[0].device)))
    for p, g in zip(flat, grads, strict=True):
        p.grad = g


# ---- the loop execution ------------------------------------------------------------------------
def loop_passes(
    plan: StepPlan,
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    scaler: torch.amp.GradScaler | None,
    stats: RunningStats | None,
    backup: WeightBackup,
) -> PassResult:
    """One shard after another: ascent, perturb, descent (into ``.grad``), exact restore."""
    if plan.knobs.points:
        return points_passes(plan, model, loss_fn, batch, scaler, stats, backup)
    flat = plan.flat
    passes = plan.ascents
    n = batch_size(batch)
    # Shards are about perturbations: a step without ascent is one pass over the whole batch.
    sizes = plan.knobs.sharding.sizes(n) if passes and plan.knobs.sharding.shards != 1 else [n]
    shards = split_batch(batch, sizes) if len(sizes) > 1 else [batch]
    weights = [s / n for s in sizes] if len(sizes) > 1 else [1.0]
    mbs = plan.knobs.micro_batch_size
    pieces_of = [micro_batches(s, mbs) if mbs is not None else [(s, 1.0)] for s in shards]
    moves = None if plan.plain else backup  # a plain step moves nothing: no backup
    if moves is not None:
        moves.save(flat)
    totals = Totals(plan, plan.keep_full and len(shards) > 1)
    ddp, fsdp = plan.ddp, plan.fsdp
    try:
        for i, (pieces, w) in enumerate(zip(pieces_of, weights, strict=True)):
            ascent_pieces = _sampled(pieces, shards[i], plan) if passes else pieces  # same for every pass

            def take(j: int, e: Groups | None, i: int = i, w: float = w,
                     ascent_pieces: Any = ascent_pieces) -> Any:
                merge = stats if j == 0 else None  # later ascent passes leave the statistics alone
                out = shard_gradient(model, loss_fn, ascent_pieces, flat, scaler, stats, merge, w, i == 0,
                                     fsdp, ddp)
                totals.examples += sum(batch_size(p) for p, _ in ascent_pieces) \
                    if ascent_pieces is not pieces_of[i] or len(ascent_pieces) > 1 else sizes[i]
                if ddp is not None:
                    plan.knobs.sync.average_(out[1])
                return out

            if moves is None:  # a plain step: no ascent, its loss is the descent's
                shard, totals.ascended = _NOTHING, False
            else:
                shard = ascend(plan, take, backup=moves, ddp=ddp is not None, owned=True)
                totals.ascent(shard, w)
                # e is in the weights and the backup puts w back (the totals keep it if a cadence
                # reads it): the descent runs without this copy (SAM's memory: one saved copy).
                shard.e = None
            if shard.declined is not None:
                to_grad(flat, shard.declined, scaler, ddp is not None)  # the step's gradient is in .grad
                break
            for k, (piece, v) in enumerate(pieces):
                last = i == len(shards) - 1 and k == len(pieces) - 1
                scale = w * v if v != 1.0 else w
                # DDP all-reduces once: in the step's last backward, over the accumulated grads.
                with ddp.no_sync() if ddp is not None and not last else nullcontext():
                    descent = loss_fn(model, piece)
                    totals.descent(descent.detach() * scale if scale != 1.0 else descent.detach())
                    descent = descent * scale if scale != 1.0 else descent
                    (scaler.scale(descent) if scaler is not None else descent).backward()
                totals.examples += sizes[i] if len(pieces) == 1 else batch_size(piece)
                if stats is not None and moves is not None:
                    if passes == 0:  # the only pass: its statistics are the step's
                        stats.accumulate(scale, first=i == 0 and k == 0)
                    stats.restore()
            if moves is not None:
                moves.restore()
    except BaseException:
        rollback(plan, moves, stats)
        raise
    if stats is not None and moves is None:
        stats.live = True  # a plain step's only pass: its statistics are the step's as they come
    return totals.result(ddp is not None, len(shards), n)


_NOTHING = Ascent(None, False, None, None, torch.zeros(()), None)  # a plain step's "ascent"


def _sampled(pieces: list[tuple[Any, float]], shard: Any, plan: StepPlan) -> list[tuple[Any, float]]:
    """The pieces the ascent gradient is taken on: all, or a random share of the shard."""
    if plan.knobs.sample is None:
        return pieces
    n = batch_size(shard)
    device = next(t for t in pytree.tree_leaves(shard) if isinstance(t, Tensor)).device
    idx = plan.knobs.sample(n, device)
    if idx is None:
        return pieces
    subset = pytree.tree_map(lambda t: t[idx] if isinstance(t, Tensor) else t, shard)
    return micro_batches(subset, plan.knobs.micro_batch_size)


# ---- a rule's descent points (SAMPa, mixed RWP) --------------------------------------------------
def points_passes(
    plan: StepPlan,
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    scaler: torch.amp.GradScaler | None,
    stats: RunningStats | None,
    backup: WeightBackup,
) -> PassResult:
    """A rule's descent points (SAMPa's pair, mixed RWP's clean and noisy weights), one after another.

    At each point ``w + o_i`` the gradient of every parameter (over the micro-batches); the weighted
    sum ``sum_i c_i h_i`` goes to ``.grad`` (all-reduced under DDP, every point's gradient first, so
    that what the rule keeps is the same on every rank) and each point's gradient of the perturbed
    parameters to ``plan.rules.scratch["points"]`` for the rule's ``observe``. The statistics and the
    loss are the rule's ``stats_point``'s.
    """
    flat, every = plan.flat, plan.all_flat
    points, norm = plan.knobs.rule.descent_points(plan.rules)
    at = plan.knobs.rule.stats_point(len(points))
    pieces = micro_batches(batch, plan.knobs.micro_batch_size)
    ddp, fsdp = plan.ddp, plan.fsdp
    backup.save(flat)
    grads: list[list[Tensor]] = []
    losses: list[Tensor] = []
    try:
        for i, (offset, _) in enumerate(points):
            backup.move(flat, offset, restore_first=i > 0)
            loss, g = shard_gradient(model, loss_fn, pieces, every, scaler, stats,
                                     stats if i == at else None, 1.0, True, fsdp, ddp)
            if ddp is not None:
                all_reduce_mean_(g)
            grads.append(g)
            losses.append(loss)
        backup.restore()
    except BaseException:
        rollback(plan, backup, stats, grads=False)
        raise
    return combine_points(plan, points, grads, losses, at, norm, scaler, batch_size(batch))


def combine_points(
    plan: StepPlan,
    points: list[Any],
    grads: list[list[Tensor]],
    losses: list[Tensor],
    at: int,
    norm: Tensor,
    scaler: torch.amp.GradScaler | None,
    n: int,
) -> PassResult:
    """The descent points' gradients into ``.grad`` (weighted) and ``scratch`` (each), as a result
    (``n``: the batch's examples, each point a pass over all of them)."""
    flat, every = plan.flat, plan.all_flat
    combined = [torch.zeros_like(p) for p in every]
    for (_, c), g in zip(points, grads, strict=True):
        if c:
            torch._foreach_add_(combined, g, alpha=c)
    to_grad(every, combined, scaler, ddp=False)  # (already all-reduced)
    lengths = [len(group) for group in plan.params]
    plan.rules.scratch["points"] = [split_groups(g[: len(flat)], lengths) for g in grads]
    others = [i for i in range(len(points)) if i != at]
    return PassResult(
        loss=losses[at],
        perturbed_loss=losses[others[0]] if others else None,
        ascent_norm=norm,
        full_grads=None,
        ascended=False,
        examples=len(points) * n,
        passes=float(len(points)),
        batch_examples=n,
    )


# ---- the closure and two-call front ends ---------------------------------------------------------
def closure_passes(
    plan: StepPlan, closure: Callable[[], Any] | None,
    frozen: Callable[[], AbstractContextManager[None]], backup: WeightBackup,
) -> tuple[Ascent, Any, int]:
    """``step(closure)`` and ``first_step``: the same ascent, on the gradient at ``w`` that is in
    ``.grad`` already, with the closure for every further pass.

    The closure (``None`` for ``first_step``, which takes one ascent pass and leaves the descent to
    the caller) computes the loss and calls ``backward()``; ``frozen()`` keeps BatchNorm statistics
    for the calls at a perturbation. Returns the ascent, the last closure value (the loss at
    ``w + e``) and how many times the closure ran. The weights are left at ``w + e``: the update
    restores them.
    """
    flat = plan.flat
    calls = 0

    def in_grad() -> list[Tensor]:
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in flat]

    def take(j: int, e: Groups | None) -> tuple[Tensor | None, list[Tensor]]:
        nonlocal calls
        if j == 0:
            grads = in_grad()
            check_dense(grads)
            # Kept past the caller's next zero_grad, which may zero in place: a copy when kept.
            return None, [g.clone() for g in grads] if plan.keep_full else grads
        assert closure is not None
        _clear_grads(plan.all_flat)
        with frozen():
            closure()
        calls += 1
        return None, in_grad()

    backup.save(flat)
    out: Any = None
    try:
        with torch.no_grad():
            shard = ascend(plan, take, backup=backup)
        # the closure's pass at w + e (at w for a rule whose own perturbation is none this step);
        # a plain step has its gradient at w in .grad already
        if closure is not None and shard.declined is None and not plan.plain:
            _clear_grads(plan.all_flat)
            # the caller's pass at w updated the running statistics, unless the rule takes none
            with nullcontext() if plan.knobs.own else frozen():
                out = closure()
            calls += 1
    except BaseException:
        rollback(plan, backup, None, grads=False)
        raise
    return shard, out, calls


def _clear_grads(flat: list[Tensor]) -> None:
    for p in flat:
        p.grad = None
