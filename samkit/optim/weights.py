"""Moving the weights: to ``w + e`` in place, and back to ``w`` exactly (by copy, never by
subtraction), with the autocast weight cache cleared at each move."""

from __future__ import annotations

import torch
from torch import Tensor

from samkit.optim.distributed import local_tensors
from samkit.optim.rules.base import Groups


def weights_moved() -> None:
    """Call after changing weights in place: ``torch.autocast`` caches the low-precision copy of every
    weight for the whole autocast region, and would serve a pass at ``w + e`` the cached copy of
    ``w`` (SAM would silently become the base optimizer under mixed precision)."""
    torch.clear_autocast_cache()  # cheap when autocast is off: an empty cache


class WeightBackup:
    """A copy of the weights in a reused buffer, put back by copy (so bit-exactly)."""

    def __init__(self) -> None:
        self._copy: list[Tensor] | None = None

    def save(self, flat: list[Tensor]) -> None:
        flat = local_tensors(flat)
        b = self._copy
        if b is None or len(b) != len(flat) or any(
            x.shape != p.shape or x.dtype != p.dtype or x.device != p.device
            for x, p in zip(b, flat, strict=True)
        ):
            self._copy = [p.detach().clone() for p in flat]
        else:
            torch._foreach_copy_(b, [p.detach() for p in flat])

    def restore(self, flat: list[Tensor]) -> None:
        assert self._copy is not None
        with torch.no_grad():
            torch._foreach_copy_(local_tensors(flat), self._copy)
        weights_moved()

    def move(self, flat: list[Tensor], e: Groups | None, restore_first: bool = False) -> None:
        """Weights to ``w + e`` (from ``w``: put back first when they sit at an earlier perturbation)."""
        if restore_first:
            self.restore(flat)
        if e is not None:
            with torch.no_grad():
                torch._foreach_add_(flat, [t for group in e for t in group])
            weights_moved()
