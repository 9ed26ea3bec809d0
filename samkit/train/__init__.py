"""samkit.train: one training run — config, loop, checkpoint/resume, cost, run folders.

``train(cfg, out)`` trains into a run folder; ``load_run(dir)`` rebuilds a trained run for
measurement. See ``docs/harness.md`` for the files a run writes.
"""

from samkit.train.config import TrainConfig, config_hash, load_config, save_config
from samkit.train.load import LoadedRun, load_run
from samkit.train.loop import RunInterrupted, SmallShardWarning, train

__all__ = [
    "LoadedRun",
    "RunInterrupted",
    "TrainConfig",
    "config_hash",
    "load_config",
    "load_run",
    "SmallShardWarning",
    "save_config",
    "train",
]
