"""The flatness of a trained run's final model, measured once and kept as data.

``flatness.json`` in the run folder holds the top Hessian eigenvalue (Lanczos) and the worst-case
m-sharpness of the final model with the settings they were measured with, so a report reads it
and a rerun of the study reuses it (:func:`measure_flatness`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.train import run_files

FLATNESS = "flatness.json"  # in a run folder: the flatness of its final model


@dataclass(frozen=True)
class FlatnessSettings:
    """How flatness is measured: on the first ``examples`` train examples (as trained, eval mode).

    ``lambda_max``: top Hessian eigenvalue of the mean training loss (Lanczos, ``tol``,
    ``max_iter``). ``sharpness``: worst-case m-sharpness (Andriushchenko & Flammarion 2022): the
    mean over groups of ``shard_size`` examples of the largest loss increase within an l2 ball of
    radius ``rho`` (``steps`` projected ascent steps).
    """

    examples: int = 1000
    batch_size: int = 1000  # one batch: the Hessian operator then caches the gradient graph
    tol: float = 1e-3
    max_iter: int = 50
    rho: float = 0.05
    shard_size: int = 64
    steps: int = 10
    seed: int = 0


def flatness_settings(on: bool, examples: int | None) -> FlatnessSettings | None:
    """The flatness measurement of a study: off, the defaults, or on ``examples`` examples."""
    if not on:
        return None
    if examples is None:
        return FlatnessSettings()
    if examples < 1:
        raise SamkitError(f"--flatness-examples must be >= 1, got {examples}.")
    fs = FlatnessSettings()
    return replace(
        fs,
        examples=examples,
        batch_size=min(fs.batch_size, examples),
        shard_size=min(fs.shard_size, examples),
    )


def measure_flatness(folder: Path, settings: FlatnessSettings) -> dict[str, Any]:
    """Measure (or reuse) the flatness of a run's final model; writes ``flatness.json``."""
    path = Path(folder) / FLATNESS
    summary = run_files.read_json(Path(folder) / run_files.SUMMARY)
    wanted = {"settings": asdict(settings), "config_hash": summary["config_hash"]}
    if path.is_file():
        old = run_files.read_json(path)
        if all(old.get(k) == v for k, v in wanted.items()):
            return old
    from samkit.measure import hessian_eigenvalues, sharpness
    from samkit.train import load_run

    t0 = time.perf_counter()
    run = load_run(folder)
    batches = run.batches("train", batch_size=settings.batch_size, max_examples=settings.examples)
    eig = hessian_eigenvalues(
        run.model,
        run.loss_fn,
        batches,
        k=1,
        tol=settings.tol,
        max_iter=settings.max_iter,
        seed=settings.seed,
    )
    sharp = sharpness(
        run.model,
        run.loss_fn,
        batches,
        rho=settings.rho,
        kind="worst",
        shard_size=settings.shard_size,
        steps=settings.steps,
        seed=settings.seed,
        error_fn=run.error_fn,
        progress=False,
    )
    result = {
        **wanted,
        "lambda_max": float(eig.eigenvalues[0]),
        "lambda_max_residual": float(eig.residuals[0]),
        "lambda_max_converged": bool(eig.converged[0]),
        "sharpness": float(sharp.loss_increase),
        "sharpness_stderr": float(sharp.loss_increase_stderr),
        "sharpness_error_increase": sharp.error_increase,
        "base_loss": float(sharp.base_loss),
        "time": time.perf_counter() - t0,
    }
    run_files.write_json(path, result)
    return result
