"""What samkit means by a batch and a loss function (every layer may import this).

A batch is any (nested) tensor / tuple / list / dict whose tensors share the leading batch
dimension; ``loss_fn(model, batch)`` returns the mean loss of the batch as a 0-d tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from samkit.errors import SamkitError

LossFn = Callable[[nn.Module, Any], Tensor]


def batch_size(batch: Any) -> int:
    """The shared leading dimension of every tensor in ``batch`` (error if they disagree)."""
    leaves = [x for x in pytree.tree_leaves(batch) if isinstance(x, torch.Tensor)]
    if not leaves:
        raise SamkitError(
            "the batch holds no tensor: pass a tensor, or a tuple/list/dict of tensors that share "
            "the leading batch dimension"
        )
    sizes = {x.shape[0] if x.dim() > 0 else None for x in leaves}
    if None in sizes or len(sizes) != 1:
        shapes = [tuple(x.shape) for x in leaves]
        raise SamkitError(
            f"every tensor in the batch must share the leading batch dimension; got shapes {shapes}"
        )
    n = sizes.pop()
    assert n is not None  # (None, a 0-d tensor, was refused above)
    if n == 0:
        raise SamkitError("a batch is empty (0 examples): drop it or fix the loader")
    return n
