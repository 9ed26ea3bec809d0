"""The pass loop: ascent, perturb, descent, exact restore — one route for every front end.

One shard's ascent is :func:`ascend`, whoever takes the gradients: ``train_step`` (``loss_fn`` over
the shard's micro-batches, :func:`loop_passes`), ``step(closure)`` (the closure,
:func:`closure_passes`) and ``first_step`` (the gradient the caller left in ``.grad``). For each
ascent pass ``j`` of the rule it takes the gradient at the current weights, asks a decision that
waits for it (AE-SAM), keeps the batch's ascent gradient when the plan says so, turns it into
``e_j`` and moves the weights to ``w + e_j``; a step without ascent moves them by the plan's fixed
(or the rule's own) perturbation. The descent then adds the gradient at ``w + e`` to ``.grad`` and
the weights are restored by copy (bit-exact).

The loop execution, for each shard ``s`` (weight ``w_s = n_s / n``) split into micro-batches ``j``
(weight ``v_j``) when ``micro_batch_size`` asks for it:

1. ascent: ``g_s = sum_j v_j grad L_sj(w)`` (via ``autograd.grad``, so the descent gradients
   accumulating in ``.grad`` are untouched; under FSDP2 via ``backward``, whose hooks
   reduce-scatter into ``.grad``), repeated at the last perturbation for rules with several ascent
   passes, skipped for rules with none;
2. the rule turns ``g_s`` into ``e_s`` and the weights move to ``w + e_s``;
3. descent: ``w_s v_j grad L_sj(w + e_s)`` is added to ``.grad`` for every micro-batch;
4. the weights are restored by copy.

Under DDP the ascent runs under ``no_sync()`` and only the step's last backward all-reduces.
BatchNorm: the first pass over each piece (the ascent, or the descent for a rule without ascent)
contributes its statistics to one merged update; every other pass leaves them as they were (see
:mod:`samkit.optim.batchnorm`). The vectorized execution (:mod:`~samkit.optim.vectorized`) runs
the same plan with all shards stacked; :func:`run_passes` picks the execution.

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
from samkit.optim.batchnorm import RunningStats
from samkit.optim.distributed import all_reduce_mean_, ddp_of, full_value, is_distributed, no_sync
from samkit.optim.passes import PassResult, check_dense, combine_points, shard_gradient, to_grad
from samkit.optim.plan import Execution, StepPlan
from samkit.optim.rules.base import Groups
from samkit.optim.sharding import micro_batches, shard_batch, split_groups
from samkit.optim.vectorized import vectorized_passes

# take(j) -> (loss or None, flat gradient) of ascent pass j at the current weights
TakeGradient = Callable[[int], tuple[Tensor | None, list[Tensor]]]


@dataclass
class Ascent:
    """What the ascent passes of one shard left; the weights sit at ``w + e``."""

    e: Groups | None  # the perturbation the weights sit at (None: at w)
    ascended: bool  # False for a step without ascent, or one decided against after the gradient
    loss: Tensor | None  # the first ascent pass's loss (at w)
    norm: Tensor | None  # the first ascent pass's norm (None without ascent)
    norms: Tensor  # the sum of every pass's norm: non-finite iff an ascent value is
    full: Groups | None  # the first pass's gradient per group, when the plan keeps it
    declined: list[Tensor] | None = None  # the gradient at w of a step decided against the ascent


def ascend(plan: StepPlan, take: TakeGradient, *, ddp: bool = False) -> Ascent:
    """The ascent passes of one shard (the same for every front end); see the module docstring.

    ``take(j)`` gives pass ``j``'s gradient at the current weights (``take(0)`` at ``w``); under DDP
    (``ddp``) a decision after the gradient uses the mean over ranks of the squared norm.
    """
    flat, backup = plan.flat, plan.backup
    lengths = [len(g) for g in plan.params]
    e: Groups | None = None
    loss: Tensor | None = None
    first: Tensor | None = None
    norms: Tensor | None = None
    full: Groups | None = None
    for j in range(plan.ascent_passes):
        loss_j, grads = take(j)
        if j == 0:
            loss = loss_j
            if plan.decide is not None and not _decided(plan, grads, ddp):
                # A plain step after all (AE-SAM): the gradient at w is the update.
                zero = torch.zeros((), device=flat[0].device)
                return Ascent(None, False, loss, None, zero, None, declined=grads)
        by_group = split_groups(grads, lengths)
        if j == 0 and plan.keep_full:
            full = by_group
        e, norm = plan.perturbation(by_group, previous=e)
        norms = norm if norms is None else norms + norm
        if j == 0:
            first = norm
        backup.move(flat, e, restore_first=j > 0)
        del grads, by_group
    if plan.ascent_passes == 0:
        e, norms = plan.perturbation(None)
        backup.move(flat, e)
    assert norms is not None
    return Ascent(e, plan.ascent_passes > 0, loss, first, norms, full)


def _decided(plan: StepPlan, grads: list[Tensor], ddp: bool) -> bool:
    """Ask the cadence with its statistic of this step's gradient (AE-SAM: the squared norm; the drift
    trigger: how far the direction moved), the mean over ranks under DDP."""
    assert plan.decide is not None
    value = plan.cadence.statistic(split_groups(grads, [len(g) for g in plan.params]), plan.rules)
    value = value.reshape(1)
    if ddp:
        all_reduce_mean_([value])
    return plan.decide(full_value(value)[0])


def run_passes(
    plan: StepPlan,
    execution: Execution,
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    scaler: torch.amp.GradScaler | None,
    stats: RunningStats | None,
) -> PassResult:
    """Every pass of a ``train_step`` with the execution chosen for it (vectorized falls back to the
    loop under ``auto`` when the model cannot be mapped)."""
    choice = execution.choose(plan, model, batch)
    result = None
    if choice == "vectorized":
        try:
            result = ENGINES["vectorized"](plan, model, loss_fn, batch, scaler, stats)
        except Exception as exc:  # an op without a vmap rule, ...: the loop always works
            for p in plan.all_flat:
                p.grad = None
            if execution.asked == "vectorized" and stats:
                stats.clear()
            execution.failed(exc)
            choice = "loop"
    if result is None:
        result = ENGINES["loop"](plan, model, loss_fn, batch, scaler, stats)
    execution.used = choice
    result.passes = result.examples / batch_size(batch)
    return result


def commit_stats(stats: RunningStats, finite: bool, model: nn.Module, batch: Any) -> None:
    """After the finite check: the merged running statistics (averaged over ranks), or the old ones
    back for a step that is not taken (like the weights)."""
    if not finite:
        stats.restore()
    else:
        if not stats.live:
            stats.write_merged()
        if is_distributed(model):
            all_reduce_mean_(stats.floats, weight=float(batch_size(batch)))
    stats.clear()


def loop_passes(
    plan: StepPlan,
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    scaler: torch.amp.GradScaler | None,
    stats: RunningStats | None,
) -> PassResult:
    """One shard after another: ascent, perturb, descent (into ``.grad``), exact restore."""
    if plan.points:
        return points_passes(plan, model, loss_fn, batch, scaler, stats)
    if plan.plain:
        return plain_pass(plan, model, loss_fn, batch, scaler, stats)
    flat = plan.flat
    passes = plan.ascent_passes
    # Shards are about perturbations: a step without ascent is one pass over the whole batch.
    shards, weights = shard_batch(batch, plan.sharding) if passes else ([batch], [1.0])
    pieces_of = [micro_batches(shard, plan.micro_batch_size) for shard in shards]
    plan.backup.save(flat)
    # With one shard the full-batch gradient is the ascent gradient itself: no accumulator.
    accumulate = plan.keep_full and len(shards) > 1
    full = [[torch.zeros_like(p) for p in g] for g in plan.params] if accumulate else None
    total: Tensor | None = None
    perturbed: Tensor | None = None
    norm_sum: Tensor | None = None
    first_norms: Tensor | None = None
    examples = 0
    shard: Ascent | None = None
    moved = False  # whether a descent pass ran at a perturbation
    ddp = ddp_of(model) is not None
    try:
        for i, (pieces, w) in enumerate(zip(pieces_of, weights, strict=True)):
            ascent_pieces = _sampled(pieces, shards[i], plan) if passes else pieces  # same for every pass

            def take(j: int, i: int = i, w: float = w, ascent_pieces: Any = ascent_pieces) -> Any:
                merge = stats if j == 0 else None  # later ascent passes leave the statistics alone
                out = shard_gradient(model, loss_fn, ascent_pieces, flat, scaler, stats, merge, w, i == 0)
                if ddp:
                    plan.sync.average_(out[1])
                return out

            shard = ascend(plan, take, ddp=ddp)
            taken = passes if shard.ascended else min(passes, 1)  # a declined ascent took one pass
            examples += taken * sum(batch_size(p) for p, _ in ascent_pieces)
            if shard.loss is not None:
                total = shard.loss * w if total is None else total + shard.loss * w
            if shard.declined is not None:
                to_grad(flat, shard.declined, scaler, ddp)  # the step's gradient is in .grad now
                break
            norm_sum = shard.norms if norm_sum is None else norm_sum + shard.norms
            if shard.norm is not None:
                first_norms = shard.norm * w if first_norms is None else first_norms + shard.norm * w
            if accumulate and shard.full is not None and full is not None:
                for acc, g in zip(full, shard.full, strict=True):
                    torch._foreach_add_(acc, g, alpha=w)
            elif shard.full is not None:
                full = shard.full
            moved = moved or shard.e is not None
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
            plan.backup.restore(flat)
    except BaseException:
        plan.backup.restore(flat)
        if stats:
            stats.restore()
            stats.clear()
        for p in plan.all_flat:
            p.grad = None
        raise
    ascended = shard is not None and shard.ascended
    if norm_sum is None:
        norm_sum = torch.zeros((), device=flat[0].device)
    if ddp and full is not None and ascended:  # the rule's state tracks the global gradient
        all_reduce_mean_([t for g in full for t in g])
    loss = total if total is not None else perturbed
    assert loss is not None and shard is not None
    return PassResult(
        loss=loss,
        perturbed_loss=perturbed if moved else None,
        ascent_norm=norm_sum,
        full_grads=full if ascended else None,
        ascended=ascended,
        perturbation=shard.e if len(shards) == 1 else None,
        norm_mean=first_norms,
        examples=examples,
    )


def plain_pass(
    plan: StepPlan,
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    scaler: torch.amp.GradScaler | None,
    stats: RunningStats | None,
) -> PassResult:
    """A step of the base optimizer (a cadence skipped the ascent): one pass over the batch into
    ``.grad``, in micro-batches if asked, with nothing else on it — no weight backup, and its
    BatchNorm statistics kept as they come (``stats.live``; the snapshot puts them back if the
    step is not taken)."""
    pieces = micro_batches(batch, plan.micro_batch_size)
    total: Tensor | None = None
    try:
        for k, (piece, v) in enumerate(pieces):
            last = k == len(pieces) - 1
            with no_sync(model) if not last else nullcontext():
                loss = loss_fn(model, piece)
                part = loss.detach() * v if v != 1.0 else loss.detach()
                total = part if total is None else total + part
                loss = loss * v if v != 1.0 else loss
                (scaler.scale(loss) if scaler is not None else loss).backward()
    except BaseException:
        if stats:
            stats.restore()
            stats.clear()
        for p in plan.all_flat:
            p.grad = None
        raise
    if stats:
        stats.live = True
    assert total is not None
    zero = torch.zeros((), device=plan.all_flat[0].device)
    return PassResult(loss=total, perturbed_loss=None, ascent_norm=zero, full_grads=None,
                      ascended=False, examples=batch_size(batch))


def points_passes(
    plan: StepPlan,
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    scaler: torch.amp.GradScaler | None,
    stats: RunningStats | None,
) -> PassResult:
    """A rule's descent points (SAMPa's pair, mixed RWP's clean and noisy weights), one after another.

    At each point ``w + o_i`` the gradient of every parameter (over the micro-batches); the weighted
    sum ``sum_i c_i h_i`` goes to ``.grad`` (all-reduced under DDP, every point's gradient first, so
    that what the rule keeps is the same on every rank) and each point's gradient of the perturbed
    parameters to ``plan.rules.scratch["points"]`` for the rule's ``observe``. The statistics and the
    loss are the rule's ``stats_point``'s.
    """
    flat, every = plan.flat, plan.all_flat
    points, norm = plan.rule.descent_points(plan.rules)
    at = plan.rule.stats_point(len(points))
    pieces = micro_batches(batch, plan.micro_batch_size)
    ddp = ddp_of(model) is not None
    plan.backup.save(flat)
    grads: list[list[Tensor]] = []
    losses: list[Tensor] = []
    try:
        for i, (offset, _) in enumerate(points):
            plan.backup.move(flat, offset, restore_first=i > 0)
            loss, g = shard_gradient(model, loss_fn, pieces, every, scaler, stats,
                                     stats if i == at else None, 1.0, True)
            if ddp:
                all_reduce_mean_(g)
            grads.append(g)
            losses.append(loss)
        plan.backup.restore(flat)
    except BaseException:
        plan.backup.restore(flat)
        if stats:
            stats.restore()
            stats.clear()
        raise
    return combine_points(plan, points, grads, losses, at, norm, scaler, len(points) * batch_size(batch))


def closure_passes(
    plan: StepPlan, closure: Callable[[], Any] | None,
    frozen: Callable[[], AbstractContextManager[None]],
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

    def take(j: int) -> tuple[Tensor | None, list[Tensor]]:
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

    plan.backup.save(flat)
    out: Any = None
    try:
        with torch.no_grad():
            shard = ascend(plan, take)
        moved = shard.e is not None or shard.ascended or plan.rule.ascent_passes == 0
        if closure is not None and shard.declined is None and moved:
            _clear_grads(plan.all_flat)
            with frozen() if plan.rule.ascent_passes > 0 else nullcontext():
                out = closure()
            calls += 1
    except BaseException:
        plan.backup.restore(flat)
        raise
    return shard, out, calls


def _clear_grads(flat: list[Tensor]) -> None:
    for p in flat:
        p.grad = None


def _sampled(pieces: list[tuple[Any, float]], shard: Any, plan: StepPlan) -> list[tuple[Any, float]]:
    """The pieces the ascent gradient is taken on: all, or a random share of the shard."""
    if plan.sample is None:
        return pieces
    n = batch_size(shard)
    device = next(t for t in pytree.tree_leaves(shard) if isinstance(t, Tensor)).device
    idx = plan.sample(n, device)
    if idx is None:
        return pieces
    subset = pytree.tree_map(lambda t: t[idx] if isinstance(t, Tensor) else t, shard)
    return micro_batches(subset, plan.micro_batch_size)


# The executions a plan's passes can run on (plan.Execution chooses among them).
ENGINES = {"loop": loop_passes, "vectorized": vectorized_passes}
