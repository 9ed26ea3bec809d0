"""Registry option checking: a wrong option type is a SamkitError naming the option and its type."""

from __future__ import annotations

import pytest
import torch

from samkit.data import load_dataset
from samkit.errors import SamkitError
from samkit.models import build_model


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"width": "abc"}, r"model 'mlp' option width expects an integer, got 'abc'"),
        ({"width": 1.5}, r"option width expects an integer, got 1.5"),
        ({"width": True}, r"option width expects an integer, got True"),
        ({"batchnorm": "yes"}, r"option batchnorm expects true or false, got 'yes'"),
    ],
)
def test_model_option_of_the_wrong_type(options, message):
    with pytest.raises(SamkitError, match=message):
        build_model("mlp", num_classes=3, input_shape=(4,), **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n": "abc"}, r"dataset 'synthetic' option n expects an integer, got 'abc'"),
        (
            {"input_shape": "(3,32,32)"},
            r"option input_shape expects a list of integers, got '\(3,32,32\)' \(text\); "
            r"e.g. input_shape=\[32\], its default",
        ),
        ({"input_shape": [3, "a"]}, r"option input_shape expects a list of integers"),
        ({"n_test": "x"}, r"option n_test expects an integer or null, got 'x'"),
    ],
)
def test_dataset_option_of_the_wrong_type(options, message):
    with pytest.raises(SamkitError, match=message):
        load_dataset("synthetic", **options)


def test_mnist1d_generator_options_are_checked_too(tmp_path):
    with pytest.raises(SamkitError, match=r"option num_samples expects an integer, got 'many'"):
        load_dataset("mnist1d", root=tmp_path, num_samples="many")
    with pytest.raises(SamkitError, match=r"option train_split expects a number, got 'half'"):
        load_dataset("mnist1d", root=tmp_path, train_split="half")


def test_well_typed_options_pass_and_numbers_written_as_text_are_read():
    ds = load_dataset("synthetic", n=8, input_shape=[2, 3], n_test=None)
    assert ds.input_shape == (2, 3) and len(ds.train) == 8 and len(ds.test) == 2
    # YAML reads 1e-3 (no dot) as text: a float option accepts it as the number it spells
    model = build_model("vit_tiny", num_classes=2, input_shape=(1, 8, 8), dim=8, depth=1,
                        heads=2, mlp_ratio="2e0")
    hidden = {m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)}
    assert 16 in hidden and 32 not in hidden  # dim 8 x mlp_ratio 2.0, not the default 4
    with pytest.raises(SamkitError, match=r"option mlp_ratio expects a number, got 'big'"):
        build_model("vit_tiny", num_classes=2, input_shape=(1, 8, 8), mlp_ratio="big")
