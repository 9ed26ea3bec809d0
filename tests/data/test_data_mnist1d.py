"""MNIST-1D generation: split sizes, balance, determinism, caching."""

import numpy as np
import pytest
import torch

from samkit.data import generate_mnist1d, load_dataset
from samkit.errors import SamkitError


@pytest.fixture(scope="module")
def mnist1d_root(tmp_path_factory):
    return tmp_path_factory.mktemp("mnist1d")


def test_standard_split_shape_and_balance(mnist1d_root):
    ds = load_dataset("mnist1d", root=mnist1d_root)
    assert (len(ds.train), len(ds.test)) == (4000, 1000)
    assert ds.input_shape == (40,) and ds.train.inputs.shape == (4000, 40)
    assert ds.train.inputs.dtype == torch.float32 and ds.num_classes == 10
    all_targets = torch.cat([ds.train.targets, ds.test.targets])
    assert torch.bincount(all_targets).tolist() == [500] * 10
    all_inputs = torch.cat([ds.train.inputs, ds.test.inputs])
    assert abs(float(all_inputs.mean())) < 1e-4 and abs(float(all_inputs.std()) - 1) < 1e-3


def test_cache_written_and_reused(mnist1d_root):
    ds = load_dataset("mnist1d", root=mnist1d_root)
    cache = list((mnist1d_root / "mnist1d").glob("*.npz"))
    assert [str(p) for p in cache] == [ds.info["cache"]]
    # Tamper with the cache: a second load must read it, not regenerate.
    with np.load(cache[0]) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["x"] = arrays["x"] * 0 + 7
    np.savez(cache[0], **arrays)
    again = load_dataset("mnist1d", root=mnist1d_root)
    assert float(again.train.inputs[0, 0]) == 7.0


def test_corrupt_cache_is_regenerated(tmp_path):
    first = load_dataset("mnist1d", root=tmp_path, num_samples=200)
    path = first.info["cache"]
    with open(path, "wb") as handle:
        handle.write(b"not an npz")
    again = load_dataset("mnist1d", root=tmp_path, num_samples=200)
    assert torch.equal(first.train.inputs, again.train.inputs)


def test_generation_deterministic_in_seed():
    a, b = generate_mnist1d(3, num_samples=100), generate_mnist1d(3, num_samples=100)
    c = generate_mnist1d(4, num_samples=100)
    assert np.array_equal(a["x"], b["x"]) and np.array_equal(a["y"], b["y"])
    assert not np.array_equal(a["x"], c["x"])
    assert a["x"].shape == (80, 40) and a["x_test"].shape == (20, 40)


def test_channel_shape_and_bad_options(tmp_path):
    ds = load_dataset("mnist1d", root=tmp_path, shape="channel", num_samples=100)
    assert ds.input_shape == (1, 40) and ds.train.inputs.shape == (80, 1, 40)
    with pytest.raises(SamkitError, match="unknown MNIST-1D parameter"):
        load_dataset("mnist1d", root=tmp_path, noise=3)
    with pytest.raises(SamkitError, match="shape must be"):
        load_dataset("mnist1d", root=tmp_path, shape="image")


def test_a_data_root_whose_parent_is_missing_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("SAMKIT_CACHE", raising=False)
    typo = tmp_path / "typo" / "path"
    refused = r"data root .*typo/path \(--data-root\) does not exist.*its parent"
    with pytest.raises(SamkitError, match=refused):
        load_dataset("mnist1d", root=typo, num_samples=100)
    assert not (tmp_path / "typo").exists()  # nothing was created
    monkeypatch.setenv("SAMKIT_CACHE", str(typo))
    with pytest.raises(SamkitError, match=r"SAMKIT_CACHE"):
        load_dataset("mnist1d", num_samples=100)
    assert not (tmp_path / "typo").exists()


def test_a_new_cache_folder_is_created_and_said_in_the_log(tmp_path, caplog):
    root = tmp_path / "new-cache"
    with caplog.at_level("INFO", logger="samkit"):
        ds = load_dataset("mnist1d", root=root, num_samples=100)
    assert (root / "mnist1d").is_dir() and ds.info["cache"].startswith(str(root / "mnist1d"))
    assert [r.getMessage() for r in caplog.records] == [
        f"created {root / 'mnist1d'} for the generated MNIST-1D data"
    ]
    caplog.clear()
    with caplog.at_level("INFO", logger="samkit"):
        load_dataset("mnist1d", root=root, num_samples=100)  # cached: nothing new to say
    assert caplog.records == []
