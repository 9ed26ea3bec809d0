"""What one pass is: a loss and its gradient at the current weights, for a piece or a shard.

Shared by the executions (:mod:`~samkit.optim.engine`'s loop, :mod:`~samkit.optim.vectorized`):
gradients come from ``autograd.grad`` (so ``.grad``, where descent gradients accumulate, is not
touched), unscaled from a ``GradScaler`` through its public API (no host sync), and dense.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from samkit._batch import LossFn
from samkit.errors import SamkitError
from samkit.optim.batchnorm import RunningStats
from samkit.optim.distributed import all_reduce_mean_, is_fsdp, no_sync
from samkit.optim.plan import StepPlan
from samkit.optim.rules.base import Groups
from samkit.optim.sharding import split_groups


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
        if grad_sum is None or loss_sum is None:
            loss_sum, grad_sum = loss * v, list(torch._foreach_mul(grads, v))
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


def to_grad(flat: list[Tensor], grads: list[Tensor], scaler: torch.amp.GradScaler | None, ddp: bool) -> None:
    """Put a gradient computed with ``autograd.grad`` into ``.grad`` (all-reduced, scaled back)."""
    if ddp:
        all_reduce_mean_(grads)
    if scaler is not None:  # the base step unscales .grad itself
        torch._foreach_mul_(grads, scaler.scale(torch.ones((), device=grads[0].device)))
    for p, g in zip(flat, grads, strict=True):
        p.grad = g


def combine_points(
    plan: StepPlan,
    points: list[Any],
    grads: list[list[Tensor]],
    losses: list[Tensor],
    at: int,
    norm: Tensor,
    scaler: torch.amp.GradScaler | None,
    examples: int,
) -> PassResult:
    """The descent points' gradients into ``.grad`` (weighted) and ``scratch`` (each), as a result."""
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
        examples=examples,
    )
