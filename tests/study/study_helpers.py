"""Study folders written as the harness writes them, without training (shared by the study tests)."""

from __future__ import annotations

from pathlib import Path

from harness_fixtures import tiny_config

from samkit.train import run_files, save_config


def fake_compare(folder: Path, values: dict[str, list[dict]], seeds=(0, 1, 2)) -> None:
    """A compare study folder written as `samkit compare` would, without training anything."""
    runs = []
    for label, per_seed in values.items():
        for seed, metrics in zip(seeds, per_seed):
            name = f"{label}-seed{seed}"
            opt = "sgd" if label == "sgd" else "sam"
            cfg = tiny_config(optimizer=opt, seed=seed, label=label)
            save_config(cfg, folder / name / "config.yaml")
            summary = {"status": "complete", "label": label, "seed": seed, "test_acc": 0.5,
                       "passes": 10, "train_time": 1.0, **metrics}  # fmt: skip
            flat = {"lambda_max": metrics.pop("lambda_max")} if "lambda_max" in metrics else None
            run_files.write_json(folder / name / "summary.json", summary)
            if flat:
                run_files.write_json(folder / name / "flatness.json", flat)
            runs.append({"dir": name, "label": label, "seed": seed, "cell": {"optimizer": opt}})
    study = {"kind": "compare", "base_config": tiny_config().to_dict(), "base_hash": "x",
             "seeds": list(seeds), "flatness": None, "methods": list(values),
             "labels": list(values), "runs": runs, "sessions": []}  # fmt: skip
    run_files.write_json(folder / "study.json", study)


def accs(*values):
    return [{"test_acc": v} for v in values]
