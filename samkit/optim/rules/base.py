r"""What a perturbation rule is, and the geometry every rule shares.

A SAM-family step is (see ``docs/optimizers.md``)::

    g = grad L(w)                      ascent gradient (0, 1 or k passes: ``Rule.ascent_passes``)
    e = rule.perturbation(g, ...)      the perturbation of radius rho
    h = grad L(w + e)                  descent gradient
    h <- rule.descent(h, g, ...)       optional descent-side transform (GSAM, WSAM, GCSAM)
    w <- base_step(w, h);  rule.observe(g, ...)   after a taken step (F-SAM's EMA)

A :class:`Rule` is a small object with explicit state, in the shape of optax's ``init/update``
transformations: its hyperparameters are per-parameter-group values (``group["sigma"]``), its
per-parameter state lives in the dicts the engine hands it (:attr:`RuleContext.state`, saved by the
optimizer's ``state_dict``), and it never sees the optimizer. Engines call only the hooks below.

The shared **geometry** turns a direction ``d`` into a perturbation of radius ``rho``:

.. math::
    e = \rho\, \frac{T^2 d}{\lVert T d \rVert_2 + \epsilon}, \qquad
    T = \begin{cases} |w| + \eta & \text{adaptive (ASAM)} \\ 1 & \text{otherwise} \end{cases}

with :math:`\epsilon = 10^{-12}` (guards a zero gradient; it shrinks ``e`` by a relative
``1e-12 / ||T d||``). The norm is one global norm over all parameters of all groups (one fused
``_foreach_norm``); ``rho``, ``adaptive`` and ``eta`` may differ per group. No function here
synchronises with the host: norms stay tensors, so rules run under ``torch.compile`` and CUDA graphs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from samkit._checks import check_flag, check_number
from samkit._compat import reduced
from samkit.errors import SamkitError

EPS = 1e-12

Groups = list[list[Tensor]]  # one list of tensors per parameter group
Point = tuple[Groups | None, float]  # an offset from w (None: w itself) and its weight


def split_groups(flat: list[Any], lengths: list[int]) -> list[list[Any]]:
    """Cut a flat list back into consecutive groups of the given lengths (per parameter group)."""
    out, i = [], 0
    for k in lengths:
        out.append(flat[i : i + k])
        i += k
    return out


def global_norm(tensors: Sequence[Tensor]) -> Tensor:
    r""":math:`\lVert (t_1, \dots, t_n) \rVert_2` as a 0-d tensor, computed with one fused kernel.

    Accumulates in at least float32 so that bf16/fp16 parameters do not lose the norm (each
    tensor's norm is computed in that precision too, not rounded to the tensor's dtype).
    """
    if len(tensors) == 0:
        raise ValueError("global_norm of an empty list: no parameter has a gradient")
    tensors = list(tensors)
    # (sets, not generators: a step reads these once per parameter, and a generator is a Python
    # call per item)
    dtypes = {t.dtype for t in tensors}
    dtype = torch.float64 if torch.float64 in dtypes else torch.float32
    if dtypes == {dtype}:
        # without dtype: torch 2.14's DTensor (FSDP2) has no sharding rule for the dtype overload
        norms = list(torch._foreach_norm(tensors, 2))
    else:
        norms = list(torch._foreach_norm(tensors, 2, dtype=dtype))
    if {(n.dtype, n.device) for n in norms} != {(dtype, norms[0].device)}:
        device = norms[0].device
        norms = [n.to(device=device, dtype=dtype) for n in norms]
    norm = torch.linalg.vector_norm(torch.stack(norms))
    # DTensors (FSDP2): reduced over the ranks before any use (torch 2.8 would add eps per rank)
    return norm if type(norm) is Tensor else reduced(norm)


def shard_norms(tensors: Sequence[Tensor]) -> Tensor:
    r"""Per-shard global norms ``[k]`` of tensors that all carry a leading shard dimension ``k``,
    accumulated in at least float32.

    On CUDA one fused ``_foreach_norm`` over the per-shard slices (views, no copy); elsewhere one
    reduction per tensor over its ``[k, -1]`` view: as many operations as tensors, where a CPU's
    ``_foreach_norm`` would run ``k`` norms per tensor (and as many views).
    """
    return _fused_shard_norms(tensors) if tensors[0].is_cuda else _reshaped_shard_norms(tensors)


def _norm_dtype(tensors: Sequence[Tensor]) -> torch.dtype:
    """float64 if any tensor is, else float32: the precision norms accumulate in."""
    return torch.float64 if torch.float64 in {t.dtype for t in tensors} else torch.float32


def _fused_shard_norms(tensors: Sequence[Tensor]) -> Tensor:
    k = tensors[0].shape[0]
    dtype = _norm_dtype(tensors)
    norms = torch._foreach_norm([s for t in tensors for s in t.unbind(0)], 2, dtype=dtype)
    return torch.linalg.vector_norm(torch.stack(norms).view(len(tensors), k), dim=0)


def _reshaped_shard_norms(tensors: Sequence[Tensor]) -> Tensor:
    k = tensors[0].shape[0]
    dtype = _norm_dtype(tensors)
    per = [torch.linalg.vector_norm(t.reshape(k, -1), dim=1, dtype=dtype) for t in tensors]
    return torch.linalg.vector_norm(torch.stack(per), dim=0)


def metric(params: Sequence[Tensor], eta: float, stacked: bool) -> list[Tensor]:
    """ASAM's ``T = |w| + eta`` per parameter (with a leading 1 when the directions are stacked)."""
    t = list(torch._foreach_abs([p.detach() for p in params]))
    if eta:
        torch._foreach_add_(t, eta)
    return [x.unsqueeze(0) for x in t] if stacked else t


