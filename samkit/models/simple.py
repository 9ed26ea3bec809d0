"""Small models: an MLP, a 1-D CNN (MNIST-1D) and a 2-D CNN (digits, CIFAR smoke tests)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from samkit.errors import SamkitError
from samkit.models._norm import check_norm, conv_bias, norm_layer
from samkit.models._registry import register_model


def _check_depth(name: str, depth: int, width: int) -> None:
    if depth < 0 or width < 1:
        raise SamkitError(
            f"{name} needs depth >= 0 and width >= 1, got depth={depth}, width={width}"
        )


@register_model("mlp")
def mlp(
    num_classes: int,
    input_shape: Sequence[int],
    width: int = 256,
    depth: int = 2,
    batchnorm: bool = False,
) -> nn.Module:
    """Flatten; ``depth`` hidden layers of ``width`` units (Linear [+BatchNorm] + ReLU); Linear.

    ``depth=0`` is multinomial logistic regression.
    """
    _check_depth("mlp", depth, width)
    layers: list[nn.Module] = [nn.Flatten()]
    features = math.prod(input_shape)
    for _ in range(depth):
        layers.append(nn.Linear(features, width, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU(inplace=True))
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


class CNN1d(nn.Module):
    """Conv1d+norm+ReLU blocks, global average pooling, linear head (norm: see ``_norm.py``).

    Accepts ``[B, L]`` (one channel implied, as MNIST-1D is stored) or ``[B, C, L]``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        width: int,
        depth: int,
        kernel_size: int,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        bias = conv_bias(norm)
        for i in range(depth):
            # Stride 2 after the first block widens the receptive field cheaply on short signals.
            stride = 1 if i == 0 else 2
            layers += [
                nn.Conv1d(channels, width, kernel_size, stride, kernel_size // 2, bias=bias),
                norm_layer(norm, width, 1),
                nn.ReLU(inplace=True),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, inputs: Tensor) -> Tensor:
        if inputs.ndim == 2:
            inputs = inputs.unsqueeze(1)
        return self.head(self.features(inputs).mean(dim=-1))


@register_model("cnn1d")
def cnn1d(
    num_classes: int,
    input_shape: Sequence[int],
    width: int = 32,
    depth: int = 3,
    kernel_size: int = 5,
    norm: str = "batch",
) -> nn.Module:
    """1-D CNN for MNIST-1D-like signals; ``input_shape`` is ``(L,)`` or ``(C, L)``.

    ``norm``: ``batch`` | ``group`` | ``layer`` | ``none`` (use group or layer with small SAM
    shards: BatchNorm's statistics of a tiny shard are not those of a batch).
    """
    _check_depth("cnn1d", depth, width)
    check_norm(norm)
    if len(input_shape) not in (1, 2):
        raise SamkitError(f"cnn1d needs input_shape (L,) or (C, L), got {tuple(input_shape)}")
    in_channels = 1 if len(input_shape) == 1 else input_shape[0]
    return CNN1d(num_classes, in_channels, width, depth, kernel_size, norm)


@register_model("cnn2d")
def cnn2d(
    num_classes: int,
    input_shape: Sequence[int],
    width: int = 32,
    depth: int = 3,
    norm: str = "batch",
) -> nn.Module:
    """Small 2-D CNN for smoke tests on digits (1x8x8) or CIFAR (3x32x32).

    ``depth`` Conv2d(3x3)+norm+ReLU blocks, channels doubling and resolution halving after each
    block (while the image is larger than 2x2), global average pooling, linear head. ``norm``:
    ``batch`` | ``group`` | ``layer`` | ``none``.
    """
    _check_depth("cnn2d", depth, width)
    check_norm(norm)
    if len(input_shape) != 3:
        raise SamkitError(f"cnn2d needs input_shape (C, H, W), got {tuple(input_shape)}")
    channels, size = input_shape[0], min(input_shape[1:])
    layers: list[nn.Module] = []
    for i in range(depth):
        out = width * 2**i
        layers += [
            nn.Conv2d(channels, out, 3, padding=1, bias=conv_bias(norm)),
            norm_layer(norm, out, 2),
            nn.ReLU(True),
        ]
        if size > 2 and i < depth - 1:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


__all__ = ["CNN1d", "cnn1d", "cnn2d", "mlp"]
