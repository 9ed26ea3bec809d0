"""Run many training runs of a study (in sequence or in processes) and measure their flatness.

A run folder found on disk is never recomputed or overwritten: a complete run with the same
config is reused, an interrupted one is resumed, and one holding a different config is an error.
The flatness of each final model (top Hessian eigenvalue, worst-case m-sharpness) is written to
``flatness.json`` in the run folder, so it too is data that a report reads and a rerun reuses.
Running never writes a report: :func:`samkit.study.compare` and :func:`samkit.study.sweep` do,
from the files, once the runs are done.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from samkit.errors import SamkitError
from samkit.study.folder import FLATNESS, close_session, open_study
from samkit.train import RunInterrupted, TrainConfig, config_hash, load_config, run_folder, signals, train
from samkit.train import files as run_files


@dataclass
class StudyResult:
    """Where a study was written and its report's table (what ``compare``/``sweep`` return)."""

    folder: Path
    table: str


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


def run_one(
    cfg: TrainConfig, folder: Path, *, quiet: bool, flatness: FlatnessSettings | None
) -> dict[str, Any]:
    """Train (or reuse / resume) one run, then measure its flatness if asked; return the summary.

    The run folder's lock is held throughout: a run another process trains (a second study on
    the same folder, another --jobs worker) is waited for, then reused, never trained twice.
    """
    folder = Path(folder)

    def waiting(who: str) -> None:
        print(f"samkit: waiting for {folder.name}: it is {who}", file=sys.stderr, flush=True)

    with run_folder.hold(folder, wait=True, on_wait=waiting, purpose="train it"):
        return _run_one(cfg, folder, quiet=quiet, flatness=flatness)


def _run_one(
    cfg: TrainConfig, folder: Path, *, quiet: bool, flatness: FlatnessSettings | None
) -> dict[str, Any]:
    summary_path = folder / run_files.SUMMARY
    if (folder / run_files.CONFIG).is_file():
        saved = load_config(folder / run_files.CONFIG)
        if config_hash(saved) != config_hash(cfg):
            raise SamkitError(
                f"{folder} holds a run with another config (hash {config_hash(saved)} != "
                f"{config_hash(cfg)}); nothing was changed. Use another --out for this study."
            )
        if summary_path.is_file():
            summary = run_files.read_json(summary_path)
        else:
            summary = train(None, folder, resume=True, quiet=quiet)
    else:
        summary = train(cfg, folder, quiet=quiet)
    if flatness is not None:
        measure_flatness(folder, flatness)
    return summary


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


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)
    # A process group of its own: a terminal's Ctrl-C reaches the study's process only, which passes
    # it on once (signals.Forwarding); twice would stop a run at once, without its checkpoint.
    os.setpgrp()


def _run_from_dict(
    cfg: dict[str, Any], folder: str, flatness: dict[str, Any] | None
) -> dict[str, Any]:
    fs = None if flatness is None else FlatnessSettings(**flatness)
    return run_one(TrainConfig.from_dict(cfg), Path(folder), quiet=True, flatness=fs)


