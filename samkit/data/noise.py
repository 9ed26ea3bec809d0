"""Symmetric label noise with an exact number of flipped labels."""

from __future__ import annotations

import torch
from torch import Tensor

from samkit.errors import SamkitError


def flip_labels(
    targets: Tensor, fraction: float, num_classes: int, seed: int
) -> tuple[Tensor, Tensor]:
    """Flip exactly ``round(fraction * n)`` labels, each to a different class chosen uniformly.

    Which examples are flipped is a uniformly random subset of that size; each flipped label
    becomes ``(y + k) mod C`` with ``k`` uniform on ``1..C-1``, i.e. uniform over the *other*
    classes (so, unlike "replace by a uniform class", every chosen label really changes and the
    reported fraction is the true one). Deterministic for ``seed``, independent of global RNG.

    Returns:
        ``(new_targets, flipped_mask)``; ``targets`` is not modified.

    Example:
        >>> noisy, mask = flip_labels(torch.tensor([0, 1, 2, 3]), 0.5, 4, seed=0)
        >>> int(mask.sum()), bool((noisy[mask] != torch.tensor([0, 1, 2, 3])[mask]).all())
        (2, True)
    """
    if not 0.0 <= fraction <= 1.0:
        raise SamkitError(f"label noise fraction must be in [0, 1], got {fraction}")
    if targets.ndim != 1:
        raise SamkitError(f"targets must be 1-D, got shape {tuple(targets.shape)}")
    n = targets.shape[0]
    num_flipped = round(fraction * n)
    if num_flipped > 0 and num_classes < 2:
        raise SamkitError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
    if n and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise SamkitError(
            f"targets must lie in [0, {num_classes - 1}], got range "
            f"[{int(targets.min())}, {int(targets.max())}]"
        )
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(n, generator=generator)[:num_flipped]
    offsets = torch.randint(1, max(num_classes, 2), (num_flipped,), generator=generator)
    cpu_targets = targets.detach().to("cpu", torch.long)
    new_targets = cpu_targets.clone()
    new_targets[chosen] = (cpu_targets[chosen] + offsets) % num_classes
    flipped = torch.zeros(n, dtype=torch.bool)
    flipped[chosen] = True
    return new_targets.to(targets.device), flipped.to(targets.device)
