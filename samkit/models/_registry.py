"""Model registry: one table maps a name to a constructor and its defaults (timm-style)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from samkit.errors import SamkitError

Builder = Callable[..., nn.Module]

_BUILDERS: dict[str, Builder] = {}
_PREFIXED: set[str] = set()  # families like "timm" that take a sub-name: "timm:resnet18"


def register_model(name: str, *, prefix: bool = False) -> Callable[[Builder], Builder]:
    """Register ``builder(num_classes, input_shape, **kwargs) -> nn.Module`` under ``name``.

    With ``prefix=True``, ``build_model("family:sub")`` calls the builder with ``name="sub"``.
    """

    def decorate(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = builder
        if prefix:
            _PREFIXED.add(name)
        return builder

    return decorate


def list_models() -> list[str]:
    """Registered model names, sorted; families are shown as ``family:<name>``."""
    return sorted(f"{name}:<name>" if name in _PREFIXED else name for name in _BUILDERS)


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
    family, sep, sub = name.partition(":")
    if sep and family in _PREFIXED and sub:
        builder, implied = _BUILDERS[family], {"name": sub}
    elif not sep and name in _BUILDERS and name not in _PREFIXED:
        builder, implied = _BUILDERS[name], {}
    else:
        raise SamkitError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    if num_classes < 1:
        raise SamkitError(f"num_classes must be >= 1, got {num_classes}")
    params = inspect.signature(builder).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(kwargs) - set(params) - {"num_classes", "input_shape", "name"})
    if unknown and not takes_any:
        accepted = sorted(set(params) - {"num_classes", "input_shape", "name"})
        raise SamkitError(
            f"model {name!r} does not take option(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or '(none)'}"
        )
    return builder(num_classes=num_classes, input_shape=tuple(input_shape), **implied, **kwargs)
