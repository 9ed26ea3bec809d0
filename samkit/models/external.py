"""Models from other libraries by name: ``timm:<name>``, ``torchvision:<name>``, ``hf:<name>``.

Each family imports its library only when used and says how to install it when missing.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from samkit.errors import SamkitError
from samkit.models._registry import register_model


def _require(module: str, family: str) -> Any:
    package = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise SamkitError(
            f"{family}:<name> models need the {package} package: pip install {package}"
        ) from err


@register_model("timm", prefix=True)
def timm_model(
    num_classes: int, input_shape: Sequence[int], name: str, pretrained: bool = False, **kwargs: Any
) -> nn.Module:
    """``timm.create_model(name, num_classes=..., in_chans=C)``; extra kwargs go to timm."""
    timm = _require("timm", "timm")
    if name not in timm.list_models(pretrained=False) and not timm.is_model(name):
        raise SamkitError(f"timm has no model {name!r} (see timm.list_models())")
    in_chans = {"in_chans": input_shape[0]} if len(input_shape) == 3 else {}
    return timm.create_model(
        name, pretrained=pretrained, num_classes=num_classes, **in_chans, **kwargs
    )


@register_model("torchvision", prefix=True)
def torchvision_model(
    num_classes: int, input_shape: Sequence[int], name: str, **kwargs: Any
) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None, num_classes=...)`` (ImageNet stems)."""
    models = _require("torchvision.models", "torchvision")
    known = models.list_models()
    if name not in known:
        raise SamkitError(f"torchvision has no model {name!r}; known: {', '.join(known)}")
    kwargs.setdefault("weights", None)
    return models.get_model(name, num_classes=num_classes, **kwargs)


class HFClassifier(nn.Module):
    """Wraps a Hugging Face sequence classifier so ``forward(dict_inputs) -> logits``.

    Keys the wrapped model's ``forward`` does not take (e.g. ``token_type_ids`` for DistilBERT)
    are dropped, so one dataset encoding fits every architecture.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._accepted = set(inspect.signature(model.forward).parameters)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        if not isinstance(inputs, dict):
            raise SamkitError("hf models take dict inputs (input_ids, attention_mask, ...)")
        return self.model(**{k: v for k, v in inputs.items() if k in self._accepted}).logits


# A tiny BERT for offline tests and smoke runs; vocab covers BERT ids and the word tokenizer's.
_TINY_BERT = {
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}


@register_model("hf", prefix=True)
def hf_model(
    num_classes: int,
    input_shape: Sequence[int],
    name: str,
    config: dict[str, Any] | Any | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A Hugging Face ``AutoModelForSequenceClassification`` behind :class:`HFClassifier`.

    ``hf:tiny-random-config`` (or ``config=`` a dict for ``BertConfig`` / a ``PretrainedConfig``)
    builds a randomly initialised model offline; any other name is a hub name or local path for
    ``from_pretrained`` (kwargs go to it).
    """
    transformers = _require("transformers", "hf")
    if len(input_shape) == 1 and input_shape[0] > _TINY_BERT["max_position_embeddings"]:
        raise SamkitError(
            f"hf models here take at most 512 tokens, got max_length {input_shape[0]}"
        )
    if name == "tiny-random-config" or config is not None:
        if config is None or isinstance(config, dict):
            built = transformers.BertConfig(**{**_TINY_BERT, **(config or {}), **kwargs})
        else:
            built = config  # a PretrainedConfig
        built.num_labels = num_classes
        model = transformers.AutoModelForSequenceClassification.from_config(built)
    else:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            name, num_labels=num_classes, **kwargs
        )
    return HFClassifier(model)
