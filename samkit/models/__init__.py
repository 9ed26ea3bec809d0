"""samkit.models: networks behind one registry; ``forward(inputs) -> logits [B, num_classes]``.

>>> from samkit.models import build_model, list_models
>>> model = build_model("resnet18", num_classes=10, input_shape=(3, 32, 32))

Importing this package registers every built-in model (the modules below register themselves).
"""

from samkit.models import external as _external  # noqa: F401  (registers timm:, torchvision:, hf:)
from samkit.models import resnet as _resnet  # noqa: F401  (registers resnet18, wrn*)
from samkit.models import simple as _simple  # noqa: F401  (registers mlp, cnn1d, cnn2d)
from samkit.models import vit as _vit  # noqa: F401  (registers vit_tiny, text_transformer)
from samkit.models._registry import build_model, list_models, register_model
from samkit.models.external import HFClassifier
from samkit.models.resnet import ResNet, WideResNet
from samkit.models.simple import CNN1d
from samkit.models.vit import TextTransformer, ViT

__all__ = [
    "CNN1d",
    "HFClassifier",
    "ResNet",
    "TextTransformer",
    "ViT",
    "WideResNet",
    "build_model",
    "list_models",
    "register_model",
]
