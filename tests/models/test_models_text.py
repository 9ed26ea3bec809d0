"""Text models over dict inputs; hf: only when transformers is importable."""

import importlib.util

import pytest
import torch

from samkit.errors import SamkitError
from samkit.models import build_model


def _text_batch(batch=2, length=12, vocab=50):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length // 2 :] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def test_text_transformer_logits_and_padding_is_ignored():
    torch.manual_seed(0)
    model = build_model("text_transformer", num_classes=3, input_shape=(12,), dim=16).eval()
    batch = _text_batch()
    with torch.no_grad():
        logits = model(batch)
        changed = {k: v.clone() for k, v in batch.items()}
        changed["input_ids"][0, 6:] = 7  # change tokens only where the mask is 0
        assert logits.shape == (2, 3)
        assert torch.allclose(model(changed)[0], logits[0], atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="needs transformers")
def test_hf_tiny_random_config_offline():
    torch.manual_seed(0)
    model = build_model("hf:tiny-random-config", num_classes=4, input_shape=(12,)).eval()
    with torch.no_grad():
        assert model(_text_batch()).shape == (2, 4)
    custom = build_model("hf:x", num_classes=2, input_shape=(12,), config={"hidden_size": 16})
    assert custom.model.config.hidden_size == 16 and custom.model.config.num_labels == 2


def test_missing_library_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name.split(".")[0] in {"timm", "torchvision"}:
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)
    monkeypatch.delitem(__import__("sys").modules, "timm", raising=False)
    monkeypatch.delitem(__import__("sys").modules, "torchvision", raising=False)
    monkeypatch.delitem(__import__("sys").modules, "torchvision.models", raising=False)
    with pytest.raises(SamkitError, match="pip install timm"):
        build_model("timm:resnet18", num_classes=10, input_shape=(3, 32, 32))
    with pytest.raises(SamkitError, match="pip install torchvision"):
        build_model("torchvision:resnet18", num_classes=10, input_shape=(3, 32, 32))
