"""CIFAR-sized models: logits shape, published parameter counts, option errors."""

import pytest
import torch

from samkit.errors import SamkitError
from samkit.models import build_model


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_published_parameter_counts():
    # kuangliu-style CIFAR ResNet-18: 11,173,962; WRN-16-8: 11.0M; WRN-28-10: 36.5M (paper).
    assert _count(build_model("resnet18", num_classes=10, input_shape=(3, 32, 32))) == 11_173_962
    wrn16 = _count(build_model("wrn16_8", num_classes=10, input_shape=(3, 32, 32)))
    assert abs(wrn16 - 11.0e6) < 0.05e6
    wrn28 = _count(build_model("wrn28_10", num_classes=10, input_shape=(3, 32, 32)))
    assert abs(wrn28 - 36.5e6) < 0.05e6


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("resnet18", {"width": 8}),
        ("wrn", {"depth": 10, "width": 1}),
        ("vit_tiny", {"depth": 1, "dim": 24, "heads": 2}),
    ],
)
def test_small_variants_give_logits(name, kwargs):
    torch.manual_seed(0)
    model = build_model(name, num_classes=100, input_shape=(3, 32, 32), **kwargs).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100) and torch.isfinite(logits).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "wrn16_8", "wrn28_10", "vit_tiny"])
def test_full_size_forward(name):
    model = build_model(name, num_classes=10, input_shape=(3, 32, 32)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_vit_tiny_default_size_and_depth_option():
    # ViT-Tiny blocks (dim 192, MLP 768) hold 444,864 parameters each; depth adds blocks only.
    d1 = _count(build_model("vit_tiny", num_classes=10, input_shape=(3, 32, 32), depth=1))
    d2 = _count(build_model("vit_tiny", num_classes=10, input_shape=(3, 32, 32), depth=2))
    assert d2 - d1 == 4 * 192 * 192 + 4 * 192 + 2 * 192 * 768 + 768 + 192 + 4 * 192


def test_bad_shapes_and_depths_are_clear():
    with pytest.raises(SamkitError, match="6n \\+ 4"):
        build_model("wrn", num_classes=10, input_shape=(3, 32, 32), depth=20)
    with pytest.raises(SamkitError, match="patch 4 must divide"):
        build_model("vit_tiny", num_classes=10, input_shape=(3, 30, 30))
    with pytest.raises(SamkitError, match=r"\(C, H, W\)"):
        build_model("resnet18", num_classes=10, input_shape=(40,))
