r"""Loss landscapes along directions: 1-D curves and 2-D surfaces (Li et al., NeurIPS 2018).

For weights :math:`w` and directions :math:`d_1, d_2` (dicts ``name -> tensor``)

.. math:: f(\alpha) = L(w + \alpha d_1), \qquad f(\alpha, \beta) = L(w + \alpha d_1 + \beta d_2),

evaluated as the sample-weighted mean loss over ``data`` without writing into the model.
``alpha`` scales the direction as given, so the Euclidean distance from :math:`w` is
:math:`|\alpha|\,\|d_1\|` (reported as ``distances``).

Filter normalization (default for random directions): draw :math:`d\sim\mathcal N(0,I)` shaped like
each weight, then for every filter :math:`i` (slice along dim 0 of a weight with ``dim >= 2``:
an output channel of a conv, a row of a linear layer) set
:math:`d_i \leftarrow d_i\,\|w_i\|/\|d_i\|`, so the direction has the scale of the weights filter
by filter and plots of scale-invariant networks are comparable. One-dimensional parameters
(biases, BatchNorm affine) get ``bias_bn="zero"`` (default, Li et al.'s ``ignore='biasbn'``),
``"copy"`` (the direction equals the weights, Li et al.'s alternative) or ``"normalize"``
(rescaled to the norm of the whole vector).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from samkit._atomic import save_figure
from samkit._batch import LossFn
from samkit._checks import check_choice, check_positive_int
from samkit.errors import SamkitError
from samkit.measure._common import (
    LossModule,
    ParamSpec,
    as_batches,
    check_mode,
    make_generator,
    model_device,
    preserved_state,
    progress_bar,
    select_params,
)

Direction = Mapping[str, Tensor]
BIAS_BN = ("zero", "copy", "normalize")
NORMALIZATIONS = ("filter", "none")


@dataclass
class Landscape1D:
    """``alphas`` (coefficients of the direction), ``distances`` (= alphas * ``direction_norm``),
    ``loss`` and optionally ``error`` at each alpha (sample-weighted means over the data)."""

    alphas: np.ndarray
    distances: np.ndarray
    loss: np.ndarray
    error: np.ndarray | None
    direction_norm: float

    def to_dict(self) -> dict[str, Any]:
        """The result as plain Python values, for JSON."""
        return {
            k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()
        }


@dataclass
class Landscape2D:
    """``loss[i, j] = L(w + alphas[i] d1 + betas[j] d2)`` (and ``error`` likewise), with the two
    direction norms and their cosine (random filter-normalized directions are nearly orthogonal
    in high dimension)."""

    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    error: np.ndarray | None
    direction_norms: tuple[float, float]
    cosine: float

    def to_dict(self) -> dict[str, Any]:
        """The result as plain Python values, for JSON."""
        return {
            k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()
        }


# ----------------------------------------------------------------------------------- directions
def random_direction(
    model: nn.Module,
    seed: int = 0,
    *,
    params: ParamSpec = None,
    normalization: str = "filter",
    bias_bn: str = "zero",
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """A seeded Gaussian direction over the selected parameters, filter-normalized by default
    (see the module docstring). Returns ``{name: tensor}`` shaped like the parameters."""
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_choice("bias_bn", bias_bn, BIAS_BN)
    gen = make_generator(seed, generator)
    names, weights = select_params(model, params)
    out = {}
    for name, w in zip(names, weights, strict=True):
        w = w.detach()
        d = torch.randn(w.shape, generator=gen, dtype=torch.float64).to(w.device, w.dtype)
        if w.dim() <= 1:
            if bias_bn == "zero":
                d = torch.zeros_like(w)
            elif bias_bn == "copy":
                d = w.clone()
            elif normalization == "filter":
                d = _rescale(d.reshape(1, -1), w.reshape(1, -1)).view_as(w)
        elif normalization == "filter":
            d = _rescale(d.reshape(d.shape[0], -1), w.reshape(w.shape[0], -1)).view_as(w)
        out[name] = d
    return out


def _rescale(d: Tensor, w: Tensor) -> Tensor:
    # Row-wise: ||d_i|| -> ||w_i||. A zero weight filter (e.g. zero-initialized) gets a zero
    # direction instead of 0/0.
    dn = d.norm(dim=1, keepdim=True)
    wn = w.norm(dim=1, keepdim=True)
    return torch.where(
        dn > 0, d * (wn / dn.clamp_min(torch.finfo(d.dtype).tiny)), torch.zeros_like(d)
    )


def direction_between(
    start: nn.Module | Mapping[str, Tensor], end: nn.Module | Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """``end - start`` for every floating-point entry both have (parameters and float buffers
    such as BatchNorm running statistics): with the model at ``start``, ``alpha=1`` reaches
    ``end``. Accepts modules or state dicts."""
    a = start.state_dict() if isinstance(start, nn.Module) else start
    b = end.state_dict() if isinstance(end, nn.Module) else end
    out = {}
    for name, ta in a.items():
        tb = b.get(name)
        if tb is None or not torch.is_floating_point(ta):
            continue
        if tb.shape != ta.shape:
            raise SamkitError(
                f"{name} has shape {tuple(ta.shape)} in start but {tuple(tb.shape)} in end."
            )
        out[name] = (tb.detach().to(ta.device, ta.dtype) - ta.detach()).clone()
    if not out:
        raise SamkitError("start and end share no floating-point tensors; are they the same model?")
    return out


def _resolve(
    model: nn.Module, direction: Direction | Sequence[Tensor], names: list[str]
) -> dict[str, Tensor]:
    if not isinstance(direction, Mapping):  # a list aligned with the selected parameters
        direction = list(direction)
        if len(direction) != len(names):
            raise SamkitError(
                "a direction given as a list needs one tensor per selected parameter "
                f"({len(names)}); "
                f"got {len(direction)}. Pass a dict name -> tensor instead."
            )
        direction = dict(zip(names, direction, strict=True))
    known = dict(model.named_parameters())
    known.update((n, b) for n, b in model.named_buffers() if torch.is_floating_point(b))
    out = {}
    for name, d in direction.items():
        if name not in known:
            raise SamkitError(
                f"direction entry {name!r} is not a parameter or float buffer of the model."
            )
        if d.shape != known[name].shape:
            raise SamkitError(
                f"direction entry {name!r} has shape {tuple(d.shape)}, the model's is "
                f"{tuple(known[name].shape)}."
            )
        out[name] = d.detach().to(known[name].device, known[name].dtype)
    if not out:
        raise SamkitError("the direction is empty.")
    return out


def _norm(direction: Mapping[str, Tensor]) -> float:
    return math.sqrt(sum(float(d.double().pow(2).sum()) for d in direction.values()))


# ------------------------------------------------------------------------------------ evaluation
def _evaluate(model, fns, batches, dirs, coeffs_list, progress, desc):
    """Mean of each fn over batches at w + sum_k c_k d_k for every coefficient tuple."""
    base = {}
    for d in dirs:
        for name in d:
            base.setdefault(name, _lookup(model, name).detach())
    total = sum(n for _, n in batches)
    out = np.zeros((len(coeffs_list), len(fns)))
    with torch.no_grad():
        for i, coeffs in enumerate(progress_bar(coeffs_list, progress, desc=desc)):
            point = dict(base)
            for c, d in zip(coeffs, dirs, strict=True):
                for name, t in d.items():
                    point[name] = point[name] + c * t
            point = {"model." + k: v for k, v in point.items()}
            for j, fn in enumerate(fns):
                out[i, j] = (
                    sum(float(torch.func.functional_call(fn, point, (b,))) * n for b, n in batches)
                    / total
                )
    return out


def _lookup(model: nn.Module, name: str) -> Tensor:
    return (
        model.get_parameter(name)
        if name in dict(model.named_parameters())
        else model.get_buffer(name)
    )


def _prepare(model, loss_fn, data, error_fn, mode):
    check_mode(mode)
    device = model_device(model)
    batches = as_batches(data, device)
    fns = [LossModule(model, loss_fn)]
    if error_fn is not None:
        fns.append(
            LossModule(model, lambda m, b: torch.as_tensor(error_fn(m, b), dtype=torch.float64))
        )
    return batches, fns


def _span(span: Any, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(s) for s in span)
    except (TypeError, ValueError):
        raise SamkitError(f"{name} must be a pair (low, high) of numbers; got {span!r}.") from None
    if not lo < hi:
        raise SamkitError(f"{name} must have low < high; got {span!r}.")
    return lo, hi


def landscape_1d(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    direction: Direction | Sequence[Tensor] | None = None,
    steps: int = 21,
    span: tuple[float, float] = (-1.0, 1.0),
    seed: int = 0,
    *,
    error_fn: Callable[[nn.Module, Any], Tensor | float] | None = None,
    params: ParamSpec = None,
    normalization: str = "filter",
    bias_bn: str = "zero",
    mode: str = "eval",
    progress: bool = True,
) -> Landscape1D:
    """Loss (and error) along ``w + alpha * direction`` for ``steps`` alphas evenly spaced in
    ``span``. Without a direction a seeded filter-normalized random one is drawn (see
    :func:`random_direction`). The model is left as it was.

    Example::

        curve = landscape_1d(model, loss_fn, (x, y), steps=31, span=(-1, 1))
        plot_landscape_1d(curve, "landscape_1d.png")
    """
    check_positive_int("steps", steps, minimum=2)
    lo, hi = _span(span, "span")
    batches, fns = _prepare(model, loss_fn, data, error_fn, mode)
    names, _ = select_params(model, params)
    if direction is None:
        direction = random_direction(
            model, seed, params=params, normalization=normalization, bias_bn=bias_bn
        )
    d = _resolve(model, direction, names)
    alphas = np.linspace(lo, hi, steps)
    with preserved_state(model, mode):
        vals = _evaluate(
            model, fns, batches, [d], [(a,) for a in alphas], progress, "landscape 1-D"
        )
    norm = _norm(d)
    return Landscape1D(alphas, alphas * norm, vals[:, 0], vals[:, 1] if error_fn else None, norm)


def landscape_2d(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    directions: tuple[Direction | Sequence[Tensor], Direction | Sequence[Tensor]] | None = None,
    steps: int | tuple[int, int] = 21,
    span: tuple[float, float] | tuple[tuple[float, float], tuple[float, float]] = (-1.0, 1.0),
    seed: int = 0,
    *,
    error_fn: Callable[[nn.Module, Any], Tensor | float] | None = None,
    params: ParamSpec = None,
    normalization: str = "filter",
    bias_bn: str = "zero",
    mode: str = "eval",
    progress: bool = True,
) -> Landscape2D:
    """Loss (and error) on the grid ``w + alpha * d1 + beta * d2``. ``steps`` and ``span`` may be
    given per axis. Without directions, two independent seeded filter-normalized random ones
    (seeds ``seed`` and ``seed + 1``)."""
    n_a, n_b = (steps, steps) if isinstance(steps, int) else steps
    check_positive_int("steps", n_a, minimum=2)
    check_positive_int("steps", n_b, minimum=2)
    spans = span if isinstance(span[0], (tuple, list)) else (span, span)
    (a_lo, a_hi), (b_lo, b_hi) = _span(spans[0], "span"), _span(spans[1], "span")
    batches, fns = _prepare(model, loss_fn, data, error_fn, mode)
    names, _ = select_params(model, params)
    if directions is None:
        kw = {"params": params, "normalization": normalization, "bias_bn": bias_bn}
        directions = (random_direction(model, seed, **kw), random_direction(model, seed + 1, **kw))
    if len(directions) != 2:
        raise SamkitError(f"directions must be a pair (d1, d2); got {len(directions)} entries.")
    d1, d2 = (_resolve(model, d, names) for d in directions)
    alphas, betas = np.linspace(a_lo, a_hi, n_a), np.linspace(b_lo, b_hi, n_b)
    coeffs = [(a, b) for a in alphas for b in betas]
    with preserved_state(model, mode):
        vals = _evaluate(model, fns, batches, [d1, d2], coeffs, progress, "landscape 2-D")
    n1, n2 = _norm(d1), _norm(d2)
    dot = sum(float((d1[k].double() * d2[k].double()).sum()) for k in d1 if k in d2)
    cos = dot / (n1 * n2) if n1 > 0 and n2 > 0 else float("nan")
    err = vals[:, 1].reshape(n_a, n_b) if error_fn else None
    return Landscape2D(alphas, betas, vals[:, 0].reshape(n_a, n_b), err, (n1, n2), cos)


# -------------------------------------------------------------------------------------- plotting
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_landscape_1d(
    result: Landscape1D, path: str | Path, distance: bool = False, title: str = ""
) -> Path:
    """Loss (and error on a second axis) against alpha, or against distance ``|alpha| * ||d||``
    if ``distance``. PNG or PDF by the suffix of ``path``."""
    return _save(_figure_1d(result, distance, title), path)


def plot_landscape_2d(
    result: Landscape2D, path: str | Path, kind: str = "contour", levels: int = 30, title: str = ""
) -> Path:
    """``kind="contour"`` (filled contour with lines) or ``"surface"`` (3-D surface) of the loss."""
    check_choice("kind", kind, ("contour", "surface"))
    return _save(_figure_2d(result, kind, levels, title), path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    _pyplot().close(fig)
    return path


def _figure_1d(result: Landscape1D, distance: bool, title: str) -> Any:
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.xaxis.set_major_locator(MaxNLocator(6, steps=[1, 2, 5, 10]))  # round, uncrowded ticks
    x = result.distances if distance else result.alphas
    lines = ax.plot(x, result.loss, color="C0", label="loss (left axis)")
    ax.set_xlabel(
        "distance ||alpha d|| from the model" if distance
        else "alpha (step along the direction d)"
    )
    ax.set_ylabel("loss", color="C0")
    if result.error is not None:
        # error on its own scale (a fraction), so a legend says which line is which
        ax2 = ax.twinx()
        lines += ax2.plot(x, result.error, color="C1", ls="--", label="error (right axis)")
        ax2.set_ylabel("error (fraction wrong)", color="C1")
    if x.min() <= 0 <= x.max():
        lines.append(ax.axvline(0.0, color="0.5", ls=":", lw=1, label="the model (alpha = 0)"))
    ax.legend(handles=lines, loc="upper center", fontsize="small", framealpha=0.9)
    ax.set_title(title or "loss along a filter-normalized direction")
    fig.tight_layout()
    return fig


def _figure_2d(result: Landscape2D, kind: str, levels: int, title: str) -> Any:
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

    plt = _pyplot()
    a, b = np.meshgrid(result.alphas, result.betas, indexing="ij")
    loss = result.loss
    # the model's own point: the grid point nearest (0, 0)
    i0, j0 = int(np.abs(result.alphas).argmin()), int(np.abs(result.betas).argmin())
    origin = (result.alphas[i0], result.betas[j0])
    if kind == "contour":
        fig, ax = plt.subplots(figsize=(5.5, 4.3))
        lo, hi = float(np.nanmin(loss)), float(np.nanmax(loss))
        # A steep rim (loss 1 -> 1000) would put every level there and paint the basin one
        # colour: space the levels geometrically when the loss spans more than a decade.
        log = lo > 0 and hi / lo > 10
        if log:
            kw: dict[str, Any] = dict(levels=np.geomspace(lo, hi, levels), norm=LogNorm(lo, hi))
        else:
            kw = dict(levels=levels)
        cs = ax.contourf(a, b, loss, cmap="viridis", **kw)
        ax.contour(a, b, loss, colors="k", linewidths=0.3, **kw)
        bar = fig.colorbar(cs, ax=ax, label="loss (log scale)" if log else "loss")
        if log:  # ticks at 1, 2, 5 x 10^k, written plainly (not the levels' long decimals)
            bar.ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            bar.ax.yaxis.set_minor_formatter(NullFormatter())
        ax.plot(*origin, marker="+", color="white", ms=12, mew=2, ls="", label="the model (0, 0)")
        ax.legend(loc="upper right", fontsize="small", framealpha=0.8)
    else:
        fig = plt.figure(figsize=(6, 5))
        ax = fig.add_subplot(projection="3d")
        ax.plot_surface(a, b, loss, cmap="viridis", linewidth=0, alpha=0.9)
        ax.plot(
            [origin[0]], [origin[1]], [loss[i0, j0]], marker="o", color="red", ls="",
            label="the model (0, 0)", zorder=10,
        )  # fmt: skip
        ax.legend(loc="upper left", fontsize="small")
        ax.zaxis.set_major_locator(MaxNLocator(5, steps=[1, 2, 5, 10]))
        ax.set_zlabel("loss")
        ax.tick_params(labelsize="small", pad=0)
    for axis in (ax.xaxis, ax.yaxis):  # a few round ticks: 3-D (and narrow) labels crowd
        axis.set_major_locator(MaxNLocator(5, steps=[1, 2, 5, 10]))
    ax.set_xlabel("alpha (direction 1)")
    ax.set_ylabel("beta (direction 2)")
    ax.set_title(title or "loss around the model\n(two filter-normalized directions)")
    fig.tight_layout()
    return fig
