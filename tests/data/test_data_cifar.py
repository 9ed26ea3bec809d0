"""CIFAR loaders read small files written in the real (Python-2 pickle, bytes keys) layout."""

import pickle

import numpy as np
import pytest
import torch

from samkit.data import load_dataset
from samkit.errors import SamkitError

PER_FILE = 20


def _write(path, obj):
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)  # the official files are protocol-2 pickles


def _batch(rng, label_key, num_classes, offset):
    labels = [int(v) for v in (np.arange(PER_FILE) + offset) % num_classes]
    data = rng.integers(0, 256, size=(PER_FILE, 3072), dtype=np.uint8)
    return {b"batch_label": b"x", label_key: labels, b"data": data, b"filenames": [b"f"] * PER_FILE}


@pytest.fixture
def cifar10_root(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _write(folder / f"data_batch_{i}", _batch(rng, b"labels", 10, i))
    _write(folder / "test_batch", _batch(rng, b"labels", 10, 0))
    _write(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return tmp_path


@pytest.fixture
def cifar100_root(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test"):
        batch = _batch(rng, b"fine_labels", 100, 37)
        batch[b"coarse_labels"] = [0] * PER_FILE
        _write(folder / name, batch)
    _write(folder / "meta", {b"fine_label_names": [b"apple"] * 100})
    return tmp_path


def test_cifar10_round_trip_pixels_labels_and_normalisation(cifar10_root):
    ds = load_dataset("cifar10", root=cifar10_root)
    assert (len(ds.train), len(ds.test), ds.num_classes) == (5 * PER_FILE, PER_FILE, 10)
    assert ds.input_shape == (3, 32, 32) and ds.train.inputs.shape == (100, 3, 32, 32)
    with open(cifar10_root / "cifar-10-batches-py" / "data_batch_2", "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    # Example 0 of batch 2 is train example PER_FILE: undo normalisation and compare pixels.
    mean = torch.tensor(ds.info["normalisation"]["mean"]).view(3, 1, 1)
    std = torch.tensor(ds.info["normalisation"]["std"]).view(3, 1, 1)
    pixels = (ds.train.inputs[PER_FILE] * std + mean) * 255
    expected = torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32).astype(np.float32))
    assert torch.allclose(pixels, expected, atol=1e-3)
    assert ds.train.targets[PER_FILE] == raw[b"labels"][0]
    channel_means = ds.train.inputs.mean(dim=(0, 2, 3))
    assert torch.allclose(channel_means, torch.zeros(3), atol=1e-5)
    assert ds.info["class_names"][3] == "c3"


def test_cifar100_fine_labels(cifar100_root):
    ds = load_dataset("cifar100", root=cifar100_root, label_noise=0.5, seed=1)
    assert ds.num_classes == 100 and len(ds.train) == PER_FILE
    assert ds.train.clean_targets.tolist() == [(i + 37) % 100 for i in range(PER_FILE)]
    assert ds.info["label_noise"]["num_flipped"] == PER_FILE // 2


def test_missing_dir_names_files_and_download(tmp_path):
    with pytest.raises(SamkitError, match=r"data_batch_1.*cifar-10-batches-py.*--download"):
        load_dataset("cifar10", root=tmp_path)


def test_missing_torchvision_for_download_is_clear(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torchvision(name, *args, **kwargs):
        if name == "torchvision":
            raise ImportError("no torchvision")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    with pytest.raises(SamkitError, match="needs torchvision"):
        load_dataset("cifar100", root=tmp_path, download=True)


def test_malicious_pickle_is_refused(cifar10_root):
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    _write(cifar10_root / "cifar-10-batches-py" / "test_batch", {b"data": Boom()})
    with pytest.raises(SamkitError, match=r"not a readable CIFAR pickle.*refusing to load .*print"):
        load_dataset("cifar10", root=cifar10_root)


def test_augment_is_seeded_and_keeps_shape(cifar10_root):
    ds = load_dataset("cifar10", root=cifar10_root, cutout=8)
    batch = ds.train.inputs[:8]
    a = ds.augment(batch, torch.Generator().manual_seed(0))
    b = ds.augment(batch, torch.Generator().manual_seed(0))
    c = ds.augment(batch, torch.Generator().manual_seed(1))
    assert a.shape == batch.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert load_dataset("cifar10", root=cifar10_root, augment=False).augment is None


def test_constant_pixels_are_refused_before_they_become_nan(cifar10_root):
    folder = cifar10_root / "cifar-10-batches-py"
    for name in [f"data_batch_{i}" for i in range(1, 6)]:  # a damaged copy: every pixel 128
        batch = _batch(np.random.default_rng(0), b"labels", 10, 0)
        batch[b"data"][:] = 128
        _write(folder / name, batch)
    with pytest.raises(SamkitError, match=r"constant.*standard deviation 0.*normalize=false"):
        load_dataset("cifar10", root=cifar10_root)
    raw = load_dataset("cifar10", root=cifar10_root, normalize=False)  # what the files hold
    assert torch.equal(raw.train.inputs, torch.full_like(raw.train.inputs, 128 / 255))
