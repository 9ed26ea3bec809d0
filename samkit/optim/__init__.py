"""The SAM family as composable PyTorch optimizers: rules x sharding x execution."""

from samkit.optim.batchnorm import frozen_running_stats
from samkit.optim.compile import compile_step
from samkit.optim.friendly import FriendlySAM
from samkit.optim.sam import SAM, NonFiniteError
from samkit.optim.sharding import Sharding

__all__ = ["compile_step", "SAM", "FriendlySAM", "NonFiniteError", "Sharding", "frozen_running_stats"]
