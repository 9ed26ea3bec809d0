"""The ``samkit`` command line: ``train | compare | sweep | report`` (+ ``sharpness``,
``landscape`` from :mod:`samkit.cli_measure`, ``dln`` from :mod:`samkit.theory.cli`).

Every training flag is also a key of a YAML ``--config`` (``--weight-decay`` is ``weight_decay``);
flags given on the command line override the file, which overrides the defaults of
:class:`samkit.train.TrainConfig`. A :class:`~samkit.errors.SamkitError` is printed as
``error: <message>`` with exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

from samkit import cli_measure
from samkit.errors import SamkitError, SamkitWarning
from samkit.theory import cli as theory_cli
from samkit.train import config

# (flag, config key, type, help). type None: a boolean switch. Defaults live in TrainConfig and
# are shown in the help; argparse defaults stay None so we know which flags were given.
_CONFIG_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--dataset", "dataset", str, "dataset name (mnist1d, digits, cifar10, cifar100, glue:<task>)"),
    ("--data-root", "data_root", str, "folder with the dataset files (generated sets are cached)"),
    ("--download", "download", None, "let the dataset loader download missing files"),
    ("--label-noise", "label_noise", float, "fraction of train labels flipped (seeded by --seed)"),
    ("--train-subset", "train_subset", int, "use only the first N train examples"),
    ("--test-subset", "test_subset", int, "use only the first N test examples"),
    ("--model", "model", str, "model name (mlp, cnn1d, cnn2d, resnet18, wrn16_8, hf:<name>, ...)"),
    (
        "--init-from",
        "init_from",
        str,
        "start from the weights of a run folder or its checkpoint.pt (fine-tuning: optimizer, "
        "schedule, seed are this run's; same architecture required; in compare/sweep {seed} in "
        "the path names each seed's own source)",
    ),
    (
        "--optimizer",
        "optimizer",
        str,
        "optimizer name (`samkit optimizers` lists them with their options): a plain optimizer "
        "or a SAM-family rule on --base",
    ),
    ("--base", "base", str, "base optimizer of the SAM family"),
    ("--rho", "rho", float, "SAM perturbation radius"),
    ("--eta", "eta", float, "ASAM offset in T = |w| + eta"),
    ("--shards", "shards", int, "SAM shards per batch, each with its own perturbation (mSAM)"),
    ("--shard-size", "shard_size", int, "examples per shard instead of --shards (m-sharpness m)"),
    (
        "--micro-batch-size",
        "micro_batch_size",
        int,
        "memory: run each shard's passes in pieces of at most this many examples and accumulate "
        "(one perturbation per shard all the same; BatchNorm normalises each piece)",
    ),
    (
        "--execution",
        "execution",
        str,
        "how shards run: loop | vectorized (all at once, torch.func) | auto (vectorized on CUDA)",
    ),
    ("--sigma", "sigma", float, "Friendly-SAM: weight of the EMA subtracted from the gradient"),
    ("--lmbda", "lmbda", float, "Friendly-SAM: EMA decay of the full gradient"),
    ("--lr", "lr", float, "peak learning rate"),
    ("--momentum", "momentum", float, "SGD momentum"),
    ("--nesterov", "nesterov", None, "Nesterov momentum (SGD)"),
    ("--max-grad-norm", "max_grad_norm", float, "clip the (descent) gradient to this global norm"),
    (
        "--cadence",
        "cadence",
        str,
        "when the SAM family ascends: always | every:k=5[,reuse=looksam|perturbation] | "
        "random:p=0.3 | gradnorm | window:start=0.8 (any: ascent_fraction=0.5); "
        "see docs/optimizers.md",
    ),
    (
        "--weight-decay",
        "weight_decay",
        float,
        "weight decay of the base optimizer (decoupled for AdamW, L2 in the gradient for SGD)",
    ),
    ("--schedule", "schedule", str, "LR schedule: cosine | step | constant"),
    ("--schedule-unit", "schedule_unit", str, "update the LR every step or every epoch"),
    ("--warmup-epochs", "warmup_epochs", float, "linear LR warmup (epochs)"),
    ("--batch-size", "batch_size", int, "training batch size (the last partial batch is dropped)"),
    ("--epochs", "epochs", int, "training epochs"),
    ("--max-steps-per-epoch", "max_steps_per_epoch", int, "cap steps per epoch (quick runs)"),
    ("--label-smoothing", "label_smoothing", float, "label smoothing of the training loss"),
    ("--precision", "precision", str, "fp32 | bf16 (torch.autocast)"),
    ("--seed", "seed", int, "seed of model init, data order, augmentation, label noise"),
    ("--log-every-steps", "log_every_steps", int, "a steps.jsonl row every N steps (0: none)"),
    ("--eval-batch-size", "eval_batch_size", int, "batch size for evaluation"),
    (
        "--train-eval-examples",
        "train_eval_examples",
        int,
        "eval-mode train metrics on the first N train examples (default: all)",
    ),
    ("--device", "device", str, "torch device (cpu, cuda, cuda:1, mps)"),
    (
        "--threads",
        "threads",
        int,
        "torch threads per run (default: torch's own; in a study with --jobs N, cores / N)",
    ),
]
_CHOICES = {
    "optimizer": config.OPTIMIZERS,
    "base": config.BASES,
    "schedule": config.SCHEDULES,
    "schedule_unit": config.SCHEDULE_UNITS,
    "precision": config.PRECISIONS,
    "execution": config.EXECUTIONS,
}


def _add_config_flags(p: argparse.ArgumentParser, start: dict[str, Any] | None = None) -> None:
    """The run-setting flags; their help shows the values a run starts from: TrainConfig's
    defaults with ``start`` (e.g. the main job's settings for compare/sweep) on top."""
    from samkit.train import TrainConfig

    defaults = TrainConfig.from_dict(dict(start or {}))
    title = "run settings (also YAML keys of --config)"
    if start:
        title += "; defaults shown are the main job's, replaced by a --config file's"
    group = p.add_argument_group(title)
    group.add_argument("--config", type=Path, help="YAML file of run settings; flags override it")
    for flag, key, kind, text in _CONFIG_FLAGS:
        default = getattr(defaults, key)
        help_text = f"{text} (default: {default})"
        if kind is None:
            group.add_argument(flag, dest=key, action="store_true", default=None, help=help_text)
        else:
            group.add_argument(
                flag, dest=key, type=kind, default=None, choices=_CHOICES.get(key), help=help_text
            )
    group.add_argument(
        "--dataset-option",
        dest="dataset_options",
        action="append",
        metavar="KEY=VALUE",
        help="dataset-specific option, repeatable (e.g. max_length=64)",
    )
    group.add_argument(
        "--model-option",
        dest="model_options",
        action="append",
        metavar="KEY=VALUE",
        help="model-specific option, repeatable (e.g. width=64)",
    )
    group.add_argument(
        "--optimizer-option",
        dest="optimizer_options",
        action="append",
        metavar="KEY=VALUE",
        help="option of the optimizer's rule, repeatable (e.g. alpha=0.1 for gsam; "
        "`samkit optimizers` lists them)",
    )


def _key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SamkitError(f"{flag} expects KEY=VALUE, got {item!r}.")
        out[key.strip()] = yaml.safe_load(value)  # "64" -> 64, "true" -> True, "a" -> "a"
    return out


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run settings given as flags (not the ones left at their defaults)."""
    settings = {key: getattr(args, key) for _, key, _, _ in _CONFIG_FLAGS}
    settings = {k: v for k, v in settings.items() if v is not None}
    for key, flag in (
        ("dataset_options", "--dataset-option"),
        ("model_options", "--model-option"),
        ("optimizer_options", "--optimizer-option"),
    ):
        if getattr(args, key):
            settings[key] = _key_values(getattr(args, key), flag)
    return settings


def config_from_args(args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> Any:
    """TrainConfig defaults < ``defaults`` (unless a --config is given) < --config file < flags."""
    from samkit.train import TrainConfig, load_config

    base = load_config(args.config).to_dict() if args.config else dict(defaults or {})
    return TrainConfig.from_dict({**base, **given_settings(args)}).validated()


# ---- train ------------------------------------------------------------------------------------
def _train(args: argparse.Namespace) -> int:
    from samkit.train import train
    from samkit.train.distributed import is_main_process

    if args.resume is not None:
        if args.config is not None or args.out is not None or args.overwrite:
            raise SamkitError(
                "--resume DIR continues the run saved in DIR; it takes no --config, --out or "
                "--overwrite (only --epochs, --device, --execution, --quiet)."
            )
        summary = train(
            None, args.resume, resume=True, quiet=args.quiet, overrides=given_settings(args)
        )
        out = Path(args.resume)
    else:
        cfg = config_from_args(args)
        out = Path(args.out) if args.out else _default_out(cfg)
        summary = train(cfg, out, overwrite=args.overwrite, quiet=args.quiet)
    if not is_main_process():  # under torchrun: one summary line, from rank 0
        return 0
    print(
        f"{summary['label']}: test acc {summary['test_acc']:.4f}, test loss "
        f"{summary['test_loss']:.4f}, train loss {summary['train_loss']:.4f} after "
        f"{summary['epochs']} epochs, {summary['steps']} steps, {summary['passes']:g} passes, "
        f"{summary['wall_time']:.1f} s -> {out}"
    )
    return 0


def _default_out(cfg: Any) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{cfg.optimizer}-{cfg.dataset}-{cfg.model}-seed{cfg.seed}-{stamp}"
    return Path("runs") / name.replace(":", "_").replace("/", "_")


# ---- compare / sweep / report ------------------------------------------------------------------
def _sweep_start() -> dict[str, Any]:
    from samkit.study.compare import MAIN_JOB

    return {**MAIN_JOB, "optimizer": "sam"}  # a sweep starts from the main job with SAM



def _study_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seeds", type=int, nargs="+", help="seeds to run (default 0 1 2 for compare, 0 for sweep)"
    )
    p.add_argument("--out", type=Path, help="study folder; an existing one is continued")
    p.add_argument(
        "--jobs", type=int, default=1, help="runs in parallel processes (default 1: in sequence)"
    )
    p.add_argument(
        "--no-flatness",
        action="store_true",
        help="skip the Hessian eigenvalue and m-sharpness of each final model",
    )
    p.add_argument(
        "--flatness-examples",
        type=int,
        default=None,
        help="train examples the flatness is measured on (default 1000)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _compare(args: argparse.Namespace) -> int:
    from samkit.study import compare
    from samkit.study.compare import MAIN_JOB

    result = compare(
        config_from_args(args, MAIN_JOB),
        methods=args.methods,
        seeds=args.seeds,
        out=args.out,
        jobs=args.jobs,
        flatness=not args.no_flatness,
        flatness_examples=args.flatness_examples,
        baseline=args.baseline,
        reference=args.reference,
        quiet=args.quiet,
    )
    print(result.table)
    print(f"\nreport: {result.folder / 'report.md'}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from samkit.study import sweep

    result = sweep(
        config_from_args(args, _sweep_start()),
        grid=args.grid,
        seeds=args.seeds,
        out=args.out,
        jobs=args.jobs,
        flatness=args.flatness,
        flatness_examples=args.flatness_examples,
        baseline=args.baseline,
        quiet=args.quiet,
    )
    print(result.table)
    print(f"\nreport: {result.folder / 'report.md'}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from samkit.study.claims import plan, reproduce

    suite = "quick" if args.quick else "full"
    if args.list:
        claims, specs = plan(suite, args.claims)
        for c in claims:
            print(f"{c.id:18s} [{c.study}; tags: {', '.join(c.tags) or '-'}] {c.text}")
        print("\nstudies: " + ", ".join(f"{s.id} ({s.kind}, seeds {list(s.seeds)})" for s in specs))
        return 0
    out = args.out or Path("runs") / time.strftime(f"reproduce-{suite}-%Y%m%d-%H%M%S")
    table = reproduce(
        out,
        suite=suite,
        claim_ids=args.claims,
        jobs=args.jobs,
        threads=args.threads,
        quiet=args.quiet,
    )
    print(table)
    print(f"\nverdicts: {Path(out) / 'verdicts.md'}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from samkit.study import write_report

    table = write_report(args.folder)
    print(table)
    print(f"\nreport: {Path(args.folder) / 'report.md'}")
    return 0


def _optimizers(args: argparse.Namespace) -> int:
    from samkit.optim import registry

    print(optimizer_table(registry))
    return 0


def optimizer_table(registry: Any) -> str:
    """Every optimizer name with its passes per step, options (defaults) and source."""
    lines = ["name           passes  options (default)                       what it is"]
    for name in registry.names():
        e = registry.entry(name)
        options = {k: v for k, v in e.options.items() if k not in ("adaptive",)}
        shown = ", ".join(f"{k}={v}" for k, v in options.items()) or "-"
        lines.append(f"{name:<14} {e.passes_per_step():>6}  {shown:<39} {e.summary}")
    lines.append(
        "\nSet an option with --optimizer-option KEY=VALUE (eta, sigma, lmbda: --eta, --sigma, "
        "--lmbda), or in a study method: --methods gsam:alpha=0.2. Every rule also takes "
        "adaptive=true (ASAM's metric |w| + eta). multistep_sam takes steps + 1 passes."
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The ``samkit`` parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="samkit",
        description="Sharpness-aware minimization for PyTorch: train, compare, sweep, measure.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "train",
        help="train one run into its own folder",
        description="Train one run. Writes config.yaml, env.json, metrics.jsonl (one line per "
        "epoch), summary.json and checkpoint.pt into --out (see docs/harness.md). Ctrl-C saves a "
        "checkpoint; --resume DIR continues it bit-exactly (on CPU).",
    )
    _add_config_flags(p)
    p.add_argument("--out", type=Path, help="run folder (default runs/<optimizer>-...-<time>)")
    p.add_argument("--resume", type=Path, metavar="DIR", help="continue the run saved in DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    from samkit.study.compare import DEFAULT_METHODS, MAIN_JOB

    p = sub.add_parser(
        "compare",
        help="methods x seeds on one setup, with a report (no arguments: the MNIST-1D main job)",
        description="Train every method for every seed on one setup (each run in its own "
        "subfolder; completed runs are reused, interrupted ones resumed), measure the flatness of "
        "each final model, and write results.csv, report.md and plots. With no arguments: SGD, "
        "SAM, mSAM (4 shards) and Friendly-SAM on MNIST-1D over 3 seeds (a few minutes on CPU).",
    )
    _add_config_flags(p, MAIN_JOB)
    p.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        help="methods as NAME[:key=value,...], NAME an optimizer (e.g. sgd sam msam:shards=8 "
        f"fsam:rho=0.1,label=fsam-big); default: {' '.join(DEFAULT_METHODS)}",
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
    p.set_defaults(func=_compare)

    p = sub.add_parser(
        "sweep",
        help="a grid over one or two settings (default rho x shards), with a heatmap",
        description="Train every cell of a grid over one or two run settings (x seeds), as in "
        "the mSAM sensitivity study, and write results.csv, report.md and a heatmap.",
    )
    _add_config_flags(p, _sweep_start())
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
    p.set_defaults(func=_sweep)

    p = sub.add_parser(
        "reproduce",
        help="run the papers' claims as a suite of studies and write a verdict table",
        description="Run the studies that test the seed papers' claims (SAM vs SGD under label "
        "noise, SAM fine-tuning, m-sharpness, mSAM, Friendly-SAM, diagonal linear networks) and "
        "judge each claim from the 95% interval of its paired gap: reproduced, not reproduced or "
        "inconclusive. Writes verdicts.md, verdicts.csv and every study's report into --out; an "
        "existing suite folder is continued. --quick: 3 seeds and a small m-sharpness grid (8 minutes "
        "on a 2-core CPU with --jobs 2); without it, the full suite (5 seeds, about 20-30 minutes; "
        "see docs/report/).",
    )
    p.add_argument("--quick", action="store_true", help="the quick suite (3 seeds, small grid)")
    p.add_argument(
        "--claims",
        nargs="+",
        metavar="ID",
        help="only these claims (ids or tags such as noise, finetune, dln, demo; default: all)",
    )
    p.add_argument("--list", action="store_true", help="list the claims and studies, run nothing")
    p.add_argument("--out", type=Path, help="suite folder (default runs/reproduce-<suite>-<time>)")
    p.add_argument(
        "--jobs", type=int, default=1, help="runs in parallel processes (default 1: in sequence)"
    )
    p.add_argument(
        "--threads", type=int, help="torch threads per run (default: torch's; cores / --jobs)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
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

    p = sub.add_parser(
        "optimizers",
        help="list the optimizer names with their options and cost",
        description="Every name --optimizer and --methods accept: plain optimizers and SAM-family "
        "rules, with forward-backward passes per step and the rule's options.",
    )
    p.set_defaults(func=_optimizers)

    theory_cli.add_parsers(sub)
    cli_measure.add_parsers(sub)
    return parser


class _StderrLog(logging.Handler):
    """The ``samkit`` log as ``samkit: <message>`` lines on the current ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"samkit: {record.getMessage().removeprefix('samkit: ')}", file=sys.stderr)


def _show_log() -> None:
    # What the library logs at INFO and above (a cache folder it created, a fallback it took)
    # is part of what a command tells its user; Python users configure logging themselves.
    logger = logging.getLogger("samkit")
    if not any(isinstance(h, _StderrLog) for h in logger.handlers):
        logger.addHandler(_StderrLog())
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    _show_log()
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():  # restores the caller's warning display afterwards
        warnings.showwarning = _show_warning
        return _run(args)


def _show_warning(message: Any, category: Any, filename: str, lineno: int, *rest: Any) -> None:
    # samkit's own warnings read as advice ("warning: ..."), not as a source location
    if issubclass(category, SamkitWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno), end="", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from samkit.train import RunInterrupted

    try:
        return int(args.func(args) or 0)
    except SamkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunInterrupted as err:
        print(f"\n{err}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
