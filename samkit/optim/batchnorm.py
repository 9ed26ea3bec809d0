"""BatchNorm running statistics under SAM.

Running statistics must be updated by the unperturbed (ascent) pass only, once per step:

* the descent pass at ``w + e`` runs in train mode (it uses its own batch statistics, as the
  forward pass the gradient is taken of) but its running-statistics update is undone;
* with several shards each shard's ascent pass updates the statistics from the same starting
  point, and the results are merged by their shard weights. For the linear EMA update that
  BatchNorm uses, ``sum_s w_s [(1 - mu) r + mu stat_s] = (1 - mu) r + mu sum_s w_s stat_s``: one
  update with the shard-weighted mean of the per-shard batch statistics. ``num_batches_tracked``
  advances by one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

from samkit.optim.distributed import all_reduce_mean_


def running_stat_buffers(
    model: nn.Module,
) -> tuple[list[tuple[str, Tensor]], list[tuple[str, Tensor]]]:
    """Named (float running statistics, integer counters) of every norm layer that tracks them."""
    floats: list[tuple[str, Tensor]] = []
    counters: list[tuple[str, Tensor]] = []
    for name, m in model.named_modules():
        if isinstance(m, _NormBase) and m.track_running_stats and m.running_mean is not None:
            prefix = f"{name}." if name else ""
            for key in ("running_mean", "running_var"):
                if getattr(m, key) is not None:
                    floats.append((prefix + key, getattr(m, key)))
            if m.num_batches_tracked is not None:
                counters.append((prefix + "num_batches_tracked", m.num_batches_tracked))
    return floats, counters


class RunningStats:
    """Snapshot / restore / merge of a model's running statistics, all with fused list ops.

    The norm layers are found once; :meth:`refresh` re-reads their buffers (``model.to(...)``
    replaces buffer tensors), which is all a step needs when the object is kept across steps.
    """

    def __init__(self, model: nn.Module) -> None:
        self.modules = [
            (f"{name}." if name else "", m)
            for name, m in model.named_modules()
            if isinstance(m, _NormBase) and m.track_running_stats and m.running_mean is not None
        ]
        self.live = False  # the step's statistics are the live values (a plain step's only pass)
        self._saved: list[Tensor] | None = None
        self._merged: list[Tensor] | None = None
        self.refresh()

    def refresh(self) -> None:
        """Read the buffers from the norm layers again (and start a new step)."""
        floats: list[tuple[str, Tensor]] = []
        counters: list[tuple[str, Tensor]] = []
        for prefix, m in self.modules:
            for key in ("running_mean", "running_var"):
                if getattr(m, key) is not None:
                    floats.append((prefix + key, getattr(m, key)))
            if m.num_batches_tracked is not None:
                counters.append((prefix + "num_batches_tracked", m.num_batches_tracked))
        self.floats = [t for _, t in floats]
        self.counters = [t for _, t in counters]
        self.names = [n for n, _ in floats + counters]  # the model's buffer names, floats first
        self.live = False

    def __bool__(self) -> bool:
        return bool(self.floats or self.counters)

    @property
    def tensors(self) -> list[Tensor]:
        """The live buffers, in the order of :attr:`names`."""
        return self.floats + self.counters


    def save(self) -> None:
        """Remember the current values (the start of the step)."""
        self._saved = [b.clone() for b in self.tensors]

    def restore(self) -> None:
        """Put the remembered values back, bit-exactly."""
        assert self._saved is not None
        if self.tensors:
            torch._foreach_copy_(self.tensors, self._saved)

    def accumulate(self, weight: float, first: bool) -> None:
        """Add ``weight *`` the current float statistics to the merge; the first shard's counters win."""
        if first:
            self._merged = [b.clone() for b in self.tensors]
            if self.floats and weight != 1.0:
                torch._foreach_mul_(self._merged[: len(self.floats)], weight)
        else:
            assert self._merged is not None
            if self.floats:
                torch._foreach_add_(self._merged[: len(self.floats)], self.floats, alpha=weight)

    def set_merged(self, merged: list[Tensor]) -> None:
        """Take merged values computed elsewhere (the vectorized path), in the order of :attr:`names`."""
        self._merged = merged

    def write_merged(self) -> None:
        """Install the merged statistics (the snapshot is kept until :meth:`clear`)."""
        assert self._merged is not None
        if self.tensors:
            torch._foreach_copy_(self.tensors, self._merged)
        self._merged = None

    def commit(self, finite: bool, distributed: bool, examples: int) -> None:
        """After the finite check: the merged statistics (averaged over ranks, weighted by their
        ``examples``, when ``distributed``), or the old ones back for a step that is not taken (like
        the weights)."""
        if not finite:
            self.restore()
        else:
            if not self.live:
                self.write_merged()
            if distributed:
                all_reduce_mean_(self.floats, weight=float(examples))
        self.clear()

    def clear(self) -> None:
        self._saved = None
        self._merged = None
        self.live = False


@contextmanager
def frozen_running_stats(model: nn.Module) -> Iterator[None]:
    """Run forwards in train mode without changing running statistics (the descent pass of SAM).

    For users of ``first_step`` / ``second_step``: wrap the second forward/backward in it.
    """
    stats = RunningStats(model)
    if not stats:
        yield
        return
    stats.save()
    try:
        yield
    finally:
        stats.restore()
        stats.clear()