def perturbation(
    directions: Sequence[Sequence[Tensor]],
    params: Sequence[Sequence[Tensor]],
    rhos: Sequence[float],
    adaptive: Sequence[bool],
    etas: Sequence[float],
    *,
    stacked: bool = False,
    inplace: bool = False,
) -> tuple[Groups, Tensor]:
    r"""The perturbation :math:`e = \rho\, T^2 d / (\lVert T d \rVert + \epsilon)` per parameter group.

    ``directions`` and ``params`` are lists of per-group tensor lists; ``rhos``, ``adaptive`` and
    ``etas`` hold one value per group. The norm is global across groups. With ``stacked=True`` every
    direction has a leading shard dimension and each shard is normalised on its own (the vectorized
    m-sharpness path); ``params`` stay unstacked. Returns the perturbation per group and the norm
    :math:`\lVert T d \rVert` (0-d, or ``[k]`` when stacked; non-finite exactly when some direction
    entry is). The perturbation is made in new tensors, or with ``inplace=True`` in the directions'
    own storage (the caller gives them up: one full-size buffer fewer, the same values).
    """
    scaled: Groups = []  # T d per group
    metrics: list[list[Tensor] | None] = []  # T per group (None when T = 1)
    for d, w, ada, eta in zip(directions, params, adaptive, etas, strict=True):
        if ada:
            t = metric(w, eta, stacked)
            scaled.append(list(torch._foreach_mul(t, list(d))))  # our own: e is made in it
            metrics.append(t)
        else:
            scaled.append(list(d))
            metrics.append(None)
    flat = [x for group in scaled for x in group]
    norm = shard_norms(flat) if stacked else global_norm(flat)
    inv = 1.0 / (norm + EPS)
    out: Groups = []
    for td, tm, rho in zip(scaled, metrics, rhos, strict=True):
        factor: Tensor | list[Tensor] = per_shard(inv, td) if stacked else inv
        if tm is None and not inplace:
            e = list(torch._foreach_mul(td, factor))
        else:  # in T d (ASAM's, always ours) or in d itself (given up by the caller)
            e = list(td)
            if tm is not None:
                torch._foreach_mul_(e, tm)  # T (T d) = T^2 d
            torch._foreach_mul_(e, factor)
        torch._foreach_mul_(e, rho)
        out.append(e)
    return out, norm


