"""``--execution`` picks how mSAM's shards run; the run's results do not depend on it."""

from __future__ import annotations

import pytest
from harness_fixtures import tiny_config

from samkit.train import RunInterrupted, TrainConfig, config_hash, load_config, train


@pytest.mark.filterwarnings("ignore::samkit.train.loop.SmallShardWarning")  # small shards on purpose
def test_vectorized_and_loop_runs_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMKIT_CACHE", str(tmp_path / "cache"))
    base = dict(dataset="mnist1d", train_subset=128, test_subset=64, model="cnn1d", batch_size=32,
                optimizer="msam", shards=4, epochs=1, seed=1)
    runs = {ex: train(TrainConfig(**base, execution=ex), tmp_path / ex, quiet=True)
            for ex in ("loop", "vectorized")}
    for key in ("train_loss", "test_loss", "test_acc"):
        assert runs["vectorized"][key] == pytest.approx(runs["loop"][key], abs=1e-5), key
    # how the shards run is not part of what the run computes: same config hash
    assert config_hash(TrainConfig(**base, execution="loop")) == config_hash(TrainConfig(**base))


def test_a_run_resumes_with_another_execution(harness, tmp_path):
    """A folder left by one execution (e.g. vectorized failing on a model) continues with another."""
    cfg = tiny_config(optimizer="msam", shards=4, epochs=2, execution="vectorized")
    with pytest.raises(RunInterrupted):
        train(cfg, tmp_path / "cut", quiet=True, interrupt_after_steps=5)
    resumed = train(None, tmp_path / "cut", resume=True, quiet=True,
                    overrides={"execution": "loop"})
    assert load_config(tmp_path / "cut" / "config.yaml").execution == "loop"
    full = train(cfg.replace(execution="loop"), tmp_path / "full", quiet=True)
    assert resumed["config_hash"] == full["config_hash"] and resumed["steps"] == full["steps"]
    for key in ("train_loss", "test_loss", "test_acc"):
        assert resumed[key] == pytest.approx(full[key], abs=1e-5), key


def test_a_run_resumed_after_its_last_step_still_says_which_execution_ran(harness, tmp_path):
    """A kill while the summary was written leaves a run whose resume takes no step: its summary
    must still name the execution its steps ran (the fault campaign found it empty)."""
    cfg = tiny_config(optimizer="sam", epochs=1)
    done = train(cfg, tmp_path / "r", quiet=True)
    assert done["execution_used"] == "loop" and done["execution_reason"]
    (tmp_path / "r" / "summary.json").unlink()  # as if killed inside its write
    again = train(None, tmp_path / "r", resume=True, quiet=True)
    assert again["steps"] == done["steps"]
    assert (again["execution_used"], again["execution_reason"]) == (
        done["execution_used"], done["execution_reason"])


def test_memory_budget_reaches_the_optimizer_and_leaves_the_run_hash_alone():
    """--memory-budget / memory_budget: how the shards run, not what they compute (like
    execution): the optimizer gets it, the config hash does not change, a bad value is refused."""
    from samkit.cli.app import build_parser
    from samkit.cli.flags import config_from_args
    from samkit.errors import SamkitError
    from samkit.train import TrainConfig
    from samkit.train.config import config_hash
    from samkit.train.setup import build_optimizer

    args = build_parser().parse_args(["train", "--optimizer", "msam", "--memory-budget", "123456789"])
    cfg = config_from_args(args)
    assert cfg.memory_budget == 123456789
    assert config_hash(cfg) == config_hash(TrainConfig(optimizer="msam").validated())
    opt = build_optimizer(cfg, __import__("torch").nn.Linear(3, 2))
    assert opt.knobs.memory_budget == opt._execution.budget == 123456789
    with pytest.raises(SamkitError, match="memory_budget"):
        TrainConfig(optimizer="msam", memory_budget=0).validated()
