"""Plumbing shared by every measurement: batches, parameter selection, state preservation.

Nothing here knows about Hessians or sharpness. The one promise kept here is the one the whole
package makes: a measurement leaves the model exactly as it found it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from samkit._batch import LossFn, batch_size
from samkit._checks import check_choice
from samkit.errors import SamkitError

ParamSpec = None | str | Callable[[str], bool] | Iterable[Any]

MODES = ("eval", "train")


# ----------------------------------------------------------------------------------------- batches
def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a batch to ``device`` (structure kept)."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return type(batch)((k, to_device(v, device)) for k, v in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def slice_batch(batch: Any, start: int, stop: int) -> Any:
    """Examples ``start:stop`` of a batch: every tensor sharing the leading dim is sliced."""
    n = batch_size(batch)

    def cut(x: Any) -> Any:
        if isinstance(x, Tensor):
            return x[start:stop] if x.dim() > 0 and x.shape[0] == n else x
        if isinstance(x, Mapping):
            return type(x)((k, cut(v)) for k, v in x.items())
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            return type(x)(*(cut(v) for v in x))
        if isinstance(x, (tuple, list)):
            return type(x)(cut(v) for v in x)
        return x

    return cut(batch)


def as_batches(data: Any, device: torch.device) -> list[tuple[Any, int]]:
    """Normalize ``data`` to a list of ``(batch on device, sample count)``.

    A tensor, tuple or dict is ONE batch; a list or any other iterable (DataLoader, generator)
    is a sequence of batches. Batches are materialized once so every pass of an iterative
    solver sees the same data (a generator could be consumed only once).
    """
    if isinstance(data, (Tensor, tuple, Mapping)):
        items = [data]
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        items = list(data)
    else:
        raise SamkitError(
            f"data must be a batch (tensor / tuple / dict) or an iterable of batches; "
            f"got {type(data).__name__}."
        )
    if not items:
        raise SamkitError("data is empty: pass at least one batch with at least one example.")
    out = []
    for batch in items:
        n = batch_size(batch)
        out.append((to_device(batch, device), n))
    return out


# -------------------------------------------------------------------------------------- parameters
def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    raise SamkitError("the model has no parameters, so there is nothing to measure.")


def select_params(model: nn.Module, params: ParamSpec) -> tuple[list[str], list[nn.Parameter]]:
    """Resolve a parameter selection to ``(names, parameters)`` in model order.

    ``params`` may be None (every parameter with ``requires_grad``), a regex matched against
    parameter names with ``re.search``, a predicate on the name, or an iterable of names,
    parameters or ``(name, parameter)`` pairs (e.g. ``model.fc.named_parameters(prefix="fc")``).
    """
    named = list(model.named_parameters())
    if params is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
        if not chosen:
            raise SamkitError(
                "no parameter requires grad; select the parameters to measure with params=."
            )
        return [n for n, _ in chosen], [p for _, p in chosen]
    if isinstance(params, str):
        pattern = re.compile(params)
        keep: Callable[[str], bool] = lambda name: pattern.search(name) is not None  # noqa: E731
    elif callable(params):
        keep = params
    else:
        wanted_ids, wanted_names = set(), set()
        for item in params:
            if isinstance(item, tuple) and len(item) == 2:
                item = item[1]
            if isinstance(item, Tensor):
                wanted_ids.add(id(item))
            elif isinstance(item, str):
                wanted_names.add(item)
            else:
                raise SamkitError(
                    f"params entries must be names, parameters or (name, parameter) pairs; "
                    f"got {type(item).__name__}."
                )
        unknown = wanted_names - {n for n, _ in named}
        missing = wanted_ids - {id(p) for _, p in named}
        if unknown or missing:
            raise SamkitError(
                f"params names something the model does not have: {sorted(unknown) or ''}"
                f"{f' and {len(missing)} non-parameter tensor(s)' if missing else ''}"
                ". Use names from model.named_parameters()."
            )
        by_name = dict(named)
        keep = lambda name: name in wanted_names or id(by_name[name]) in wanted_ids  # noqa: E731
    chosen = [(n, p) for n, p in named if keep(n)]
    if not chosen:
        raise SamkitError(
            f"params={params!r} selects no parameter; names look like {[n for n, _ in named[:3]]}."
        )
    return [n for n, _ in chosen], [p for _, p in chosen]


def check_mode(mode: str) -> None:
    """A measurement's mode: ``"eval"`` or ``"train"`` (BatchNorm with batch statistics)."""
    check_choice("mode", mode, MODES)


