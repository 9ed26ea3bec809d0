r"""Worst-case and average-case m-sharpness (Andriushchenko & Flammarion, ICML 2022).

Each batch of ``data`` is cut into groups of ``shard_size`` consecutive examples (``None``: the
whole batch is one group). For a group :math:`S` with mean loss :math:`L_S`, the perturbation
lives in the ball :math:`\{\delta' : \|\delta'\|_p \le \rho\}` and acts on the weights as
:math:`w + T\delta'`, with :math:`T = \mathrm{diag}(|w|)` if ``adaptive`` (ASAM's scale-invariant
ball) else :math:`T = I`.

* worst case: :math:`s_S = \max_{\|\delta'\|_p\le\rho} L_S(w+T\delta') - L_S(w)`, approximated
  by projected normalized-gradient ascent from a random start of radius :math:`\rho/2`:
  :math:`g' = T\nabla L_S(w+T\delta')`, then
  :math:`\delta' \leftarrow \Pi_\rho(\delta' + \eta\, g'/\|g'\|_2)` for ``norm="l2"`` or
  :math:`\delta' \leftarrow \mathrm{clip}_{[-\rho,\rho]}(\delta' + \eta\,\mathrm{sign}(g'))` for
  ``norm="linf"``; the best of the visited points (and :math:`\delta'=0`) is kept, so the
  estimate is a lower bound on the true maximum and never negative.
* average case: :math:`s_S = \mathbb{E}_{\delta'} L_S(w+T\delta') - L_S(w)` over
  ``num_samples`` draws of :math:`\delta' \sim \mathcal N(0, \frac{\rho^2}{d} I)` (so
  :math:`\mathbb{E}\|\delta'\|_2^2=\rho^2`; ``norm="l2"``) or
  :math:`\delta'\sim\mathcal U[-\rho,\rho]^d` (``norm="linf"``).

The reported sharpness is the sample-weighted mean of :math:`s_S` over all groups of all batches.
At a minimum of :math:`L=\frac12 (w-w^*)^\top A(w-w^*)`: worst-case l2 sharpness is
:math:`\rho^2\lambda_{\max}(A)/2`; average l2 sharpness is :math:`\rho^2\,\mathrm{tr}(A)/(2d)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from samkit._batch import LossFn, batch_size
from samkit._checks import check_choice, check_number, check_positive_int
from samkit.errors import SamkitError
from samkit.measure._common import (
    LossModule,
    ParamSpec,
    as_batches,
    check_mode,
    loss_at,
    make_generator,
    model_device,
    preserved_state,
    progress_bar,
    select_params,
    slice_batch,
)

KINDS = ("worst", "average")
NORMS = ("l2", "linf")


@dataclass
class SharpnessResult:
    """m-sharpness over groups of examples.

    ``loss_increase``: sample-weighted mean over groups of (perturbed loss - loss);
    ``loss_increase_std``: its sample-weighted standard deviation across groups;
    ``loss_increase_stderr``: std / sqrt(num_groups). ``error_increase*``: the same for
    ``error_fn`` (fraction wrong), evaluated at the loss-maximizing perturbation (worst) or
    averaged over the same draws (average); None without ``error_fn``. ``base_loss`` /
    ``base_error``: unperturbed, over all data. ``per_group``: (size, loss increase, error
    increase or None) for each group, in data order.
    """

    kind: str
    norm: str
    rho: float
    shard_size: int | None
    adaptive: bool
    loss_increase: float
    loss_increase_std: float
    loss_increase_stderr: float
    base_loss: float
    error_increase: float | None
    error_increase_std: float | None
    error_increase_stderr: float | None
    base_error: float | None
    num_groups: int
    num_examples: int
    steps: int
    step_size: float
    num_samples: int
    per_group: list[tuple[int, float, float | None]]

    def to_dict(self) -> dict[str, Any]:
        """The result as plain Python values, for JSON."""
        return dict(self.__dict__)


def _spread(values: list[float], sizes: list[int]) -> tuple[float, float, float]:
    v, w = np.asarray(values, dtype=np.float64), np.asarray(sizes, dtype=np.float64)
    mean = float(np.average(v, weights=w))
    std = float(np.sqrt(np.average((v - mean) ** 2, weights=w)))
    return mean, std, std / math.sqrt(len(v))


def sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    rho: float,
    kind: str = "worst",
    norm: str = "l2",
    shard_size: int | None = None,
    adaptive: bool = False,
    steps: int = 20,
    step_size: float | None = None,
    num_samples: int = 10,
    seed: int = 0,
    error_fn: Callable[[nn.Module, Any], Tensor | float] | None = None,
    *,
    params: ParamSpec = None,
    mode: str = "eval",
    progress: bool = True,
    generator: torch.Generator | None = None,
) -> SharpnessResult:
    r"""Worst-case or average-case m-sharpness of ``loss_fn`` at the model's weights.

    ``rho``: radius of the perturbation ball (in the scaled coordinates if ``adaptive``).
    ``shard_size``: examples per perturbation (the m of m-sharpness); None: one per batch.
    ``steps`` / ``step_size`` (worst case; default step size ``rho``): ascent iterations and
    their length. ``num_samples`` (average case): noise draws per group. ``params``: the
    weights perturbed (default: all trainable). See the module docstring for the math.

    Example::

        s = sharpness(model, loss_fn, loader, rho=0.05, shard_size=128, error_fn=err)
        s.loss_increase, s.loss_increase_stderr, s.error_increase
    """
    check_number("rho", rho, low=0.0)
    check_choice("kind", kind, KINDS)
    check_choice("norm", norm, NORMS)
    check_mode(mode)
    if shard_size is not None:
        check_positive_int("shard_size", shard_size)
    check_positive_int("steps", steps, minimum=0)
    check_positive_int("num_samples", num_samples)
    step_size = float(rho) if step_size is None else step_size
    check_number("step_size", step_size, low=0.0)
    device = model_device(model)
    names, weights = select_params(model, params)
    batches = as_batches(data, device)
    gen = make_generator(seed, generator)
    lm = LossModule(model, loss_fn)
    em = None if error_fn is None else LossModule(model, _as_tensor_fn(error_fn))
    groups = []
    for batch, n in batches:
        m = n if shard_size is None else shard_size
        groups += [slice_batch(batch, i, min(i + m, n)) for i in range(0, n, m)]

    incs, err_incs, sizes, base, base_err = [], [], [], 0.0, 0.0
    with preserved_state(model, mode):
        w0 = [p.detach() for p in weights]
        scale = [p.abs() for p in w0] if adaptive else None
        dim = sum(p.numel() for p in w0)
        for group in progress_bar(groups, progress, desc=f"{kind}-case sharpness"):
            size = batch_size(group)
            with torch.no_grad():
                l0 = float(loss_at(lm, names, w0, group))
                e0 = None if em is None else float(loss_at(em, names, w0, group))
            if kind == "worst":
                lp, ep = _worst(
                    lm, em, names, w0, scale, group, rho, norm, steps, step_size, gen, l0
                )
            else:
                lp, ep = _average(lm, em, names, w0, scale, group, rho, norm, num_samples, dim, gen)
            incs.append(lp - l0)
            err_incs.append(None if em is None else ep - e0)
            sizes.append(size)
            base += l0 * size
            base_err += 0.0 if e0 is None else e0 * size
    total = sum(sizes)
    mean, std, se = _spread(incs, sizes)
    if em is not None:
        emean, estd, ese = _spread(err_incs, sizes)
    else:
        emean = estd = ese = None
    return SharpnessResult(
        kind=kind,
        norm=norm,
        rho=float(rho),
        shard_size=shard_size,
        adaptive=adaptive,
        loss_increase=mean,
        loss_increase_std=std,
        loss_increase_stderr=se,
        base_loss=base / total,
        error_increase=emean,
        error_increase_std=estd,
        error_increase_stderr=ese,
        base_error=None if em is None else base_err / total,
        num_groups=len(sizes),
        num_examples=total,
        steps=steps,
        step_size=float(step_size),
        num_samples=num_samples,
        per_group=list(zip(sizes, incs, err_incs, strict=False)),
    )


def _as_tensor_fn(
    fn: Callable[[nn.Module, Any], Tensor | float],
) -> Callable[[nn.Module, Any], Tensor]:
    def wrapped(model: nn.Module, batch: Any) -> Tensor:
        out = fn(model, batch)
        return out if isinstance(out, Tensor) else torch.tensor(float(out))

    return wrapped


def _apply(w0: list[Tensor], scale: list[Tensor] | None, delta: list[Tensor]) -> list[Tensor]:
    if scale is None:
        return [w + d for w, d in zip(w0, delta, strict=True)]
    return [w + s * d for w, s, d in zip(w0, scale, delta, strict=True)]


def _randn(like: list[Tensor], gen: torch.Generator) -> list[Tensor]:
    return [
        torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device, t.dtype) for t in like
    ]


def _uniform(like: list[Tensor], gen: torch.Generator, radius: float) -> list[Tensor]:
    return [
        ((torch.rand(t.shape, generator=gen, dtype=torch.float64) * 2 - 1) * radius).to(
            t.device, t.dtype
        )
        for t in like
    ]


def _norm2(ts: list[Tensor]) -> float:
    return math.sqrt(sum(float(t.pow(2).sum()) for t in ts))


def _project(delta: list[Tensor], rho: float, norm: str) -> list[Tensor]:
    if norm == "linf":
        return [d.clamp(-rho, rho) for d in delta]
    n = _norm2(delta)
    return delta if n <= rho else [d * (rho / n) for d in delta]


def _worst(lm, em, names, w0, scale, group, rho, norm, steps, step_size, gen, l0):
    if norm == "l2":
        delta = _randn(w0, gen)
        n = _norm2(delta)
        delta = [d * (rho / 2 / n) for d in delta] if n > 0 else delta
    else:
        delta = _uniform(w0, gen, rho / 2)
    best_loss, best_delta = -math.inf, None
    for t in range(steps + 1):
        leaves = [d.detach().requires_grad_(t < steps) for d in delta]
        with torch.set_grad_enabled(t < steps):
            loss = loss_at(lm, names, _apply(w0, scale, leaves), group)
        if float(loss.detach()) > best_loss:
            best_loss, best_delta = float(loss.detach()), [d.detach() for d in delta]
        if t == steps:
            break
        # Gradient w.r.t. delta' (the chain rule already applies T once: g' = T grad L).
        grads = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
        if norm == "l2":
            gn = _norm2(grads)
            if gn == 0.0:
                break  # a stationary point of the perturbed loss: ascent cannot move
            step = [g * (step_size / gn) for g in grads]
        else:
            step = [g.sign() * step_size for g in grads]
        delta = _project([d.detach() + s for d, s in zip(delta, step, strict=True)], rho, norm)
    with torch.no_grad():
        if l0 >= best_loss:  # delta = 0 is inside the ball: the maximum is at least L(w)
            best_loss, best_delta = l0, [torch.zeros_like(w) for w in w0]
        err = (
            None if em is None else float(loss_at(em, names, _apply(w0, scale, best_delta), group))
        )
    return best_loss, err


def _average(lm, em, names, w0, scale, group, rho, norm, num_samples, dim, gen):
    losses, errors = [], []
    with torch.no_grad():
        for _ in range(num_samples):
            if norm == "l2":
                delta = [d * (rho / math.sqrt(dim)) for d in _randn(w0, gen)]
            else:
                delta = _uniform(w0, gen, rho)
            perturbed = _apply(w0, scale, delta)
            losses.append(float(loss_at(lm, names, perturbed, group)))
            if em is not None:
                errors.append(float(loss_at(em, names, perturbed, group)))
    if not losses:
        raise SamkitError("num_samples must be >= 1 for kind='average'.")
    return float(np.mean(losses)), (float(np.mean(errors)) if em is not None else None)
