"""samkit: sharpness-aware minimization for PyTorch.

Optimizers: :class:`SAM` (SAM, ASAM via ``adaptive=True``, m-sharpness via ``shards`` /
``shard_size``) and :class:`FriendlySAM`. Measurement: :mod:`samkit.measure`. Studies: the
``samkit`` command line.
"""

from samkit.errors import SamkitError
from samkit.optim import SAM, FriendlySAM, NonFiniteError, compile_step, frozen_running_stats

__version__ = "0.1.0"
__all__ = [
    "SAM",
    "FriendlySAM",
    "NonFiniteError",
    "SamkitError",
    "compile_step",
    "frozen_running_stats",
    "__version__",
]
