"""Every preset under configs/ loads and validates; the MNIST-1D one is the main job."""

from pathlib import Path

import pytest

from samkit.study.presets import MAIN_JOB
from samkit.train import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_presets_exist():
    names = {p.stem for p in CONFIGS}
    assert {
        "mnist1d",
        "fsam_cifar100_resnet18",
        "sam_cifar10_wrn16_8",
        "msam_cifar10_wrn16_8",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_preset_loads_and_validates(path):
    cfg = load_config(path)
    assert cfg.epochs >= 1 and cfg.lr > 0


def test_published_settings_are_the_papers():
    fsam = load_config(CONFIGS[0].parent / "fsam_cifar100_resnet18.yaml")
    assert (fsam.optimizer, fsam.lr, fsam.rho, fsam.sigma, fsam.lmbda) == (
        "fsam",
        0.05,
        0.2,
        1.0,
        0.6,
    )
    assert (fsam.weight_decay, fsam.batch_size, fsam.epochs, fsam.momentum) == (1e-3, 128, 200, 0.9)
    wrn = load_config(CONFIGS[0].parent / "sam_cifar10_wrn16_8.yaml")
    assert (wrn.lr, wrn.rho, wrn.weight_decay, wrn.label_smoothing) == (0.1, 0.05, 5e-4, 0.1)


def test_mnist1d_preset_is_the_main_job():
    cfg = load_config(CONFIGS[0].parent / "mnist1d.yaml")
    for key, value in MAIN_JOB.items():
        assert getattr(cfg, key) == value, key


def test_mnist1d_noisy_preset_is_the_claims_suites():
    from samkit.study.presets import NOISY_JOB

    cfg = load_config(CONFIGS[0].parent / "mnist1d_noisy.yaml")
    for key, value in NOISY_JOB.items():
        assert getattr(cfg, key) == value, key