# -------------------------------------------------------------------------------- state protection
def _same(a: Tensor, b: Tensor) -> bool:
    # torch.equal is False for NaN == NaN, which only costs a harmless copy back.
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


@contextmanager
def preserved_state(model: nn.Module, mode: str | None = None):
    """Run a block and then put the model back bit for bit, also when the block raises.

    Saved and restored: every submodule's ``training`` flag, every buffer, every parameter
    (object, value, ``requires_grad``) and every ``.grad`` (None stays None, a tensor stays the
    same object with the same values). Buffers are swapped for copies during the block, so
    train-mode forwards (BatchNorm running statistics, ``num_batches_tracked``) update the copies
    and the caller's tensors are never written: their version counters do not move and graphs the
    caller holds stay usable. Parameters and grads are written back only where they differ.
    ``mode`` ("eval"/"train") is applied on entry.
    """
    modes = [(m, m.training) for m in model.modules()]
    buffers = []  # (module, key, original object)
    slots = []  # (module, key, parameter, saved value)
    for m in model.modules():
        for key, t in list(m._buffers.items()):
            if t is not None:
                buffers.append((m, key, t))
        for key, p in m._parameters.items():
            if p is not None:
                slots.append((m, key, p, p.detach().clone()))
    params = [p for p in model.parameters()]
    flags = [p.requires_grad for p in params]
    grads = [(p.grad, None if p.grad is None else p.grad.detach().clone()) for p in params]
    try:
        for m, key, t in buffers:
            m._buffers[key] = t.detach().clone()
        if mode is not None:
            model.train(mode == "train")
        yield
    finally:
        with torch.no_grad():
            for m, key, obj in buffers:
                m._buffers[key] = obj
            for m, key, obj, saved in slots:
                m._parameters[key] = obj
                if not _same(obj, saved):
                    obj.copy_(saved)
            for p, flag, (g, g_saved) in zip(params, flags, grads, strict=False):
                p.requires_grad_(flag)
                p.grad = g
                if g is not None and not _same(g, g_saved):
                    g.copy_(g_saved)
        for m, training in modes:
            m.training = training


# ------------------------------------------------------------------------------ functional calls
class LossModule(nn.Module):
    """``loss_fn(model, batch)`` as a module, so ``torch.func.functional_call`` can evaluate the
    loss at other weights without writing them into the model."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> Tensor:
        loss = self.loss_fn(self.model, batch)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise SamkitError(
                "loss_fn(model, batch) must return the mean loss of the batch as a scalar tensor; "
                f"got {type(loss).__name__}{tuple(loss.shape) if isinstance(loss, Tensor) else ''}."
            )
        return loss.reshape(())


def loss_at(lm: LossModule, names: list[str], tensors: Sequence[Tensor], batch: Any) -> Tensor:
    """Loss of ``batch`` with the named parameters replaced by ``tensors`` (model untouched)."""
    return torch.func.functional_call(
        lm, {"model." + n: t for n, t in zip(names, tensors, strict=False)}, (batch,)
    )


def progress_bar(iterable: Iterable[Any], progress: bool, total: int | None = None, desc: str = ""):
    """A tqdm bar when asked for and stderr is a terminal (tqdm's ``disable=None``)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=None if progress else True, leave=False)


def make_generator(seed: int | None, generator: torch.Generator | None = None) -> torch.Generator:
    """A CPU generator: explicit ones win, else seeded (random numbers are drawn on the CPU and
    moved, so a seed gives the same numbers on every device)."""
    if generator is not None:
        return generator
    if seed is None:
        raise SamkitError("seed must be an integer (or pass generator=); measurements are seeded.")
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def flatten(tensors: Sequence[Tensor], dtype: torch.dtype | None = None) -> Tensor:
    return torch.cat([t.reshape(-1).to(dtype or t.dtype) for t in tensors])


def unflatten(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    out, i = [], 0
    for t in like:
        out.append(flat[i : i + t.numel()].view_as(t).to(t.dtype))
        i += t.numel()
    return out
