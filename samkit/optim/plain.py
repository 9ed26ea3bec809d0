"""A plain base optimizer's step on samkit's route: the same micro-batches, clipping and counters.

``samkit train`` runs SGD, AdamW, ... beside the SAM family; their steps are the SAM family's with no
ascent and nothing moved. :class:`PlainStep` builds that plan (:meth:`Knobs.plan` with
:data:`~samkit.optim.cadence.NO_ASCENT`) and runs it through the same code as a SAM step:
:func:`~samkit.optim.executions.run_passes` (the loop execution's descent over micro-batches of at
most ``micro_batch_size`` examples, each weighted by its share of the batch; under DDP one
all-reduce, in the last backward), :func:`~samkit.optim.update.base_step` (clipping to
``max_grad_norm``, the base step) and :func:`~samkit.optim.update.account` (the
:class:`~samkit.optim.update.Counters` and the :class:`~samkit.optim.update.StepRecord` a SAM
optimizer keeps). BatchNorm statistics are the pass's as they come, as in any base-optimizer step.

    step = PlainStep(torch.optim.SGD(model.parameters(), lr=0.1), micro_batch_size=32)
    loss = step.train_step(model, loss_fn, batch)   # step.counts, step.last_step
"""

from __future__ import annotations

import weakref
from typing import Any

from torch import Tensor, nn
from torch.optim import Optimizer

from samkit._batch import LossFn
from samkit.errors import SamkitError
from samkit.optim.cadence import NO_ASCENT
from samkit.optim.distributed import ddp_of, is_fsdp
from samkit.optim.engine import WeightBackup
from samkit.optim.executions import Execution, run_passes
from samkit.optim.plan import Knobs, StepPlan
from samkit.optim.rules.base import RuleContext
from samkit.optim.update import Counters, Finite, StepRecord, account, base_step


class PlainStep:
    """``optimizer``'s whole step on a batch, through samkit's passes and update (module docstring)."""

    def __init__(self, optimizer: Optimizer, *, micro_batch_size: int | None = None,
                 max_grad_norm: float | None = None) -> None:
        # weakly: plain_step keeps a PlainStep per optimizer, as long as the optimizer lives
        self._optimizer = weakref.ref(optimizer)
        self.knobs = _knobs(micro_batch_size, max_grad_norm)
        self.counts = Counters()
        self.last_step: StepRecord | None = None
        self._execution = Execution("loop")
        self._backup = WeightBackup()  # (a plain step moves nothing: never saved)
        self._model: tuple[Any, Any, bool] = (None, None, False)  # weak model, its DDP, FSDP2

    @property
    def optimizer(self) -> Optimizer:
        optimizer = self._optimizer()
        if optimizer is None:
            raise SamkitError("the optimizer of this PlainStep no longer exists")
        return optimizer

    def _plan(self, model: nn.Module) -> StepPlan:
        ref, ddp, fsdp = self._model
        if ref is None or ref() is not model:
            ddp, fsdp = ddp_of(model), is_fsdp(model)
            self._model = (weakref.ref(model), ddp, fsdp)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.requires_grad]
        if not params:
            raise SamkitError("the optimizer holds no parameter that requires grad")
        ctx = RuleContext(params=[params], groups=[{}], state_of=_no_state, base_state_of=_no_state)
        return self.knobs.plan(self.counts.steps, ctx, [], ddp=ddp, fsdp=fsdp, decision=NO_ASCENT)

    def train_step(self, model: nn.Module, loss_fn: LossFn, batch: Any) -> Tensor:
        """zero_grad, the descent over the micro-batches, clipping, the base step, counting; returns
        the batch's mean loss (detached). Non-finite values are the caller's to check."""
        optimizer = self.optimizer
        plan = self._plan(model)
        optimizer.zero_grad(set_to_none=True)
        result = run_passes(plan, self._execution, model, loss_fn, batch, None, None, self._backup)
        taken = base_step(optimizer, plan, result, Finite.UNCHECKED, None)
        self.last_step = account(self.counts, plan, result, Finite.UNCHECKED, taken)
        assert result.loss is not None
        return result.loss


def _knobs(micro_batch_size: int | None, max_grad_norm: float | None) -> Knobs:
    """The settings of a plain step, checked as a SAM optimizer's are (non-finite values: the
    caller's to check)."""
    return Knobs.build(micro_batch_size=micro_batch_size, max_grad_norm=max_grad_norm,
                       execution="loop", nonfinite="unchecked")


def _no_state(p: Tensor) -> dict[str, Any]:
    raise AssertionError("a plain step keeps no per-parameter state")  # pragma: no cover


def plain_step(optimizer: Optimizer, micro_batch_size: int | None = None,
               max_grad_norm: float | None = None) -> PlainStep:
    """The :class:`PlainStep` of ``optimizer`` (one per optimizer, kept while the optimizer lives,
    so its counters run on), set to these micro-batches and clipping."""
    step = _STEPS.get(optimizer)
    if step is None:
        step = _STEPS[optimizer] = PlainStep(optimizer, micro_batch_size=micro_batch_size,
                                             max_grad_norm=max_grad_norm)
    elif (step.knobs.micro_batch_size, step.knobs.max_grad_norm) != (micro_batch_size, max_grad_norm):
        step.knobs = _knobs(micro_batch_size, max_grad_norm)
    return step


_STEPS: weakref.WeakKeyDictionary[Optimizer, PlainStep] = weakref.WeakKeyDictionary()

