"""The run-setting flags every training command shares (``train``, ``compare``, ``sweep``).

Every flag is also a key of a YAML ``--config`` (``--weight-decay`` is ``weight_decay``); flags
given on the command line override the file, which overrides the defaults of
:class:`samkit.train.TrainConfig`. The names a flag takes (``--optimizer``, ``--base``,
``--cadence``, ``--scope``, ``--execution``), their help and the rule options with flags of their
own (``--eta``, ...) are written from the registry (:data:`samkit.optim.registry.KINDS`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from samkit import spec
from samkit.optim import registry
from samkit.train import config


def _names_help(kind: str) -> str:
    """``a: what a is | b: what b is``: a kind's names with their summaries."""
    names = registry.kind(kind)
    return " | ".join(f"{n}: {names.summary(n)}" for n in names.names())


def _cadence_help() -> str:
    names = registry.kind("cadence")
    shared = "ascent_fraction"  # every cadence takes it
    shown = []
    for name in names.names():
        if name in names.presets():
            shown.append(f"{name} (= {names.presets()[name]})")
            continue
        options = [k for k in names.options(name) if k != shared]
        shown.append(f"{name}:{','.join(options)}" if options else name)
    return (
        f"when the SAM family ascends, a spec name:key=value,...: {' | '.join(shown)}; every one also "
        f"takes {shared}; e.g. every:k=5,reuse=looksam, in a study method "
        "sam:cadence=(every:k=5,reuse=looksam); see docs/optimizers.md"
    )


def _rule_option_flags() -> list[tuple[str, str, Any, str]]:
    """The rule options a run config holds as settings of their own: a flag each."""
    return [(f"--{name}", name, float, text) for name, (_, text) in registry.RUN_SETTING_OPTIONS.items()]


