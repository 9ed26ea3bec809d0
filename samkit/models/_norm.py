"""The normalisation layer of the convolutional models: ``norm=batch|group|layer|none``.

BatchNorm normalises with the statistics of the batch it is given. Under SAM with shards
(m-sharpness) each ascent pass sees only its shard, so with a shard of one example every channel
is normalised over one example's positions, and the running statistics become an average of
per-example statistics: the model trained with ``shard_size=1`` is evaluated with statistics it
never saw and can fall to chance accuracy even at ``rho = 0``. GroupNorm and LayerNorm normalise
each example on its own, so they compute the same thing for any shard size.
"""

from __future__ import annotations

import math

from torch import nn

from samkit.errors import SamkitError

NORMS = ("batch", "group", "layer", "none")
GROUP_NORM_GROUPS = 8  # at most 8 groups per layer (fewer when the channels are not divisible)


def check_norm(norm: str) -> str:
    """``norm`` if it is one of :data:`NORMS`, else a :class:`SamkitError` naming the choices."""
    if norm not in NORMS:
        raise SamkitError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}.")
    return norm


def norm_layer(norm: str, channels: int, dims: int) -> nn.Module:
    """The normalisation of ``channels`` feature maps with ``dims`` spatial dimensions (1 or 2).

    ``batch``: BatchNorm1d/2d. ``group``: GroupNorm with ``gcd(channels, 8)`` groups. ``layer``:
    GroupNorm with one group — each example normalised over all its channels and positions (the
    usual "layer norm" of a conv net). ``none``: identity (the conv before it then needs a bias).
    """
    check_norm(norm)
    if norm == "batch":
        return nn.BatchNorm1d(channels) if dims == 1 else nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(channels, GROUP_NORM_GROUPS), channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def conv_bias(norm: str) -> bool:
    """Whether a conv followed by ``norm`` needs its own bias (every norm here has one, but none)."""
    return norm == "none"
