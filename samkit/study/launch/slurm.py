"""The SLURM launcher: each unfinished run of a study is a job (one array job per submission),
submitted through submitit; the study waits for them with a progress bar of finished runs, or
returns at once.

The jobs run :class:`samkit.study.launch.job.RunJob`, i.e. :func:`samkit.study.train_runs.run_one`: the
same run folders, locks and files as a local study. Runs already finished (trained, flatness
measured when asked) are not submitted again; unfinished ones are, and resume from their
checkpoints. Two submissions that race on one study both submit a run that neither has
finished; the run folder's lock makes the second job wait, then reuse the run: it is trained once.

submitit is imported only here, inside the functions that need it, and only when a study asks for
``--launcher slurm``: it is the optional extra ``samkit[cluster]``.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.study.flatness import FlatnessSettings
from samkit.study.launch.job import RunJob
from samkit.study.launch.slurm_options import SlurmOptions
from samkit.study.train_runs import Launched, finished
from samkit.train import RunInterrupted, TrainConfig, signals

SUBMITIT_FOLDER = ".submitit"  # in the study folder unless --slurm-folder says otherwise


@dataclass
class SlurmLauncher:
    """Run a study's runs as SLURM jobs through submitit (``options``: :class:`SlurmOptions`).

    After :meth:`run`, ``submitted`` holds ``(run folder, submitit job)`` of each job it submitted.

    Example:
        >>> from samkit.study import compare, MAIN_JOB
        >>> slurm = SlurmLauncher(SlurmOptions(partition="gpu", gpus=1, time="1:00:00"))
        >>> compare(TrainConfig(**MAIN_JOB, device="cuda"), launcher=slurm)
    """

    options: SlurmOptions = field(default_factory=SlurmOptions)
    submitted: list[tuple[Path, Any]] = field(default_factory=list, repr=False)
    name = "slurm"

    @property
    def waits(self) -> bool:
        """Whether :meth:`run` waits for the jobs (``False``: it returns once they are submitted)."""
        return self.options.wait

    @property
    def jobs(self) -> int:
        """How many runs may run at once (what a session records as its parallel jobs)."""
        return self.options.array_parallelism or max(1, len(self.submitted))

    def check(self) -> None:
        """Refuse up front (before any folder is written) what cannot be submitted from here."""
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise SamkitError(
                "--launcher slurm submits through submitit, which is not installed: "
                "pip install 'samkit[cluster]'."
            ) from None
        if self.options.executor == "slurm" and shutil.which("sbatch") is None:
            raise SamkitError(
                "--launcher slurm needs SLURM's sbatch, which is not on this machine's PATH (run "
                "the study from a login node of the cluster; --slurm-executor local runs the jobs "
                "here, through submitit, to try a setup)."
            )

    def folder(self, study: Path) -> Path:
        """submitit's job folder (pickles and logs) for the study in ``study``."""
        return Path(self.options.folder) if self.options.folder else study / SUBMITIT_FOLDER

    def executor(self, study: Path) -> Any:
        """The submitit executor the jobs of the study in ``study`` are submitted with."""
        import submitit

        first, params = self.options.parameters(f"samkit-{study.name}")
        executor = submitit.AutoExecutor(folder=self.folder(study), cluster=self.options.executor, **first)
        executor.update_parameters(**params)
        return executor

    def run(
        self,
        plan: list[tuple[TrainConfig, Path]],
        *,
        folder: Path,
        quiet: bool,
        flatness: FlatnessSettings | None,
    ) -> Launched:
        """Submit every unfinished run of ``plan``; wait for them unless ``options.wait`` is off."""
        self.check()
        todo = [(cfg, run) for cfg, run in plan if not finished(cfg, run, flatness)]
        self.submitted = []
        record: dict[str, Any] = {"executor": self.options.executor, "submitted": []}
        if not todo:
            if not quiet:
                print(f"all {len(plan)} runs are finished: nothing to submit", flush=True)
            return Launched(done=True, record={"jobs": 0, **record})
        fs = None if flatness is None else asdict(flatness)
        executor = self.executor(folder)
        try:
            with executor.batch():
                jobs = [executor.submit(RunJob(), cfg.to_dict(), str(run), fs) for cfg, run in todo]
        except Exception as err:  # sbatch refused (a partition, an account): say what it said
            raise SamkitError(
                f"the jobs were not submitted ({type(err).__name__}: {str(err).strip()}); the "
                f"study folder {folder} is kept: fix the option and run the same command again."
            ) from None
        self.submitted = [(run, job) for (_, run), job in zip(todo, jobs, strict=True)]
        ids = [str(job.job_id) for job in jobs]
        record.update(
            submitted=[{"dir": run.name, "job": i} for (_, run), i in zip(todo, ids, strict=True)],
            submitit_folder=str(self.folder(folder)),
        )
        if not quiet:
            reused = len(plan) - len(todo)
            print(
                f"submitted {len(todo)} run(s) as job(s) {_id_range(ids)}"
                + (f" ({reused} finished run(s) reused)" if reused else "")
                + f"; logs in {self.folder(folder)}",
                flush=True,
            )
        if not self.options.wait:
            if not quiet:
                print(
                    f"not waiting: `samkit status {folder}` shows how far the runs are, and "
                    f"`samkit report {folder}` writes the report once they are done",
                    flush=True,
                )
            return Launched(done=False, record={"jobs": self.jobs, **record})
        self._wait(folder, quiet=quiet)
        return Launched(done=True, record={"jobs": self.jobs, **record})

    def _wait(self, folder: Path, *, quiet: bool) -> None:
        from tqdm.auto import tqdm

        poll = self.options.poll_s or (0.5 if self.options.executor == "local" else 30.0)
        pending = list(self.submitted)
        errors: list[str] = []
        bar = tqdm(total=len(pending), unit="run", desc="finished runs", dynamic_ncols=True,
                   disable=quiet or not sys.stderr.isatty())  # fmt: skip
        with bar, signals.Interrupts() as stop:
            while pending and stop.requested is None:
                for item in [p for p in pending if p[1].done()]:
                    pending.remove(item)
                    bar.update(1)
                    error = _failure(*item)
                    if error:
                        errors.append(error)
                    elif not quiet:
                        bar.write(f"done: {item[0].name}")
                if pending:
                    _sleep(poll, stop)
        if stop.requested is not None:
            ids = _id_range([str(job.job_id) for _, job in pending])
            raise RunInterrupted(
                f"stopped waiting ({signals.name(stop.requested)}); the {len(pending)} unfinished "
                f"job(s) {ids} go on (scancel stops them: each saves a checkpoint). `samkit status "
                f"{folder}` shows how far they are; `samkit report {folder}` writes the report",
                stop.requested,
            )
        if errors:
            raise SamkitError("some runs failed (the others are saved):\n  " + "\n  ".join(errors))


def _failure(run: Path, job: Any) -> str | None:
    """Why the job of ``run`` failed (its last error line and its log), or None if it did not."""
    try:
        error = job.exception()
    except Exception as err:  # a job whose result cannot be read (killed before it wrote one)
        error = err
    if error is None:
        return None
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else type(error).__name__
    return f"{run.name} (job {job.job_id}): {last}; log: {job.paths.stderr}"


def _sleep(seconds: float, stop: signals.Interrupts) -> None:
    deadline = time.monotonic() + seconds
    while stop.requested is None and time.monotonic() < deadline:
        time.sleep(min(0.1, seconds))


def _id_range(ids: list[str]) -> str:
    """``123_[0-3]`` for the tasks of one array job, else the ids."""
    arrays = {i.split("_")[0] for i in ids}
    if len(arrays) == 1 and all("_" in i for i in ids) and len(ids) > 1:
        return f"{arrays.pop()}_[{ids[0].split('_')[1]}-{ids[-1].split('_')[1]}]"
    return ", ".join(ids)


__all__ = ["SUBMITIT_FOLDER", "SlurmLauncher", "SlurmOptions"]
