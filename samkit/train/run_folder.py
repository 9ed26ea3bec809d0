"""A run folder's policy: who may write it, and what a new run, a resume or an overwrite does to it.

**One writer.** A process that trains a run holds the folder's lock (:func:`hold`) for the life of
the run: an operating-system lock (``flock``) on ``.samkit-lock`` inside the folder, so it
vanishes when the process dies, however it dies (``kill -9`` included); the file holds the
holder's pid and command line, which the refusal names. Another ``samkit train --out/--resume/
--overwrite`` of that folder is refused (:class:`FolderBusy`); a study waits for it
(``wait=True``). Readers (``load_run`` for ``samkit sharpness``/``landscape``, ``--init-from``)
take a shared lock while they read (:func:`reading`): a folder being trained is refused to them,
and a folder being read is not overwritten under them. Within one process the lock is re-entrant
(a study that holds a run's folder trains and measures it). POSIX only; where ``fcntl`` is missing
(Windows) nothing is locked.

**New, resume, overwrite.** :func:`check_new` refuses a non-empty folder unless ``--overwrite``,
and a folder holding anything samkit did not write even then; :func:`prepare_new` empties a run
folder (under the lock, which it keeps); :func:`resume_config` reads the
saved config and applies the overrides a resume may change (:data:`RESUMABLE_OVERRIDES`).

**The record and the checkpoint.** :func:`record_environment` writes ``config.yaml`` and
``env.json`` (a resume appends its session to ``resumes``); :func:`after_restore` makes
``metrics.jsonl`` and ``steps.jsonl`` agree with the checkpoint, which is the truth a resume
starts from. Every write goes through :mod:`samkit.train.run_files` (atomic); a refused write raises
:class:`~samkit.train.run_files.WriteError` naming the file and the remedy.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.train import run_files
from samkit.train.config import TrainConfig, config_hash, load_config, save_config

try:
    import fcntl
except ImportError:  # Windows: no flock; folders are not locked there
    fcntl = None  # type: ignore[assignment]

LOCK = ".samkit-lock"

# Fields a resumed run may change: they do not alter what the finished run computes (device, and
# execution: loop and vectorized shards compute the same update, so it is not hashed either) or
# they extend it (epochs). A folder left by a failed vectorized run can continue with the loop.
RESUMABLE_OVERRIDES = ("epochs", "device", "execution")


class FolderBusy(SamkitError):
    """Another live process holds the run folder (its pid and command are in the message)."""


# ---- the lock ---------------------------------------------------------------------------------
_held: dict[str, list[Any]] = {}  # resolved folder -> [fd, depth]: this process's own locks
_held_guard = threading.Lock()


def _key(folder: Path) -> str:
    return str(Path(folder).resolve())


def holds(folder: str | Path) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return _key(Path(folder)) in _held


def holder(folder: str | Path) -> dict[str, Any] | None:
    """What the lock file says about the process that took the lock last (pid, command, ...)."""
    try:
        text = (Path(folder) / LOCK).read_text()
        info = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def describe_holder(folder: str | Path) -> str:
    """Who holds ``folder``: ``in use by process 123 (`samkit train ...`, since ...)``, or that
    another process reads it (readers leave no name)."""
    info = holder(folder)
    here = socket.gethostname()
    if info and "pid" in info and (info.get("host") != here or _alive(int(info["pid"]))):
        command = " ".join(info.get("command") or [])
        where = "" if info.get("host") == here else f" on {info.get('host')}"
        since = f", since {info['started']}" if info.get("started") else ""
        return f"in use by process {info['pid']}{where} (`{command}`{since})"
    return "being read by another process (a measurement or an --init-from of it)"


def _busy(folder: Path, purpose: str) -> FolderBusy:
    info = holder(folder)
    who = describe_holder(folder)
    if who.startswith("in use"):
        pid = info["pid"] if info else "?"
        return FolderBusy(
            f"run folder {folder} is {who}; nothing was changed. Wait for it to finish before "
            f"you {purpose}, or stop it (kill {pid}: it saves a checkpoint and exits) and try again."
        )
    return FolderBusy(
        f"run folder {folder} is {who}; nothing was changed. Wait for it to finish before you "
        f"{purpose}."
    )


def _open_locked(path: Path, *, exclusive: bool, wait: bool, create: bool) -> int | None:
    """An fd of ``path`` locked as asked; ``None`` when busy (and not ``wait``) or, for a reader,
    when there is no lock file (nobody has ever written the folder: nothing to exclude)."""
    flags = os.O_RDWR | os.O_CREAT if create else os.O_RDONLY
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    while True:
        try:
            fd = os.open(path, flags, 0o666)
        except FileNotFoundError:
            if create:
                raise
            return None
        try:
            fcntl.flock(fd, mode | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        # The holder before us may have removed the file after we opened it (release unlinks):
        # our lock is then on a name nobody else will open; take the lock on the current file.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
        if not create and not path.exists():
            return None


def _acquire(folder: Path, wait: bool, on_wait: Callable[[str], None] | None, purpose: str) -> int:
    path = folder / LOCK
    fd = _open_locked(path, exclusive=True, wait=False, create=True)
    if fd is None:
        if not wait:
            raise _busy(folder, purpose)
        if on_wait is not None:
            on_wait(describe_holder(folder))
        fd = _open_locked(path, exclusive=True, wait=True, create=True)
        assert fd is not None
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": list(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    return fd


@contextlib.contextmanager
def hold(
    folder: str | Path,
    *,
    wait: bool = False,
    on_wait: Callable[[str], None] | None = None,
    purpose: str = "write it",
    enabled: bool = True,
) -> Iterator[None]:
    """Hold ``folder``'s lock for the block (the folder is created if missing).

    Args:
        wait: block until the other holder is done (a study) instead of raising
            :class:`FolderBusy` (a command).
        on_wait: called once before waiting, with who holds the folder
            (:func:`describe_holder`), to say which run waits for what.
        purpose: what the refusal says the caller wanted ("overwrite it", "resume it").
        enabled: ``False`` makes this a no-op (torchrun ranks other than 0 write nothing).
    """
    folder = Path(folder)
    if not enabled or fcntl is None:
        yield
        return
    key = _key(folder)
    with _held_guard:
        mine = _held.get(key)
        if mine is not None:
            mine[1] += 1
    if mine is None:
        if folder.exists() and not folder.is_dir():
            raise SamkitError(f"--out {folder} exists and is not a folder; choose another --out.")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = _acquire(folder, wait, on_wait, purpose)
        except OSError as err:
            raise SamkitError(run_files.WriteError(folder / LOCK, err).message(
                "nothing was trained")) from err
        with _held_guard:
            _held[key] = [fd, 1]
        _remove_stale_temporaries(folder)  # ours alone now: half a write of a killed holder
    try:
        yield
    finally:
        with _held_guard:
            entry = _held[key]
            entry[1] -= 1
            done = entry[1] == 0
            if done:
                del _held[key]
        if done:
            # Remove the file while still holding it (a waiter then re-checks the name: see
            # _open_locked), so a finished run leaves no trace; a killed one leaves a file that
            # no one holds, which the next writer simply takes.
            with contextlib.suppress(OSError):
                (folder / LOCK).unlink()
            os.close(entry[0])


@contextlib.contextmanager
def reading(folder: str | Path, purpose: str = "read it") -> Iterator[None]:
    """A shared lock for the block: refused (:class:`FolderBusy`) while another process trains
    ``folder``, and no writer starts until the block ends. Creates nothing."""
    folder = Path(folder)
    if fcntl is None or holds(folder) or not folder.is_dir():
        yield
        return
    try:
        fd = _open_locked(folder / LOCK, exclusive=False, wait=False, create=False)
    except PermissionError:  # a folder shared read-only with us: its owner's lock is not ours
        fd = -1
    if fd is None:
        if (folder / LOCK).exists():
            raise _busy(folder, purpose)
        yield
        return
    try:
        yield
    finally:
        if fd >= 0:
            os.close(fd)


# ---- new, resume, overwrite -------------------------------------------------------------------
# The files only a training run writes (so only the lock's holder): a temporary of one of them
# found when the lock is taken was left by a process killed while writing it.
RUN_FILES = (run_files.CONFIG, run_files.ENV, run_files.METRICS, run_files.SUMMARY,
             run_files.STEPS, run_files.CHECKPOINT)  # fmt: skip
_TEMPORARY = re.compile(r"^\.(.+)\.[0-9a-f]{8}\.tmp$")  # samkit._atomic's temporary names


def _stale_temporary(path: Path) -> bool:
    m = _TEMPORARY.match(path.name)
    return bool(m) and m.group(1) in RUN_FILES


def _remove_stale_temporaries(folder: Path) -> None:
    for path in folder.iterdir():
        if _stale_temporary(path):
            with contextlib.suppress(OSError):
                path.unlink()


def _contents(out: Path) -> list[Path]:
    if not out.is_dir():
        return []
    return [p for p in out.iterdir() if p.name != LOCK and not _stale_temporary(p)]


# What samkit writes into a run folder (the run, its TensorBoard log, the measurements of it with
# their default names): all that --overwrite may remove. Anything else is someone's own file.
_SAMKIT_WRITES = re.compile(
    r"^(config\.yaml|env\.json|metrics\.jsonl|summary\.json|steps\.jsonl|checkpoint\.pt|"
    r"tensorboard|flatness\.json|sharpness\.json|landscape_[12]d\.(json|png))$"
)


def check_new(out: Path, overwrite: bool) -> None:
    """Refuse a new run in a non-empty folder unless ``overwrite``, and even then a folder that
    holds anything samkit did not write (nothing is changed)."""
    if out.exists() and not out.is_dir():
        raise SamkitError(f"--out {out} exists and is not a folder; choose another --out.")
    contents = _contents(out)
    if contents and not overwrite:
        raise SamkitError(
            f"run folder {out} already exists and is not empty; nothing was changed. Use "
            f"--resume {out} to continue it, --overwrite to replace it, or another --out."
        )
    foreign = sorted(p.name for p in contents if not _SAMKIT_WRITES.match(p.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise SamkitError(
            f"--out {out} holds files samkit did not write ({shown}); nothing was changed. "
            "--overwrite replaces only a samkit run: choose another --out, or move those files "
            "out of it."
        )


def prepare_new(out: Path, overwrite: bool) -> None:
    """Empty ``out`` of a run samkit wrote (with ``overwrite``), keeping the lock this process
    holds; a folder with anything else in it is refused (:func:`check_new`)."""
    check_new(out, overwrite)
    for path in _contents(out):  # the user asked for it explicitly with --overwrite
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as err:
            raise SamkitError(run_files.WriteError(path, err).message(
                "nothing was trained; the folder is partly emptied")) from err
    out.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def removed_if_refused(out: Path) -> Iterator[None]:
    """Remove the folders the block creates for ``out`` (``--out a/b`` may create both) when it
    fails while they are still empty: a refused run leaves nothing behind. A folder that existed,
    or holds anything (a run that started and failed keeps its record), is left as it is."""
    missing = [p for p in (out, *out.absolute().parents) if not p.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for path in missing:
            with contextlib.suppress(OSError):  # not empty: a run's files, or someone's
                path.rmdir()
        raise


def resume_hash(cfg: TrainConfig) -> str:
    """Hash of the settings a resumed run must share with its checkpoint (all but the overrides)."""
    # device is not hashed anyway; epochs is set to a fixed value so it drops out
    return config_hash(cfg.replace(epochs=1))


def check_resumable(out: Path) -> None:
    """Refuse ``--resume`` of a folder that holds no run (before anything is created)."""
    if not out.is_dir():
        raise SamkitError(
            f"cannot resume {out}: no such folder. Give the run folder of `samkit train --out`."
        )
    if not (out / run_files.CONFIG).is_file():
        raise SamkitError(
            f"cannot resume {out}: no {run_files.CONFIG} there (is it a run folder written by "
            "`samkit train`?)."
        )


def resume_config(
    out: Path, cfg: TrainConfig | None, overrides: dict[str, Any], write: bool = True
) -> TrainConfig:
    """The saved config of ``out``, with the allowed ``overrides`` applied (and saved)."""
    check_resumable(out)
    saved = load_config(out / run_files.CONFIG)
    _check_checkpoint_present(out)
    if cfg is not None and config_hash(cfg.validated()) != config_hash(saved):
        raise SamkitError(
            f"cannot resume {out}: its config.yaml differs from the requested config; "
            "nothing was changed. Use a new --out for a different run."
        )
    bad = sorted(set(overrides) - set(RESUMABLE_OVERRIDES))
    if bad:
        raise SamkitError(
            f"--resume continues the saved config; {', '.join(bad)} cannot change (only "
            f"{', '.join(RESUMABLE_OVERRIDES)} can). Start a new run with --out for other settings."
        )
    if overrides:
        saved = saved.replace(**overrides)
        if (out / run_files.SUMMARY).is_file() and "epochs" in overrides:
            raise SamkitError(
                f"{out} is already complete; start a new run to train for other epochs."
            )
        if write:
            _save_config(saved, out, "nothing was changed")
    return saved


def _check_checkpoint_present(out: Path) -> None:
    """Refuse to restart from scratch a run whose recorded epochs have lost their checkpoint."""
    if (out / run_files.CHECKPOINT).is_file() or (out / run_files.SUMMARY).is_file():
        return
    epochs = len(run_files.read_metrics(out / run_files.METRICS))
    if epochs:
        raise SamkitError(
            f"cannot resume {out}: its {run_files.METRICS} records {epochs} finished epoch(s) but "
            f"there is no {run_files.CHECKPOINT} to continue from (deleted or lost?); nothing was "
            f"changed. Restore {run_files.CHECKPOINT}, or train again from the beginning with "
            "--overwrite (or another --out)."
        )


def complete_summary(out: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """``summary.json`` of ``out`` when it records this very run as complete, else ``None``."""
    if not (out / run_files.SUMMARY).is_file():
        return None
    summary = run_files.read_json(out / run_files.SUMMARY)
    if summary.get("config_hash") == config_hash(cfg) and summary.get("status") == "complete":
        return summary
    return None


# ---- the record ---------------------------------------------------------------------------------
def _save_config(cfg: TrainConfig, out: Path, consequence: str) -> None:
    path = out / run_files.CONFIG
    try:
        save_config(cfg, path)
    except OSError as err:
        raise SamkitError(run_files.WriteError(path, err).message(consequence)) from err


def record_environment(out: Path, cfg: TrainConfig, env: dict[str, Any]) -> None:
    """Write ``config.yaml`` and ``env.json``; a resumed run appends its session to ``resumes``."""
    env_path = out / run_files.ENV
    if env_path.is_file():  # a resumed run: keep the first session, append this one
        try:
            first = run_files.read_json(env_path)
        except SamkitError:
            first = {"unreadable": True}  # a damaged record must not block the run it describes
        first.setdefault("resumes", []).append(env)
        env = first
    _save_config(cfg, out, "nothing was trained")
    try:
        run_files.write_json(env_path, env)
    except run_files.WriteError as err:
        raise SamkitError(err.message("nothing was trained")) from err


def after_restore(out: Path, history: list[dict[str, Any]], steps: int) -> None:
    """Make the logs agree with the checkpoint a run resumes from.

    ``metrics.jsonl`` may lack the checkpoint's last epoch (a crash between the two writes, which
    come in that order) and ``steps.jsonl`` may hold rows past it, or half a row; the
    checkpoint's history is the truth.
    """
    run_files.write_metrics(out / run_files.METRICS, history)
    run_files.keep_rows_until(out / run_files.STEPS, steps)


__all__ = [
    "LOCK",
    "RESUMABLE_OVERRIDES",
    "FolderBusy",
    "after_restore",
    "check_new",
    "check_resumable",
    "complete_summary",
    "describe_holder",
    "hold",
    "holder",
    "holds",
    "prepare_new",
    "reading",
    "record_environment",
    "removed_if_refused",
    "resume_config",
    "resume_hash",
]
