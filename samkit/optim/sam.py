r"""The SAM family as ``torch.optim.Optimizer`` front ends.

One step of every member is the same pipeline (see ``docs/optimizers.md``)::

    for each shard s of the batch (weights w_s = n_s / n), in micro-batches if asked:
        g_s = grad L_s(w)                       ascent gradient (unperturbed; updates BatchNorm stats)
        e_s = rule.perturbation(g_s, ...)        perturbation of radius rho
        h_s = grad L_s(w + e_s)                  descent gradient
        w  <- copy of w                          exact restore (no subtraction)
    grad = sum_s w_s h_s -> rule.descent -> clip -> base optimizer step (SGD, AdamW, ...) -> rule.observe

The rule (:mod:`samkit.optim.rules`), the sharding (``shards=k`` / ``shard_size=m``), the memory
knob (``micro_batch_size``) and the execution (:mod:`~samkit.optim.engine` loop,
:mod:`~samkit.optim.vectorized`, DDP/FSDP in :mod:`~samkit.optim.distributed`) are independent.
This module holds the front ends: construction, ``first_step``/``second_step``/``step``,
``train_step`` and the state; the engines never see the optimizer, only a :class:`StepContext`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from samkit.errors import SamkitError
from samkit.optim import rules
from samkit.optim.batchnorm import RunningStats, frozen_running_stats
from samkit.optim.cadence import Always, Cadence
from samkit.optim.distributed import (
    PerturbationGroups,
    all_reduce_mean_,
    full_value,
    is_distributed,
)
from samkit.optim.engine import (
    PassResult,
    StepContext,
    WeightBackup,
    check_dense,
    loop_passes,
    weights_moved,
)
from samkit.optim.rules.base import Groups, Rule, RuleContext, check_number, global_norm
from samkit.optim.sharding import Sharding, batch_size
from samkit.optim.vectorized import vectorized_passes

log = logging.getLogger("samkit")

LossFn = Callable[[nn.Module, Any], Tensor]
BaseOptimizer = type[Optimizer] | Callable[..., Optimizer]
_EXECUTIONS = ("auto", "loop", "vectorized")
_NONFINITE = ("raise", "skip", "unchecked")


class NonFiniteError(SamkitError, FloatingPointError):
    """A loss or gradient was NaN/inf; the weights and optimizer state were left unchanged."""


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
class _Pending:
    """A two-call step between ``first_step`` and ``second_step``."""

    ctx: RuleContext
    full: Groups | None
    norm: Tensor
    ascended: bool
    perturbation: Groups | None
    passes: float
    later_norms: Tensor | None = None  # sum of multi-step SAM's later ascent norms (finite check only)


def active_scaler(scaler: torch.amp.GradScaler | None) -> torch.amp.GradScaler | None:
    """The scaler if it scales; ``None`` for none or a disabled one (``GradScaler(enabled=False)``)."""
    return scaler if scaler is not None and scaler.is_enabled() else None


def auto_vectorizes(device: torch.device) -> bool:
    """What ``execution="auto"`` does with several shards: vectorize on CUDA, loop elsewhere (on a CPU
    the loop is as fast or faster: see ``benchmarks/results/step_time_cpu.md``)."""
    return device.type == "cuda"


class SAM(Optimizer):
    r"""Sharpness-Aware Minimization (Foret et al., 2021) and its family in one optimizer.

    .. math::
        e_s = \operatorname{rule}(\nabla L_s(w)), \quad
        w \leftarrow \operatorname{base\_step}\Big(w,\ \operatorname{descent}\Big(\sum_s \tfrac{n_s}{n}
        \nabla L_s(w + e_s)\Big)\Big)

    By default the rule is SAM, :math:`e = \rho\, T^2 g / \lVert T g \rVert` with :math:`T = 1`
    (:math:`T = |w| + \eta` with ``adaptive=True``: ASAM), and there is one perturbation
    :math:`e_s` per shard (m-sharpness; ``shards=1`` is SAM).

    Args:
        params: parameters or parameter groups (a group may set its own ``rho``, ``adaptive``,
            ``eta``, the rule's hyperparameters and any base-optimizer setting).
        base_optimizer: a ``torch.optim.Optimizer`` class, a ``functools.partial`` of one, or any
            callable ``f(param_groups, **base_kwargs)`` that returns an optimizer over exactly those
            groups — e.g. ``torch.optim.SGD``.
        rho: perturbation radius, ``>= 0``.
        rule: a :class:`samkit.rules.Rule` (default :class:`samkit.rules.SAM`; ASAM with
            ``adaptive=True``).
        adaptive, eta: the geometry of the ball (ASAM's ``T = |w| + eta``) for any rule; ``None``
            keeps the rule's own.
        shards: number of shards that each get their own perturbation (mSAM).
        shard_size: examples per shard instead (the "m" of m-sharpness; ``1`` is 1-SAM).
        micro_batch_size: split each shard's passes into pieces of at most this many examples and
            accumulate (memory, not math: still one perturbation per shard).
        max_grad_norm: clip the descent gradient to this global norm before the base step.
        execution: ``"loop"`` (one shard after another), ``"vectorized"`` (all shards at once with
            ``torch.func``) or ``"auto"``; see :attr:`execution_used`.
        nonfinite: what a NaN/inf loss or gradient does without a ``GradScaler``: ``"raise"``
            (:class:`NonFiniteError`), ``"skip"`` (count it in ``skipped_steps``) — both restore the
            weights and leave the base optimizer untouched, at one host sync per step — or
            ``"unchecked"`` (no check, no sync: for ``torch.compile`` / CUDA graphs).
        sync_perturbation_group_size: under DDP, average the ascent gradient over groups of this
            many consecutive ranks before perturbing (1: each rank perturbs with its own gradient,
            i.e. one shard per rank; the world size: plain SAM on the global batch).

    Example::

        opt = samkit.SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
        for x, y in loader:
            loss = opt.train_step(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), (x, y))
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer: BaseOptimizer,
        *,
        rho: float = 0.05,
        rule: Rule | None = None,
        adaptive: bool | None = None,
        eta: float | None = None,
        shards: int | None = 1,
        shard_size: int | None = None,
        micro_batch_size: int | None = None,
        max_grad_norm: float | None = None,
        cadence: Cadence | None = None,
        execution: str = "auto",
        nonfinite: str = "raise",
        sync_perturbation_group_size: int = 1,
        model: nn.Module | None = None,
        **base_kwargs: Any,
    ) -> None:
        if rule is None:
            rule = rules.ASAM(eta=eta or 0.0) if adaptive else rules.SAM()
        if not isinstance(rule, Rule):
            raise SamkitError(f"rule must be a samkit.rules.Rule such as samkit.rules.GSAM(), got {rule!r}")
        if not callable(base_optimizer):
            raise SamkitError(
                "base_optimizer must be an optimizer class such as torch.optim.SGD, a partial of one, "
                f"or a callable that builds one from the param groups; got {base_optimizer!r}"
            )
        if execution not in _EXECUTIONS:
            raise SamkitError(f"execution must be one of {_EXECUTIONS}, got {execution!r}")
        if nonfinite not in _NONFINITE:
            raise SamkitError(f"nonfinite must be one of {_NONFINITE}, got {nonfinite!r}")
        check_number("rho", rho, low=0.0)
        self.rule = rule
        self.sharding = Sharding.from_args(shards, shard_size)
        if not rule.shardable and not self.sharding.is_single:
            raise SamkitError(
                f"the {rule.name} rule takes no per-shard ascent, so {self.sharding} would give every "
                "shard the same perturbation: use shards=1"
            )
        cadence = Always() if cadence is None else cadence
        if not isinstance(cadence, Cadence):
            raise SamkitError(
                f"cadence must be a samkit.cadence object such as samkit.cadence.Every(5), got {cadence!r}"
            )
        if rule.ascent_passes == 0 and (type(cadence) is not Always or cadence.ascent_fraction is not None):
            raise SamkitError(
                f"the {rule.name} rule takes no ascent pass, so the cadence {cadence!r} has nothing to "
                "skip or shrink: leave cadence out"
            )
        if (cadence.reuses_perturbation or cadence.decides_after_gradient) and not self.sharding.is_single:
            raise SamkitError(
                f"the cadence {cadence!r} works with one perturbation per step (per rank), not "
                f"{self.sharding}: use shards=1"
            )
        self.cadence = cadence
        self.model = model
        self.micro_batch_size = _positive_int_or_none("micro_batch_size", micro_batch_size)
        if max_grad_norm is not None:
            check_number("max_grad_norm", max_grad_norm, low=0.0)
            if max_grad_norm == 0:
                raise SamkitError("max_grad_norm must be > 0 (or None for no clipping), got 0")
        self.max_grad_norm = max_grad_norm
        self.perturbation_groups = PerturbationGroups(sync_perturbation_group_size)
        self.execution = execution
        self.nonfinite = nonfinite
        defaults = {"rho": rho, **rule.hyperparameters()}
        if adaptive is not None:
            defaults["adaptive"] = bool(adaptive)
        if eta is not None:
            defaults["eta"] = eta
        self._rule_keys = tuple(defaults)
        super().__init__(params, {**defaults, **base_kwargs})
        self.base_optimizer = _build_base(base_optimizer, self.param_groups, base_kwargs, rule)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        for group in self.param_groups:
            rule.validate(group)
        rule.check_base(self.base_optimizer)
        self.steps = 0  # base-optimizer steps taken
        self.skipped_steps = 0  # steps skipped for non-finite values
        self.ascent_steps = 0  # taken steps whose perturbation came from an ascent pass
        self.passes = 0.0  # forward-backward passes over a batch, a pass over a fraction f counting f
        self.example_passes = 0  # examples through every forward-backward pass (train_step)
        self.last_step: StepRecord | None = None
        self.execution_used: str | None = None
        self._vectorized_error: str | None = None
        self.geometry = rules.perturbation  # compile_step swaps in a compiled version
        self._backup = WeightBackup()
        self._pending: _Pending | None = None
        cadence.bind()  # last: a construction that fails leaves the cadence free

    @property
    def passes_per_step(self) -> int:
        """Forward-backward passes of a step that ascends: the rule's ascent passes plus the descent.

        What a run really spent, with a cadence that skips ascents, is :attr:`passes`."""
        return self.rule.ascent_passes + 1

    # ---- plumbing ------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not hasattr(self, "base_optimizer"):  # during Optimizer.__init__
            super().add_param_group(param_group)
            return
        for key in self._rule_keys:
            param_group.setdefault(key, self.defaults[key])
        self.base_optimizer.add_param_group(param_group)
        self.rule.validate(self.param_groups[-1])

    def _groups(self, with_grad: bool) -> Groups:
        if with_grad:
            return [[p for p in g["params"] if p.grad is not None] for g in self.param_groups]
        return [[p for p in g["params"] if p.requires_grad] for g in self.param_groups]

    def _rule_context(self, params: Groups) -> RuleContext:
        return RuleContext(
            params=params,
            groups=self.param_groups,
            state_of=self.state.__getitem__,
            base_state_of=self.base_optimizer.state.__getitem__,
            geometry=self.geometry,
        )

    def _plan(self, ctx: RuleContext) -> tuple[bool, Groups | None]:
        """Whether this step ascends (as far as is known before any gradient), and the
        perturbation of a step that does not (a reused one, or None)."""
        if self.rule.ascent_passes == 0:
            return False, None  # the rule perturbs without an ascent pass (Momentum-SAM)
        if self.cadence.decides_after_gradient or self.cadence.ascends(self.steps):
            return True, None
        return False, self.cadence.reuse(ctx)

    def _step_context(self, params: Groups) -> StepContext:
        rules_ctx = self._rule_context(params)
        ascend, fixed = self._plan(rules_ctx)
        cadence, step = self.cadence, self.steps
        after = cadence.decides_after_gradient and ascend
        return StepContext(
            rule=self.rule,
            rules=rules_ctx,
            sharding=self.sharding,
            micro_batch_size=self.micro_batch_size,
            backup=self._backup,
            sync=self.perturbation_groups,
            ascend=ascend,
            fixed=fixed,
            sample=cadence.sample if cadence.ascent_fraction is not None else None,
            decide=(lambda squared: cadence.decide(float(squared), step)) if after else None,
            keep_full=self.rule.needs_full_grad or cadence.needs_full_grad,
        )

    def _finite(self, ascent_norm: Tensor, params: list[Tensor]) -> bool | None:
        """One host sync: are the ascent norm and every descent gradient finite? (None: unchecked)."""
        if self.nonfinite == "unchecked":
            return None
        grads = [p.grad for p in params if p.grad is not None]
        total = ascent_norm + full_value(rules.global_norm(grads)) if grads else ascent_norm
        return bool(torch.isfinite(total))

    def _descent_side(self, ctx: RuleContext, result: PassResult, rule_step: bool) -> None:
        """Rule and cadence descent transforms, then clipping, on unscaled gradients in ``.grad``."""
        rule_transforms = rule_step and self.rule.transforms_descent
        if rule_transforms or self.cadence.transforms_descent:
            for group in ctx.params:
                for p in group:
                    if p.grad is None:  # unused in the loss: its descent gradient is zero
                        p.grad = torch.zeros_like(p)
            grads = [[p.grad for p in group] for group in ctx.params]
            if rule_transforms:
                self.rule.descent(grads, result.full_grads, ctx)
            if self.cadence.transforms_descent:
                self.cadence.descent(grads, result.full_grads, ctx, result.ascended)
        if self.max_grad_norm is not None:
            flat = [p for group in ctx.params for p in group if p.grad is not None]
            if flat:
                torch.nn.utils.clip_grad_norm_(flat, self.max_grad_norm, foreach=True)

    @Optimizer.profile_hook_step
    def _hooked(self, update: Callable[[], bool]) -> bool:
        """Run the base-optimizer update between this optimizer's step hooks (once per step)."""
        return update()

    def _finish(
        self,
        ok: bool | None,
        ctx: RuleContext,
        result: PassResult,
        scaler: torch.amp.GradScaler | None,
    ) -> None:
        """Base step (or skip) after the weights are restored and the descent grads are in ``.grad``."""
        flat = [p for group in ctx.params for p in group]
        rule_step = result.ascended or self.rule.ascent_passes == 0
        transforms = (
            (rule_step and self.rule.transforms_descent)
            or self.cadence.transforms_descent
            or self.max_grad_norm is not None
        )

        def update() -> bool:
            taken = ok is not False
            if scaler is not None:
                if ok is False:
                    # Make the scaler see the non-finite value (it may be only in the ascent pass),
                    # so that it skips the step and backs off its scale exactly as it always does.
                    # Indexing (not .view) works for any memory layout, channels_last included.
                    bad = next(p for p in flat if p.grad is not None)
                    bad.grad[(0,) * bad.grad.dim()] = float("inf")
                if transforms:
                    scaler.unscale_(self.base_optimizer)
                    if ok is not False:
                        self._descent_side(ctx, result, rule_step)
                before = scaler.get_scale() if ok is None else None
                scaler.step(self.base_optimizer)
                scaler.update()
                if before is not None:  # unchecked: the scaler alone knows whether it skipped
                    taken = scaler.get_scale() >= before
            elif ok is not False:
                if transforms:
                    self._descent_side(ctx, result, rule_step)
                self.base_optimizer.step()
            return taken

        self._hooked(lambda: self._account(ok, update(), ctx, result, rule_step, scaler))

    def _account(
        self,
        ok: bool | None,
        taken: bool,
        ctx: RuleContext,
        result: PassResult,
        rule_step: bool,
        scaler: torch.amp.GradScaler | None,
    ) -> None:
        """After the base update: counters, the step record, rule and cadence state (or a skip)."""
        # LR schedulers built on this optimizer check this flag to warn about call order.
        self._opt_called = True
        self.passes += result.passes
        self.example_passes += result.examples
        self.last_step = StepRecord(
            loss=result.loss,
            perturbed_loss=result.perturbed_loss,
            ascent_norm=result.norm_mean,
            ascended=result.ascended,
            taken=taken,
            passes=result.passes,
        )
        if ok is False:
            self.skipped_steps += 1
            self.zero_grad(set_to_none=True)
            ctx.scratch.clear()
            if scaler is None and self.nonfinite == "raise":
                raise NonFiniteError(
                    f"non-finite loss or gradient at step {self.steps}: the weights were restored "
                    "and the step was not taken. Check the data and the learning rate, use a "
                    "GradScaler with mixed precision, or pass nonfinite='skip' to skip such steps"
                )
            if scaler is None:
                warnings.warn(
                    f"samkit: skipped a step with a non-finite loss or gradient "
                    f"({self.skipped_steps} so far)",
                    RuntimeWarning,
                    stacklevel=7,  # the caller of train_step / second_step
                )
            return
        if taken:
            if rule_step:
                self.rule.observe(result.full_grads, ctx)
            self.cadence.observe(ctx, result.ascended, result.perturbation)
            self.steps += 1
            self.ascent_steps += int(result.ascended)
        ctx.scratch.clear()

    # ---- familiar two-call surface (shards=1) ---------------------------------------------------
    def _require_single_shard(self, what: str, multistep: bool = False) -> None:
        if not self.sharding.is_single:
            raise SamkitError(
                f"{what} works on the gradient of one whole batch; with {self.sharding} use "
                "train_step(model, loss_fn, batch), which splits the batch into shards"
            )
        if self.rule.ascent_passes > 1 and not multistep:
            raise SamkitError(
                f"{what}: the {self.rule.name} rule takes {self.rule.ascent_passes} ascent passes, "
                "which need the loss function: use train_step(model, loss_fn, batch) or "
                "step(closure)"
            )

    def _frozen(self) -> AbstractContextManager[None]:
        """Freeze BatchNorm statistics for a pass at a perturbation (when the model is known)."""
        return frozen_running_stats(self.model) if self.model is not None else nullcontext()

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move to ``w + e(w)`` using the gradients already in ``.grad`` (from your first backward).

        For a rule without ascent pass (Momentum-SAM) no gradient is needed: call it before the
        only forward/backward of the step. A cadence that skips this step's ascent leaves the
        weights where they are (or moves them by the reused perturbation).
        """
        self._require_single_shard("first_step()")
        self._begin()
        if zero_grad:
            self.zero_grad()

    def _begin(self) -> None:
        if self._pending is not None:
            raise SamkitError("first_step() called twice: call second_step() to restore the weights")
        rule = self.rule
        if rule.ascent_passes == 0:
            params, grads = self._groups(with_grad=False), None
        else:
            params = self._groups(with_grad=True)
            grads = [[p.grad for p in group] for group in params]
            check_dense([g for group in grads for g in group])
        flat = [p for group in params for p in group]
        if not flat:
            raise SamkitError(
                "first_step() found no gradients: compute the loss on the unperturbed weights and "
                "call loss.backward() before first_step() (or use train_step)"
            )
        ctx = self._rule_context(params)
        ascend, fixed = self._plan(ctx)
        if ascend and self.cadence.decides_after_gradient and grads is not None:
            squared = global_norm([g for group in grads for g in group]).square()
            ascend = self.cadence.decide(float(full_value(squared)), self.steps)
        keep = ascend and (rule.needs_full_grad or self.cadence.needs_full_grad) and grads is not None
        full = [[g.clone() for g in group] for group in grads] if keep else None  # type: ignore[union-attr]
        if rule.ascent_passes == 0 or ascend:
            e, norm = rule.perturbation(grads, ctx)
        else:
            e, norm = fixed, torch.zeros((), device=flat[0].device)
        self._backup.save(flat)
        if e is not None:
            torch._foreach_add_(flat, [t for group in e for t in group])
            weights_moved()
        passes = 2.0 if rule.ascent_passes > 0 else 1.0  # the caller's backward(s)
        self._pending = _Pending(ctx, full, full_value(norm), ascend and rule.ascent_passes > 0, e, passes)

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore ``w`` exactly and step the base optimizer with the gradient taken at ``w + e``."""
        if self._pending is None:
            raise SamkitError("second_step() called without first_step(): nothing to restore")
        pending, self._pending = self._pending, None
        flat = [p for group in pending.ctx.params for p in group]
        self._backup.restore(flat)
        # The record's ascent norm is the first pass's, as in train_step; every norm is checked.
        norms = pending.norm if pending.later_norms is None else pending.norm + pending.later_norms
        result = PassResult(
            loss=None,
            perturbed_loss=None,
            ascent_norm=norms,
            full_grads=pending.full,
            ascended=pending.ascended,
            perturbation=pending.perturbation,
            norm_mean=pending.norm if pending.ascended else None,
            passes=pending.passes,
        )
        self._finish(self._finite(norms, flat), pending.ctx, result, None)
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """A whole step from a closure that computes the loss and calls ``backward()``.

        Two conventions, told apart by whether gradients are present when ``step`` is called:

        * torch's (LBFGS, Lightning, ...): no gradients yet. ``closure()`` gives the gradient at
          ``w``; samkit perturbs, calls ``closure()`` again at ``w + e`` (and at each further
          ascent step of multi-step SAM), restores ``w`` and steps. Returns the first loss.
        * the popular SAM code's: you ran the first forward/backward before ``step``; samkit
          perturbs, calls ``closure()`` at ``w + e``, restores and steps. Returns the closure's
          (perturbed) loss.

        With ``SAM(..., model=model)`` the passes at ``w + e`` leave BatchNorm statistics alone.
        A cadence step without ascent calls the closure once (or not at all, when the gradient at
        ``w`` is already there). Under DDP the closure's backward all-reduces, so the perturbation
        is the global batch's (plain SAM on the global batch); ``train_step`` perturbs per rank.
        """
        if closure is None:
            raise SamkitError(
                "SAM.step() needs a closure that recomputes the loss and calls loss.backward(): "
                "opt.step(closure). Or call first_step()/second_step() yourself, or let "
                "opt.train_step(model, loss_fn, batch) do the whole update. Trainers that call "
                "optimizer.step() without a closure: use samkit.integrations.transformers.SAMTrainer "
                "for the Hugging Face Trainer (see docs/integrations.md)"
            )
        self._require_single_shard("step(closure)", multistep=True)
        closure = torch.enable_grad()(closure)
        rule = self.rule
        first_loss = None
        calls = 0
        fresh = not any(p.grad is not None for g in self.param_groups for p in g["params"])
        if rule.ascent_passes > 0 and fresh:  # torch's convention: the closure makes the gradient
            first_loss = closure()
            calls += 1
        with torch.no_grad():
            self._begin()
        pending = self._pending
        assert pending is not None
        out = first_loss
        try:
            if pending.perturbation is not None or pending.ascended or rule.ascent_passes == 0:
                flat = [p for group in pending.ctx.params for p in group]
                for _ in range(1, rule.ascent_passes if pending.ascended else 1):
                    self.zero_grad(set_to_none=True)
                    with self._frozen():
                        closure()
                    calls += 1
                    grads = [[p.grad if p.grad is not None else torch.zeros_like(p) for p in group]
                             for group in pending.ctx.params]
                    with torch.no_grad():
                        e, norm = rule.perturbation(grads, pending.ctx, previous=pending.perturbation)
                        self._backup.restore(flat)
                        torch._foreach_add_(flat, [t for group in e or [] for t in group])
                        weights_moved()
                    pending.perturbation = e
                    later, before = full_value(norm), pending.later_norms
                    pending.later_norms = later if before is None else before + later
                self.zero_grad(set_to_none=True)
                with self._frozen() if rule.ascent_passes > 0 else nullcontext():
                    out = closure()
                calls += 1
        except BaseException:
            self._backup.restore([p for group in pending.ctx.params for p in group])
            self._pending = None
            raise
        pending.passes = float(calls + (0 if fresh or rule.ascent_passes == 0 else 1))
        self.second_step()
        return first_loss if first_loss is not None else out

    step.hooked = True  # type: ignore[attr-defined]  # hooks fire in _finish, once per step

    # ---- the whole update ----------------------------------------------------------------------
    def train_step(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batch: Any,
        *,
        scaler: torch.amp.GradScaler | None = None,
    ) -> Tensor:
        """One full SAM-family update on ``batch``; returns the unperturbed mean loss (detached).

        ``loss_fn(model, batch)`` returns the mean loss of ``batch``. The batch is split into the
        configured shards (and micro-batches); each shard's ascent pass (unperturbed) updates
        BatchNorm statistics, merged once per step; the descent passes do not. With a
        ``GradScaler`` the ascent gradient is unscaled before its norm, and a non-finite value
        anywhere makes the scaler skip the step and back off (``scaler.step`` and ``scaler.update``
        are called here); a disabled scaler is ignored. Under autocast, wrap this call (or the body
        of ``loss_fn``) in ``torch.autocast``. A step without ascent pass (Momentum-SAM, or a
        cadence that skips it) takes one pass, whose loss it returns; ``opt.last_step`` describes
        the step.
        """
        if self._pending is not None:
            raise SamkitError("train_step() called between first_step() and second_step()")
        scaler = active_scaler(scaler)
        params = self._groups(with_grad=False)
        flat = [p for group in params for p in group]
        if not flat:
            raise SamkitError("the optimizer holds no parameter that requires grad")
        ctx = self._step_context(params)
        vectorizable = ctx.ascent_passes > 0 and ctx.decide is None
        execution = self._choose_execution(model) if vectorizable else "loop"
        stats = RunningStats(model) if model.training else None
        self.zero_grad(set_to_none=True)
        if stats:
            stats.save()
        result = None
        if execution == "vectorized":
            sizes = self.sharding.sizes(batch_size(batch))
            try:
                result = vectorized_passes(ctx, model, loss_fn, batch, sizes, scaler, stats)
            except Exception as exc:  # an op without a vmap rule, ...: the loop always works
                self.zero_grad(set_to_none=True)
                if self.execution == "vectorized":
                    if stats:
                        stats.clear()
                    if isinstance(exc, SamkitError):
                        raise
                    raise SamkitError(
                        f"execution='vectorized' failed for this model ({type(exc).__name__}: "
                        f"{exc}); some operations have no torch.func (vmap) rule. Use "
                        "execution='loop', or 'auto', which falls back to the loop"
                    ) from exc
                self._vectorized_error = f"{type(exc).__name__}: {exc}"
                log.warning("vectorized execution failed (%s); using the loop from now on",
                            self._vectorized_error)
                execution = "loop"
        if execution == "loop":
            result = loop_passes(ctx, model, loss_fn, batch, scaler, stats)
        self.execution_used = execution
        assert result is not None and result.loss is not None
        result.passes = result.examples / batch_size(batch)
        ok = self._finite(result.ascent_norm + result.loss.float() * 0, flat)
        if ok is None and scaler is not None:
            ok = bool(torch.isfinite(result.ascent_norm))
        if stats:
            # A non-finite step leaves the running statistics as they were, like the weights.
            if ok is False:
                stats.restore()
            else:
                stats.write_merged()
                if is_distributed(model):
                    all_reduce_mean_(stats.floats, weight=float(batch_size(batch)))
            stats.clear()
        self._finish(ok, ctx.rules, result, scaler)
        return result.loss

    def _choose_execution(self, model: nn.Module) -> str:
        """``loop`` or ``vectorized`` for this step (``auto``: vectorized for k > 1 shards on CUDA)."""
        if (
            self.sharding.is_single
            or self.execution == "loop"
            or self._vectorized_error
            or is_distributed(model)  # under DDP/FSDP the loop runs one rank's shards
        ):
            choice = "loop"
        elif self.execution == "vectorized":
            choice = "vectorized"
        else:
            device = next(iter(self.param_groups[0]["params"])).device
            choice = "vectorized" if auto_vectorizes(device) else "loop"
        if choice != self.execution_used:
            log.debug("%s execution for %s (asked: %s)", choice, self.sharding, self.execution)
        return choice

    # ---- state ---------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """All of it (``torch.optim.Optimizer`` keeps only its groups, state and defaults, which would
        leave a copy without its base optimizer, rule and cadence): ``copy.deepcopy`` and pickling
        give an optimizer that continues as the original."""
        return dict(self.__dict__)

    _COUNTERS = ("steps", "skipped_steps", "ascent_steps", "passes", "example_passes")

    def state_dict(self) -> dict[str, Any]:
        """Rule state (e.g. the F-SAM EMA), the base optimizer's state, the cadence's state and the
        counters — everything a resumed run needs, no copy of the weights."""
        if self._pending is not None:
            raise SamkitError(
                "state_dict() between first_step() and second_step() would save perturbed weights' "
                "optimizer state: call second_step() first"
            )
        sd = super().state_dict()
        sd["base"] = self.base_optimizer.state_dict()
        sd["samkit"] = {k: getattr(self, k) for k in self._COUNTERS}
        sd["samkit"]["cadence"] = self.cadence.state_dict()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        try:
            base = state_dict.pop("base")
            counters = dict(state_dict.pop("samkit"))
        except KeyError as exc:
            raise SamkitError(
                f"not a samkit optimizer state_dict (missing {exc}); was it saved from "
                "the base optimizer instead of the samkit optimizer?"
            ) from None
        self.base_optimizer.load_state_dict(base)
        super().load_state_dict(state_dict)
        # Optimizer.load_state_dict builds new group dicts: share them with the base again.
        self.base_optimizer.param_groups = self.param_groups
        cadence = counters.pop("cadence", None)
        if cadence is not None:
            self.cadence.load_state_dict(cadence)
        for key in self._COUNTERS:  # counters added later default to 0 in older checkpoints
            setattr(self, key, type(getattr(self, key))(counters.get(key, 0)))


class FriendlySAM(SAM):
    r"""Friendly-SAM (Li et al., CVPR 2024): :class:`SAM` with :class:`samkit.rules.FriendlySAM`.

    .. math::
        d = g - \sigma m, \qquad e = \rho\,\frac{T^2 d}{\lVert T d \rVert}, \qquad
        m \leftarrow \lambda m + (1 - \lambda)\, g_\text{full}

    ``m`` starts at the first gradient (so the first step is plain SAM) and is updated after it is
    used, as in the authors' released optimizer. ``sigma=0`` is SAM. All other arguments are
    :class:`SAM`'s; this class is only the shortcut
    ``SAM(params, base, rho=rho, rule=samkit.rules.FriendlySAM(sigma, lmbda), ...)``.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer: BaseOptimizer,
        *,
        rho: float = 0.05,
        sigma: float = 1.0,
        lmbda: float = 0.9,
        **kwargs: Any,
    ) -> None:
        if "rule" in kwargs:
            raise SamkitError("FriendlySAM sets its own rule; use samkit.SAM(..., rule=...) for another")
        super().__init__(
            params, base_optimizer, rho=rho, rule=rules.FriendlySAM(sigma=sigma, lmbda=lmbda), **kwargs
        )


