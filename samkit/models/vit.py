"""Small transformers: a ViT for 32x32 images (patch 4 -> 64 tokens) and a text classifier.

Written with plain modules and ``F.scaled_dot_product_attention`` (not ``nn.TransformerEncoder``,
whose inference fast path bypasses the module's parameters) so ``torch.func.functional_call`` and
``vmap`` over stacked weights, which samkit's vectorised m-sharpness uses, see every parameter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from samkit.errors import SamkitError
from samkit.models._registry import register_model


class Attention(nn.Module):
    """Multi-head self-attention."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # mask: [B, N] True for real tokens; padded keys get no attention weight.
        attn_mask = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)); x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patch embedding (strided conv), class token, learned positions, blocks, LayerNorm, head."""

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        patch: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise SamkitError(f"vit needs image input_shape (C, H, W), got {tuple(input_shape)}")
        channels, height, width = input_shape
        if height % patch or width % patch:
            raise SamkitError(f"vit patch {patch} must divide the image size {height}x{width}")
        if dim % heads:
            raise SamkitError(f"vit dim {dim} must be divisible by heads {heads}")
        tokens = (height // patch) * (width // patch)
        self.patch_embed = nn.Conv2d(channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


@register_model("vit_tiny")
def vit_tiny(
    num_classes: int,
    input_shape: Sequence[int],
    patch: int = 4,
    dim: int = 192,
    depth: int = 12,
    heads: int = 3,
    mlp_ratio: float = 4.0,
) -> nn.Module:
    """ViT-Tiny sized (dim 192, 3 heads) for 32x32 inputs with 4x4 patches; ``depth`` blocks."""
    return ViT(num_classes, input_shape, patch, dim, depth, heads, mlp_ratio)


class TextTransformer(nn.Module):
    """A small transformer classifier over token ids (for GLUE with the built-in tokenizer).

    Token + position embeddings, pre-norm blocks with padding masked out of attention, and a
    masked mean over tokens for the sentence vector.
    """

    def __init__(
        self, num_classes: int, max_length: int, vocab_size: int, dim: int, depth: int, heads: int
    ) -> None:
        super().__init__()
        if dim % heads:
            raise SamkitError(f"text_transformer dim {dim} must be divisible by heads {heads}")
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, max_length, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, 4.0) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask", torch.ones_like(ids)).bool()
        x = self.embed(ids) + self.pos_embed[:, : ids.shape[1]]
        for block in self.blocks:
            x = block(x, mask)
        weights = mask.unsqueeze(-1).to(x.dtype)
        return self.head((self.norm(x) * weights).sum(1) / weights.sum(1).clamp_min(1.0))


@register_model("text_transformer")
def text_transformer(
    num_classes: int,
    input_shape: Sequence[int],
    vocab_size: int = 30522,
    dim: int = 128,
    depth: int = 2,
    heads: int = 4,
) -> nn.Module:
    """Transformer over ``input_ids`` of length ``input_shape[0]``; the default ``vocab_size``
    covers BERT's ids and the built-in word tokenizer's (which caps its vocabulary there)."""
    if len(input_shape) != 1:
        raise SamkitError(f"text_transformer needs input_shape (max_length,), got {input_shape}")
    return TextTransformer(num_classes, input_shape[0], vocab_size, dim, depth, heads)
