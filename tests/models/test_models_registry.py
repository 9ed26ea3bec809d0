"""Model registry: names, errors, and logits of shape [B, num_classes] for every built-in model."""

import pytest
import torch

from samkit.errors import SamkitError
from samkit.models import build_model, list_models

# Each built-in model with a natural (small) input shape and small options to keep tests fast.
CASES = [
    ("mlp", (40,), {}),
    ("mlp", (1, 8, 8), {"depth": 0}),
    ("cnn1d", (40,), {}),
    ("cnn1d", (1, 40), {"width": 8}),
    ("cnn2d", (1, 8, 8), {"width": 8}),
    ("cnn2d", (3, 32, 32), {"width": 8}),
]


@pytest.mark.parametrize(("name", "shape", "kwargs"), CASES)
def test_logits_shape(name, shape, kwargs):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, input_shape=shape, **kwargs).eval()
    with torch.no_grad():
        logits = model(torch.randn(3, *shape))
    assert logits.shape == (3, 7) and torch.isfinite(logits).all()


def test_cnn1d_flat_and_channel_inputs_agree():
    torch.manual_seed(0)
    model = build_model("cnn1d", num_classes=10, input_shape=(40,)).eval()
    x = torch.randn(2, 40)
    with torch.no_grad():
        assert torch.allclose(model(x), model(x.unsqueeze(1)))


def test_list_models_and_unknown_name():
    names = list_models()
    assert {"mlp", "cnn1d", "cnn2d"} <= set(names) and names == sorted(names)
    with pytest.raises(SamkitError, match="known models:.*cnn1d"):
        build_model("resnet9000", num_classes=10, input_shape=(3, 32, 32))


def test_unknown_option_is_a_clear_error():
    with pytest.raises(SamkitError, match="does not take option.*widht.*accepts:.*width"):
        build_model("mlp", num_classes=10, input_shape=(40,), widht=3)
