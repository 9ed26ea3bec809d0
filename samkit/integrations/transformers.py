"""samkit inside the Hugging Face ``Trainer``: :class:`SAMTrainer`.

Install with ``pip install 'samkit[transformers]'`` (transformers and accelerate). The ``Trainer``
runs one forward/backward per micro-batch, clips, and calls ``optimizer.step()`` without a closure;
a SAM step needs the gradient of the whole accumulation window before it can perturb, then a second
pass over it. :class:`SAMTrainer` keeps the Trainer's loop and changes one thing: the micro-batches
of an optimizer step are collected, and on the last one samkit's ``train_step`` runs over them all
(ascent accumulated over the micro-batches, one perturbation, descent accumulated), each micro-batch
weighted exactly as the Trainer weights it. The Trainer's own ``optimizer.step()`` that follows
finds the step taken.

What carries over from ``TrainingArguments``: ``gradient_accumulation_steps`` (micro-batches: one
perturbation per optimizer step, or ``shards=k`` perturbations over groups of micro-batches),
``max_grad_norm`` (samkit clips the descent gradient before the base step), ``bf16`` (accelerate's
autocast; samkit clears the autocast weight cache when it moves the weights), ``fp16`` with
accelerate's ``GradScaler`` (samkit's ``train_step`` takes the scaler: both passes unscaled and
checked, the step skipped and the scale backed off on inf, one ``update()`` per step; accelerate
learns whether the step was skipped, so the Trainer holds its LR scheduler back as it always does
on an overflow), DDP through accelerate
(one perturbation per rank: m-sharpness, as samkit's own DDP ``train_step``), LR schedulers,
``optim`` (the base optimizer) and checkpoint/resume (the checkpoint's ``optimizer.pt`` is the samkit
optimizer's state: base state, rule state, counters).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from samkit.errors import SamkitError
from samkit.integrations import require
from samkit.optim.sam import SAM

require("accelerate", "transformers")
require("transformers", "transformers")
import transformers  # noqa: E402  (after require: a missing library names the extra to install)

__all__ = ["SAMTrainer"]

# transformers 5 passes the model to Trainer.create_optimizer; 4.57 (the last 4.x) takes none and
# uses self.model. The one difference SAMTrainer has to bridge between the two majors.
_CREATE_TAKES_MODEL = "model" in inspect.signature(transformers.Trainer.create_optimizer).parameters


class SAMTrainer(transformers.Trainer):
    """A ``transformers.Trainer`` whose optimizer is a samkit optimizer.

    Three ways to give it one:

    * ``SAMTrainer(model, args, ..., sam_kwargs={"rho": 0.05})``: samkit wraps the base optimizer
      that ``args.optim`` selects (AdamW by default) with its learning rate, betas and weight-decay
      groups; ``sam_kwargs`` are :class:`samkit.SAM`'s settings (``rho``, ``rule``, ``shards``,
      ``cadence``, ...);
    * ``optimizers=(samkit.SAM(model.parameters(), torch.optim.AdamW, lr=...), None)``;
    * ``optimizer_cls_and_kwargs=(samkit.SAM, {"base_optimizer": torch.optim.AdamW, "lr": ...})``.

    ``args.max_grad_norm`` is applied by samkit to the descent gradient unless the optimizer has its
    own ``max_grad_norm``. ``shards=k`` splits each step's micro-batches into ``k`` groups (k at
    most ``gradient_accumulation_steps``), each with its own perturbation; ``shard_size`` and
    ``micro_batch_size`` are the Trainer's to choose (``per_device_train_batch_size``), not set here.

    Example::

        trainer = SAMTrainer(model=model, args=TrainingArguments("out", gradient_accumulation_steps=4),
                             train_dataset=ds, sam_kwargs={"rho": 0.05})
        trainer.train()
    """

    def __init__(self, *args: Any, sam_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.sam_kwargs = dict(sam_kwargs or {})
        self._sam_window: list[Any] = []
        super().__init__(*args, **kwargs)
        if self.sam_kwargs and (self.optimizer is not None or self.optimizer_cls_and_kwargs is not None):
            raise SamkitError(
                "sam_kwargs configure the samkit optimizer SAMTrainer builds around args.optim; you also "
                "passed an optimizer (optimizers= or optimizer_cls_and_kwargs=): put the settings there"
            )

    @property
    def sam(self) -> SAM:
        """The samkit optimizer (the one checkpointed), once the Trainer has created it."""
        stepped = _unwrap(self.optimizer)
        if not isinstance(stepped, _StepTaken):
            raise SamkitError("the optimizer is created when training starts (trainer.train())")
        return stepped.sam

    def create_optimizer(self, model: nn.Module | None = None) -> Optimizer:
        """The Trainer's optimizer creation, with samkit's SAM around ``args.optim`` by default."""
        if isinstance(self.optimizer, _StepTaken):
            return self.optimizer
        if self.optimizer is None and self.optimizer_cls_and_kwargs is None:
            opt_model: Any = self.model if model is None else model  # any nn.Module, not only PreTrainedModel
            base, base_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            # The class itself (the Trainer takes any other callable for a model-level factory).
            # sam_kwargs are settings: a stateful one (a cadence) is copied for each optimizer.
            settings = copy.deepcopy(self.sam_kwargs)
            self.optimizer_cls_and_kwargs = (SAM, {**base_kwargs, **settings, "base_optimizer": base})
        create: Any = super().create_optimizer  # its signature is the installed major's
        sam = create(model) if _CREATE_TAKES_MODEL else create()
        if not isinstance(sam, SAM):
            raise SamkitError(
                f"SAMTrainer needs a samkit optimizer (samkit.SAM, samkit.create_optimizer), got "
                f"{type(sam).__name__}; use transformers.Trainer for other optimizers"
            )
        if sam.sharding.shard_size is not None or sam.micro_batch_size is not None:
            raise SamkitError(
                "under SAMTrainer the micro-batches are the Trainer's (per_device_train_batch_size x "
                "gradient_accumulation_steps): leave shard_size and micro_batch_size unset, and use "
                "shards=k for k perturbations per step over groups of micro-batches"
            )
        self.optimizer = _StepTaken(sam)
        scaler = self.accelerator.scaler
        if scaler is not None and not isinstance(scaler, _StepScaler):
            # Before accelerator.prepare(optimizer), which hands the scaler to its optimizer wrapper.
            self.accelerator.scaler = _StepScaler(scaler)
        return self.optimizer

    def training_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor:
        """Collect the step's micro-batches; on the last one, run samkit's ``train_step`` over them.

        Returns what the Trainer adds to its running loss: zero for the collected micro-batches and
        the step's loss at ``w`` (the Trainer's weighting of the micro-batches) on the last.
        """
        stepped = _unwrap(self.optimizer)
        assert isinstance(stepped, _StepTaken)
        self._sam_window.append(self._prepare_inputs(inputs))
        if len(self._sam_window) < self.current_gradient_accumulation_steps:
            return torch.zeros((), device=self.args.device)
        window, self._sam_window = self._sam_window, []
        sam = stepped.sam
        n = len(window)
        if sam.sharding.shards is not None and sam.sharding.shards > n:
            raise SamkitError(
                f"shards={sam.sharding.shards} but this step has {n} micro-batch(es): under SAMTrainer a "
                "shard is a group of whole micro-batches; raise gradient_accumulation_steps or lower shards"
            )
        scaler = self.accelerator.scaler
        if isinstance(scaler, _StepScaler):
            scaler = scaler.scaler
        model.train()

        def loss_fn(m: nn.Module, index: Tensor) -> Tensor:
            (i,) = index.tolist()  # one micro-batch per piece (micro_batch_size=1 over the indices)
            # The piece's weight is 1/n: scale back so that the step's loss is the Trainer's sum.
            return n * self._contribution(m, window[i], num_items_in_batch)

        clip = sam.max_grad_norm if sam.max_grad_norm is not None else (self.args.max_grad_norm or None)
        with _settings(sam, micro_batch_size=1, max_grad_norm=clip):
            loss = sam.train_step(model, loss_fn, torch.arange(n), scaler=scaler)
        stepped.taken = True
        return loss.detach()

    def _contribution(self, model: nn.Module, inputs: dict[str, Any], num_items: Any) -> Tensor:
        """What ``Trainer.training_step`` backpropagates for one micro-batch (before ``backward``)."""
        with self.compute_loss_context_manager():
            # compute_loss may pop "labels": every pass gets its own shallow copy
            # return_outputs=False: the loss alone
            loss = cast(Tensor, self.compute_loss(model, dict(inputs), num_items_in_batch=num_items))
        if self.args.n_gpu > 1:
            loss = loss.mean()
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is None:
            by_items = self.model_accepts_loss_kwargs and num_items is not None
            scaled = by_items or self.compute_loss_func is not None
        return loss if scaled else loss / self.current_gradient_accumulation_steps


class _StepTaken(Optimizer):
    """The samkit optimizer as the Trainer sees it: state, groups and checkpoints are the optimizer's;
    ``step()`` only checks that :meth:`SAMTrainer.training_step` took this step already."""

    def __init__(self, sam: SAM) -> None:  # no Optimizer.__init__: nothing of its own to hold
        self.sam = sam
        self.taken = False

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.sam.state

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.sam.param_groups

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.sam.defaults

    def state_dict(self) -> dict[str, Any]:
        return self.sam.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.sam.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.sam.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.sam.add_param_group(param_group)

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        if not self.taken:
            raise SamkitError(
                "optimizer.step() came without a SAM step: SAMTrainer.training_step takes the step; "
                "if you override training_step, call super().training_step(...)"
            )
        self.taken = False

    def __repr__(self) -> str:
        return f"SAMTrainer step of {self.sam!r}"


class _StepScaler:
    """The ``GradScaler`` as accelerate and the Trainer see it once samkit has used it for the step.

    samkit's ``train_step`` drives the real scaler (``.scaler``) through both passes of a SAM step:
    unscale and inf check of each, ``scaler.step`` (skipped on inf), one ``scaler.update()``. What
    the Trainer does with the scaler afterwards must not count a second time: ``unscale_`` (the
    Trainer's clipping and ``grad_norm``) finds the gradients unscaled already; ``step`` calls the
    optimizer's ``step()`` only if samkit took the step, which is how accelerate tells a skipped
    step (``optimizer_step_was_skipped``: the Trainer then leaves its LR scheduler alone);
    ``update`` is done. Everything else — ``scale``, ``get_scale``, and ``state_dict`` /
    ``load_state_dict`` for the checkpoint's ``scaler.pt`` — is the real scaler's.
    """

    def __init__(self, scaler: torch.amp.GradScaler) -> None:
        self.scaler = scaler

    def unscale_(self, optimizer: Optimizer) -> None:
        """Nothing to do: ``scaler.step`` in samkit's ``train_step`` unscaled the gradients."""

    def step(self, optimizer: Optimizer, *args: Any, **kwargs: Any) -> Any:
        """Report the SAM step to accelerate: ``optimizer.step()`` if it was taken, nothing if skipped."""
        if isinstance(optimizer, _StepTaken) and optimizer.taken:
            record = optimizer.sam.last_step
            if record is not None and not record.taken:  # skipped: the scaler found an inf
                optimizer.taken = False
                return None
        return optimizer.step(*args, **kwargs)

    def update(self, new_scale: float | Tensor | None = None) -> None:
        """Nothing to do: samkit updated the scale once for this step."""
        if new_scale is not None:
            self.scaler.update(new_scale)

    def __getattr__(self, name: str) -> Any:  # only for names not set on the view itself
        if name == "scaler":
            raise AttributeError(name)
        return getattr(self.scaler, name)

    def __repr__(self) -> str:
        return f"SAMTrainer view of {self.scaler!r}"


def _unwrap(optimizer: Any) -> Any:
    """The optimizer inside accelerate's ``AcceleratedOptimizer`` (or the optimizer itself)."""
    return getattr(optimizer, "optimizer", optimizer)


@contextmanager
def _settings(sam: SAM, **values: Any) -> Iterator[None]:
    """Set public knobs of the optimizer for one step and put the user's values back after it."""
    before = {k: getattr(sam, k) for k in values}
    for k, v in values.items():
        setattr(sam, k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            setattr(sam, k, v)
