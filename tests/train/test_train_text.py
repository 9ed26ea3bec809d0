"""Language tasks: GLUE SST-2 from a tiny generated TSV with a tiny random HF model, AdamW base."""

from __future__ import annotations

import importlib.util
import json
import random

import pytest

from samkit.train import RunInterrupted, TrainConfig, load_run, train

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="needs transformers"
)


@pytest.fixture
def sst2_root(tmp_path):
    rng = random.Random(0)
    good, bad = ["great", "fun", "superb", "moving"], ["awful", "dull", "boring", "weak"]

    def rows(n):
        out = ["sentence\tlabel"]
        for _ in range(n):
            label = rng.randint(0, 1)
            words = [rng.choice(good if label else bad) for _ in range(3)] + ["movie"]
            rng.shuffle(words)
            out.append(f"{' '.join(words)}\t{label}")
        return "\n".join(out) + "\n"

    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_text(rows(96))
    (tmp_path / "SST-2" / "dev.tsv").write_text(rows(32))
    return tmp_path


def _cfg(root, **changes):
    return TrainConfig(
        dataset="glue:sst2", data_root=str(root), dataset_options={"max_length": 8},
        model="hf:tiny-random-config", optimizer="sam", base="adamw", lr=1e-3,
        weight_decay=0.01, batch_size=16, epochs=2, max_steps_per_epoch=3, **changes,
    ).validated()  # fmt: skip


def test_sst2_with_hf_model_and_adamw_base_trains_and_resumes(harness, sst2_root, tmp_path):
    full = train(_cfg(sst2_root), tmp_path / "full", quiet=True)
    assert full["status"] == "complete" and full["passes"] == 12 and full["test_examples"] == 32
    with pytest.raises(RunInterrupted):
        train(_cfg(sst2_root), tmp_path / "cut", quiet=True, interrupt_after_steps=4)
    resumed = train(None, tmp_path / "cut", resume=True, quiet=True)
    for key in ("train_loss", "test_loss", "test_acc", "train_acc"):
        assert resumed[key] == full[key], key  # dropout RNG and AdamW state restored exactly
    run = load_run(tmp_path / "full")
    inputs, targets = run.batches("test", batch_size=8)[0]
    assert isinstance(inputs, dict) and "input_ids" in inputs and len(targets) == 8
    assert json.loads((tmp_path / "full" / "env.json").read_text())["device"] == "cpu"
