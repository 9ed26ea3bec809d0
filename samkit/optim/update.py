r"""The update: from the descent gradient in ``.grad`` to a base-optimizer step, counted.

After the passes of a step (the weights restored to ``w``, the gradient at ``w + e`` in ``.grad``):

1. **finite check** (:func:`check_finite`): one host sync — are the ascent norms, the loss and
   every descent gradient finite? (:attr:`Finite.UNCHECKED` with ``nonfinite="unchecked"``: no sync);
2. **descent transforms**: the rule's (GSAM, WSAM, GCSAM; when it made this step's perturbation)
   and the cadence's (LookSAM), on unscaled gradients;
3. **clipping** of the descent gradient's global norm (``max_grad_norm``);
4. **the base step** — through the ``GradScaler`` when there is one (a non-finite value anywhere
   makes it skip and back off), else skipped on a non-finite value;
5. **counting and state**: passes, examples, the step record, the rule's and the cadence's
   ``observe`` after a taken step; a skipped step raises :class:`NonFiniteError` or warns.
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from samkit._compat import clip_grad_norm_
from samkit.errors import SamkitError
from samkit.optim.distributed import full_value
from samkit.optim.engine import PassResult
from samkit.optim.plan import StepPlan
from samkit.optim.rules.base import global_norm


class NonFiniteError(SamkitError, FloatingPointError):
    """A loss or gradient was NaN/inf; the weights and optimizer state were left unchanged."""


class Finite(enum.Enum):
    """The finite check's answer: every value finite, one is not, or not checked (no host sync)."""

    YES = "yes"
    NO = "no"
    UNCHECKED = "unchecked"


@dataclass(frozen=True)
class StepRecord:
    """What the last step did (``opt.last_step``). Tensors stay on the device: reading one syncs.

    ``loss``: mean loss at ``w`` (None for the two-call API, where samkit does not see the loss);
    ``perturbed_loss``: at ``w + e`` (None when no pass ran at a perturbation); ``ascent_norm``: the
    norm the rule normalised by (for SAM ``||g||``; the mean over shards); ``ascended``: whether an
    ascent pass made this step's perturbation; ``taken``: whether the base optimizer stepped;
    ``passes``: forward-backward passes over the batch this step (1.5 with half-batch ascents).
    """

    loss: Tensor | None
    perturbed_loss: Tensor | None
    ascent_norm: Tensor | None
    ascended: bool
    taken: bool
    passes: float


@dataclass
class Counters:
    """What an optimizer has done, saved with its state: base steps taken, steps skipped for
    non-finite values, taken steps whose perturbation came from an ascent pass, forward-backward
    passes over a batch (a pass over a fraction ``f`` counting ``f``), examples through every pass."""

    steps: int = 0
    skipped_steps: int = 0
    ascent_steps: int = 0
    passes: float = 0.0
    example_passes: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for f in fields(self):  # counters added later default to 0 in older checkpoints
            setattr(self, f.name, type(getattr(self, f.name))(state.get(f.name, 0)))


def active_scaler(scaler: torch.amp.GradScaler | None) -> torch.amp.GradScaler | None:
    """The scaler if it scales; ``None`` for none or a disabled one (``GradScaler(enabled=False)``)."""
    return scaler if scaler is not None and scaler.is_enabled() else None


def check_finite(
    nonfinite: str, result: PassResult, flat: list[Tensor], scaler: torch.amp.GradScaler | None
) -> Finite:
    """One host sync: are the ascent norms, the loss and every descent gradient finite?

    Unchecked with ``nonfinite="unchecked"`` — except that with a scaler the ascent norm is still
    read (the scaler checks only ``.grad``, and an overflow in the ascent must skip the step).
    """
    if nonfinite == "unchecked":
        if scaler is None:
            return Finite.UNCHECKED
        return Finite.YES if bool(torch.isfinite(result.ascent_norm)) else Finite.NO
    norm = result.ascent_norm
    if result.loss is not None:
        norm = norm + result.loss.float() * 0
    grads = [p.grad for p in flat if p.grad is not None]
    if grads:
        grad_norm = global_norm(grads)
        norm = norm + (grad_norm if type(grad_norm) is Tensor else full_value(grad_norm))
    return Finite.YES if bool(torch.isfinite(norm)) else Finite.NO


