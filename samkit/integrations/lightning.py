"""samkit inside PyTorch Lightning: :class:`SAMModule`, a ``LightningModule`` to subclass (or mix in).

Install with ``pip install 'samkit[lightning]'``. Return a samkit optimizer (``samkit.SAM``,
``samkit.create_optimizer(...)``) from ``configure_optimizers`` and train in either mode:

* **automatic optimization** (the default): write ``training_step`` as usual. Lightning calls
  ``optimizer.step(closure)``; :class:`SAMModule` makes samkit use torch's closure convention (the
  closure makes every gradient: at ``w``, then at ``w + e``), keeps ``self.log`` to the pass at
  ``w`` and gives Lightning the unperturbed step output. One shard per step (per rank). Under
  ``precision="16-mixed"`` the step is samkit's ``train_step`` with Lightning's GradScaler, each of
  its passes one call of Lightning's closure (whose ``backward`` samkit takes over).
* **manual optimization** (``self.automatic_optimization = False``): call
  ``loss = self.sam_step(batch, loss_fn)`` in ``training_step``. This is ``opt.train_step`` on the
  model Lightning trains (the DDP-wrapped one under DDP), so shards, micro-batches, every rule and
  cadence, BatchNorm and Lightning's GradScaler (``precision="16-mixed"``) all work.

Under DDP both modes perturb per rank (one shard per rank: m-sharpness, as samkit's own DDP
``train_step``; ``sync_perturbation_group_size`` averages the ascent over groups of ranks), the
descent gradient is all-reduced once per step, and BatchNorm running statistics are averaged over
ranks. ``trainer.global_step`` counts optimizer steps, so ``max_steps`` stops; the optimizer Lightning
checkpoints is the samkit optimizer itself, so its counters and rule state survive a resume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from samkit.errors import SamkitError
from samkit.integrations import require
from samkit.optim.batchnorm import RunningStats
from samkit.optim.distributed import all_reduce_mean_
from samkit.optim.sam import SAM

require("lightning.pytorch", "lightning")
import lightning.pytorch as pl  # noqa: E402  (after require: a missing library names the extra)

LossFn = Callable[[nn.Module, Any], Tensor]

__all__ = ["SAMModule", "samkit_optimizer"]


def samkit_optimizer(optimizer: Any) -> SAM | None:
    """The samkit optimizer behind ``optimizer`` (a ``LightningOptimizer`` or the optimizer itself).

    ``LightningOptimizer`` copies the optimizer's ``__dict__``: counters changed through the copy
    (``self.optimizers().first_step()``) never reach the optimizer Lightning checkpoints. Every step
    here runs on the real one.
    """
    real = getattr(optimizer, "_optimizer", optimizer)
    return real if isinstance(real, SAM) else None


class SAMModule(pl.LightningModule):
    """A ``LightningModule`` that trains with a samkit optimizer, in automatic or manual optimization.

    Subclass it instead of ``LightningModule`` (or put it first among the bases of an existing
    module: ``class Net(SAMModule, MyModule)``). Optimizers that are not samkit's step as Lightning
    steps them.

    Example (automatic optimization)::

        class Net(SAMModule):
            def training_step(self, batch, batch_idx):
                x, y = batch
                loss = F.cross_entropy(self(x), y)
                self.log("train_loss", loss)          # logged at w, not at w + e
                return loss

            def configure_optimizers(self):
                return samkit.SAM(self.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)

    Manual optimization: ``self.automatic_optimization = False`` in ``__init__`` and
    ``return self.sam_step(batch, loss_fn)`` in ``training_step``.
    """

    _sam_quiet = False  # True during the passes at w + e of an automatic step: self.log ignores them
    _sam_backward: list[Tensor] | None = None  # a 16-mixed automatic step: the losses backward() got

    # ---- manual optimization ---------------------------------------------------------------------
    def sam_step(
        self,
        batch: Any,
        loss_fn: LossFn,
        optimizer: Any = None,
    ) -> Tensor:
        """One samkit update on ``batch`` (``opt.train_step``); returns the unperturbed mean loss.

        ``loss_fn(model, batch)`` returns the mean loss of ``batch``, computed by calling ``model``:
        it receives the model Lightning trains (the DDP wrapper under DDP, whose last backward
        all-reduces), not necessarily ``self``. ``optimizer``: the optimizer to step when
        ``configure_optimizers`` returns several (default: the only one). Counts as one optimizer
        step for ``trainer.global_step``. LR schedulers are yours to step in manual optimization
        (``self.lr_schedulers().step()``), as always in Lightning.
        """
        if self.automatic_optimization:
            raise SamkitError(
                "sam_step() is for manual optimization: set self.automatic_optimization = False in "
                "__init__, or return the loss from training_step and let Lightning step"
            )
        lightning_opt = self.optimizers() if optimizer is None else optimizer
        if isinstance(lightning_opt, list):
            raise SamkitError(
                f"configure_optimizers returned {len(lightning_opt)} optimizers: pass the one to step, "
                "self.sam_step(batch, loss_fn, optimizer=self.optimizers()[i])"
            )
        sam = samkit_optimizer(lightning_opt)
        if sam is None:
            given = type(getattr(lightning_opt, "_optimizer", lightning_opt)).__name__
            raise SamkitError(
                "sam_step() needs a samkit optimizer (samkit.SAM, samkit.create_optimizer); "
                f"configure_optimizers returned {given}"
            )
        model = _trained(self.trainer)  # DDP(self) under DDP: its forward prepares the all-reduce
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        # Lightning counts a manual step (trainer.global_step, max_steps) in LightningOptimizer.step's
        # two callbacks; the update itself is train_step's, so call them around it.
        lightning_opt._on_before_step()
        loss = sam.train_step(model, loss_fn, batch, scaler=scaler)
        lightning_opt._on_after_step()
        return loss

    # ---- automatic optimization ------------------------------------------------------------------
    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """Lightning's hook: a samkit step with the training closure in torch's convention."""
        sam = samkit_optimizer(optimizer)
        if sam is None or optimizer_closure is None:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        ddp = _ddp(self.trainer.strategy.model)
        self._check_automatic(sam, ddp is not None)
        scaler = _scaler(self.trainer)
        if scaler is not None:
            return self._scaled_step(sam, optimizer_closure, scaler)
        if sam.model is None:
            sam.model = self  # the passes at w + e leave BatchNorm running statistics alone
        # No gradient when step() is called: samkit then calls the closure for the ascent gradient
        # too (torch's convention). Lightning leaves last step's gradients in .grad otherwise.
        sam.zero_grad(set_to_none=True)
        calls = 0
        first_result = None

        def closure() -> Any:
            nonlocal calls, first_result
            calls += 1
            # Every pass runs without DDP's all-reduce: the ascent is per rank (m-sharpness), and
            # the descent gradient is all-reduced once, in the step pre-hook below.
            with ddp.no_sync() if ddp is not None else nullcontext(), self._quiet(calls > 1):
                loss = optimizer_closure()
            if calls == 1:
                first_result = getattr(optimizer_closure, "_result", None)
            if ddp is not None:
                sam.perturbation_groups.average_(_grads(sam))
            return loss

        handle = sam.register_step_pre_hook(lambda *_: all_reduce_mean_(_grads(sam))) if ddp else None
        try:
            optimizer.step(closure=closure)
        finally:
            if handle is not None:
                handle.remove()
        if first_result is not None:
            # Lightning hands the closure's last result to on_train_batch_end: make it the step's
            # output at w, not the pass at w + e.
            optimizer_closure._result = first_result  # type: ignore[attr-defined]
        if ddp is not None:
            stats = RunningStats(self)
            if stats:
                all_reduce_mean_(stats.floats)  # one BatchNorm update: the mean of the ranks' updates

    def _scaled_step(self, sam: SAM, optimizer_closure: Callable[[], Any], scaler: Any) -> None:
        """An automatic step under ``precision="16-mixed"``: samkit's ``train_step`` with Lightning's
        GradScaler, the loss of each pass from one call of Lightning's closure.

        Lightning's own fp16 step runs the closure once, unscales, and calls ``step()`` without a
        closure. Here each pass of the SAM step (the ascent at ``w``, the descent at ``w + e``, and
        any further ascent) calls the closure — ``training_step`` under Lightning's autocast, its
        ``backward`` taken over by samkit (see :meth:`backward`) — and ``train_step`` does what it does
        with any scaler: the loss scaled for each pass, each pass's gradient unscaled and checked,
        the base step through ``scaler.step`` (skipped on inf), one ``scaler.update()``.
        """
        calls = 0
        first_result = None

        def loss_fn(model: nn.Module, batch: Any) -> Tensor:
            nonlocal calls, first_result
            calls += 1
            self._sam_backward = []
            try:
                with self._quiet(calls > 1):
                    optimizer_closure()
                taken_over = self._sam_backward
            finally:
                self._sam_backward = None
            result = getattr(optimizer_closure, "_result", None)
            if calls == 1:
                first_result = result
            loss = getattr(result, "closure_loss", None)
            if loss is None:
                raise SamkitError(
                    "training_step returned no loss: under precision='16-mixed' a samkit step cannot skip a "
                    "batch in automatic optimization; skip it before the step, or use manual optimization"
                )
            if not taken_over:
                raise SamkitError(
                    "the loss never reached SAMModule.backward: an override of backward() must call "
                    "super().backward(loss, ...) (under precision='16-mixed' samkit takes the backward "
                    "passes)"
                )
            return loss

        # What train_step calls the batch is a placeholder: Lightning's closure holds the real one.
        before = sam.example_passes
        sam.train_step(_trained(self.trainer), loss_fn, torch.zeros(1), scaler=scaler)
        sam.counts.example_passes = before  # automatic optimization counts passes, not examples
        if first_result is not None:
            optimizer_closure._result = first_result  # type: ignore[attr-defined]

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """``LightningModule.backward``, except in a 16-mixed automatic samkit step, where samkit
        differentiates the loss itself (``train_step``: the ascent with ``autograd.grad``)."""
        if self._sam_backward is not None:
            self._sam_backward.append(loss)
            return
        super().backward(loss, *args, **kwargs)

    def on_train_start(self) -> None:
        """Check the trainer settings before the first batch (automatic optimization with samkit)."""
        sam = samkit_optimizer(self.trainer.optimizers[0]) if self.trainer.optimizers else None
        if self.automatic_optimization and sam is not None:
            self._check_automatic(sam, _ddp(self.trainer.strategy.model) is not None)
        super().on_train_start()

    def log(self, *args: Any, **kwargs: Any) -> None:
        """``LightningModule.log``, except during the passes at ``w + e`` of an automatic step."""
        if not self._sam_quiet:
            super().log(*args, **kwargs)

    @contextmanager
    def _quiet(self, quiet: bool) -> Iterator[None]:
        self._sam_quiet = quiet
        try:
            yield
        finally:
            self._sam_quiet = False

    def _check_automatic(self, sam: SAM, ddp: bool) -> None:
        """Refuse what automatic optimization cannot do right, saying what to use instead."""
        manual = "use manual optimization with self.sam_step(batch, loss_fn) (see docs/integrations.md)"
        trainer = self.trainer
        if not sam.sharding.is_single:
            raise SamkitError(
                f"automatic optimization hands samkit one closure over the whole batch, so {sam.sharding} "
                f"cannot be split into shards: {manual}"
            )
        if trainer.accumulate_grad_batches != 1:
            raise SamkitError(
                f"accumulate_grad_batches={trainer.accumulate_grad_batches}: the earlier batches' "
                "gradients cannot be recomputed at w + e. Use one larger batch with micro_batch_size= "
                f"on the samkit optimizer and {manual}"
            )
        if trainer.gradient_clip_val:
            raise SamkitError(
                "Trainer(gradient_clip_val=...) would clip the ascent gradient as well: pass "
                "max_grad_norm= to the samkit optimizer instead (it clips the descent gradient)"
            )
        cadence = sam.cadence
        if _scaler(trainer) is not None:
            if sam.knobs.sample is not None:
                raise SamkitError(
                    f"the cadence {cadence!r} takes the ascent on a share of the batch, which Lightning's "
                    f"closure cannot give under precision='16-mixed' (ascent_fraction): {manual}"
                )
            return  # the step is train_step's: per-rank ascent and every rule work under DDP
        if ddp and (sam.knobs.keep_full or sam.knobs.waits):
            raise SamkitError(
                f"under DDP the {sam.rule.name} rule / {sam.cadence!r} cadence needs the all-reduced "
                f"ascent gradient beside each rank's own, which a closure cannot give: {manual}"
            )


def _scaler(trainer: Any) -> Any:
    """The precision plugin's GradScaler if it scales (``precision="16-mixed"``), else None."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return scaler if scaler is not None and scaler.is_enabled() else None


def _trained(trainer: Any) -> nn.Module:
    """The model Lightning trains: the module itself, or its DDP wrapper under DDP."""
    model = trainer.strategy.model
    if model is None:
        raise SamkitError("the Lightning strategy holds no model: call this during trainer.fit(...)")
    return model


def _ddp(model: nn.Module | None) -> DistributedDataParallel | None:
    return model if isinstance(model, DistributedDataParallel) else None


def _grads(sam: SAM) -> list[Tensor]:
    return [p.grad for g in sam.param_groups for p in g["params"] if p.grad is not None]
