"""Where a study's runs run: ``--launcher local|slurm`` and the ``--slurm-*`` flags of ``compare``,
``sweep`` and ``reproduce``; ``samkit status STUDY`` (how far a study's runs are).

The flags build a :class:`samkit.study.launch.SlurmLauncher` (checked before anything is written;
submitit is imported only when the study runs, by the launcher).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError

# (flag, SlurmOptions field, type, help); type None: a repeatable string
SLURM_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--slurm-partition", "partition", str, "partition (sbatch --partition)"),
    ("--slurm-time", "time", str,
     "time limit of each job: MINUTES, HH:MM:SS or D-HH:MM:SS (default 2:00:00); a run that needs "
     "longer saves a checkpoint before it and is requeued"),
    ("--slurm-gpus", "gpus", int, "GPUs per run (default 0; give --device cuda for the runs)"),
    ("--slurm-cpus", "cpus", int, "CPUs per run (sbatch --cpus-per-task; torch uses them all)"),
    ("--slurm-mem", "mem", str, "memory per run, e.g. 32G (sbatch --mem; a bare number is MB)"),
    ("--slurm-account", "account", str, "account to charge (sbatch --account)"),
    ("--slurm-sbatch", "sbatch", None,
     "an extra #SBATCH line as KEY=VALUE (or KEY), repeatable: constraint=a100, qos=high"),
    ("--slurm-setup", "setup", None,
     "a shell line each job runs first, repeatable: 'module load cuda', 'source .venv/bin/activate'"),
    ("--slurm-array-parallelism", "array_parallelism", int,
     "at most this many runs at once (the array's %%N; default: all)"),
    ("--slurm-max-requeues", "max_requeues", int,
     "times a job is requeued after its time limit (default 3)"),
    ("--slurm-folder", "folder", str,
     "submitit's folder of job pickles and logs (default STUDY/.submitit)"),
    ("--slurm-executor", "executor", str,
     "slurm (default), or local: submitit's local executor runs the jobs as processes here "
     "(a dry run of the submission without a cluster)"),
]  # fmt: skip


_METAVARS = {"time": "TIME", "mem": "SIZE", "folder": "DIR", "executor": "{slurm,local}"}


def add_launcher_flags(p: argparse.ArgumentParser, *, wait: bool = True) -> None:
    """``--launcher`` and the SLURM options (``wait``: also ``--no-wait``)."""
    group = p.add_argument_group(
        "where the runs run (--launcher slurm: one SLURM job per run through submitit, "
        "pip install 'samkit[cluster]'; docs/distributed.md)"
    )
    group.add_argument(
        "--launcher", choices=("local", "slurm"), default="local",
        help="local: processes of this machine (--jobs); slurm: jobs of a SLURM cluster with the "
        "same run folders, locks and report (default local)",
    )  # fmt: skip
    group.add_argument(
        "--slurm-config", type=Path, metavar="FILE",
        help="YAML file with a slurm: block of the options below (keys without --slurm-); flags "
        "override it",
    )  # fmt: skip
    for flag, key, kind, text in SLURM_FLAGS:
        if kind is None:
            group.add_argument(flag, dest=f"slurm_{key}", action="append", metavar="LINE", help=text)
        else:
            group.add_argument(flag, dest=f"slurm_{key}", type=kind, help=text,
                               metavar=_METAVARS.get(key, "N" if kind is int else "NAME"),
                               choices=("slurm", "local") if key == "executor" else None)  # fmt: skip
    if wait:
        group.add_argument(
            "--no-wait", action="store_true",
            help="with --launcher slurm: return once the runs are submitted (samkit status STUDY "
            "shows their progress, samkit report STUDY writes the report) instead of waiting",
        )  # fmt: skip


def launcher_from_args(args: argparse.Namespace) -> Any:
    """``"local"``, or the :class:`~samkit.study.launch.SlurmLauncher` the flags ask for."""
    given = [flag for flag, key, _, _ in SLURM_FLAGS if getattr(args, f"slurm_{key}") is not None]
    if args.slurm_config is not None:
        given.insert(0, "--slurm-config")
    if getattr(args, "no_wait", False):
        given.append("--no-wait")
    if args.launcher == "local":
        if given:
            raise SamkitError(f"{given[0]} is an option of --launcher slurm; nothing was run.")
        return "local"
    from samkit.study.launch.slurm import SlurmLauncher
    from samkit.study.launch.slurm_options import SlurmOptions, parse_sbatch

    flags = {key: getattr(args, f"slurm_{key}") for _, key, _, _ in SLURM_FLAGS}
    flags["sbatch"] = parse_sbatch(flags["sbatch"])
    if getattr(args, "no_wait", False):
        flags["wait"] = False
    return SlurmLauncher(SlurmOptions.read(args.slurm_config, **flags))


def add_parsers(sub: Any) -> None:
    """Register ``status``."""
    p = sub.add_parser(
        "status",
        help="how far a study's runs are (finished, running, interrupted, waiting)",
        description="Read a compare or sweep folder and say how many of its runs are finished, "
        "running (a process holds the run folder), interrupted (a checkpoint, no process) or "
        "waiting (not started), and the jobs of its last cluster submission. Writes nothing. Exit "
        "status 0 when every run is finished, 1 otherwise (until samkit status STUDY; do sleep "
        "60; done).",
    )
    p.add_argument("folder", type=Path, help="folder written by samkit compare or sweep")
    p.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    from samkit.study.status import pending_table, run_states

    print(pending_table(args.folder))
    return 0 if all(s == "finished" for s in run_states(args.folder).values()) else 1
