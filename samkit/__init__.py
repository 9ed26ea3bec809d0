"""samkit: sharpness-aware minimization for PyTorch.

Optimizers: :class:`SAM` — any rule of :mod:`samkit.rules`, m-sharpness via ``shards`` /
``shard_size``, micro-batches, clipping — and the shortcut :class:`FriendlySAM`;
:func:`create_optimizer` builds one by name (the names, with their options: ``samkit optimizers``
or the API index, both written from :mod:`samkit.optim.registry`). Measurement:
:mod:`samkit.measure`. Studies: the ``samkit`` command line.
"""

from samkit._version import __version__
from samkit.errors import SamkitError
from samkit.optim import (
    SAM,
    FriendlySAM,
    NonFiniteError,
    StepRecord,
    cadence,
    compile_step,
    create_optimizer,
    frozen_running_stats,
    rules,
    scope,
)

__all__ = [
    "SAM",
    "FriendlySAM",
    "NonFiniteError",
    "SamkitError",
    "StepRecord",
    "cadence",
    "compile_step",
    "create_optimizer",
    "frozen_running_stats",
    "rules",
    "scope",
    "__version__",
]