def per_shard(values: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """A ``[k]`` tensor of per-shard factors, shaped to broadcast against each stacked tensor."""
    return [values.view(-1, *([1] * (x.dim() - 1))) for x in like]


Geometry = Callable[..., tuple[Groups, Tensor]]


@dataclass
class RuleContext:
    """What a rule may read and write in one step; built by the optimizer, passed by the engine.

    ``params[i]`` are the parameters of group ``i`` that take part in the step and ``groups[i]`` its
    settings (``rho``, ``adaptive``, ``eta``, the rule's hyperparameters, the base optimizer's
    ``lr``, ...). ``state`` and ``base_state`` are built on first use: per parameter, the rule's
    own state dict (saved with the optimizer) and the base optimizer's (read only). ``geometry`` is
    :func:`perturbation` (``compile_step`` swaps in a compiled one). ``scratch`` holds values that
    live for one step only (from ``descent`` to ``observe``).
    """

    params: Groups
    groups: list[dict[str, Any]]
    state_of: Callable[[Tensor], dict[str, Any]]
    base_state_of: Callable[[Tensor], dict[str, Any]]
    geometry: Geometry = perturbation
    scratch: dict[str, Any] = field(default_factory=dict)
    # The ascent gradients handed to ``Rule.perturbation`` are the step's own and read by nothing
    # after it (set by the engine per pass): the perturbation may be made in their storage.
    consume: bool = False

    @property
    def state(self) -> list[list[dict[str, Any]]]:
        """The samkit optimizer's state dict of each parameter, by group (the rule's own state)."""
        return [[self.state_of(p) for p in group] for group in self.params]

    @property
    def base_state(self) -> list[list[dict[str, Any]]]:
        """The base optimizer's state dict of each parameter, by group (e.g. Momentum-SAM's buffers)."""
        return [[self.base_state_of(p) for p in group] for group in self.params]

    def settings(self, key: str) -> list[Any]:
        """``group[key]`` for every group."""
        return [g[key] for g in self.groups]

    def geometry_of(self, directions: Groups, stacked: bool = False,
                    inplace: bool = False) -> tuple[Groups, Tensor]:
        """The shared geometry with each group's ``rho`` / ``adaptive`` / ``eta`` (``inplace``: made
        in the directions' storage)."""
        return self.geometry(
            directions,
            self.params,
            self.settings("rho"),
            self.settings("adaptive"),
            self.settings("eta"),
            stacked=stacked,
            inplace=inplace,
        )


class Rule:
    r"""A SAM-family perturbation rule; this base class is SAM itself (Foret et al., ICLR 2021).

    .. math:: e = \rho\, \frac{T^2 g}{\lVert T g \rVert}, \qquad h = \nabla L(w + e)

    Subclasses override what differs:

    * :meth:`direction` — the direction ``d`` the geometry normalises (default ``g``);
    * :meth:`perturbation` — the whole map from ascent gradients to ``e`` (default: geometry of
      :meth:`direction`);
    * :meth:`descent` — an in-place transform of the descent gradient ``h`` given the full-batch
      ascent gradient ``g`` (set :attr:`transforms_descent`);
    * :meth:`observe` — state updates after a taken step, from the full-batch ascent gradient;
    * :meth:`hyperparameters` / :meth:`validate` — per-group settings and their checks.

    Class attributes declare what the rule needs, read once by the optimizer's plan
    (:class:`samkit.optim.plan.Knobs`), never by the engines: :attr:`ascent_passes` (0: the
    perturbation needs no gradient, e.g. Momentum-SAM; ``k > 1``: ``k`` ascent passes, each at the
    previous perturbation), :attr:`descent_passes` (the points of a rule's descent, SAMPa),
    :attr:`needs_full_grad` (keep the full-batch ascent gradient for ``descent`` / ``observe``),
    :attr:`shardable` (whether per-shard perturbations mean anything, :meth:`check_sharding`),
    :attr:`transforms_descent` (the plan carries :meth:`descent_transform`).
    """

    name = "sam"
    ascent_passes = 1
    descent_passes = 1  # points the descent gradient is taken at (SAMPa, mixed RWP: 2)
    needs_full_grad = False
    transforms_descent = False
    shardable = True

    def __init__(self, *, adaptive: bool = False, eta: float = 0.0) -> None:
        check_flag("adaptive", adaptive)
        check_number("eta", eta, low=0.0)
        self.adaptive = adaptive
        self.eta = eta

    # ---- settings -------------------------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        """Per-group settings and their defaults (a param group may override each one)."""
        return {"adaptive": self.adaptive, "eta": self.eta}

    def validate(self, group: dict[str, Any]) -> None:
        """Check one param group's settings; raise :class:`SamkitError` saying what to change."""
        check_number("rho", group["rho"], low=0.0)
        check_flag("adaptive", group["adaptive"])
        check_number("eta", group["eta"], low=0.0)

    def check_base(self, base_optimizer: torch.optim.Optimizer) -> None:
        """Refuse a base optimizer the rule cannot work with (default: any will do)."""

    def check_sharding(self, sharding: Any) -> None:
        """Refuse shards when the rule has no per-shard ascent (:attr:`shardable`)."""
        if not self.shardable and not sharding.is_single:
            raise SamkitError(
                f"the {self.name} rule takes no per-shard ascent, so {sharding} would give every "
                "shard the same perturbation: use shards=1"
            )

    # ---- the step -------------------------------------------------------------------------------
    def direction(self, grads: Groups, ctx: RuleContext, stacked: bool = False) -> Groups:
        """The direction the geometry normalises (per group); default: the ascent gradient."""
        return grads

    def perturbation(self, grads: Groups | None, ctx: RuleContext, *, stacked: bool = False,
                     previous: Groups | None = None) -> tuple[Groups | None, Tensor]:
        """The perturbation ``e`` per group from the ascent gradients, and the norm ``||T d||``.

        ``grads`` is ``None`` for rules with ``ascent_passes = 0``; ``previous`` is the last
        perturbation for the second and later of several ascent passes. With ``stacked`` every
        gradient has a leading shard dimension and each shard gets its own ``e``. Returning
        ``None`` for ``e`` means: no perturbation this step.
        """
        assert grads is not None
        d = self.direction(grads, ctx, stacked)
        # The gradient itself as the direction, given up by the engine: e is made in its storage.
        return ctx.geometry_of(d, stacked, inplace=ctx.consume and d is grads)

    def descent_points(self, ctx: RuleContext) -> tuple[list[Point], Tensor]:
        r"""For a rule without ascent pass and :attr:`descent_passes` ``> 1``: the points
        :math:`w + o_i` the descent gradient is taken at and their weights, and a norm for the finite
        check. The step's gradient is :math:`\sum_i c_i \nabla L(w + o_i)`; each point's gradient is
        handed to :meth:`observe` in ``ctx.scratch["points"]``. ``o_i = None`` is ``w`` itself."""
        raise NotImplementedError

    def stats_point(self, points: int) -> int:
        """Which descent point's pass updates BatchNorm's running statistics (and gives the loss)."""
        return 0

    def descent(self, grads: Groups, full_grads: Groups | None, ctx: RuleContext) -> None:
        """Transform the (unscaled) descent gradients in place before the base step."""

    def observe(self, full_grads: Groups | None, ctx: RuleContext) -> None:
        """Update the rule's state after a taken step (``full_grads``: the batch's ascent gradient)."""

    def descent_transform(self) -> Callable[[Groups, Groups | None, RuleContext], None] | None:
        """:meth:`descent` when the rule changes the descent gradient (:attr:`transforms_descent`),
        else None: what the optimizer's plan (Knobs) carries, for the update to call unasked."""
        return self.descent if self.transforms_descent else None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"
