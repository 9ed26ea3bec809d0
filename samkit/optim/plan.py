r"""The plan of a step: rule x cadence x sharding x micro-batches, decided in one place.

Two objects, built at two moments:

* :class:`Knobs` — once, when the optimizer is built: every SAM-family setting checked, and their
  compatibility (each rule and cadence checks what it works with: :meth:`Rule.check_sharding`,
  :meth:`Cadence.check_knobs`, :meth:`Cadence.scope_conflict`). It is also the only reader of what
  the rule and the cadence declare (``ascent_passes``, ``descent_passes``, ``needs_full_grad``,
  ``decides_after_gradient``) and takes, once, the hooks they supply: the rule's descent transform,
  the cadence's sampler, descent transform, observer and — for a cadence whose every step is alike
  (:class:`~samkit.optim.cadence.Always`) — its one decision. :func:`check_knobs` runs the same
  checks without parameters, for a run configuration to validate itself with the optimizer's own
  rules.
* :class:`StepPlan` — once per step, by :meth:`Knobs.plan`, whole: the knobs (settings and hooks,
  None where they add nothing), the cadence's :class:`~samkit.optim.cadence.Decision` for the step
  (ascend, the perturbation of a step that does not, a decision that waits for the gradient), the
  ascent passes it takes, whether the batch's ascent gradient is kept, and the step's parameters.
  The engines (:mod:`~samkit.optim.engine`, :mod:`~samkit.optim.vectorized`) and the update
  (:mod:`~samkit.optim.update`) read the plan and call the hooks; none of them asks the rule or
  the cadence what kind it is.

The execution that runs the plan's passes is chosen by :mod:`~samkit.optim.executions`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from samkit._checks import check_choice, check_flag, check_number, check_positive_int
from samkit.errors import SamkitError
from samkit.optim.cadence import NO_ASCENT, Always, Cadence, Decision, parse_cadence
from samkit.optim.distributed import PerturbationGroups, full_value
from samkit.optim.rules.base import Groups, Rule, RuleContext
from samkit.optim.rules.sam import ASAM, SAM
from samkit.optim.sharding import Sharding

log = logging.getLogger("samkit")

EXECUTIONS = ("auto", "loop", "vectorized")
NONFINITE = ("raise", "skip", "unchecked")


@dataclass
class StepPlan:
    """What one step does, decided before its first pass (see the module docstring).

    ``knobs``: the optimizer's settings and what its rule and cadence supply (the same every step);
    ``ascents``: this step's ascent passes (the rule's, or none when the cadence skips them or the
    rule takes none); ``fixed``: the perturbation of a step the cadence skipped (a reused ``e``, or
    ``None``: a plain step); ``statistic`` and ``decide``: a decision that waits for the step's
    gradient (AE-SAM); ``keep_full``: keep the batch's ascent gradient (for the rule or the cadence).
    """

    knobs: Knobs
    rules: RuleContext  # the perturbed groups (the scope): ascent, norm, perturbation, rule state
    ascents: int = 1
    fixed: Groups | None = None
    statistic: Callable[[Groups, RuleContext], Tensor] | None = None
    decide: Callable[[float], bool] | None = None
    keep_full: bool = False
    ddp: Any = None  # the model's DistributedDataParallel wrapper (None: not one)
    fsdp: bool = False  # the model is sharded with FSDP2 (fully_shard)
    # every parameter the descent and the base step see: the scoped ones (``flat``) plus the groups
    # left out of the perturbation (``perturb=False``).
    others: list[Tensor] = field(default_factory=list)
    # Read on every pass, so computed once here (fields, not properties):
    flat: list[Tensor] = field(init=False)  # the perturbed parameters (ascent, norm, moved weights)
    all_flat: list[Tensor] = field(init=False)  # every parameter of the step (descent, check, clip, base)
    plain: bool = field(init=False)  # a base-optimizer step: no ascent, nothing moved
    vectorizable: bool = field(init=False)  # shards with an ascent decided before it, or points

    def __post_init__(self) -> None:
        self.flat = [p for group in self.rules.params for p in group]
        self.all_flat = self.flat + self.others
        # A plain step needs no weight backup, and its BatchNorm statistics are the step's as they come.
        self.plain = self.ascents == 0 and self.fixed is None and not self.knobs.own
        self.vectorizable = (self.ascents > 0 and self.decide is None) or self.knobs.points

    @property
    def params(self) -> Groups:
        return self.rules.params

    def perturbation(self) -> tuple[Groups | None, Tensor]:
        """The perturbation of a step without ascent pass and its norm (a plain tensor): the rule's
        own (Momentum-SAM, RWP, SAMPa), or ``fixed`` (``None``: none)."""
        if not self.knobs.own:
            return self.fixed, torch.zeros((), device=self.flat[0].device)
        e, norm = self.knobs.rule.perturbation(None, self.rules)
        return e, full_value(norm)


@dataclass
class Knobs:
    """The SAM-family settings of one optimizer, checked together (see :meth:`build`)."""

    rule: Rule
    cadence: Cadence
    sharding: Sharding
    micro_batch_size: int | None
    max_grad_norm: float | None
    execution: str  # asked for: auto, loop or vectorized (samkit.optim.executions runs it)
    memory_budget: int | None  # bytes for the vectorized shards' stacked copies (None: the default)
    nonfinite: str
    sync: PerturbationGroups
    # What the rule and the cadence supply, asked once here (the plan of every step carries it):
    ascents: int = field(init=False)  # the rule's ascent passes
    own: bool = field(init=False)  # none: the rule perturbs on its own (Momentum-SAM, RWP, SAMPa)
    descents: int = field(init=False)  # the points the rule's descent gradient is taken at
    points: bool = field(init=False)  # several of them (SAMPa, mixed RWP)
    keep_full: bool = field(init=False)  # an ascent step keeps the batch's ascent gradient
    waits: bool = field(init=False)  # the cadence decides after the step's gradient (AE-SAM)
    every_step: Decision | None = field(init=False)  # the cadence's decision when it never changes
    sample: Callable[[int, torch.device], Tensor | None] | None = field(init=False)
    rule_descent: Callable[[Groups, Groups | None, RuleContext], None] | None = field(init=False)
    cadence_descent: Callable[[Groups, Groups | None, RuleContext, bool], None] | None = field(init=False)
    cadence_observe: Callable[[RuleContext, bool, Groups | None], None] | None = field(init=False)

    def __post_init__(self) -> None:
        rule, cadence = self.rule, self.cadence
        self.ascents, self.descents = rule.ascent_passes, rule.descent_passes
        self.own = self.ascents == 0
        self.points = self.descents > 1
        self.keep_full = rule.needs_full_grad or cadence.needs_full_grad
        self.waits = cadence.decides_after_gradient
        self.every_step = NO_ASCENT if self.own else cadence.every_step()
        self.sample = cadence.sampler()
        self.rule_descent = rule.descent_transform()
        self.cadence_descent = cadence.descent_transform()
        self.cadence_observe = cadence.observer()

    @classmethod
    def build(
        cls,
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
    ) -> Knobs:
        """Check every setting and their compatibility; a :class:`SamkitError` says what to change."""
        check_flag("adaptive", adaptive, allow_none=True)
        if rule is None:
            rule = ASAM(eta=eta or 0.0) if adaptive else SAM()
        if not isinstance(rule, Rule):
            raise SamkitError(f"rule must be a samkit.rules.Rule such as samkit.rules.GSAM(), got {rule!r}")
        check_choice("execution", execution, EXECUTIONS)
        if memory_budget is not None:
            check_positive_int("memory_budget", memory_budget)
        check_choice("nonfinite", nonfinite, NONFINITE)
        check_number("rho", rho, low=0.0)
        sharding = Sharding.from_args(shards, shard_size)
        rule.check_sharding(sharding)
        if isinstance(cadence, str):
            cadence = parse_cadence(cadence)
        cadence = Always() if cadence is None else cadence
        if not isinstance(cadence, Cadence):
            raise SamkitError(
                f"cadence must be a samkit.cadence object such as samkit.cadence.Every(5), got {cadence!r}"
            )
        cadence.check_knobs(rule, sharding)
        check_micro_batch_size(micro_batch_size)
        check_max_grad_norm(max_grad_norm)
        return cls(
            rule=rule,
            cadence=cadence,
            sharding=sharding,
            micro_batch_size=micro_batch_size,
            max_grad_norm=max_grad_norm,
            execution=execution,
            memory_budget=memory_budget,
            nonfinite=nonfinite,
            sync=PerturbationGroups(sync_perturbation_group_size),
        )

    def check_batch(self, n: int) -> None:
        """Refuse a batch size the sharding cannot split (every shard needs an example; a shard is a
        part of a batch)."""
        self.sharding.sizes(n)
        if self.sharding.shard_size is not None and self.sharding.shard_size > n:
            raise SamkitError(
                f"shard_size={self.sharding.shard_size} is larger than the batch of {n} examples; "
                "a shard is a part of a batch."
            )

    def check_scope(self, groups: list[dict[str, Any]]) -> None:
        """Refuse a perturbation scope (groups with ``perturb=False``) the rule or cadence cannot
        work with: they change the descent gradient with an ascent gradient the scope leaves out, or
        decide from a gradient a scoped ascent does not take for every parameter."""
        flags = [g.get("perturb", True) for g in groups]
        for flag in flags:
            check_flag("a param group's perturb", flag)
        if not any(flags):
            raise SamkitError(
                "no param group is perturbed (every group has perturb=False): perturb at least one "
                "group, or use the base optimizer itself"
            )
        if all(flags):
            return
        what = self.cadence.scope_conflict()
        if self.rule_descent is not None:
            what = f"the {self.rule.name} rule changes the descent gradient with the ascent gradient"
        if what:
            raise SamkitError(
                f"{what}, which a perturbation scope (groups with perturb=False) leaves out for some "
                "groups: perturb every group, or choose another rule or cadence"
            )

    def plan(self, step: int, ctx: RuleContext, others: list[Tensor], ddp: Any = None,
             fsdp: bool = False, decision: Decision | None = None) -> StepPlan:
        """The plan of step ``step`` (0-based, counting taken steps), whole: ``ctx`` holds the
        perturbed groups, ``others`` the parameters of the groups left out of the perturbation.
        ``decision`` overrides the cadence's (``NO_ASCENT``: a base-optimizer step)."""
        decision = decision or self.every_step or self.cadence.decision(step, ctx)
        ascend = decision.ascend
        return StepPlan(
            knobs=self,
            rules=ctx,
            ascents=self.ascents if ascend else 0,
            fixed=decision.reused,
            statistic=decision.statistic,
            decide=decision.decide,
            keep_full=ascend and self.keep_full,
            others=others,
            ddp=ddp,
            fsdp=fsdp,
        )

    def require_single_shard(self, what: str, multistep: bool = False) -> None:
        """The two-call and closure front ends see one batch's gradient: refuse shards (and several
        ascent passes, which need the loss function, unless the front end calls it)."""
        if not self.sharding.is_single:
            raise SamkitError(
                f"{what} works on the gradient of one whole batch; with {self.sharding} use "
                "train_step(model, loss_fn, batch), which splits the batch into shards"
            )
        if self.points:
            raise SamkitError(
                f"{what}: the {self.rule.name} rule takes its descent gradient at "
                f"{self.descents} points, which needs the loss function: use "
                "train_step(model, loss_fn, batch)"
            )
        if self.ascents > 1 and not multistep:
            raise SamkitError(
                f"{what}: the {self.rule.name} rule takes {self.ascents} ascent passes, "
                "which need the loss function: use train_step(model, loss_fn, batch) or "
                "step(closure)"
            )


def check_micro_batch_size(value: Any) -> None:
    """``micro_batch_size``: a positive count of examples, or None (the whole shard at once)."""
    check_positive_int("micro_batch_size", value, hint="examples", allow_none=True)


def check_max_grad_norm(value: Any) -> None:
    """``max_grad_norm``: a positive norm, or None (no clipping)."""
    if value is not None:
        check_number("max_grad_norm", value, low=0.0)
        if value == 0:
            raise SamkitError("max_grad_norm must be > 0 (or None for no clipping), got 0")


def check_knobs(batch_size: int | None = None, **knobs: Any) -> Knobs:
    """The checks :class:`samkit.SAM` makes of its settings, without parameters (for a run
    configuration); with ``batch_size``, also that the sharding can split such a batch."""
    built = Knobs.build(**knobs)
    if batch_size is not None:
        built.check_batch(batch_size)
    return built
