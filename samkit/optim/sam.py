r"""The SAM family as ``torch.optim.Optimizer`` front ends.

One step of every member is the same pipeline (see ``docs/optimizers.md`` and
``docs/architecture.md``)::

    for each shard s of the batch (weights w_s = n_s / n), in micro-batches if asked:
        g_s = grad L_s(w)                       ascent gradient (unperturbed; updates BatchNorm stats)
        e_s = rule.perturbation(g_s, ...)        perturbation of radius rho
        h_s = grad L_s(w + e_s)                  descent gradient
        w  <- copy of w                          exact restore (no subtraction)
    grad = sum_s w_s h_s -> rule.descent -> clip -> base optimizer step (SGD, AdamW, ...) -> rule.observe

Every front end takes the same route: the step's plan (:mod:`~samkit.optim.plan`: rule x cadence x
sharding x micro-batches), the passes (:mod:`~samkit.optim.engine`: the one ascent routine, with the
loop or :mod:`~samkit.optim.vectorized` execution for ``train_step``, the closure for
``step(closure)``, the caller's backward for ``first_step``/``second_step``), then the update
(:mod:`~samkit.optim.update`: finite check, descent transforms, clipping, scaler, base step,
counting). This module holds only the front ends and the state.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from samkit._batch import LossFn
from samkit.errors import SamkitError
from samkit.optim import rules
from samkit.optim.batchnorm import RunningStats, frozen_running_stats
from samkit.optim.cadence import Cadence
from samkit.optim.distributed import PerturbationGroups, ddp_of, is_fsdp
from samkit.optim.engine import Ascent, PassResult, WeightBackup, closure_passes
from samkit.optim.executions import Execution, run_passes
from samkit.optim.plan import Knobs, StepPlan, check_max_grad_norm, check_micro_batch_size
from samkit.optim.rules.base import Rule, RuleContext
from samkit.optim.rules.friendly import FriendlySAM as FriendlyRule
from samkit.optim.sharding import Sharding
from samkit.optim.update import (
    Counters,
    Finite,
    NonFiniteError,
    StepRecord,
    account,
    active_scaler,
    base_step,
    check_finite,
    refuse_skipped,
)

__all__ = ["SAM", "FriendlySAM", "NonFiniteError", "StepRecord", "active_scaler"]

BaseOptimizer = type[Optimizer] | Callable[..., Optimizer]


class _Model:
    """What a step needs to know of the model it trains, found once per model (kept by a weak
    reference): its norm layers' running statistics (None: it has none), its DDP wrapper, FSDP2."""

    def __init__(self, model: nn.Module) -> None:
        self.ref = weakref.ref(model)
        stats = RunningStats(model)
        self.stats: RunningStats | None = stats if stats else None
        self.ddp = ddp_of(model)
        self.fsdp = is_fsdp(model)


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
        adaptive: the geometry of the ball, ASAM's ``T = |w| + eta``, for any rule (``None``
            keeps the rule's own).
        eta: ASAM's offset in ``T = |w| + eta`` (``None`` keeps the rule's own).
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
        memory_budget: bytes the vectorized execution's stacked shard copies may take (about 3
            copies of the perturbed weights per shard); the shards are mapped in chunks that fit,
            ``auto`` loops where fewer than 4 would on a CPU (2 on CUDA), and ``vectorized``
            refuses a budget not even one shard fits. None: half the free memory on CUDA,
            max(256 MiB, 4 x the weights) on a CPU. See :attr:`execution_reason`.

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
        cadence: Cadence | str | None = None,
        execution: str = "auto",
        nonfinite: str = "raise",
        sync_perturbation_group_size: int = 1,
        memory_budget: int | None = None,
        model: nn.Module | None = None,
        **base_kwargs: Any,
    ) -> None:
        if not callable(base_optimizer):
            raise SamkitError(
                "base_optimizer must be an optimizer class such as torch.optim.SGD, a partial of one, "
                f"or a callable that builds one from the param groups; got {base_optimizer!r}"
            )
        knobs = Knobs.build(
            rho=rho, rule=rule, adaptive=adaptive, eta=eta, shards=shards, shard_size=shard_size,
            micro_batch_size=micro_batch_size, max_grad_norm=max_grad_norm, cadence=cadence,
            execution=execution, nonfinite=nonfinite,
            sync_perturbation_group_size=sync_perturbation_group_size, memory_budget=memory_budget,
        )  # fmt: skip
        self.knobs = knobs
        self._execution = Execution(knobs.execution, knobs.memory_budget)  # the choice; the last used
        if model is not None and not isinstance(model, nn.Module):
            raise SamkitError(f"model must be the nn.Module the optimizer trains (or None), got {model!r}")
        self.model = model
        defaults = {"rho": rho, **knobs.rule.hyperparameters()}
        if adaptive is not None:
            defaults["adaptive"] = adaptive
        if eta is not None:
            defaults["eta"] = eta
        self._rule_keys = tuple(defaults)
        super().__init__(params, {**defaults, **base_kwargs})
        self.base_optimizer = _build_base(base_optimizer, self.param_groups, base_kwargs, knobs.rule)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        for group in self.param_groups:
            knobs.rule.validate(group)
        knobs.check_scope(self.param_groups)
        knobs.rule.check_base(self.base_optimizer)
        self.counts = Counters()
        self.last_step: StepRecord | None = None
        self.geometry = rules.perturbation  # compile_step swaps in a compiled version
        self._backup = WeightBackup()
        # a two-call step between first_step and second_step: its plan and what its passes gave
        self._pending: tuple[StepPlan, PassResult] | None = None
        self._model: _Model | None = None  # the norm layers and the wrapper, found once per model
        knobs.cadence.bind()  # last: a construction that fails leaves the cadence free

    # ---- the settings and the counters, as attributes ------------------------------------------
    @property
    def rule(self) -> Rule:
        """The perturbation rule (:mod:`samkit.rules`)."""
        return self.knobs.rule

    @property
    def cadence(self) -> Cadence:
        """When the ascent happens (:mod:`samkit.cadence`)."""
        return self.knobs.cadence

    @property
    def sharding(self) -> Sharding:
        """How a batch is split into shards (``shards`` / ``shard_size``)."""
        return self.knobs.sharding

    @property
    def micro_batch_size(self) -> int | None:
        """The most examples a pass takes at once (None: the whole shard)."""
        return self.knobs.micro_batch_size

    @micro_batch_size.setter
    def micro_batch_size(self, value: int | None) -> None:
        check_micro_batch_size(value)
        self.knobs.micro_batch_size = value

    @property
    def max_grad_norm(self) -> float | None:
        """The global norm the descent gradient is clipped to (None: none)."""
        return self.knobs.max_grad_norm

    @max_grad_norm.setter
    def max_grad_norm(self, value: float | None) -> None:
        check_max_grad_norm(value)
        self.knobs.max_grad_norm = value

    @property
    def nonfinite(self) -> str:
        """What a NaN/inf loss or gradient does: ``raise``, ``skip`` or ``unchecked``."""
        return self.knobs.nonfinite

    @property
    def execution(self) -> str:
        """The execution asked for: ``auto``, ``loop`` or ``vectorized``."""
        return self._execution.asked

    @property
    def execution_used(self) -> str | None:
        """The execution the last ``train_step`` ran (``auto`` resolved); None before one."""
        return self._execution.used

    @property
    def execution_chunk(self) -> int | None:
        """Shards the last vectorized step mapped at once (None: all of them, or not vectorized);
        set by the memory budget (``memory_budget``)."""
        return self._execution.chunk if self._execution.used == "vectorized" else None

    @property
    def execution_reason(self) -> str | None:
        """Why the last ``train_step`` ran :attr:`execution_used` (``auto``'s rule, or what was asked)."""
        return self._execution.reason

    @property
    def perturbation_groups(self) -> PerturbationGroups:
        """Under DDP, the groups of ranks that average their ascent gradients."""
        return self.knobs.sync

    @property
    def steps(self) -> int:
        """Base-optimizer steps taken."""
        return self.counts.steps

    @property
    def skipped_steps(self) -> int:
        """Steps skipped for a non-finite loss or gradient."""
        return self.counts.skipped_steps

    @property
    def ascent_steps(self) -> int:
        """Taken steps whose perturbation came from an ascent pass."""
        return self.counts.ascent_steps

    @property
    def passes(self) -> float:
        """Forward-backward passes over a batch (a pass over a fraction ``f`` counts ``f``)."""
        return self.counts.passes

    @property
    def example_passes(self) -> int:
        """Examples through every forward-backward pass of ``train_step``."""
        return self.counts.example_passes

    @property
    def passes_per_step(self) -> int:
        """Forward-backward passes of a step that ascends: the rule's ascent passes plus the descent.

        What a run really spent, with a cadence that skips ascents, is :attr:`passes`."""
        return self.knobs.ascents + self.knobs.descents

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not hasattr(self, "base_optimizer"):  # during Optimizer.__init__
            super().add_param_group(param_group)
            return
        for key in self._rule_keys:
            param_group.setdefault(key, self.defaults[key])
        self.base_optimizer.add_param_group(param_group)
        self.rule.validate(self.param_groups[-1])
        self.knobs.check_scope(self.param_groups)

    # ---- the route every front end takes: plan, passes, update -----------------------------------
    def _plan(self, with_grad: bool, model: _Model | None = None) -> StepPlan:
        """This step's plan over the parameters that take part (those with a gradient, for the
        front ends that find the gradient at ``w`` in ``.grad``); the rule sees the groups in the
        perturbation scope (``perturb`` not False), the descent every group."""
        ctx_params, ctx_groups, others = [], [], []
        for g in self.param_groups:
            if with_grad:
                params = [p for p in g["params"] if p.grad is not None]
            else:
                params = [p for p in g["params"] if p.requires_grad]
            if g.get("perturb", True):
                ctx_params.append(params)
                ctx_groups.append(g)
            else:
                others += params
        ctx = RuleContext(
            params=ctx_params,
            groups=ctx_groups,
            state_of=self.state.__getitem__,
            base_state_of=self.base_optimizer.state.__getitem__,
            geometry=self.geometry,
        )
        if model is None:
            return self.knobs.plan(self.counts.steps, ctx, others)
        return self.knobs.plan(self.counts.steps, ctx, others, ddp=model.ddp, fsdp=model.fsdp)

    @Optimizer.profile_hook_step
    def _hooked(self, update: Callable[[], None]) -> None:
        """Run the base-optimizer update between this optimizer's step hooks (once per step)."""
        update()

    def _update(
        self, plan: StepPlan, result: PassResult, finite: Finite, scaler: torch.amp.GradScaler | None
    ) -> None:
        """Base step (or skip) after the weights are restored and the descent grads are in ``.grad``."""

        def update() -> None:
            taken = base_step(self.base_optimizer, plan, result, finite, scaler)
            self._opt_called = True  # LR schedulers built on this optimizer check it (call order)
            self.last_step = account(self.counts, plan, result, finite, taken)
            if finite is Finite.NO:
                self.zero_grad(set_to_none=True)
                refuse_skipped(self.counts, self.nonfinite, scaler)

        self._hooked(update)

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
        scaler = active_scaler(scaler) if scaler is not None else None
        known = self._model
        if known is None or known.ref() is not model:
            self._check_holds(model)
            known = self._model = _Model(model)
        plan = self._plan(with_grad=False, model=known)
        if not plan.all_flat:
            raise SamkitError("the optimizer holds no parameter that requires grad")
        stats = self._running_stats(known, plan) if model.training else None
        self.zero_grad(set_to_none=True)
        if stats is not None:
            stats.save()
        result = run_passes(plan, self._execution, model, loss_fn, batch, scaler, stats, self._backup)
        assert result.loss is not None
        finite = check_finite(self.nonfinite, result, plan.all_flat, scaler)
        if stats is not None:
            distributed = known.ddp is not None or known.fsdp
            stats.commit(finite is not Finite.NO, distributed, result.batch_examples)
        self._update(plan, result, finite, scaler)
        return result.loss

    def _check_holds(self, model: nn.Module) -> None:
        """Refuse a model none of whose parameters this optimizer holds: its step would change
        nothing yet count (checked once per model, when train_step first sees it)."""
        held = {id(p) for g in self.param_groups for p in g["params"]}
        if not any(id(p) in held for p in model.parameters()):
            raise SamkitError(
                "train_step(model, ...): this optimizer holds none of the model's parameters, so "
                "its step would change nothing; nothing was changed. Build the optimizer on the "
                "parameters of the model you train: samkit.SAM(model.parameters(), ...)"
            )

    def _running_stats(self, model: _Model, plan: StepPlan) -> RunningStats | None:
        """The model's running statistics for this step (the norm layers found once per model), or
        None when nothing needs them: a plain step, unchecked, on one process, updates them in its
        only pass and has nothing to undo or average."""
        if model.stats is None or (plan.plain and self.nonfinite == "unchecked"
                                   and model.ddp is None and not model.fsdp):
            return None
        model.stats.refresh()
        return model.stats

    # ---- familiar two-call surface (shards=1) ---------------------------------------------------
    def _frozen(self) -> AbstractContextManager[None]:
        """Freeze BatchNorm statistics for a pass at a perturbation (when the model is known)."""
        return frozen_running_stats(self.model) if self.model is not None else nullcontext()

    def _begin(self, closure: Callable[[], Any] | None, what: str) -> tuple[StepPlan, Ascent, Any, int]:
        """The plan and the ascent of a step whose gradient at ``w`` is in ``.grad`` (none needed
        for a rule without ascent pass)."""
        if self._pending is not None:
            raise SamkitError("first_step() called twice: call second_step() to restore the weights")
        plan = self._plan(with_grad=self.knobs.ascents > 0)
        if not plan.all_flat:
            raise SamkitError(
                f"{what} found no gradients: compute the loss on the unperturbed weights and "
                "call loss.backward() before first_step() (or use train_step)"
            )
        ascent, out, calls = closure_passes(plan, closure, self._frozen, self._backup)
        return plan, ascent, out, calls

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move to ``w + e(w)`` using the gradients already in ``.grad`` (from your first backward).

        For a rule without ascent pass (Momentum-SAM) no gradient is needed: call it before the
        only forward/backward of the step. A cadence that skips this step's ascent leaves the
        weights where they are (or moves them by the reused perturbation).
        """
        self.knobs.require_single_shard("first_step()")
        plan, ascent, _, _ = self._begin(None, "first_step()")
        passes = 2.0 if self.knobs.ascents > 0 else 1.0  # the caller's backward(s)
        self._pending = plan, _result(ascent, passes)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore ``w`` exactly and step the base optimizer with the gradient taken at ``w + e``."""
        if self._pending is None:
            raise SamkitError("second_step() called without first_step(): nothing to restore")
        (plan, result), self._pending = self._pending, None
        self._backup.restore()
        self._update(plan, result, check_finite(self.nonfinite, result, plan.all_flat, None), None)
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
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
        self.knobs.require_single_shard("step(closure)", multistep=True)
        closure = torch.enable_grad()(closure)
        first_loss = None
        fresh = not any(p.grad is not None for g in self.param_groups for p in g["params"])
        if self.knobs.ascents > 0 and fresh:  # torch's convention: the closure makes the gradient
            first_loss = closure()
        plan, ascent, out, calls = self._begin(closure, "step(closure)")
        # the caller's own backward (popular convention) or our first closure call count as a pass
        passes = float(calls + (0 if self.knobs.ascents == 0 else 1))
        with torch.no_grad():
            self._backup.restore()
            result = _result(ascent, passes)
            self._update(plan, result, check_finite(self.nonfinite, result, plan.all_flat, None), None)
        return first_loss if first_loss is not None else out

    step.hooked = True  # type: ignore[attr-defined]  # hooks fire in _update, once per step

    # ---- state ---------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """All of it (``torch.optim.Optimizer`` keeps only its groups, state and defaults, which would
        leave a copy without its base optimizer, rule and cadence): ``copy.deepcopy`` and pickling
        give an optimizer that continues as the original."""
        state = dict(self.__dict__)
        state["_model"] = None  # a weak reference to the model: found again on the next step
        return state

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
        sd["samkit"] = {**self.counts.state_dict(), "cadence": self.cadence.state_dict()}
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
        self.counts.load_state_dict(counters)


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
            params, base_optimizer, rho=rho, rule=FriendlyRule(sigma=sigma, lmbda=lmbda), **kwargs
        )


def _result(ascent: Ascent, passes: float) -> PassResult:
    """What the caller's (or the closure's) passes of a step gave, for the update."""
    return PassResult(
        loss=None,
        perturbed_loss=None,
        ascent_norm=ascent.norms,  # the record's norm is the first pass's; every one is checked
        full_grads=ascent.full if ascent.ascended else None,
        ascended=ascent.ascended,
        perturbation=ascent.e,
        norm_mean=ascent.norm if ascent.ascended else None,
        passes=passes,
    )


def _build_base(
    factory: BaseOptimizer, groups: list[dict[str, Any]], kwargs: dict[str, Any], rule: Rule
) -> Optimizer:
    """The base optimizer on the same param groups (a class, a partial or any such callable)."""
    try:
        base = factory(groups, **kwargs)
    except TypeError as err:
        # name the keyword the base optimizer refused, not all it was given (lr is not wrong)
        found = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        given = repr(found.group(1)) if found else str(sorted(kwargs))
        hint = ""
        if found and found.group(1) == "ascent_fraction":
            hint = (f"; ascent_fraction is an option of every cadence: cadence=samkit.cadence."
                    f"Always(ascent_fraction={kwargs['ascent_fraction']!r})")  # fmt: skip
        raise SamkitError(
            f"could not build the base optimizer {getattr(factory, '__name__', factory)!r} with "
            f"{given}: {err}. Keywords that are neither samkit's nor the {rule.name} rule's "
            f"({', '.join(sorted(rule.hyperparameters()))}) go to the base optimizer{hint}"
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
