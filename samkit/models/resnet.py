"""CIFAR ResNet-18 (He et al. 2016, CIFAR stem) and Wide ResNets (Zagoruyko & Komodakis 2016).

The CIFAR stem is a single 3x3 convolution with no max-pooling, as in the SAM papers' CIFAR
experiments; with 10 classes ResNet-18 has 11.17M parameters, WRN-16-8 11.0M, WRN-28-10 36.5M.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from samkit.errors import SamkitError
from samkit.models._norm import check_norm, conv_bias, norm_layer
from samkit.models._registry import register_model


def _check_image(name: str, input_shape: Sequence[int]) -> int:
    if len(input_shape) != 3:
        raise SamkitError(f"{name} needs image input_shape (C, H, W), got {tuple(input_shape)}")
    return int(input_shape[0])


class BasicBlock(nn.Module):
    """Post-activation residual block: conv-norm-ReLU-conv-norm, plus (projected) shortcut, ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str = "batch") -> None:
        super().__init__()
        bias = conv_bias(norm)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=bias)
        self.bn1 = norm_layer(norm, planes, 2)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=bias)
        self.bn2 = norm_layer(norm, planes, 2)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=bias), norm_layer(norm, planes, 2)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with a CIFAR stem (3x3 conv, no max-pool), BasicBlocks, global average pooling."""

    def __init__(
        self,
        blocks: Sequence[int],
        num_classes: int,
        in_channels: int = 3,
        width: int = 64,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        check_norm(norm)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=conv_bias(norm)),
            norm_layer(norm, width, 2),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        planes = width
        for i, count in enumerate(blocks):
            out = width * 2**i
            for j in range(count):
                stages.append(BasicBlock(planes, out, 2 if (i > 0 and j == 0) else 1, norm))
                planes = out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


@register_model("resnet18")
def resnet18(
    num_classes: int, input_shape: Sequence[int], width: int = 64, norm: str = "batch"
) -> nn.Module:
    """ResNet-18 for 32x32 images (CIFAR stem); ``width`` scales every stage (64 = standard);
    ``norm``: ``batch`` | ``group`` | ``layer`` | ``none``."""
    return ResNet([2, 2, 2, 2], num_classes, _check_image("resnet18", input_shape), width, norm)


class WideBlock(nn.Module):
    """Pre-activation wide block: norm-ReLU-conv-(dropout)-norm-ReLU-conv, plus shortcut."""

    def __init__(
        self, in_planes: int, planes: int, stride: int, dropout: float, norm: str = "batch"
    ) -> None:
        super().__init__()
        self.bn1 = norm_layer(norm, in_planes, 2)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=conv_bias(norm))
        self.bn2 = norm_layer(norm, planes, 2)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=False)  # the pre-activation is reused by the shortcut
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.project = stride != 1 or in_planes != planes
        self.shortcut = (
            nn.Conv2d(in_planes, planes, 1, stride, bias=False) if self.project else None
        )

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.dropout(self.conv1(pre)))))
        # As in the reference WRN code, a projecting shortcut starts from the pre-activation.
        return out + (self.shortcut(pre) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    """WRN-depth-k: 3 groups of (depth - 4) / 6 wide blocks with 16k, 32k, 64k channels."""

    def __init__(
        self,
        depth: int,
        widen: int,
        num_classes: int,
        in_channels: int = 3,
        dropout: float = 0.0,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        check_norm(norm)
        if depth < 10 or (depth - 4) % 6:
            raise SamkitError(f"wrn depth must be 6n + 4 with n >= 1 (10, 16, 28...), got {depth}")
        if widen < 1:
            raise SamkitError(f"wrn width must be >= 1, got {widen}")
        per_group = (depth - 4) // 6
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        planes = 16
        for i, out in enumerate((16 * widen, 32 * widen, 64 * widen)):
            for j in range(per_group):
                blocks.append(
                    WideBlock(planes, out, 2 if (i > 0 and j == 0) else 1, dropout, norm)
                )
                planes = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            norm_layer(norm, planes, 2),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.head(self.blocks(self.stem(x))))


@register_model("wrn")
def wrn(
    num_classes: int,
    input_shape: Sequence[int],
    depth: int = 28,
    width: int = 10,
    dropout: float = 0.0,
    norm: str = "batch",
) -> nn.Module:
    """Wide ResNet WRN-``depth``-``width`` (depth = 6n + 4); ``norm`` as for ``resnet18``."""
    return WideResNet(depth, width, num_classes, _check_image("wrn", input_shape), dropout, norm)


@register_model("wrn16_8")
def wrn16_8(
    num_classes: int, input_shape: Sequence[int], dropout: float = 0.0, norm: str = "batch"
) -> nn.Module:
    """WRN-16-8 (11.0M parameters for 10 classes)."""
    return wrn(num_classes, input_shape, depth=16, width=8, dropout=dropout, norm=norm)


@register_model("wrn28_10")
def wrn28_10(
    num_classes: int, input_shape: Sequence[int], dropout: float = 0.0, norm: str = "batch"
) -> nn.Module:
    """WRN-28-10 (36.5M parameters for 10 classes), the SAM paper's CIFAR model."""
    return wrn(num_classes, input_shape, depth=28, width=10, dropout=dropout, norm=norm)
