"""The in-memory dataset types every loader returns: :class:`Split` and :class:`Dataset`.

Everything lives in tensors so a whole split can sit on the accelerator (as in airbench) and a
batch is one indexing operation; there is no DataLoader in the hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Union

import torch
from torch import Tensor

from samkit.errors import SamkitError

Inputs = Union[Tensor, dict[str, Tensor]]  # noqa: UP007  (a runtime alias; 3.10-safe)
Augment = Callable[[Tensor, torch.Generator], Tensor]


def _map_inputs(inputs: Inputs, fn: Callable[[Tensor], Tensor]) -> Inputs:
    if isinstance(inputs, dict):
        return {key: fn(value) for key, value in inputs.items()}
    return fn(inputs)


def _num_examples(inputs: Inputs) -> int:
    if isinstance(inputs, dict):
        sizes = {value.shape[0] for value in inputs.values()}
        if len(sizes) != 1:
            raise SamkitError(f"text inputs disagree on the number of examples: {sorted(sizes)}")
        return sizes.pop()
    return inputs.shape[0]


@dataclass(frozen=True)
class Split:
    """One split (train or test) held as tensors.

    Attributes:
        inputs: ``[N, *input_shape]`` tensor, or for text a dict of ``[N, L]`` tensors
            (``input_ids``, ``attention_mask``, optionally ``token_type_ids``).
        targets: ``[N]`` int64 class labels (after label noise, for a noisy train split).
        clean_targets: the labels before label noise, or ``None`` when no noise was applied.
        flipped: ``[N]`` bool mask of the examples whose label was flipped, or ``None``.

    Example:
        >>> x, y = split.batch(torch.arange(32))
    """

    inputs: Inputs
    targets: Tensor
    clean_targets: Tensor | None = None
    flipped: Tensor | None = None

    def __post_init__(self) -> None:
        n = _num_examples(self.inputs)
        if self.targets.ndim != 1 or self.targets.shape[0] != n:
            raise SamkitError(
                f"targets must be a 1-D tensor with one label per example ({n}), "
                f"got shape {tuple(self.targets.shape)}"
            )
        if self.targets.dtype != torch.long:
            raise SamkitError(f"targets must be int64 (torch.long), got {self.targets.dtype}")

    def __len__(self) -> int:
        return self.targets.shape[0]

    def _map(self, fn: Callable[[Tensor], Tensor]) -> Split:
        return Split(
            inputs=_map_inputs(self.inputs, fn),
            targets=fn(self.targets),
            clean_targets=None if self.clean_targets is None else fn(self.clean_targets),
            flipped=None if self.flipped is None else fn(self.flipped),
        )

    def to(self, device: torch.device | str) -> Split:
        """The same split with every tensor on ``device``."""
        return self._map(lambda t: t.to(device))

    def subset(self, index: Tensor) -> Split:
        """The examples at ``index`` (an int64 index or bool mask tensor), in that order."""
        return self._map(lambda t: t[index.to(t.device)])

    def batch(self, indices: Tensor) -> tuple[Inputs, Tensor]:
        """``(inputs, targets)`` for the examples at ``indices``."""
        indices = indices.to(self.targets.device)
        return _map_inputs(self.inputs, lambda t: t[indices]), self.targets[indices]


@dataclass
class Dataset:
    """A loaded dataset: two splits plus what a model and a run record need to know.

    Attributes:
        name: registry name it was loaded under (e.g. ``"mnist1d"``, ``"glue:sst2"``).
        num_classes: number of classes.
        input_shape: shape of one example's input (``(40,)``, ``(3, 32, 32)``, ``(max_length,)``).
        train, test: the splits; label noise, if any, is in ``train`` only.
        augment: train-time batch augmentation ``augment(inputs, generator) -> inputs`` that draws
            randomness only from ``generator``, or ``None``.
        info: JSON-serialisable facts for the run record (source, sizes, noise, normalisation).
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    train: Split
    test: Split
    augment: Augment | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Dataset:
        """The same dataset with both splits on ``device``."""
        return replace(self, train=self.train.to(device), test=self.test.to(device))
