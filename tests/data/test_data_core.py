"""Split/Dataset behaviour, label noise and the dataset registry."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samkit.data import Split, flip_labels, list_datasets, load_dataset
from samkit.errors import SamkitError


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 300),
    fraction=st.floats(0.0, 1.0, allow_subnormal=False),
    num_classes=st.integers(2, 12),
    seed=st.integers(0, 2**31 - 1),
)
def test_flip_labels_exact_count_and_always_changes(n, fraction, num_classes, seed):
    targets = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(seed))
    noisy, mask = flip_labels(targets, fraction, num_classes, seed)
    assert int(mask.sum()) == round(fraction * n)
    assert torch.equal(noisy[~mask], targets[~mask])
    assert bool((noisy[mask] != targets[mask]).all())
    assert bool(((noisy >= 0) & (noisy < num_classes)).all())


def test_flip_labels_deterministic_for_seed_and_varies_with_seed():
    targets = torch.arange(1000) % 10
    a = flip_labels(targets, 0.3, 10, seed=5)
    b = flip_labels(targets, 0.3, 10, seed=5)
    c = flip_labels(targets, 0.3, 10, seed=6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_flip_labels_new_class_is_uniform_over_others():
    targets = torch.zeros(20000, dtype=torch.long)
    noisy, _ = flip_labels(targets, 1.0, 5, seed=0)
    counts = torch.bincount(noisy, minlength=5)
    assert counts[0] == 0
    # 5000 expected per other class; 5 sigma of a binomial(20000, 1/4) is about 306.
    assert (counts[1:] - 5000).abs().max() < 310


def test_flip_labels_rejects_bad_fraction_and_labels():
    with pytest.raises(SamkitError, match=r"\[0, 1\]"):
        flip_labels(torch.zeros(4, dtype=torch.long), 1.5, 3, 0)
    with pytest.raises(SamkitError, match="must lie in"):
        flip_labels(torch.tensor([0, 7]), 0.5, 3, 0)


def test_split_batch_subset_and_to():
    split = Split(torch.arange(12.0).reshape(6, 2), torch.tensor([0, 1, 2, 0, 1, 2]))
    x, y = split.batch(torch.tensor([4, 1]))
    assert torch.equal(x, torch.tensor([[8.0, 9.0], [2.0, 3.0]])) and y.tolist() == [1, 1]
    sub = split.subset(torch.tensor([5, 0]))
    assert len(sub) == 2 and sub.targets.tolist() == [2, 0]
    assert split.to("cpu").inputs.device.type == "cpu"


def test_split_dict_inputs_and_shape_errors():
    inputs = {"input_ids": torch.arange(6).reshape(3, 2), "attention_mask": torch.ones(3, 2)}
    split = Split(inputs, torch.tensor([1, 0, 1]))
    x, y = split.batch(torch.tensor([2]))
    assert x["input_ids"].tolist() == [[4, 5]] and y.tolist() == [1]
    with pytest.raises(SamkitError, match="one label per example"):
        Split(torch.zeros(3, 2), torch.tensor([0, 1]))
    with pytest.raises(SamkitError, match="int64"):
        Split(torch.zeros(2, 2), torch.tensor([0.0, 1.0]))


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(SamkitError, match="known datasets:.*mnist1d"):
        load_dataset("mnist2d")


def test_unknown_option_names_accepted_ones():
    with pytest.raises(SamkitError, match="does not take option.*nn.*accepts:.*num_classes"):
        load_dataset("synthetic", nn=3)


def test_label_noise_applies_to_train_only_and_is_recorded():
    ds = load_dataset("synthetic", n=200, num_classes=4, label_noise=0.25, seed=3)
    assert int(ds.train.flipped.sum()) == 50 == ds.info["label_noise"]["num_flipped"]
    assert torch.equal(ds.train.targets != ds.train.clean_targets, ds.train.flipped)
    assert ds.test.flipped is None and ds.test.clean_targets is None
    sub = ds.train.subset(torch.arange(10))
    assert torch.equal(sub.flipped, ds.train.flipped[:10])


def test_synthetic_shapes_and_determinism():
    a = load_dataset("synthetic", n=16, input_shape=[3, 4, 4], num_classes=3)
    b = load_dataset("synthetic", n=16, input_shape=(3, 4, 4), num_classes=3)
    assert a.input_shape == (3, 4, 4) and a.train.inputs.shape == (16, 3, 4, 4)
    assert len(a.test) == 4 and torch.equal(a.train.inputs, b.train.inputs)


def test_list_datasets_shows_families():
    names = list_datasets()
    assert {"mnist1d", "synthetic"} <= set(names) and names == sorted(names)
