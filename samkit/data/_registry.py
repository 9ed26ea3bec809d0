"""Dataset registry: one table maps a name to a loader and its default options (timm-style)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from samkit.data._core import Dataset, Split
from samkit.data.noise import flip_labels
from samkit.errors import SamkitError
from samkit.registry import Registry

Loader = Callable[..., Dataset]

_DATASETS: Registry[Loader] = Registry("dataset", "task")
log = logging.getLogger("samkit.data")


def register_dataset(name: str, *, prefix: bool = False) -> Callable[[Loader], Loader]:
    """Register ``loader(root, download, **options) -> Dataset`` under ``name``.

    With ``prefix=True`` the name is a family (``glue``) and ``load_dataset("glue:sst2")`` calls
    the loader with ``task="sst2"``.
    """
    return _DATASETS.register(name, prefix=prefix)


def list_datasets() -> list[str]:
    """Registered dataset names, sorted; families are shown as ``family:<task>``."""
    return _DATASETS.names()


def check_dataset(name: str, options: dict[str, Any]) -> None:
    """Refuse an unknown dataset name or option (what :func:`load_dataset` checks), loading nothing."""
    loader, _ = _DATASETS.resolve(name)
    _DATASETS.check_options(name, loader, dict(options), reserved=("root", "download", "task"))
    getattr(loader, "check_params", lambda options: None)(options)  # a loader's open **params


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    download: bool = False,
    label_noise: float = 0.0,
    seed: int = 0,
    **options: Any,
) -> Dataset:
    """Load a registered dataset, optionally with symmetric label noise on the train split.

    Args:
        name: a name from :func:`list_datasets` (``"mnist1d"``, ``"cifar10"``, ``"glue:sst2"``...).
        root: where the data lives or is cached (default: ``~/.cache/samkit`` for generated data;
            required for on-disk datasets such as CIFAR and GLUE).
        download: let the loader fetch missing files (where it can).
        label_noise: fraction of *train* labels flipped to another class (exactly
            ``round(label_noise * n)``; see :func:`flip_labels`). The test split stays clean.
        seed: seeds the label noise. The data itself is fixed by the dataset's own options
            (e.g. ``data_seed``), so runs with different seeds see the same examples.
        **options: dataset-specific options (see ``docs/data_models.md``).

    Example:
        >>> ds = load_dataset("mnist1d", label_noise=0.1, seed=1)
        >>> x, y = ds.train.batch(torch.arange(128))
    """
    loader, implied = _DATASETS.resolve(name)
    _DATASETS.check_options(name, loader, options, reserved=("root", "download", "task"))
    ds = loader(root=None if root is None else Path(root), download=download, **implied, **options)
    ds.name = name
    ds.info.setdefault("source", name)
    ds.info["sizes"] = {"train": len(ds.train), "test": len(ds.test)}
    ds.info["label_noise"] = {"fraction": float(label_noise), "num_flipped": 0, "seed": seed}
    if label_noise:
        clean = ds.train.targets
        noisy, flipped = flip_labels(clean, label_noise, ds.num_classes, seed)
        ds.train = Split(ds.train.inputs, noisy, clean_targets=clean, flipped=flipped)
        ds.info["label_noise"]["num_flipped"] = int(flipped.sum())
    return ds


def cache_dir(root: Path | None) -> Path:
    """Generated-data cache: ``root``, else ``$SAMKIT_CACHE``, else ``~/.cache/samkit``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("SAMKIT_CACHE", Path.home() / ".cache" / "samkit"))


def writable_root(root: Path | None) -> Path:
    """:func:`cache_dir`, created if missing, for a loader about to write data into it.

    A data root the user named (``root``, i.e. ``--data-root``, or ``$SAMKIT_CACHE``) is created
    only if its parent exists: a missing parent is more likely a typo than a wish for a new
    directory tree, so it is refused and nothing is created. The default ``~/.cache/samkit`` is
    samkit's own and is created with its parents.
    """
    base = check_root(root)
    if base.is_dir():
        return base
    if root is None and "SAMKIT_CACHE" not in os.environ:
        base.mkdir(parents=True, exist_ok=True)
    else:
        base.mkdir(exist_ok=True)
    return base


def check_root(root: Path | None) -> Path:
    """:func:`cache_dir` if :func:`writable_root` may use it (a folder, or one whose parent
    exists), else the :class:`SamkitError` that says why; creates nothing."""
    base = cache_dir(root)
    named = "--data-root" if root is not None else "$SAMKIT_CACHE"
    if base.is_dir() or (root is None and "SAMKIT_CACHE" not in os.environ):
        return base
    if base.exists():
        raise SamkitError(f"data root {base} ({named}) is a file, not a folder.")
    elif not base.parent.is_dir():
        raise SamkitError(
            f"data root {base} ({named}) does not exist, and neither does its parent "
            f"{base.parent}: a typo? Nothing was created. Point {named} at an existing folder, "
            f"or create it first (mkdir -p {base})."
        )
    return base


def cache_folder(root: Path | None, name: str, what: str) -> Path:
    """``<cache_dir(root)>/<name>`` for generated data, created if missing (see
    :func:`writable_root`); a new folder is said in the ``samkit`` log."""
    folder = cache_dir(root) / name
    if not folder.is_dir():
        folder = writable_root(root) / name
        folder.mkdir(exist_ok=True)
        log.info("created %s for the generated %s data", folder, what)
    return folder