def _positive_int_or_none(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SamkitError(f"{name} must be a positive integer (examples) or None, got {value!r}")
    return value


def _build_base(
    factory: BaseOptimizer, groups: list[dict[str, Any]], kwargs: dict[str, Any], rule: Rule
) -> Optimizer:
    """The base optimizer on the same param groups (a class, a partial or any such callable)."""
    try:
        base = factory(groups, **kwargs)
    except TypeError as err:
        raise SamkitError(
            f"could not build the base optimizer {getattr(factory, '__name__', factory)!r} with "
            f"{sorted(kwargs)}: {err}. Keywords that are neither samkit's nor the {rule.name} rule's "
            f"({', '.join(sorted(rule.hyperparameters()))}) go to the base optimizer"
        ) from err
    if not isinstance(base, Optimizer):
        raise SamkitError(
            f"base_optimizer must build a torch.optim.Optimizer, got {type(base).__name__}"
        )
    ours = {id(p) for g in groups for p in g["params"]}
    theirs = {id(p) for g in base.param_groups for p in g["params"]}
    if ours != theirs:
        raise SamkitError(
            "base_optimizer must build its optimizer on the param groups it is given (samkit calls "
            "base_optimizer(param_groups, **kwargs)); it returned one over other parameters"
        )
    return base