def run_all(
    plan: list[tuple[TrainConfig, Path]],
    *,
    jobs: int = 1,
    quiet: bool = False,
    flatness: FlatnessSettings | None = None,
) -> list[dict[str, Any]]:
    """Run every ``(config, folder)`` of ``plan``; ``jobs > 1`` uses that many processes.

    In processes, every run is attempted even if one fails (finished runs stay on disk); the
    failures are then reported together.
    """
    if jobs < 1:
        raise SamkitError(f"--jobs must be >= 1, got {jobs}.")
    if jobs == 1 or len(plan) == 1:
        out = []
        for i, (cfg, folder) in enumerate(plan, 1):
            if not quiet:
                print(f"[{i}/{len(plan)}] {folder.name}", flush=True)
            out.append(run_one(cfg, folder, quiet=quiet, flatness=flatness))
        return out
    # Each process gets its share of the cores; "spawn" avoids forking a threaded torch.
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = multiprocessing.get_context("spawn")
    fs = None if flatness is None else asdict(flatness)
    stop = signals.Forwarding()
    with ProcessPoolExecutor(
        jobs, mp_context=ctx, initializer=_worker_init, initargs=(threads,)
    ) as ex, stop:
        futures = [ex.submit(_run_from_dict, c.to_dict(), str(f), fs) for c, f in plan]
        results, errors = [], []
        for (_, folder), fut in zip(plan, futures, strict=True):
            try:
                results.append(fut.result())
                if not quiet:
                    print(f"done: {folder.name}", flush=True)
            except RunInterrupted:  # the workers got the signal too (Ctrl-C, or passed on)
                stop.requested = stop.requested or signal.SIGINT
            except Exception as err:  # keep going: the other runs' results must not be lost
                errors.append(f"{folder.name}: {err}")
                results.append({})
            if stop.requested is not None:  # the running runs checkpoint; start no other
                for pending in futures:
                    pending.cancel()
                break
    if stop.requested is not None:
        raise RunInterrupted(
            f"interrupted by {signals.name(stop.requested)}: the running runs saved a checkpoint, "
            "the finished ones are kept", stop.requested,
        )
    if errors:
        raise SamkitError("some runs failed (the others are saved):\n  " + "\n  ".join(errors))
    return results


def plan_config(
    base: TrainConfig,
    changes: dict[str, Any],
    seed: int,
    label: str,
    run_dir: Path | None = None,
) -> TrainConfig:
    """The config of one planned run: ``base`` with a method's or cell's ``changes`` and ``seed``.

    An ``init_from`` with ``{seed}`` in it names a source per seed (``runs/x/sgd-seed{seed}``), so a
    fine-tuning study pairs each seed with the source run of the same seed; the source's identity
    is recorded (and its architecture checked) now, so the plan's config hashes are final. When
    the source's weights are gone (a committed study keeps no checkpoints) but ``run_dir`` already
    holds the finished run from that source, its recorded identity stands: nothing is retrained.
    """
    from samkit.train.init_from import resolve_init, source_paths

    cfg = base.replace(**changes, seed=seed, label=label)
    if cfg.init_from is None:
        return cfg
    if "{seed}" in cfg.init_from:
        cfg = cfg.replace(init_from=cfg.init_from.replace("{seed}", str(seed)))
    if run_dir is not None and (run_dir / run_files.SUMMARY).is_file():
        try:
            source_paths(cfg.init_from)
        except SamkitError:
            saved = load_config(run_dir / run_files.CONFIG)
            same = Path(saved.init_from or "").parts[-2:] == Path(cfg.init_from).parts[-2:]
            if same and saved.init_from_id is not None:  # the same source (its folder may move)
                return cfg.replace(init_from_id=saved.init_from_id)
    return resolve_init(cfg)


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


def run_study(
    folder: Path,
    record: dict[str, Any],
    plan: list[TrainConfig],
    *,
    jobs: int,
    quiet: bool,
    flatness: FlatnessSettings | None,
    banner: str,
) -> None:
    """Open (or continue) the study folder, run ``plan`` (paired with ``record["runs"]``) and
    record the session's wall time. The report is the caller's to write (it reads the files)."""
    pairs = [(cfg, folder / r["dir"]) for cfg, r in zip(plan, record["runs"], strict=True)]
    record = open_study(folder, record)  # may merge runs planned in earlier sessions
    started = time.time()
    if not quiet:
        print(f"{banner} -> {folder}", flush=True)
    try:
        run_all(pairs, jobs=jobs, quiet=quiet, flatness=flatness)
    except RunInterrupted as err:
        close_session(folder, record, started, jobs)
        raise RunInterrupted(
            f"{err}\nTo finish the study (finished runs are kept, this one is resumed), run the "
            f"same command again with --out {folder}"
        ) from None
    close_session(folder, record, started, jobs)
