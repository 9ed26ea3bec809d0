"""Train a study's plan of runs (in sequence, in processes or on a cluster) into its folder.

A run folder found on disk is never recomputed or overwritten: a complete run with the same
config is reused, an interrupted one is resumed, and one holding a different config is an error.
When the study asks, each final model's flatness is measured after it trains
(:mod:`samkit.study.flatness`). Running never writes a report: :func:`samkit.study.compare` and
:func:`samkit.study.sweep` do, from the files, once the runs are done.

Where the runs run is a :class:`Launcher` (:mod:`samkit.study.launch`: local processes, or SLURM
jobs through submitit); each run is :func:`run_one` whichever runs it, so the run folders, their
locks and the reports are the same.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from samkit.errors import SamkitError
from samkit.study.flatness import FLATNESS, FlatnessSettings, measure_flatness
from samkit.study.records import close_session, open_study
from samkit.train import RunInterrupted, TrainConfig, config_hash, load_config, run_files, run_folder, train


@dataclass
class StudyResult:
    """Where a study was written and its report's table (what ``compare``/``sweep`` return);
    ``done`` is ``False`` when the runs were submitted and not waited for: ``table`` then says how
    far they are (:func:`samkit.study.status.pending_table`) and no report is written yet."""

    folder: Path
    table: str
    done: bool = True


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


def _check_same_config(cfg: TrainConfig, folder: Path) -> bool:
    """Whether ``folder`` holds a run (of this very config: another one is an error)."""
    if not (folder / run_files.CONFIG).is_file():
        return False
    saved = load_config(folder / run_files.CONFIG)
    if config_hash(saved) != config_hash(cfg):
        raise SamkitError(
            f"{folder} holds a run with another config (hash {config_hash(saved)} != "
            f"{config_hash(cfg)}); nothing was changed. Use another --out for this study."
        )
    return True


def finished(cfg: TrainConfig, folder: Path, flatness: FlatnessSettings | None) -> bool:
    """Whether the run of ``cfg`` in ``folder`` is done: trained, and its flatness measured when
    asked. A folder that holds another config is an error (:class:`SamkitError`)."""
    if not _check_same_config(cfg, folder) or run_folder.complete_summary(folder, cfg) is None:
        return False
    if flatness is None:
        return True
    path = folder / FLATNESS
    if not path.is_file():
        return False
    old = run_files.read_json(path)
    return old.get("settings") == asdict(flatness) and old.get("config_hash") == config_hash(cfg)


def _run_one(
    cfg: TrainConfig, folder: Path, *, quiet: bool, flatness: FlatnessSettings | None
) -> dict[str, Any]:
    summary_path = folder / run_files.SUMMARY
    if _check_same_config(cfg, folder):
        if summary_path.is_file():
            summary = run_files.read_json(summary_path)
        else:
            summary = train(None, folder, resume=True, quiet=quiet)
    else:
        summary = train(cfg, folder, quiet=quiet)
    if flatness is not None:
        measure_flatness(folder, flatness)
    return summary


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


@dataclass
class Launched:
    """What a launcher did: ``done`` when every run is finished (``False``: the runs were submitted
    and not waited for), and what the study's session records about it (``jobs``, and for a
    cluster the launcher, its job ids and log folder)."""

    done: bool
    record: dict[str, Any] = field(default_factory=dict)


class Launcher(Protocol):
    """Where a study's runs run (:mod:`samkit.study.launch`). ``run`` trains each
    ``(config, run folder)`` of ``plan`` with :func:`run_one`, or has it trained, for the study in
    ``folder``; it raises :class:`RunInterrupted` when stopped and :class:`SamkitError` when runs
    failed, after every other run was given its chance."""

    name: str

    def run(
        self,
        plan: list[tuple[TrainConfig, Path]],
        *,
        folder: Path,
        quiet: bool,
        flatness: FlatnessSettings | None,
    ) -> Launched: ...


def run_study(
    folder: Path,
    record: dict[str, Any],
    plan: list[TrainConfig],
    *,
    launcher: Launcher,
    quiet: bool,
    flatness: FlatnessSettings | None,
    banner: str,
) -> bool:
    """Open (or continue) the study folder, run ``plan`` (paired with ``record["runs"]``) with
    ``launcher`` and record the session; returns whether every run is finished (a launcher that
    does not wait returns at once). The report is the caller's to write (it reads the files)."""
    pairs = [(cfg, folder / r["dir"]) for cfg, r in zip(plan, record["runs"], strict=True)]
    record = open_study(folder, record)  # may merge runs planned in earlier sessions
    started = time.time()
    if not quiet:
        print(f"{banner} -> {folder}", flush=True)
    try:
        launched = launcher.run(pairs, folder=folder, quiet=quiet, flatness=flatness)
    except RunInterrupted as err:
        close_session(folder, record, started, getattr(launcher, "jobs", 1), launcher=launcher.name)
        raise RunInterrupted(
            f"{err}\nTo finish the study (finished runs are kept, this one is resumed), run the "
            f"same command again with --out {folder}"
        ) from None
    session = dict(launched.record)
    close_session(folder, record, started, session.pop("jobs", 1), launcher=launcher.name, **session)
    return launched.done
