"""Sharding: split a batch into disjoint shards that each get their own perturbation (m-sharpness).

A batch is any (nested) tensor / tuple / list / dict whose tensors share the leading batch dimension.
``shards=k`` splits it into ``k`` contiguous shards whose sizes differ by at most one
(``torch.tensor_split``); ``shard_size=m`` makes shards of ``m`` examples, the last one possibly
smaller. Each shard carries its weight ``n_s / n`` so that averages over shards equal averages over
examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree

from samkit._batch import batch_size
from samkit.errors import SamkitError

__all__ = ["Sharding", "batch_size", "micro_batches", "piece_sizes", "shard_batch", "split_batch"]


@dataclass(frozen=True)
class Sharding:
    """How a batch is split: exactly one of ``shards`` (count) or ``shard_size`` (examples each)."""

    shards: int | None = 1
    shard_size: int | None = None

    @classmethod
    def from_args(cls, shards: int | None, shard_size: int | None) -> Sharding:
        # shards=1 is the default, so shard_size=m alone arrives as (1, m): that is not "both".
        if shards not in (None, 1) and shard_size is not None:
            raise SamkitError(
                f"give either shards={shards} or shard_size={shard_size}, not both: "
                "shards is the number of shards, shard_size the number of examples per shard"
            )
        if shard_size is not None:
            if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
                raise SamkitError(
                    f"shard_size must be a positive integer (examples per shard), got {shard_size!r}"
                )
            return cls(shards=None, shard_size=shard_size)
        shards = 1 if shards is None else shards
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise SamkitError(
                f"shards must be a positive integer (1 is plain SAM), got {shards!r}"
            )
        return cls(shards=shards, shard_size=None)

    @property
    def is_single(self) -> bool:
        return self.shards == 1

    def sizes(self, n: int) -> list[int]:
        """Shard sizes for a batch of ``n`` examples."""
        if self.shard_size is not None:
            full, rest = divmod(n, self.shard_size)
            return [self.shard_size] * full + ([rest] if rest else [])
        assert self.shards is not None
        if n < self.shards:
            raise SamkitError(
                f"the batch has {n} examples but shards={self.shards}: every shard needs at least "
                "one example; use a larger batch or fewer shards (e.g. drop the last partial batch)"
            )
        base, extra = divmod(n, self.shards)
        return [base + 1] * extra + [base] * (self.shards - extra)

    def __str__(self) -> str:
        return f"shard_size={self.shard_size}" if self.shard_size else f"shards={self.shards}"


def split_batch(batch: Any, sizes: list[int]) -> list[Any]:
    """Split every tensor of ``batch`` along dim 0 into consecutive pieces of ``sizes``."""
    leaves, spec = pytree.tree_flatten(batch)
    pieces = [
        torch.split(x, sizes) if isinstance(x, torch.Tensor) else [x] * len(sizes) for x in leaves
    ]
    return [pytree.tree_unflatten([p[i] for p in pieces], spec) for i in range(len(sizes))]


def shard_batch(batch: Any, sharding: Sharding) -> tuple[list[Any], list[float]]:
    """The shards of ``batch`` and their weights ``n_s / n``."""
    n = batch_size(batch)
    sizes = sharding.sizes(n)
    if len(sizes) == 1:
        return [batch], [1.0]
    return split_batch(batch, sizes), [s / n for s in sizes]


def piece_sizes(n: int, micro_batch_size: int | None) -> list[int]:
    """The sizes of the consecutive pieces ``n`` examples are taken in with ``micro_batch_size``.

    As few pieces as the size allows (``ceil(n / b)``), their sizes within one of each other: 16
    examples with ``b = 5`` are 4 pieces of 4, not 5 + 5 + 5 + 1 (a single example that BatchNorm
    cannot normalise). The peak memory is that of the largest piece, at most ``b``.
    """
    if micro_batch_size is None or n <= micro_batch_size:
        return [n]
    count = -(-n // micro_batch_size)
    small, larger = divmod(n, count)
    return [small + 1] * larger + [small] * (count - larger)


def micro_batches(batch: Any, micro_batch_size: int | None) -> list[tuple[Any, float]]:
    """``batch`` cut into the pieces of :func:`piece_sizes`, each with its weight ``n_j / n`` (the
    whole batch with weight 1 when it fits)."""
    n = batch_size(batch)
    sizes = piece_sizes(n, micro_batch_size)
    if len(sizes) == 1:
        return [(batch, 1.0)]
    return list(zip(split_batch(batch, sizes), [s / n for s in sizes], strict=True))
