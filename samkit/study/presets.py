"""The named setups studies start from: the main job, the noisy-label preset and digits.

``compare`` with no arguments runs :data:`MAIN_JOB`; the claims suite (:mod:`samkit.study.papers`)
builds its studies from both; the command line shows them as the defaults of compare and sweep.
"""

from __future__ import annotations

from typing import Any

# The main job's setup (see docs/report/ for its measured results; the same settings as
# configs/mnist1d.yaml). 30 epochs of a 32-channel 1-D CNN fit MNIST-1D's train set (~99-100%
# train accuracy) so the methods differ in what they converge to, not in how far they got; rho
# per method in the study.
MAIN_JOB: dict[str, Any] = {
    "dataset": "mnist1d",
    "model": "cnn1d",
    "model_options": {"width": 32},
    "epochs": 30,
    "batch_size": 128,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "cosine",
    "rho": 0.05,
}
# The noisy-label preset (configs/mnist1d_noisy.yaml): half the train set, 40% of its labels
# flipped, 40 epochs of small batches. Plain SGD memorises a third of the flipped labels and loses
# ~8 points of test accuracy to them; SAM (rho 0.1) fits few of them. The claims suite runs it at
# 20% and 40% noise, and fine-tunes from it.
NOISY_JOB: dict[str, Any] = {
    **MAIN_JOB,
    "train_subset": 2000,
    "label_noise": 0.4,
    "epochs": 40,
    "batch_size": 64,
    "rho": 0.1,
}
# scikit-learn's 8x8 handwritten digits (1437 train / 360 test, bundled: no download) with a small
# 2-D CNN: the claims suite's second real dataset. 40 epochs of batches of 64 fit the train set;
# with 40% of the labels flipped SGD memorises them and ends near 69% test accuracy (measured).
DIGITS_JOB: dict[str, Any] = {
    **MAIN_JOB,
    "dataset": "digits",
    "model": "cnn2d",
    "model_options": {"width": 32},
    "epochs": 40,
    "batch_size": 64,
    "rho": 0.1,
}
