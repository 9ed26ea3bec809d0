"""CIFAR-10 / CIFAR-100 from the on-disk layout torchvision downloads (Python pickles).

``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``root/cifar-100-python/{train, test, meta}``. Images are kept in memory as normalised float32
``[N, 3, 32, 32]`` tensors; batches are augmented by :class:`samkit.data.augment.CropFlip`.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samkit.data._core import Dataset, Split
from samkit.data._registry import cache_dir, register_dataset, writable_root
from samkit.data.augment import CropFlip
from samkit.errors import SamkitError

_LAYOUTS: dict[str, dict[str, Any]] = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "labels": "labels",
        "names": "label_names",
        "num_classes": 10,
        "torchvision": "CIFAR10",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "labels": "fine_labels",
        "names": "fine_label_names",
        "num_classes": 100,
        "torchvision": "CIFAR100",
    },
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Refuse any global but numpy's array/dtype reconstruction, so a tampered batch file cannot
    run code on load (plain ``pickle.load`` would execute whatever the file asks for)."""

    _ALLOWED = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, "latin1").
        if (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        if module.split(".")[0] == "numpy" and name in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR file")


def _read_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            # latin1 (as torchvision): the official files are Python-2 pickles of numpy arrays.
            raw = _NumpyOnlyUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise SamkitError(
            f"{path} is not a readable CIFAR pickle ({err}); delete it and reload with --download"
        ) from err
    if not isinstance(raw, dict):
        raise SamkitError(f"{path} does not hold a CIFAR batch dict (found {type(raw).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def _read_files(folder: Path, files: list[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        batch = _read_pickle(folder / name)
        if "data" not in batch or label_key not in batch:
            raise SamkitError(
                f"{folder / name} lacks 'data' or {label_key!r}; found keys {sorted(batch)}"
            )
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise SamkitError(f"{folder / name}: expected data [N, 3072], got {data.shape}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _ensure_present(name: str, data_root: Path | None, download: bool) -> Path:
    layout = _LAYOUTS[name]
    root = cache_dir(data_root)
    folder = root / layout["folder"]
    expected = [*layout["train"], *layout["test"], layout["meta"]]
    missing = [f for f in expected if not (folder / f).is_file()]
    if missing and download:
        try:
            import torchvision
        except ImportError as err:
            raise SamkitError(
                f"downloading {name} (--download, download=True in Python) needs torchvision "
                "(pip install torchvision); or fetch "
                f"the 'python version' archive from https://www.cs.toronto.edu/~kriz/cifar.html "
                f"and extract it into {root}"
            ) from err
        writable_root(data_root)  # a typo'd --data-root is refused, not created
        dataset_class = getattr(torchvision.datasets, layout["torchvision"])
        dataset_class(str(root), train=True, download=True)
        dataset_class(str(root), train=False, download=True)
        missing = [f for f in expected if not (folder / f).is_file()]
    if missing:
        raise SamkitError(
            f"{name} not found: expected {', '.join(expected)} in {folder} (the torchvision "
            f"layout; missing: {', '.join(missing)}). Fetch it with torchvision: --download "
            f"(download=True in Python), or point --data-root (root=) at the folder that contains "
            f"{layout['folder']}/."
        )
    return folder


def _load_cifar(
    name: str,
    root: Path | None = None,
    download: bool = False,
    normalize: bool = True,
    augment: bool = True,
    crop_padding: int = 4,
    cutout: int = 0,
) -> Dataset:
    """CIFAR-10 (50000/10000) or CIFAR-100 (fine labels) from ``root`` in the torchvision layout.

    Options: ``normalize`` (per-channel, train-split statistics), ``augment`` (random crop with
    ``crop_padding`` + horizontal flip, plus a ``cutout``-sized square when ``cutout > 0``).
    """
    layout = _LAYOUTS[name]
    folder = _ensure_present(name, root, download)
    x_train, y_train = _read_files(folder, layout["train"], layout["labels"])
    x_test, y_test = _read_files(folder, layout["test"], layout["labels"])
    meta = _read_pickle(folder / layout["meta"])
    class_names = [
        n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(layout["names"], [])
    ]
    if y_train.size and (
        y_train.min() < 0 or max(y_train.max(), y_test.max()) >= layout["num_classes"]
    ):
        raise SamkitError(f"{folder}: labels outside 0..{layout['num_classes'] - 1}")

    train_f = torch.from_numpy(x_train).float().div_(255.0)
    test_f = torch.from_numpy(x_test).float().div_(255.0)
    # Statistics from the train split (for the real data: the usual CIFAR constants).
    mean = train_f.mean(dim=(0, 2, 3)) if normalize else torch.zeros(3)
    std = train_f.std(dim=(0, 2, 3)) if normalize else torch.ones(3)
    if not bool((std > 0).all()):  # (NaN std, from a single pixel value, fails this too)
        flat = [channel for channel, s in zip("RGB", std.tolist(), strict=True) if not s > 0]
        raise SamkitError(
            f"{folder}: the train images are constant in channel(s) {', '.join(flat)} (standard "
            "deviation 0), so per-channel normalisation would divide by zero and every input "
            "would be NaN. The files look damaged: delete them and reload with --download, or "
            "load them as they are with --dataset-option normalize=false"
        )
    train_f = (train_f - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    test_f = (test_f - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    # Pad crops with black (pixel 0 before normalisation), as torchvision's pad-then-normalise does.
    transform = CropFlip(crop_padding, cutout, fill=(-mean / std).tolist()) if augment else None
    return Dataset(
        name=name,
        num_classes=layout["num_classes"],
        input_shape=(3, 32, 32),
        train=Split(train_f, torch.from_numpy(y_train)),
        test=Split(test_f, torch.from_numpy(y_test)),
        augment=transform,
        info={
            "source": f"{name} ({folder})",
            "class_names": class_names,
            "normalisation": {"mean": mean.tolist(), "std": std.tolist(), "from": "train split"},
            "augment": repr(transform),
        },
    )


# One loader for both: partial() keeps the option signature the registry checks names against.
load_cifar10 = register_dataset("cifar10")(functools.partial(_load_cifar, "cifar10"))
load_cifar100 = register_dataset("cifar100")(functools.partial(_load_cifar, "cifar100"))
