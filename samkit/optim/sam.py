r"""The SAM family as ``torch.optim.Optimizer`` front ends.

One step of every member is the same pipeline (see ``docs/optimizers.md``)::

    for each shard s of the batch (weights w_s = n_s / n):
        g_s = grad L_s(w)                       ascent gradient (unperturbed; updates BatchNorm stats)
        e_s = rule(g_s, w, state)                perturbation of radius rho
        h_s = grad L_s(w + e_s)                  descent gradient
        w  <- copy of w                          exact restore (no subtraction)
    grad = sum_s w_s h_s  ->  base optimizer step (SGD, AdamW, ...)

:class:`SAM` makes ``e`` with :func:`~samkit.optim.rules.sam_direction` (and ASAM's metric when
``adaptive=True``); :class:`~samkit.optim.friendly.FriendlySAM` only swaps in the Friendly-SAM
direction and its EMA. The sharding (``shards=k`` / ``shard_size=m``) and the execution
(:mod:`~samkit.optim.engine` loop, :mod:`~samkit.optim.vectorized`, DDP/FSDP in
:mod:`~samkit.optim.distributed`) are independent of the rule. This module holds the front ends:
construction, ``first_step``/``second_step``/``step``, ``train_step`` and the state.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from samkit.errors import SamkitError
from samkit.optim import rules
from samkit.optim.batchnorm import RunningStats
from samkit.optim.distributed import (
    PerturbationGroups,
    all_reduce_mean_,
    full_value,
    is_distributed,
    local_tensors,
)
from samkit.optim.engine import loop_passes
from samkit.optim.sharding import Sharding, batch_size
from samkit.optim.vectorized import vectorized_passes

log = logging.getLogger("samkit")

LossFn = Callable[[nn.Module, Any], Tensor]
_EXECUTIONS = ("auto", "loop", "vectorized")
_NONFINITE = ("raise", "skip", "unchecked")


class NonFiniteError(SamkitError, FloatingPointError):
    """A loss or gradient was NaN/inf; the weights and optimizer state were left unchanged."""


def _check_nonneg(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise SamkitError(f"{name} must be a non-negative number, got {value!r}")


class SAM(Optimizer):
    r"""Sharpness-Aware Minimization (Foret et al., 2021), ASAM and m-sharpness in one optimizer.

    .. math::
        e = \rho\,\frac{T^2 g}{\lVert T g \rVert}, \quad
        w \leftarrow \operatorname{base\_step}\Big(w,\ \sum_s \tfrac{n_s}{n}
        \nabla L_s(w + e_s)\Big)

    with :math:`T = 1` (SAM) or :math:`T = |w| + \eta` (ASAM, ``adaptive=True``), and one
    perturbation :math:`e_s` per shard (m-sharpness; ``shards=1`` is SAM).

    Args:
        params: parameters or parameter groups (a group may set its own ``rho``, ``adaptive``,
            ``eta`` and any base-optimizer setting).
        base_optimizer: a ``torch.optim.Optimizer`` class (built on the same ``param_groups`` with
            ``**base_kwargs``) — e.g. ``torch.optim.SGD``.
        rho: perturbation radius, ``>= 0``.
        adaptive: ASAM's scale-invariant perturbation.
        eta: ASAM's offset in ``T = |w| + eta``.
        shards: number of shards that each get their own perturbation (mSAM).
        shard_size: examples per shard instead (the "m" of m-sharpness; ``1`` is 1-SAM).
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

    passes_per_step = 2

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer: type[Optimizer],
        *,
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.0,
        shards: int | None = 1,
        shard_size: int | None = None,
        execution: str = "auto",
        nonfinite: str = "raise",
        sync_perturbation_group_size: int = 1,
        **base_kwargs: Any,
    ) -> None:
        _check_nonneg("rho", rho)
        _check_nonneg("eta", eta)
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, Optimizer)):
            raise SamkitError(
                "base_optimizer must be an optimizer class such as torch.optim.SGD (samkit builds it "
                f"on the same param_groups with **base_kwargs), got {base_optimizer!r}"
            )
        if execution not in _EXECUTIONS:
            raise SamkitError(f"execution must be one of {_EXECUTIONS}, got {execution!r}")
        if nonfinite not in _NONFINITE:
            raise SamkitError(f"nonfinite must be one of {_NONFINITE}, got {nonfinite!r}")
        self.sharding = Sharding.from_args(shards, shard_size)
        self.perturbation_groups = PerturbationGroups(sync_perturbation_group_size)
        self.execution = execution
        self.nonfinite = nonfinite
        defaults = dict(rho=rho, adaptive=bool(adaptive), eta=eta, **self._rule_defaults())
        super().__init__(params, {**defaults, **base_kwargs})
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        for group in self.param_groups:
            self._validate_group(group)
        self.steps = 0
        self.skipped_steps = 0
        self.execution_used: str | None = None
        self._vectorized_error: str | None = None
        self._perturbation = rules.perturbation  # compile_step swaps in a compiled version
        self._backup: list[Tensor] | None = None
        self._pending: tuple[list[list[Tensor]], list[list[Tensor]] | None, Tensor] | None = None

    # ---- rule hooks: the only things a rule changes ---------------------------------------------
    def _rule_defaults(self) -> dict[str, Any]:
        return {}

    def _validate_group(self, group: dict[str, Any]) -> None:
        _check_nonneg("rho", group["rho"])
        _check_nonneg("eta", group["eta"])

    def _directions(
        self, params: list[list[Tensor]], grads: list[list[Tensor]]
    ) -> list[list[Tensor]]:
        """Per-group perturbation directions from per-group ascent gradients of ``params``."""
        return grads

    @property
    def _needs_full_grad(self) -> bool:
        """Whether the rule keeps state fed by the full-batch ascent gradient."""
        return False

    def _observe(self, params: list[list[Tensor]], full_grads: list[list[Tensor]]) -> None:
        """Update the rule's state with the full-batch ascent gradient, after a taken step."""

    # ---- plumbing ------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not hasattr(self, "base_optimizer"):  # during Optimizer.__init__
            super().add_param_group(param_group)
            return
        for key in ("rho", "adaptive", "eta", *self._rule_defaults()):
            param_group.setdefault(key, self.defaults[key])
        self.base_optimizer.add_param_group(param_group)
        self._validate_group(self.param_groups[-1])

    def _groups(self, with_grad: bool) -> list[list[Tensor]]:
        if with_grad:
            return [[p for p in g["params"] if p.grad is not None] for g in self.param_groups]
        return [[p for p in g["params"] if p.requires_grad] for g in self.param_groups]

    def _perturb(
        self, params: list[list[Tensor]], grads: list[list[Tensor]], stacked: bool = False
    ) -> tuple[list[Tensor], Tensor]:
        """Flat perturbation for ``params`` from ascent ``grads`` (per group) and the ascent norm.

        ``stacked``: grads carry a leading shard dimension; one perturbation (and norm) per shard.
        """
        g = self.param_groups
        e, norm = self._perturbation(
            self._directions(params, grads),
            params,
            [x["rho"] for x in g],
            [x["adaptive"] for x in g],
            [x["eta"] for x in g],
            stacked=stacked,
        )
        return [t for group in e for t in group], full_value(norm)

    def _save(self, flat: list[Tensor]) -> None:
        """Copy the weights into a reused buffer (restored later by copy, so bit-exactly)."""
        flat = local_tensors(flat)
        b = self._backup
        if b is None or len(b) != len(flat) or any(
            x.shape != p.shape or x.dtype != p.dtype or x.device != p.device
            for x, p in zip(b, flat, strict=True)
        ):
            self._backup = [p.detach().clone() for p in flat]
        else:
            torch._foreach_copy_(b, [p.detach() for p in flat])

    def _restore(self, flat: list[Tensor]) -> None:
        assert self._backup is not None
        with torch.no_grad():
            torch._foreach_copy_(local_tensors(flat), self._backup)

    def _finite(self, ascent_norm: Tensor, params: list[Tensor]) -> bool | None:
        """One host sync: are the ascent norm and every descent gradient finite? (None: unchecked)."""
        if self.nonfinite == "unchecked":
            return None
        grads = [p.grad for p in params if p.grad is not None]
        total = ascent_norm + full_value(rules.global_norm(grads)) if grads else ascent_norm
        return bool(torch.isfinite(total))

    def _finish(
        self,
        ok: bool | None,
        params: list[list[Tensor]],
        full_grads: list[list[Tensor]] | None,
        scaler: torch.amp.GradScaler | None,
    ) -> None:
        """Base step (or skip) after the weights are restored and the descent grads are in ``.grad``."""
        flat = [p for group in params for p in group]
        if scaler is not None:
            if ok is False:
                # Make the scaler see the non-finite value (it may be only in the ascent pass), so
                # that it skips the step and backs off its scale exactly as it always does.
                bad = next(p for p in flat if p.grad is not None)
                bad.grad.view(-1)[0] = float("inf")
            scaler.step(self.base_optimizer)
            scaler.update()
        elif ok is not False:
            self.base_optimizer.step()
        # LR schedulers built on this optimizer check this flag to warn about call order.
        self._opt_called = True
        if ok is False:
            self.skipped_steps += 1
            self.zero_grad(set_to_none=True)
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
                    stacklevel=3,
                )
            return
        if full_grads is not None:
            self._observe(params, full_grads)
        self.steps += 1

    # ---- familiar two-call surface (shards=1) ---------------------------------------------------
    def _require_single_shard(self, what: str) -> None:
        if not self.sharding.is_single:
            raise SamkitError(
                f"{what} works on the gradient of one whole batch; with {self.sharding} use "
                "train_step(model, loss_fn, batch), which splits the batch into shards"
            )

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move to ``w + e(w)`` using the gradients already in ``.grad`` (from your first backward)."""
        self._require_single_shard("first_step()")
        if self._pending is not None:
            raise SamkitError("first_step() called twice: call second_step() to restore the weights")
        params = self._groups(with_grad=True)
        flat = [p for group in params for p in group]
        if not flat:
            raise SamkitError(
                "first_step() found no gradients: compute the loss on the unperturbed weights and "
                "call loss.backward() before first_step() (or use train_step)"
            )
        grads = [[p.grad for p in group] for group in params]
        full = [[g.clone() for g in group] for group in grads] if self._needs_full_grad else None
        e, norm = self._perturb(params, grads)
        self._save(flat)
        torch._foreach_add_(flat, e)
        self._pending = (params, full, norm)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore ``w`` exactly and step the base optimizer with the gradient taken at ``w + e``."""
        if self._pending is None:
            raise SamkitError("second_step() called without first_step(): nothing to restore")
        params, full, norm = self._pending
        self._pending = None
        flat = [p for group in params for p in group]
        self._restore(flat)
        self._finish(self._finite(norm, flat), params, full, None)
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """``first_step``; ``closure()`` (a forward and ``backward()`` at ``w + e``); ``second_step``.

        As in the popular SAM code, you run the first forward/backward yourself before ``step``.
        Returns what the closure returns (the perturbed loss).
        """
        if closure is None:
            raise SamkitError(
                "SAM.step() needs a closure that recomputes the loss and calls loss.backward() at "
                "the perturbed weights: opt.step(closure). Or call first_step()/second_step() "
                "yourself, or let opt.train_step(model, loss_fn, batch) do the whole update"
            )
        self.first_step(zero_grad=True)
        try:
            with torch.enable_grad():
                loss = closure()
        except BaseException:
            assert self._pending is not None
            self._restore([p for group in self._pending[0] for p in group])
            self._pending = None
            raise
        self.second_step()
        return loss

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
        configured shards; each shard's ascent pass (unperturbed) updates BatchNorm statistics, merged
        once per step; the descent passes do not. With a ``GradScaler`` the ascent gradient is
        unscaled before its norm, and a non-finite value anywhere makes the scaler skip the step and
        back off (``scaler.step`` and ``scaler.update`` are called here). Under autocast, wrap this
        call (or the body of ``loss_fn``) in ``torch.autocast``.
        """
        if self._pending is not None:
            raise SamkitError("train_step() called between first_step() and second_step()")
        params = self._groups(with_grad=False)
        flat = [p for group in params for p in group]
        if not flat:
            raise SamkitError("the optimizer holds no parameter that requires grad")
        execution = self._choose_execution(model)
        stats = RunningStats(model) if model.training else None
        self.zero_grad(set_to_none=True)
        if stats:
            stats.save()
        total = norm_sum = full = None
        if execution == "vectorized":
            sizes = self.sharding.sizes(batch_size(batch))
            try:
                total, norm_sum, full = vectorized_passes(
                    self, model, loss_fn, batch, sizes, params, scaler, stats
                )
            except Exception as exc:  # an op without a vmap rule, ...: the loop always works
                self.zero_grad(set_to_none=True)
                if self.execution == "vectorized":
                    if stats:
                        stats.clear()
                    raise
                self._vectorized_error = f"{type(exc).__name__}: {exc}"
                log.warning("samkit: vectorized execution failed (%s); using the loop from now on",
                            self._vectorized_error)
                execution = "loop"
        if execution == "loop":
            total, norm_sum, full = loop_passes(self, model, loss_fn, batch, params, scaler, stats)
        self.execution_used = execution
        assert total is not None and norm_sum is not None
        ok = self._finite(norm_sum + total.float() * 0, flat)
        if ok is None and scaler is not None:
            ok = bool(torch.isfinite(norm_sum))
        if stats:
            # A non-finite step leaves the running statistics as they were, like the weights.
            if ok is False:
                stats.restore()
            else:
                stats.write_merged()
                if is_distributed(model):
                    all_reduce_mean_(stats.floats, weight=float(batch_size(batch)))
            stats.clear()
        self._finish(ok, params, full, scaler)
        return total

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
            choice = "vectorized" if device.type == "cuda" else "loop"
        if choice != self.execution_used:
            log.debug("samkit: %s execution for %s (asked: %s)", choice, self.sharding, self.execution)
        return choice

    # ---- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Rule state (e.g. the F-SAM EMA), the base optimizer's state and the step counters."""
        if self._pending is not None:
            raise SamkitError(
                "state_dict() between first_step() and second_step() would save perturbed weights' "
                "optimizer state: call second_step() first"
            )
        sd = super().state_dict()
        sd["base"] = self.base_optimizer.state_dict()
        sd["samkit"] = {"steps": self.steps, "skipped_steps": self.skipped_steps}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        try:
            base = state_dict.pop("base")
            counters = state_dict.pop("samkit")
        except KeyError as exc:
            raise SamkitError(
                f"not a samkit optimizer state_dict (missing {exc}); was it saved from "
                "the base optimizer instead of the samkit optimizer?"
            ) from None
        self.base_optimizer.load_state_dict(base)
        super().load_state_dict(state_dict)
        # Optimizer.load_state_dict builds new group dicts: share them with the base again.
        self.base_optimizer.param_groups = self.param_groups
        self.steps = int(counters["steps"])
        self.skipped_steps = int(counters["skipped_steps"])