def _descent_hooks(plan: StepPlan, result: PassResult) -> tuple[Any, Any]:
    """The rule's descent transform when it made this step's perturbation (an ascent, or its own),
    and the cadence's; None for each that adds nothing."""
    rule = plan.knobs.rule_descent if result.ascended or plan.knobs.own else None
    return rule, plan.knobs.cadence_descent


def _descent_side(plan: StepPlan, result: PassResult, rule: Any, cadence: Any) -> None:
    """Rule and cadence descent transforms, then clipping, on unscaled gradients in ``.grad``."""
    ctx = plan.rules
    if rule is not None or cadence is not None:
        for group in ctx.params:
            for p in group:
                if p.grad is None:  # unused in the loss: its descent gradient is zero
                    p.grad = torch.zeros_like(p)
        grads = [[p.grad for p in group] for group in ctx.params]
        if rule is not None:
            rule(grads, result.full_grads, ctx)
        if cadence is not None:
            cadence(grads, result.full_grads, ctx, result.ascended)
    if plan.knobs.max_grad_norm is not None:
        flat = [p for p in plan.all_flat if p.grad is not None]
        if flat:
            clip_grad_norm_(flat, plan.knobs.max_grad_norm)  # torch's, right for FSDP2's DTensors


def base_step(
    base: Optimizer,
    plan: StepPlan,
    result: PassResult,
    finite: Finite,
    scaler: torch.amp.GradScaler | None,
) -> bool:
    """Transforms, clipping and the base optimizer's step (or its skip); whether it stepped."""
    rule, cadence = _descent_hooks(plan, result)
    transforms = rule is not None or cadence is not None or plan.knobs.max_grad_norm is not None
    if scaler is None:
        if finite is Finite.NO:
            return False
        if transforms:
            _descent_side(plan, result, rule, cadence)
        base.step()
        return True
    if finite is Finite.NO:
        # Make the scaler see the non-finite value (it may be only in the ascent pass), so that
        # it skips the step and backs off its scale exactly as it always does. Indexing (not
        # .view) works for any memory layout, channels_last included.
        bad = next(p.grad for p in plan.all_flat if p.grad is not None)
        bad[(0,) * bad.dim()] = float("inf")
    if transforms:
        scaler.unscale_(base)
        if finite is not Finite.NO:
            _descent_side(plan, result, rule, cadence)
    before = scaler.get_scale() if finite is Finite.UNCHECKED else None
    scaler.step(base)
    scaler.update()
    if before is not None:  # unchecked: the scaler alone knows whether it skipped
        return scaler.get_scale() >= before
    return finite is not Finite.NO


def account(
    counts: Counters,
    plan: StepPlan,
    result: PassResult,
    finite: Finite,
    taken: bool,
) -> StepRecord:
    """After the base update: counters, the step record, the rule's and cadence's state (or a skip,
    which :func:`refuse_skipped` then reports)."""
    counts.passes += result.passes
    counts.example_passes += result.examples
    record = StepRecord(
        loss=result.loss,
        perturbed_loss=result.perturbed_loss,
        ascent_norm=result.norm_mean,
        ascended=result.ascended,
        taken=taken,
        passes=result.passes,
    )
    ctx = plan.rules
    if finite is Finite.NO:
        counts.skipped_steps += 1
        ctx.scratch.clear()
        return record
    if taken:
        if result.ascended or plan.knobs.own:  # the rule made this step's perturbation
            plan.knobs.rule.observe(result.full_grads, ctx)
        if plan.knobs.cadence_observe is not None:
            plan.knobs.cadence_observe(ctx, result.ascended, result.perturbation)
        counts.steps += 1
        counts.ascent_steps += int(result.ascended)
    ctx.scratch.clear()
    return record


def refuse_skipped(counts: Counters, nonfinite: str, scaler: torch.amp.GradScaler | None) -> None:
    """A step skipped for a non-finite value, without a scaler (which skips and backs off by itself):
    :class:`NonFiniteError` with ``nonfinite="raise"``, a warning with ``"skip"``."""
    if scaler is None and nonfinite == "raise":
        raise NonFiniteError(
            f"non-finite loss or gradient at step {counts.steps}: the weights were restored "
            "and the step was not taken. Check the data and the learning rate, use a "
            "GradScaler with mixed precision, or pass nonfinite='skip' to skip such steps"
        )
    if scaler is None:
        warnings.warn(
            f"samkit: skipped a step with a non-finite loss or gradient ({counts.skipped_steps} so far)",
            RuntimeWarning,
            stacklevel=7,  # the caller of train_step / second_step / step
        )