# (flag, config key, type, help). type None: a boolean switch. Defaults live in TrainConfig and
# are shown in the help; argparse defaults stay None so we know which flags were given.
CONFIG_FLAGS: list[tuple[str, str, Any, str]] = [
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
    ("--base", "base", str, f"base optimizer of the SAM family ({_names_help('base')})"),
    ("--rho", "rho", float, "SAM perturbation radius"),
    *_rule_option_flags(),
    ("--shards", "shards", int, "SAM shards per batch, each with its own perturbation (mSAM)"),
    ("--shard-size", "shard_size", int, "examples per shard instead of --shards (m-sharpness m)"),
    ("--scope", "scope", str, f"which parameters SAM perturbs: {_names_help('scope')} (default: all)"),
    (
        "--micro-batch-size",
        "micro_batch_size",
        int,
        "memory: run each shard's passes in pieces of at most this many examples and accumulate "
        "(one perturbation per shard all the same; BatchNorm normalises each piece)",
    ),
    ("--execution", "execution", str, f"how shards run: {_names_help('execution')}"),
    (
        "--memory-budget",
        "memory_budget",
        int,
        "bytes the vectorized shards' stacked copies may take: they run in chunks that fit, auto "
        "loops where fewer than 4 (CUDA: 2) would (default: half the free CUDA memory; on a CPU "
        "max(256 MiB, 4 x the weights))",
    ),
    ("--lr", "lr", float, "peak learning rate"),
    ("--momentum", "momentum", float, "SGD momentum"),
    ("--nesterov", "nesterov", None, "Nesterov momentum (SGD)"),
    ("--max-grad-norm", "max_grad_norm", float, "clip the (descent) gradient to this global norm"),
    ("--cadence", "cadence", str, _cadence_help()),
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
    ("--head-penalty", "head_penalty", float,
     "L2 penalty (lambda/2)||W||^2 on the last linear layer (Baek et al.'s cheap stand-in for SAM)"),
    ("--feature-penalty", "feature_penalty", float,
     "L2 penalty (lambda/2) mean ||features||^2 on the last linear layer's input"),
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
CHOICES = {
    **{kind: tuple(names.names()) for kind, names in registry.KINDS.items() if kind != "cadence"},
    "schedule": config.SCHEDULES,
    "schedule_unit": config.SCHEDULE_UNITS,
    "precision": config.PRECISIONS,
}
# the options given as repeatable KEY=VALUE flags: (config key, flag, help)
_OPTION_FLAGS = (
    ("dataset_options", "--dataset-option",
     "dataset-specific option, repeatable (e.g. max_length=64)"),
    ("model_options", "--model-option", "model-specific option, repeatable (e.g. width=64)"),
    ("optimizer_options", "--optimizer-option",
     "option of the optimizer's rule, repeatable (e.g. alpha=0.1 for gsam; "
     "`samkit optimizers` lists them)"),
)  # fmt: skip


def number(kind: type = float, low: float | None = None, *, low_open: bool = False,
           high: float | None = None) -> Callable[[str], Any]:
    """An argparse ``type``: a finite ``kind`` (``int`` or ``float``) in ``[low, high)`` (``(low``
    with ``low_open``), refused while the command line is parsed, before anything is written."""
    what = "an integer" if kind is int else "a finite number"
    what += "" if low is None else f" {'>' if low_open else '>='} {low:g}"
    what += "" if high is None else f" and < {high:g}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (low is None or value > low or (value == low and not low_open))
                and (high is None or value < high)):  # fmt: skip
            raise argparse.ArgumentTypeError(f"expects {what}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


positive_int = number(int, 1)
seed_int = number(int, 0, high=2**63)  # what torch's generators take


def add_config_flags(p: argparse.ArgumentParser, start: dict[str, Any] | None = None) -> None:
    """The run-setting flags; their help shows the values a run starts from: TrainConfig's
    defaults with ``start`` (e.g. the main job's settings for compare/sweep) on top."""
    from samkit.train import TrainConfig

    defaults = TrainConfig.from_dict(dict(start or {}))
    title = "run settings (also YAML keys of --config)"
    if start:
        title += "; defaults shown are the main job's, replaced by a --config file's"
    group = p.add_argument_group(title)
    group.add_argument("--config", type=Path, help="YAML file of run settings; flags override it")
    for flag, key, kind, text in CONFIG_FLAGS:
        default = getattr(defaults, key)
        help_text = text if "(default" in text else f"{text} (default: {default})"
        if kind is None:
            group.add_argument(flag, dest=key, action="store_true", default=None, help=help_text)
        else:
            group.add_argument(
                flag, dest=key, type=kind, default=None, choices=CHOICES.get(key), help=help_text
            )
    for key, flag, text in _OPTION_FLAGS:
        group.add_argument(flag, dest=key, action="append", metavar="KEY=VALUE", help=text)


def _key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    pairs = (spec.key_value(item, flag) for item in items or [])
    return {key: spec.scalar(value) for key, value in pairs}  # "64" -> 64, "true" -> True


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run settings given as flags (not the ones left at their defaults)."""
    settings = {key: getattr(args, key) for _, key, _, _ in CONFIG_FLAGS}
    settings = {k: v for k, v in settings.items() if v is not None}
    for key, flag, _ in _OPTION_FLAGS:
        if getattr(args, key):
            settings[key] = _key_values(getattr(args, key), flag)
    return settings


def config_from_args(args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> Any:
    """TrainConfig defaults < ``defaults`` (unless a --config is given) < --config file < flags."""
    from samkit.data._registry import check_root
    from samkit.train import TrainConfig, load_config
    from samkit.train.setup import device_of

    base = load_config(args.config).to_dict() if args.config else dict(defaults or {})
    cfg = TrainConfig.from_dict({**base, **given_settings(args)}).validated()
    device_of(cfg.device)  # here and now, before a run or study folder is made
    if cfg.data_root is not None:
        check_root(Path(cfg.data_root))
    return cfg
