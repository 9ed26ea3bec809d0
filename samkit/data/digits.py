"""scikit-learn's 8x8 handwritten digits (1797 examples, bundled with scikit-learn: no download)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from samkit.data._core import Dataset, Split
from samkit.data._registry import register_dataset
from samkit.errors import SamkitError


@register_dataset("digits")
def load_digits_dataset(
    root: Path | None = None,
    download: bool = False,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    shape: str = "image",
) -> Dataset:
    """Digits scaled to [0, 1]; a fixed stratified train/test split seeded by ``split_seed``.

    ``shape="image"`` gives inputs ``[N, 1, 8, 8]``; ``shape="flat"`` gives ``[N, 64]``.
    """
    del root, download
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if shape not in ("image", "flat"):
        raise SamkitError(f"digits shape must be 'image' or 'flat', got {shape!r}")
    if not 0.0 < test_fraction < 1.0:
        raise SamkitError(f"digits test_fraction must be in (0, 1), got {test_fraction}")
    with warnings.catch_warnings():
        # scikit-learn 1.2 reads its data files with an importlib.resources API that Python 3.11
        # deprecates: its warning is not the user's to act on
        warnings.simplefilter("ignore", DeprecationWarning)
        bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)  # pixel values are integers 0..16
    y = bunch.target.astype(np.int64)
    # Stratified so every class has the same share in both splits, whatever the seed.
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=split_seed, stratify=y
    )
    per_example = (1, 8, 8) if shape == "image" else (64,)

    def split(xs: np.ndarray, ys: np.ndarray) -> Split:
        return Split(torch.from_numpy(xs).reshape(-1, *per_example), torch.from_numpy(ys))

    return Dataset(
        name="digits",
        num_classes=10,
        input_shape=per_example,
        train=split(x_train, y_train),
        test=split(x_test, y_test),
        info={
            "source": "sklearn.datasets.load_digits (UCI optical digits, 8x8)",
            "split": {"test_fraction": test_fraction, "split_seed": split_seed, "stratified": True},
            "normalisation": {"scale": "pixel / 16 -> [0, 1]"},
        },
    )
