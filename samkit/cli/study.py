"""``samkit compare | sweep | reproduce | report``: studies of many runs and their reports."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from samkit.cli.cluster import add_launcher_flags, launcher_from_args
from samkit.cli.flags import add_config_flags, config_from_args, positive_int, seed_int
from samkit.errors import SamkitError
from samkit.spec import split_name
from samkit.study.compare import DEFAULT_METHODS
from samkit.study.presets import MAIN_JOB
from samkit.study.suites import SUITES

SWEEP_START: dict[str, Any] = {**MAIN_JOB, "optimizer": "sam"}  # a sweep starts from the main job with SAM


def add_parsers(sub: Any) -> None:
    """Register ``compare``, ``sweep``, ``reproduce`` and ``report``."""
    p = sub.add_parser(
        "compare",
        help="methods x seeds on one setup, with a report (no arguments: the MNIST-1D main job)",
        description="Train every method for every seed on one setup (each run in its own "
        "subfolder; completed runs are reused, interrupted ones resumed), measure the flatness of "
        "each final model, and write results.csv, report.md and plots. With no arguments: SGD, "
        "SAM, mSAM (4 shards) and Friendly-SAM on MNIST-1D over 3 seeds (a few minutes on CPU).",
    )
    add_config_flags(p, MAIN_JOB)
    p.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        help="methods as NAME[:key=value,...], NAME an optimizer (e.g. sgd sam msam:shards=8 "
        "fsam:rho=0.1,label=fsam-big; a nested spec with several options in parentheses: "
        f"'sam:cadence=(every:k=4,reuse=looksam)'); default: {' '.join(DEFAULT_METHODS)}",
    )
    _study_flags(p)
    p.add_argument(
        "--baseline",
        metavar="LABEL",
        help="method the report's paired gaps are taken to (default: sgd if run, else the first)",
    )
    p.add_argument(
        "--reference",
        metavar="LABEL",
        help="a method (e.g. sam) whose gain over the baseline the others are measured against: "
        "the report adds a cost-and-benefit table and gain_vs_cost.png",
    )
    add_launcher_flags(p)
    p.set_defaults(func=_compare)

    p = sub.add_parser(
        "sweep",
        help="a grid over one or two settings (default rho x shards), with a heatmap",
        description="Train every cell of a grid over one or two run settings (x seeds), as in "
        "the mSAM sensitivity study, and write results.csv, report.md and a heatmap.",
    )
    add_config_flags(p, SWEEP_START)
    p.add_argument(
        "--grid",
        action="append",
        metavar="KEY=V1,V2,...",
        help="a setting and its values, given once or twice (default: rho=0.02,0.05,0.1,0.2 "
        "and shards=1,2,4,8 with --optimizer sam)",
    )
    _study_flags(p)
    p.add_argument(
        "--flatness", action="store_true", help="also measure flatness (off by default for sweeps)"
    )
    p.add_argument(
        "--baseline",
        metavar="CELL",
        help="grid cell the report's paired gaps are taken to, e.g. rho=0.05_shards=1 (default: none)",
    )
    add_launcher_flags(p)
    p.set_defaults(func=_sweep)

    p = sub.add_parser(
        "reproduce",
        help="run the papers' claims as a suite of studies and write a verdict table",
        description="Run the studies that test the seed papers' claims (SAM vs SGD under label "
        "noise, SAM fine-tuning, m-sharpness, mSAM, Friendly-SAM, diagonal linear networks) and "
        "judge each claim from the 95% interval of its paired gap: reproduced, not reproduced or "
        "inconclusive. Writes verdicts.md, verdicts.csv and every study's report into --out; an "
        "existing suite folder is continued. --quick: 3 seeds and a small m-sharpness grid (8 minutes "
        "on a 2-core CPU with --jobs 2); without it, the full suite (5 seeds, MNIST-1D and digits, "
        "about 65 minutes on a loaded 2-core CPU with --jobs 2; see docs/report/).",
    )
    p.add_argument("--quick", action="store_true", help="the quick suite (3 seeds, small grid)")
    p.add_argument(
        "--suite",
        choices=tuple(SUITES),
        help="quick | full: the papers' claims (default full; --quick = --suite quick); cheap: "
        "which SAM at <= 1.25x SGD's passes keeps SAM's gain on held-out settings "
        "(docs/report/cheap/)",
    )
    p.add_argument(
        "--claims",
        nargs="+",
        metavar="ID",
        help="only these claims (ids or tags such as noise, finetune, dln, demo; default: all)",
    )
    p.add_argument("--list", action="store_true", help="list the claims and studies, run nothing")
    p.add_argument("--out", type=Path, help="suite folder (default runs/reproduce-<suite>-<time>)")
    _jobs_flag(p)
    p.add_argument(
        "--threads", type=positive_int,
        help="torch threads per run (default: torch's; cores / --jobs)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_launcher_flags(p, wait=False)
    p.set_defaults(func=_reproduce)

    p = sub.add_parser(
        "report",
        help="regenerate the report of a compare/sweep/reproduce folder from its run files",
        description="Rebuild report.md, results.csv and plots of a study folder (for a "
        "`samkit reproduce` folder: every study's report and the verdict table) from its files.",
    )
    p.add_argument(
        "folder", type=Path, help="folder written by samkit compare, sweep or reproduce"
    )
    p.set_defaults(func=_report)


def _jobs_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--jobs", type=positive_int, default=1,
        help="runs in parallel processes (default 1: in sequence)",
    )


def _study_flags(p: argparse.ArgumentParser) -> None:
    """The flags compare and sweep share: seeds, folder, processes, flatness, quiet."""
    p.add_argument(
        "--seeds", type=seed_int, nargs="+",
        help="seeds to run (default 0 1 2 for compare, 0 for sweep)",
    )
    p.add_argument("--out", type=Path, help="study folder; an existing one is continued")
    _jobs_flag(p)
    p.add_argument(
        "--no-flatness",
        action="store_true",
        help="skip the Hessian eigenvalue and m-sharpness of each final model",
    )
    p.add_argument(
        "--flatness-examples",
        type=positive_int,
        default=None,
        help="train examples the flatness is measured on (default 1000)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _print_study(result: Any) -> int:
    print(result.table)
    if result.done:  # else the runs were submitted, not waited for: the table says what next
        print(f"\nreport: {result.folder / 'report.md'}")
    return 0


def _study_options(args: argparse.Namespace) -> dict[str, Any]:
    """What the flags compare and sweep share (:func:`_study_flags`, --baseline) ask of a study."""
    return dict(seeds=args.seeds, out=args.out, jobs=args.jobs, baseline=args.baseline,
                flatness_examples=args.flatness_examples, quiet=args.quiet,
                launcher=launcher_from_args(args))  # fmt: skip


def _compare(args: argparse.Namespace) -> int:
    from samkit.study.compare import compare

    methods = " ".join(args.methods or DEFAULT_METHODS)
    if args.optimizer is not None and args.optimizer not in {split_name(m)[0] for m in methods.split()}:
        raise SamkitError(
            f"compare trains its --methods ({methods}), each with its own optimizer: --optimizer "
            f"{args.optimizer} would be ignored; nothing was changed. Give it as a method "
            f"(--methods {args.optimizer} ...), or --base {args.optimizer} for the base optimizer "
            "of the SAM family's methods."
        )
    return _print_study(compare(config_from_args(args, MAIN_JOB), methods=args.methods,
                                flatness=not args.no_flatness, reference=args.reference,
                                **_study_options(args)))  # fmt: skip


def _sweep(args: argparse.Namespace) -> int:
    from samkit.study.sweep import sweep

    return _print_study(sweep(config_from_args(args, SWEEP_START), grid=args.grid,
                              flatness=args.flatness, **_study_options(args)))  # fmt: skip


def _reproduce(args: argparse.Namespace) -> int:
    from samkit.study.reproduce import reproduce
    from samkit.study.suite_report import REPORT
    from samkit.study.suites import plan

    if args.quick and args.suite not in (None, "quick"):
        raise SamkitError(f"--quick and --suite {args.suite} ask for two suites; give one.")
    suite = args.suite or ("quick" if args.quick else "full")
    if args.list:
        claims, specs, picks = plan(suite, args.claims)
        for c in claims:
            print(f"{c.id:18s} [{c.study}; tags: {', '.join(c.tags) or '-'}] {c.text}")
        print("\nstudies: " + ", ".join(f"{s.id} ({s.kind}, seeds {list(s.seeds)})" for s in specs))
        for pick in picks:
            print(f"\npick {pick.id} on {', '.join(pick.studies)}: "
                  + ", ".join(f"{label} ({spec})" for _, label, spec in pick.candidates))  # fmt: skip
        return 0
    out = args.out or Path("runs") / time.strftime(f"reproduce-{suite}-%Y%m%d-%H%M%S")
    table = reproduce(
        out,
        suite=suite,
        claim_ids=args.claims,
        jobs=args.jobs,
        threads=args.threads,
        quiet=args.quiet,
        launcher=launcher_from_args(args),
    )
    print(table)
    print(f"\nverdicts: {Path(out) / REPORT}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from samkit.study.report import report_name, write_report

    table = write_report(args.folder)
    print(table)
    print(f"\nreport: {Path(args.folder) / report_name(args.folder)}")
    return 0
