"""MNIST-1D (Greydanus, 2020): a procedurally generated 1-D stand-in for MNIST.

Each example starts from one of ten 12-point "digit" templates and goes through the paper's
pipeline: stretch (scale), zero padding, shear (a linear ramp), circular translation, correlated
(smoothed) noise, i.i.d. noise, and resampling to 40 points. The whole set is then centred and
scaled to unit standard deviation, shuffled, and split 4000/1000. The transformation parameters
are the paper's defaults; the templates are samkit's own (10 distinct 1-D stroke profiles), so
the data is statistically like MNIST-1D but not byte-identical to the published arrays. For those,
``variant="reference"`` calls the ``mnist1d`` package (``pip install mnist1d``) when installed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samkit import _atomic
from samkit.data._core import Dataset, Split
from samkit.data._registry import cache_folder, register_dataset
from samkit.errors import SamkitError
from samkit.registry import check_option

# Ten 12-point profiles, one per class: humps, steps, ramps and spikes at different places so
# that the classes differ in shape, not only in position (translation is random).
_TEMPLATES = (
    np.array(
        [
            [0.0, 0.6, 1.1, 1.4, 1.1, 0.6, 0.0, -0.6, -1.1, -1.4, -1.1, -0.6],  # 0: hump then dip
            [0.0, 0.0, 0.0, 0.2, 1.6, 1.6, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0],  # 1: narrow spike
            [-1.0, -0.6, -0.2, 0.2, 0.6, 1.0, 1.4, -1.2, -1.2, -1.0, -0.8, -0.6],  # 2: rise, drop
            [0.0, 1.2, 1.2, 0.0, -0.6, 0.0, 1.2, 1.2, 0.0, -0.4, -0.4, 0.0],  # 3: two humps
            [
                -1.0,
                -1.0,
                -1.0,
                -0.4,
                1.0,
                1.0,
                1.0,
                1.0,
                0.2,
                0.2,
                0.2,
                0.2,
            ],  # 4: step up, step down
            [1.2, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0, -0.2, -0.4, -0.6, -0.8, -1.0],  # 5: long descent
            [0.0, -1.2, -1.4, -1.2, 0.0, 0.8, 1.0, 1.0, 1.0, 1.0, 0.8, 0.0],  # 6: dip then plateau
            [1.4, 1.4, 1.4, 1.0, 0.2, -0.6, -1.0, -1.0, -0.6, 0.0, 0.0, 0.0],  # 7: plateau, fall
            [0.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 0.0, 0.0],  # 8: zig-zag
            [-1.0, 0.0, 1.0, -1.0, 0.0, 1.0, -1.0, 0.0, 1.0, 0.4, 0.0, -0.4],  # 9: sawtooth
        ]
    )
    * 1.5
)  # amplitude vs. noise set so logistic regression / an MLP land near the paper's 32% / 68%

# The paper's default generation parameters (same names as the mnist1d package).
DEFAULTS: dict[str, Any] = {
    "num_samples": 5000,
    "train_split": 0.8,
    "padding": (36, 60),
    "scale_coeff": 0.4,
    "max_translation": 48,
    "corr_noise_scale": 0.25,
    "iid_noise_scale": 2e-2,
    "shear_scale": 0.75,
    "final_seq_length": 40,
}
_CACHE_VERSION = 1  # bump when the generator changes so stale caches are not reused


def _smooth(noise: np.ndarray, sigma: float) -> np.ndarray:
    # Correlated noise: white noise convolved with a normalised Gaussian kernel.
    radius = int(3 * sigma)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return np.convolve(noise, taps / taps.sum(), mode="same")


def _resample(x: np.ndarray, length: int) -> np.ndarray:
    return np.interp(np.linspace(0.0, 1.0, length), np.linspace(0.0, 1.0, len(x)), x)


def _one_example(template: np.ndarray, p: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    # Stretch the digit by 1 +- scale_coeff before padding, so scaling changes its width
    # relative to the window (resampling the padded sequence as a whole would undo it).
    stretch = 1.0 + rng.uniform(-p["scale_coeff"], p["scale_coeff"])
    x = _resample(template, max(2, round(len(template) * stretch)))
    pad = int(rng.integers(p["padding"][0], p["padding"][1] + 1))
    left = int(rng.integers(0, pad + 1))
    x = np.concatenate([np.zeros(left), x, np.zeros(pad - left)])
    x = x + rng.uniform(-p["shear_scale"], p["shear_scale"]) * np.linspace(-1.0, 1.0, len(x))
    x = np.roll(x, int(rng.integers(-p["max_translation"], p["max_translation"] + 1)))
    x = x + p["corr_noise_scale"] * _smooth(rng.standard_normal(len(x)), sigma=2.0)
    x = x + p["iid_noise_scale"] * rng.standard_normal(len(x))
    return _resample(x, p["final_seq_length"])


def generate_mnist1d(data_seed: int = 42, **params: Any) -> dict[str, np.ndarray]:
    """Generate MNIST-1D arrays ``x, y, x_test, y_test`` (float32 / int64), deterministic in seed.

    ``params`` override :data:`DEFAULTS`. Classes are balanced (``num_samples // 10`` each).
    """
    p = {**DEFAULTS, **_checked(params)}
    rng = np.random.default_rng(data_seed)
    per_class = p["num_samples"] // len(_TEMPLATES)
    ys = np.repeat(np.arange(len(_TEMPLATES)), per_class)
    xs = np.stack([_one_example(_TEMPLATES[y], p, rng) for y in ys])
    order = rng.permutation(len(ys))
    xs, ys = xs[order], ys[order]
    xs = (xs - xs.mean()) / xs.std()
    cut = int(len(ys) * p["train_split"])
    xs = xs.astype(np.float32)
    return {"x": xs[:cut], "y": ys[:cut], "x_test": xs[cut:], "y_test": ys[cut:]}


def _checked(params: dict[str, Any]) -> dict[str, Any]:
    """Generator options: known names, each of its default's type (a number may be text)."""
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise SamkitError(
            f"unknown MNIST-1D parameter(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}"
        )
    return {
        key: check_option("dataset 'mnist1d'", key, value, type(DEFAULTS[key]), DEFAULTS[key])
        for key, value in params.items()
    }


def _reference_arrays() -> dict[str, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise SamkitError(
            f"mnist1d variant='reference' needs the mnist1d package ({err}): pip install mnist1d "
            "(or use the default variant='samkit', which needs nothing extra)"
        ) from err
    data = make_dataset(get_dataset_args())  # generated offline, the published seed and split
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


@register_dataset("mnist1d")
def load_mnist1d(
    root: Path | None = None,
    download: bool = False,
    data_seed: int = 42,
    variant: str = "samkit",
    shape: str = "flat",
    **params: Any,
) -> Dataset:
    """MNIST-1D: 4000/1000 examples, 40 features, 10 classes; cached as ``.npz`` under ``root``.

    Options: ``data_seed`` (generation seed), ``variant`` (``"samkit"`` or ``"reference"``),
    ``shape`` (``"flat"`` -> inputs ``[N, 40]``; ``"channel"`` -> ``[N, 1, 40]``), and any of
    :data:`DEFAULTS` to change the generator.
    """
    del download  # generated locally; nothing to download
    if variant not in ("samkit", "reference"):
        raise SamkitError(f"mnist1d variant must be 'samkit' or 'reference', got {variant!r}")
    if shape not in ("flat", "channel"):
        raise SamkitError(f"mnist1d shape must be 'flat' or 'channel', got {shape!r}")
    if variant == "reference" and (params or data_seed != 42):
        raise SamkitError(
            "mnist1d variant='reference' is fixed: drop data_seed and generator options"
        )
    params = _checked(params)  # before the cache key, so "0.8" and 0.8 share one cache file
    config = {"variant": variant, "data_seed": data_seed, "version": _CACHE_VERSION, **params}
    key = hashlib.sha256(json.dumps(config, sort_keys=True, default=list).encode()).hexdigest()[:12]
    path = cache_folder(root, "mnist1d", "MNIST-1D") / f"mnist1d-{variant}-{key}.npz"
    try:
        with np.load(path) as cached:
            arrays = {k: cached[k] for k in ("x", "y", "x_test", "y_test")}
    except (FileNotFoundError, KeyError, ValueError, OSError):
        # Missing or unreadable (e.g. truncated by a crash before atomic writes): regenerate.
        if variant == "reference":
            arrays = _reference_arrays()
        else:
            arrays = generate_mnist1d(data_seed, **params)
        # Concurrent runs (a sweep) may generate the same cache at once: each writes its own
        # temporary file and renames it into place, so a reader never sees half an archive.
        _atomic.save_npz(path, arrays)

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if shape == "channel":
            inputs = inputs.unsqueeze(1)
        return Split(inputs, torch.from_numpy(np.asarray(y, dtype=np.int64)))

    train, test = split(arrays["x"], arrays["y"]), split(arrays["x_test"], arrays["y_test"])
    length = arrays["x"].shape[-1]
    return Dataset(
        name="mnist1d",
        num_classes=10,
        input_shape=(length,) if shape == "flat" else (1, length),
        train=train,
        test=test,
        info={
            "source": f"MNIST-1D (Greydanus 2020), variant={variant}, data_seed={data_seed}",
            "cache": str(path),
            "generator": json.loads(json.dumps({**DEFAULTS, **params}, default=list)),
            "normalisation": {"mean": 0.0, "std": 1.0, "note": "whole set standardised"},
        },
    )


# what load_dataset's early check (samkit.data.check_dataset) calls for the generator's **params
load_mnist1d.check_params = lambda options: _checked(  # type: ignore[attr-defined]
    {k: v for k, v in options.items() if k not in ("data_seed", "variant", "shape")}
)
