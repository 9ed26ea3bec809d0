"""scikit-learn digits: scaling, stratified seeded split, shapes."""

import torch

from samkit.data import load_dataset


def test_digits_split_scale_and_determinism():
    ds = load_dataset("digits")
    assert len(ds.train) + len(ds.test) == 1797 and len(ds.test) == 360
    assert ds.input_shape == (1, 8, 8) and ds.train.inputs.shape[1:] == (1, 8, 8)
    assert float(ds.train.inputs.min()) == 0.0 and float(ds.train.inputs.max()) == 1.0
    again = load_dataset("digits")
    other = load_dataset("digits", split_seed=1)
    assert torch.equal(ds.test.inputs, again.test.inputs)
    assert not torch.equal(ds.test.inputs, other.test.inputs)
    # Stratified: every class is in the test split in proportion (about 36 of each).
    assert int(torch.bincount(ds.test.targets).min()) >= 34


def test_digits_flat():
    ds = load_dataset("digits", shape="flat")
    assert ds.input_shape == (64,) and ds.train.inputs.shape[1] == 64
