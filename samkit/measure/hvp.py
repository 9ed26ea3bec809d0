r"""Hessian-vector products of a model's loss, as an operator eigensolvers can call.

For data made of batches :math:`B_1,\dots,B_K` with :math:`n_b` examples each and
:math:`N=\sum_b n_b`, the loss is the sample-weighted mean

.. math:: L(w) = \sum_b \frac{n_b}{N} L_b(w), \qquad
          Hv = \sum_b \frac{n_b}{N}\, \nabla_w\big(\nabla_w L_b(w)^\top v\big).

Two ways to compute :math:`H_b v`, equal up to rounding and tested equal:

* ``"autograd"`` (reverse-over-reverse): ``g = autograd.grad(L_b, w, create_graph=True)``, then
  ``autograd.grad(g, w, grad_outputs=v)``. With a single batch the first-order graph ``g`` is
  built once and reused by every matvec (``retain_graph=True``): one matvec then costs one
  double-backward instead of forward + backward + double-backward.
* ``"func"`` (forward-over-reverse): ``torch.func.jvp(torch.func.grad(L_b), (w,), (v,))``, which
  never stores a graph across calls (lowest memory, recomputes everything per matvec).

``"auto"`` (default) picks ``"autograd"``: with the cached graph it is the fastest on the models
we benchmarked (``benchmarks/hessian_time.py``), and it works with BatchNorm in train mode,
whose in-place running-statistics update ``torch.func`` transforms refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from samkit._batch import LossFn
from samkit._checks import check_choice
from samkit.errors import SamkitError
from samkit.measure._common import (
    LossModule,
    ParamSpec,
    as_batches,
    check_mode,
    flatten,
    loss_at,
    model_device,
    preserved_state,
    select_params,
    unflatten,
)

HVP_METHODS = ("auto", "autograd", "func")


class HessianOperator:
    r"""The Hessian of ``loss_fn`` over ``data`` w.r.t. the selected parameters, as ``v -> Hv``.

    Use it as a context manager so the model's state is saved once and restored once::

        with HessianOperator(model, loss_fn, (x, y), params="fc") as H:
            hv = H.matvec(v)          # v: list of tensors shaped like H.params
            hv_flat = H.matvec_flat(v_flat)

    Outside a ``with`` block every matvec saves and restores the state itself (slower: the
    first-order graph cannot be cached across calls then). The model is evaluated in ``mode``
    ("eval" or "train"); inside the block frozen parameters that were selected get
    ``requires_grad=True`` (restored on exit).

    Attributes: ``dim`` (number of scalar parameters), ``names``, ``params``, ``dtype``,
    ``device``, ``num_matvecs`` (count of Hessian-vector products so far).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Any,
        params: ParamSpec = None,
        *,
        mode: str = "eval",
        method: str = "auto",
        cache_graph: bool | None = None,
    ):
        check_mode(mode)
        check_choice("method", method, HVP_METHODS)
        self.model, self.mode = model, mode
        self.method = "autograd" if method == "auto" else method
        self.device = model_device(model)
        self.names, self.params = select_params(model, params)
        self.batches = as_batches(data, self.device)
        self.total = sum(n for _, n in self.batches)
        self.dim = sum(p.numel() for p in self.params)
        self.dtype = self.params[0].dtype
        # Caching the first-order graph never changes the result; it is worth it for one batch.
        # With several batches, keeping every batch's graph would hold K graphs in memory.
        self.cache_graph = len(self.batches) == 1 if cache_graph is None else bool(cache_graph)
        self._lm = LossModule(model, loss_fn)
        self._ctx = None
        self._graphs: dict[int, list[Tensor | None]] = {}
        self.num_matvecs = 0

    # -- context ----------------------------------------------------------------------------
    def __enter__(self) -> HessianOperator:
        if self._ctx is not None:
            raise SamkitError("this HessianOperator is already in use; nest no `with` blocks.")
        self._ctx = preserved_state(self.model, self.mode)
        self._ctx.__enter__()
        for p in self.params:
            p.requires_grad_(True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._graphs.clear()  # drop the retained graph before the state is restored
        ctx, self._ctx = self._ctx, None
        ctx.__exit__(*exc)

    # -- products ---------------------------------------------------------------------------
    def loss(self) -> float:
        """The sample-weighted mean loss over all batches (float)."""
        if self._ctx is None:
            with self:
                return self.loss()
        with torch.no_grad():
            return sum(float(self._loss(b)) * n for b, n in self.batches) / self.total

    def gradient(self) -> list[Tensor]:
        """The sample-weighted mean gradient (list shaped like ``params``)."""
        if self._ctx is None:
            with self:
                return self.gradient()
        out = [torch.zeros_like(p) for p in self.params]
        for batch, n in self.batches:
            g = torch.autograd.grad(self._loss(batch), self.params, allow_unused=True)
            for o, gi in zip(out, g, strict=False):
                if gi is not None:
                    o.add_(gi.detach(), alpha=n / self.total)
        return out

    def matvec(self, v: Sequence[Tensor]) -> list[Tensor]:
        """``H v`` for ``v`` given as tensors shaped like ``params``."""
        if len(v) != len(self.params) or any(
            a.shape != p.shape for a, p in zip(v, self.params, strict=False)
        ):
            raise SamkitError(
                "v must be a list of tensors shaped like the selected parameters "
                f"{[tuple(p.shape) for p in self.params]}; got {[tuple(a.shape) for a in v]}."
            )
        if self._ctx is None:
            with self:
                return self.matvec(v)
        v = [
            a.detach().to(device=p.device, dtype=p.dtype)
            for a, p in zip(v, self.params, strict=False)
        ]
        self.num_matvecs += 1
        out: list[Tensor] | None = None
        for i, (batch, n) in enumerate(self.batches):
            hv = (
                self._hvp_autograd(i, batch, v)
                if self.method == "autograd"
                else self._hvp_func(batch, v)
            )
            if len(self.batches) == 1:
                return hv
            if out is None:
                out = [h.mul_(n / self.total) for h in hv]
            else:
                for o, h in zip(out, hv, strict=False):
                    o.add_(h, alpha=n / self.total)
        assert out is not None
        return out

    def matvec_flat(self, v: Tensor) -> Tensor:
        """``H v`` for a flat vector of length ``dim`` (any float dtype; returned in that dtype)."""
        if v.shape != (self.dim,):
            raise SamkitError(
                f"v must be a flat vector of length {self.dim}; got {tuple(v.shape)}."
            )
        return flatten(self.matvec(unflatten(v, self.params)), v.dtype)

    # -- internals ---------------------------------------------------------------------------
    def _loss(self, batch: Any) -> Tensor:
        return self._lm(batch)

    def _first_order(self, batch: Any) -> list[Tensor | None]:
        grads = torch.autograd.grad(
            self._loss(batch), self.params, create_graph=True, allow_unused=True
        )
        # A gradient that does not depend on the weights (e.g. a bias in a linear loss) has no
        # graph and contributes zero curvature; keep it out of the second differentiation.
        return [g if g is not None and g.requires_grad else None for g in grads]

    def _hvp_autograd(self, i: int, batch: Any, v: list[Tensor]) -> list[Tensor]:
        if self.cache_graph:
            if i not in self._graphs:
                self._graphs[i] = self._first_order(batch)
            grads = self._graphs[i]
        else:
            grads = self._first_order(batch)
        live = [(g, a) for g, a in zip(grads, v, strict=False) if g is not None]
        if not live:
            return [torch.zeros_like(p) for p in self.params]
        hv = torch.autograd.grad(
            [g for g, _ in live],
            self.params,
            grad_outputs=[a for _, a in live],
            retain_graph=self.cache_graph,
            allow_unused=True,
        )
        return [
            torch.zeros_like(p) if h is None else h.detach()
            for h, p in zip(hv, self.params, strict=False)
        ]

    def _hvp_func(self, batch: Any, v: list[Tensor]) -> list[Tensor]:
        names = self.names

        def loss_of(*weights: Tensor) -> Tensor:
            return loss_at(self._lm, names, weights, batch)

        primals = tuple(p.detach() for p in self.params)
        grad_fn = torch.func.grad(loss_of, argnums=tuple(range(len(primals))))
        try:
            _, hv = torch.func.jvp(grad_fn, primals, tuple(v))
        except RuntimeError as err:
            if "in-place" in str(err) or "inplace" in str(err):
                raise SamkitError(
                    "method='func' cannot differentiate this model: a module updates a buffer in "
                    f"place during the forward (BatchNorm in train mode?). Use method='autograd'. "
                    f"({err})"
                ) from err
            raise
        return [h.detach() for h in hv]


def hessian_vector_product(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    vectors: Sequence[Tensor] | Tensor,
    params: ParamSpec = None,
    *,
    mode: str = "eval",
    method: str = "auto",
) -> list[Tensor] | Tensor:
    r"""One Hessian-vector product :math:`Hv` of the sample-weighted mean loss over ``data``.

    ``vectors`` is either a list of tensors shaped like the selected parameters (returns a list)
    or one flat tensor of length ``dim`` (returns a flat tensor). ``params`` selects the
    parameters the Hessian is taken over (None: all trainable; a regex on names such as
    ``"^fc\."``; a predicate; or names / parameters). The model is left exactly as it was.

    Example::

        hv = hessian_vector_product(model, loss_fn, (x, y), [torch.randn_like(p) for p in ps])
    """
    op = HessianOperator(model, loss_fn, data, params, mode=mode, method=method)
    with op:
        if isinstance(vectors, Tensor):
            return op.matvec_flat(vectors)
        return op.matvec(list(vectors))
