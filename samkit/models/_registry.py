"""Model registry: one table maps a name to a constructor and its defaults (timm-style)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from samkit.errors import SamkitError
from samkit.registry import Registry

Builder = Callable[..., nn.Module]

_MODELS: Registry[Builder] = Registry("model", "name")


def register_model(name: str, *, prefix: bool = False) -> Callable[[Builder], Builder]:
    """Register ``builder(num_classes, input_shape, **kwargs) -> nn.Module`` under ``name``.

    With ``prefix=True``, ``build_model("family:sub")`` calls the builder with ``name="sub"``.
    """
    return _MODELS.register(name, prefix=prefix)


def list_models() -> list[str]:
    """Registered model names, sorted; families are shown as ``family:<name>``."""
    return _MODELS.names()


def check_model(name: str, options: dict[str, Any]) -> None:
    """Refuse an unknown model name or option (what :func:`build_model` checks), building nothing."""
    builder, _ = _MODELS.resolve(name)
    _MODELS.check_options(name, builder, dict(options), reserved=("num_classes", "input_shape", "name"))


def build_model(
    name: str, *, num_classes: int, input_shape: Sequence[int], **kwargs: Any
) -> nn.Module:
    """Build a registered model whose ``forward(inputs)`` returns logits ``[B, num_classes]``.

    Args:
        name: a name from :func:`list_models` (``"mlp"``, ``"resnet18"``, ``"timm:vit_small"``...).
        num_classes: output size.
        input_shape: shape of one example's input, as in ``Dataset.input_shape``.
        **kwargs: model options (width, depth, ...); unknown ones raise a :class:`SamkitError`.

    Example:
        >>> model = build_model("cnn1d", num_classes=10, input_shape=(40,))
    """
    builder, implied = _MODELS.resolve(name)
    if num_classes < 1:
        raise SamkitError(f"num_classes must be >= 1, got {num_classes}")
    _MODELS.check_options(name, builder, kwargs, reserved=("num_classes", "input_shape", "name"))
    return builder(num_classes=num_classes, input_shape=tuple(input_shape), **implied, **kwargs)
