"""samkit.data: datasets as in-memory tensors, behind one registry.

>>> from samkit.data import load_dataset, list_datasets
>>> ds = load_dataset("mnist1d", label_noise=0.2, seed=0)
>>> inputs, targets = ds.train.batch(torch.arange(64))

Importing this package registers every built-in dataset (the modules below register themselves).
"""

from samkit.data import cifar as _cifar  # noqa: F401  (registers "cifar10", "cifar100")
from samkit.data import digits as _digits  # noqa: F401  (registers "digits")
from samkit.data import glue as _glue  # noqa: F401  (registers "glue:<task>")
from samkit.data import mnist1d as _mnist1d  # noqa: F401  (registers "mnist1d")
from samkit.data import synthetic as _synthetic  # noqa: F401  (registers "synthetic")
from samkit.data._core import Augment, Dataset, Inputs, Split
from samkit.data._registry import list_datasets, load_dataset, register_dataset
from samkit.data.augment import CropFlip, cutout, random_crop, random_hflip
from samkit.data.mnist1d import generate_mnist1d
from samkit.data.noise import flip_labels
from samkit.data.text import WordTokenizer

__all__ = [
    "Augment",
    "CropFlip",
    "Dataset",
    "Inputs",
    "Split",
    "WordTokenizer",
    "cutout",
    "flip_labels",
    "generate_mnist1d",
    "list_datasets",
    "load_dataset",
    "random_crop",
    "random_hflip",
    "register_dataset",
]
