"""--init-from (weights only, exactly), memorisation, threads and load records, the BatchNorm
small-shard warning."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from harness_fixtures import tiny_config

from samkit.errors import SamkitError
from samkit.train import SmallShardWarning, config_hash, load_config, load_run, train
from samkit.train.distributed import from_environment, unwrap
from samkit.train.init_from import resolve_init, weights_digest
from samkit.train.loop import _Run
from samkit.train.run_files import load_checkpoint


def _start_state(cfg, out):
    """The model of a new run as built (and initialised) before its first step."""
    ranks, device = from_environment("cpu")
    run = _Run(cfg, out, ranks, device, quiet=True, command=None)
    return {k: v.clone() for k, v in unwrap(run.model).state_dict().items()}


def test_init_from_loads_exactly_the_source_weights_and_nothing_else(harness, tmp_path):
    train(tiny_config(optimizer="sgd", epochs=2, seed=3), tmp_path / "src", quiet=True)
    source = load_checkpoint(tmp_path / "src" / "checkpoint.pt")["model"]
    cfg = tiny_config(optimizer="sam", seed=0, init_from=str(tmp_path / "src"))
    resolved = resolve_init(cfg)
    (tmp_path / "new").mkdir()
    start = _start_state(resolved, tmp_path / "new")
    assert set(start) == set(source) and all(torch.equal(start[k], source[k]) for k in source)
    scratch = _start_state(tiny_config(optimizer="sam", seed=0), tmp_path / "new")
    assert not all(torch.equal(scratch[k], source[k]) for k in source)  # not the seed-0 init
    # the run trains with its own optimizer and seed, and records its source
    summary = train(cfg, tmp_path / "ft", quiet=True)
    saved = load_config(tmp_path / "ft" / "config.yaml")
    assert saved.init_from == str(tmp_path / "src") and saved.seed == 0
    src_hash = config_hash(load_config(tmp_path / "src" / "config.yaml"))
    assert saved.init_from_id == f"{src_hash}:{weights_digest(source)}"
    assert summary["passes"] == 2 * summary["steps"]  # SAM, not the source's SGD


def test_init_from_identity_is_hashed_and_a_checkpoint_file_works_too(harness, tmp_path):
    train(tiny_config(epochs=1, seed=1), tmp_path / "a", quiet=True)
    train(tiny_config(epochs=1, seed=2), tmp_path / "b", quiet=True)
    from_a = resolve_init(tiny_config(init_from=str(tmp_path / "a")))
    from_b = resolve_init(tiny_config(init_from=str(tmp_path / "b")))
    from_file = resolve_init(tiny_config(init_from=str(tmp_path / "a" / "checkpoint.pt")))
    assert config_hash(from_a) != config_hash(from_b)  # other weights: another run
    assert config_hash(from_a) == config_hash(from_file)  # same weights, other path: same run
    shutil.copytree(tmp_path / "a", tmp_path / "moved")
    moved = resolve_init(tiny_config(init_from=str(tmp_path / "moved")))
    assert config_hash(moved) == config_hash(from_a)
    # a source replaced after planning is refused, not silently used
    with pytest.raises(SamkitError, match="not the one this run was planned from"):
        resolve_init(from_a.replace(init_from=str(tmp_path / "b")))


def test_init_from_refuses_another_architecture_with_a_clear_error(harness, tmp_path):
    train(tiny_config(epochs=1), tmp_path / "src", quiet=True)
    wide = tiny_config(model_options={"width": 64}, init_from=str(tmp_path / "src"))
    with pytest.raises(SamkitError, match=r"model_options=\{\}.*width.*64.*architecture must be"):
        train(wide, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()
    # a bare checkpoint (no config.yaml beside it): the strict load says what does not fit
    (tmp_path / "bare").mkdir()
    shutil.copy(tmp_path / "src" / "checkpoint.pt", tmp_path / "bare" / "weights.pt")
    wide = tiny_config(model_options={"width": 64}, init_from=str(tmp_path / "bare/weights.pt"))
    with pytest.raises(SamkitError, match="(?s)do not fit this run.s model.*size mismatch"):
        train(wide, tmp_path / "out2", quiet=True)
    with pytest.raises(SamkitError, match="no such run folder"):
        train(tiny_config(init_from=str(tmp_path / "nope")), tmp_path / "out3", quiet=True)


def test_init_from_refuses_an_unfinished_source_folder(harness, tmp_path):
    from samkit.train import RunInterrupted

    with pytest.raises(RunInterrupted):
        train(tiny_config(), tmp_path / "src", quiet=True, interrupt_after_steps=5)
    with pytest.raises(SamkitError, match="not complete.*--resume"):
        train(tiny_config(init_from=str(tmp_path / "src")), tmp_path / "out", quiet=True)


def test_memorised_fraction_equals_a_hand_count(harness, tmp_path):
    cfg = tiny_config(label_noise=0.4, epochs=3, max_steps_per_epoch=None, seed=5)
    summary = train(cfg, tmp_path / "run", quiet=True)
    run = load_run(tmp_path / "run")
    split = run.dataset.train
    noisy, clean = split.targets, split.clean_targets
    fitted = flipped = 0
    with torch.no_grad():
        for i in range(len(noisy)):
            if noisy[i] != clean[i]:  # a flipped label, found without the dataset's mask
                flipped += 1
                fitted += int(run.model(split.inputs[i : i + 1]).argmax() == noisy[i])
    # noise flips 40% of the whole train set; this run trains on its first 256 examples
    assert flipped == int(split.flipped.sum()) and 0.3 < flipped / len(noisy) < 0.5
    assert summary["memorised"] == fitted / flipped
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["memorised"] == summary["memorised"] and all("load" in r for r in rows)
    clean_run = train(tiny_config(epochs=1), tmp_path / "clean", quiet=True)
    assert clean_run["memorised"] is None


def test_threads_are_set_for_the_run_recorded_and_restored(harness, tmp_path):
    before = torch.get_num_threads()  # 1 (tests/conftest.py): the run's 2 threads are not it
    train(tiny_config(epochs=1, threads=before + 1), tmp_path / "run", quiet=True)
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["torch_threads"] == before + 1 and torch.get_num_threads() == before
    # threads say how the run is executed, not what it computes
    assert config_hash(tiny_config(threads=1)) == config_hash(tiny_config())
    with pytest.raises(SamkitError, match="threads must be a positive integer"):
        tiny_config(threads=0)


def test_batchnorm_with_small_shards_warns_why_and_what_to_use(harness, tmp_path):
    bn = {"batchnorm": True}
    with pytest.warns(SmallShardWarning, match=r"shards of 4 .*statistics.*norm=group"):
        train(tiny_config(optimizer="sam", shard_size=4, model_options=bn, epochs=1),
              tmp_path / "a", quiet=True)  # fmt: skip
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallShardWarning)
        # large enough shards, or no BatchNorm, or plain SGD: no warning
        train(tiny_config(optimizer="sam", shard_size=16, model_options=bn, epochs=1),
              tmp_path / "b", quiet=True)  # fmt: skip
        train(tiny_config(optimizer="sam", shard_size=1, epochs=1), tmp_path / "c", quiet=True)
        train(tiny_config(model_options=bn, epochs=1), tmp_path / "d", quiet=True)


def test_config_yaml_of_an_init_from_run_reproduces_it(harness, tmp_path):
    train(tiny_config(epochs=1), tmp_path / "src", quiet=True)
    cfg = tiny_config(optimizer="sam", init_from=str(tmp_path / "src"))
    first = train(cfg, tmp_path / "a", quiet=True)
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    from samkit.train import TrainConfig

    again = train(TrainConfig.from_dict(saved), tmp_path / "b", quiet=True)
    assert again["test_loss"] == first["test_loss"] and again["config_hash"] == first["config_hash"]
