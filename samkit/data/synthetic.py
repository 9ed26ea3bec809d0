"""Synthetic Gaussian data for speed tests and smoke tests: no files, any shape."""

from __future__ import annotations

from pathlib import Path

import torch

from samkit.data._core import Dataset, Split
from samkit.data._registry import register_dataset
from samkit.errors import SamkitError


@register_dataset("synthetic")
def load_synthetic(
    root: Path | None = None,
    download: bool = False,
    n: int = 1024,
    n_test: int | None = None,
    input_shape: tuple[int, ...] | list[int] = (32,),
    num_classes: int = 10,
    data_seed: int = 0,
) -> Dataset:
    """Standard-normal inputs of ``input_shape`` with uniformly random labels.

    Labels carry no signal, so accuracy measures memorisation only; use it for timing and
    plumbing, not for learning curves. ``n_test`` defaults to ``n // 4``.
    """
    del root, download
    shape = tuple(int(d) for d in input_shape)
    if n < 1 or num_classes < 1 or not shape or min(shape) < 1:
        raise SamkitError(
            f"synthetic needs n >= 1, num_classes >= 1 and a non-empty positive input_shape; "
            f"got n={n}, num_classes={num_classes}, input_shape={shape}"
        )
    n_test = max(1, n // 4) if n_test is None else n_test
    generator = torch.Generator().manual_seed(data_seed)

    def split(size: int) -> Split:
        inputs = torch.randn((size, *shape), generator=generator)
        return Split(inputs, torch.randint(0, num_classes, (size,), generator=generator))

    train, test = split(n), split(n_test)
    return Dataset(
        name="synthetic",
        num_classes=num_classes,
        input_shape=shape,
        train=train,
        test=test,
        info={"source": f"synthetic Gaussian, data_seed={data_seed}", "input_shape": list(shape)},
    )
