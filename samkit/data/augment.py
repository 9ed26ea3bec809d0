"""Image augmentation on whole batches, in torch, with randomness only from a given generator.

Drawing every random number from the caller's generator (never the global RNG) makes a run
reproducible and resumable: save the generator state with the checkpoint and the augmentations
after a resume are the ones the uninterrupted run would have seen. The random draws are made on
the generator's device and moved to the batch, so a CPU generator also drives a GPU batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from samkit.errors import SamkitError


def _uniform_ints(high: int, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.randint(0, high, (n,), generator=generator, device=generator.device).to(device)


def random_crop(
    images: Tensor, padding: int, generator: torch.Generator, fill: Tensor | None = None
) -> Tensor:
    """Pad ``[B, C, H, W]`` by ``padding`` on each side with ``fill`` (per channel, default 0),
    then crop a random ``H x W`` window per image (torchvision's ``RandomCrop(H, padding)``)."""
    b, c, h, w = images.shape
    size = (b, c, h + 2 * padding, w + 2 * padding)
    if fill is None:
        padded = images.new_zeros(size)
    else:
        padded = fill.to(images).view(1, c, 1, 1).expand(size).clone()
    padded[:, :, padding : padding + h, padding : padding + w] = images
    top = _uniform_ints(2 * padding + 1, b, generator, images.device)
    left = _uniform_ints(2 * padding + 1, b, generator, images.device)
    rows = (top[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_hflip(images: Tensor, generator: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = _uniform_ints(2, images.shape[0], generator, images.device).bool()
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def cutout(images: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """Zero a ``size x size`` square per image, centred uniformly (clipped at the border),
    as in DeVries & Taylor (2017); applied to normalised images, so zero is the mean colour."""
    b, _, h, w = images.shape
    cy = _uniform_ints(h, b, generator, images.device)[:, None]
    cx = _uniform_ints(w, b, generator, images.device)[:, None]
    ys = torch.arange(h, device=images.device)[None, :]
    xs = torch.arange(w, device=images.device)[None, :]
    inside_y = (ys >= cy - size // 2) & (ys < cy - size // 2 + size)
    inside_x = (xs >= cx - size // 2) & (xs < cx - size // 2 + size)
    mask = inside_y[:, :, None] & inside_x[:, None, :]
    return images.masked_fill(mask[:, None], 0.0)


class CropFlip:
    """Random crop with padding + horizontal flip (+ optional cutout): the standard CIFAR recipe.

    A plain callable object (not a closure) so a ``Dataset`` can be pickled and its settings
    printed.
    """

    def __init__(self, padding: int = 4, cutout: int = 0, fill: Sequence[float] | None = None):
        if padding < 0 or cutout < 0:
            raise SamkitError(f"padding and cutout must be >= 0, got {padding} and {cutout}")
        self.padding = padding
        self.cutout = cutout
        self.fill = None if fill is None else torch.tensor(list(fill), dtype=torch.float32)

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        if images.ndim != 4:
            raise SamkitError(f"image augmentation needs [B, C, H, W], got {tuple(images.shape)}")
        if self.padding:
            images = random_crop(images, self.padding, generator, self.fill)
        images = random_hflip(images, generator)
        if self.cutout:
            images = cutout(images, self.cutout, generator)
        return images

    def __repr__(self) -> str:
        return f"CropFlip(padding={self.padding}, cutout={self.cutout})"
