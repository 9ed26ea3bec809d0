"""The SAM family as composable PyTorch optimizers: rule x sharding x micro-batches x execution."""

from samkit.optim import cadence, rules, scope
from samkit.optim.batchnorm import frozen_running_stats
from samkit.optim.compile import compile_step
from samkit.optim.registry import create_optimizer
from samkit.optim.sam import SAM, FriendlySAM
from samkit.optim.sharding import Sharding
from samkit.optim.update import NonFiniteError, StepRecord

__all__ = [
    "cadence",
    "compile_step",
    "create_optimizer",
    "rules",
    "scope",
    "SAM",
    "FriendlySAM",
    "NonFiniteError",
    "Sharding",
    "StepRecord",
    "frozen_running_stats",
]
