"""A compiled SAM step: ``torch.compile`` for the passes and the perturbation math.

Nothing in the step synchronises with the host when ``nonfinite="unchecked"`` and no
``GradScaler`` is used: norms stay tensors, the perturbation is scaled by a tensor, the weights are
restored by copy. So the parts that cost time can be compiled:

* ``loss_fn(model, batch)`` — the forward, and through AOTAutograd its backward — is compiled once
  and used by both passes (ascent and descent see the same graph);
* the perturbation geometry (:func:`samkit.optim.rules.perturbation`, which every rule uses) becomes
  one fused kernel per group.

On CUDA, ``mode="reduce-overhead"`` additionally captures the compiled passes in CUDA graphs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from samkit.errors import SamkitError
from samkit.optim import rules
from samkit.optim.sam import SAM


def compile_step(
    optimizer: SAM,
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    **compile_kwargs: Any,
) -> Callable[..., Tensor]:
    """Return ``step(batch, scaler=None) -> loss``: ``optimizer.train_step`` with compiled parts.

    ``compile_kwargs`` go to ``torch.compile`` (``mode``, ``backend``, ``dynamic``, ...). Use
    ``nonfinite="unchecked"`` on the optimizer for a step without host syncs (the default
    ``"raise"`` keeps one sync per step to check for NaN/inf).

    Example::

        opt = samkit.SAM(model.parameters(), torch.optim.SGD, lr=0.1, nonfinite="unchecked")
        step = samkit.compile_step(opt, model, loss_fn)
        for batch in loader:
            loss = step(batch)
    """
    if not isinstance(optimizer, SAM):
        raise SamkitError(f"compile_step needs a samkit optimizer, got {type(optimizer).__name__}")
    compiled_loss = torch.compile(loss_fn, **compile_kwargs)
    optimizer.geometry = torch.compile(rules.perturbation, **compile_kwargs)

    def step(batch: Any, scaler: torch.amp.GradScaler | None = None) -> Tensor:
        return optimizer.train_step(model, compiled_loss, batch, scaler=scaler)

    return step
