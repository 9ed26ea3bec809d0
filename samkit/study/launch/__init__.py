"""Where a study's runs run: a launcher.

A study is a plan of runs; a launcher runs them. :class:`~samkit.study.launch.local.LocalLauncher`
runs them on this machine (``--jobs N`` processes); :class:`~samkit.study.launch.slurm.SlurmLauncher`
submits each run as a job (an array of jobs) of a SLURM cluster through submitit
(``pip install 'samkit[cluster]'``; submitit is imported by that module only, when it runs).
Each run is :func:`samkit.study.train_runs.run_one` whichever launcher runs it, so the study folder,
the run folders with their one-writer locks, and the reports made from them are the same.
"""

from __future__ import annotations

from samkit.errors import SamkitError
from samkit.study.launch.local import LocalLauncher
from samkit.study.launch.slurm import SlurmLauncher
from samkit.study.launch.slurm_options import SlurmOptions
from samkit.study.train_runs import Launcher

LAUNCHERS = ("local", "slurm")


def resolve(launcher: str | Launcher | None, jobs: int = 1) -> Launcher:
    """The launcher a study asked for: ``"local"`` (with ``jobs`` processes), ``"slurm"`` (default
    :class:`SlurmOptions`), or a launcher object as it is. Checked before anything is written."""
    if launcher is None or launcher == "local":
        return LocalLauncher(jobs)
    if isinstance(launcher, str):
        if launcher != "slurm":
            raise SamkitError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}.")
        launcher = SlurmLauncher(SlurmOptions())
    if jobs != 1 and isinstance(launcher, LocalLauncher):
        raise SamkitError(f"jobs={jobs} beside a LocalLauncher: give the jobs to the launcher.")
    if jobs != 1:
        raise SamkitError(
            f"--jobs {jobs} is for --launcher local; with --launcher {launcher.name}, each run is a "
            "job of its own (--slurm-array-parallelism caps how many run at once)."
        )
    if isinstance(launcher, SlurmLauncher):
        launcher.check()
    return launcher


def waiting(launcher: str | Launcher | None, jobs: int = 1) -> Launcher:
    """:func:`resolve` for a suite (``samkit reproduce``), whose later studies start from the
    earlier ones' results: the launcher must wait for each study's runs."""
    resolved = resolve(launcher, jobs)
    if not getattr(resolved, "waits", True):
        raise SamkitError(
            "a suite's later studies start from its earlier ones' results, so samkit reproduce "
            "waits for each study's jobs; leave --no-wait out (or run samkit reproduce itself as "
            "a job)."
        )
    return resolved


__all__ = ["LAUNCHERS", "LocalLauncher", "SlurmLauncher", "SlurmOptions", "resolve", "waiting"]
