"""``samkit compare``: methods x seeds on one setup, then a report made from the run files.

With no arguments it is the project's main job: SGD, SAM, mSAM (4 shards) and Friendly-SAM on
MNIST-1D with a small 1-D CNN over 3 seeds, a few minutes on a 2-core CPU
(:data:`samkit.study.presets.MAIN_JOB`; the same settings as ``configs/mnist1d.yaml``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.study.flatness import flatness_settings
from samkit.study.launch import resolve
from samkit.study.records import base_record, default_folder
from samkit.study.status import pending_table
from samkit.study.study_report import write_study_report
from samkit.study.train_runs import Launcher, StudyResult, plan_config, run_study
from samkit.train import TrainConfig, config_hash

DEFAULT_METHODS = ("sgd", "sam", "msam:shards=4", "fsam:rho=0.1,lmbda=0.6")
DEFAULT_SEEDS = (0, 1, 2)


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """``"msam:shards=8,rho=0.1"`` -> ``("msam", {"optimizer": "msam", "shards": 8, "rho": 0.1})``.

    A method is a spec of :mod:`samkit.spec`: the optimizer's name, then ``key=value`` options. The
    label is the name unless ``label=...`` is given. Values are read as YAML scalars (``8`` an int,
    ``0.1`` a float, ``true`` a bool). A key is a run setting (``rho``, ``shards``, ``lr``, ...) or
    an option of the optimizer's rule (``gsam:alpha=0.2``), which goes to ``optimizer_options``. A
    nested spec with several options is written in parentheses:
    ``sam:cadence=(every:k=5,reuse=looksam),label=look``.
    """
    from dataclasses import fields

    from samkit import spec as specs
    from samkit.optim import registry
    from samkit.train.config import OPTIMIZERS

    parsed = specs.parse(spec, "method")
    name = parsed.name
    if name not in OPTIMIZERS:
        raise SamkitError(
            f"method {spec!r}: {name!r} is not an optimizer; use one of {', '.join(OPTIMIZERS)} "
            "optionally followed by :key=value,... (e.g. msam:shards=8)."
        )
    settings = {f.name for f in fields(TrainConfig)}
    options = registry.entry(name).options
    overrides: dict[str, Any] = {"optimizer": name}
    rule_options: dict[str, Any] = {}
    label = name
    for key, value in parsed.options.items():
        if key == "label":
            label = value
        elif key in settings:
            overrides[key] = specs.scalar(value)
        elif key in options:
            rule_options[key] = specs.scalar(value)
        else:
            raise SamkitError(
                f"method {spec!r}: {key!r} is neither a run setting nor an option of {name!r} "
                f"(its options: {', '.join(sorted(options)) or 'none'})."
            )
    if rule_options:
        overrides["optimizer_options"] = rule_options
    if not re.fullmatch(r"[A-Za-z0-9_.=+-]+", label):
        raise SamkitError(f"method label {label!r} must be letters, digits and _ . = + - only.")
    return label, overrides


def compare(
    base: TrainConfig,
    *,
    methods: list[str] | tuple[str, ...] | None = None,
    seeds: list[int] | tuple[int, ...] | None = None,
    out: Path | str | None = None,
    jobs: int = 1,
    flatness: bool = True,
    flatness_examples: int | None = None,
    baseline: str | None = None,
    reference: str | None = None,
    quiet: bool = False,
    launcher: str | Launcher = "local",
) -> StudyResult:
    """Train every method for every seed into ``out/<label>-seed<k>`` and write the report.

    ``baseline``: the method label the report's paired gaps are taken to (default: ``sgd`` if it
    is a method, else the first). ``reference``: a method whose gain over the baseline the others
    are measured against — the report then adds a cost-and-benefit table and ``gain_vs_cost.png``
    (share of the reference's gain kept, per pass spent). ``base.init_from`` (or a method's
    ``init_from=``) may contain ``{seed}``: each seed then starts from that seed's source run
    (fine-tuning studies). ``launcher``: where the runs run — ``"local"`` (``jobs`` processes of
    this machine), ``"slurm"`` or a :class:`~samkit.study.launch.SlurmLauncher` with its options
    (jobs of a SLURM cluster, through submitit); a launcher that does not wait returns the runs'
    progress instead of the report table.

    Example:
        >>> from samkit.study.presets import MAIN_JOB
        >>> compare(TrainConfig(**MAIN_JOB), methods=["sgd", "sam"], seeds=[0, 1])
    """
    launcher_ = resolve(launcher, jobs)
    methods = list(methods or DEFAULT_METHODS)
    seeds = list(DEFAULT_SEEDS if seeds is None else seeds)
    if not seeds:
        raise SamkitError("--seeds needs at least one seed.")
    parsed = [parse_method(m) for m in methods]
    labels = [label for label, _ in parsed]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise SamkitError(
            f"methods {', '.join(dupes)} appear more than once; give each a label= "
            "(e.g. sam:rho=0.1,label=sam-0.1)."
        )
    for flag, value in (("--baseline", baseline), ("--reference", reference)):
        if value is not None and value not in labels:
            raise SamkitError(
                f"{flag} {value!r} is not one of the methods' labels ({', '.join(labels)})."
            )
    folder = Path(out) if out is not None else default_folder("compare", base)
    plan, runs = [], []
    for label, overrides in parsed:
        for seed in seeds:
            folder_name = f"{label}-seed{seed}"
            cfg = plan_config(base, overrides, seed, label, folder / folder_name)
            runs.append(
                {
                    "dir": folder_name,
                    "label": label,
                    "seed": seed,
                    "cell": overrides,
                    "config_hash": config_hash(cfg),
                }
            )
            plan.append(cfg)
    fs = flatness_settings(flatness, flatness_examples)
    record = base_record("compare", base, seeds, fs)
    record.update(methods=methods, labels=labels, runs=runs, baseline=baseline)
    if reference is not None:
        record["reference"] = reference
    banner = f"compare: {len(plan)} runs ({', '.join(labels)} x seeds {seeds})"
    done = run_study(folder, record, plan, launcher=launcher_, quiet=quiet, flatness=fs, banner=banner)
    if not done:
        return StudyResult(folder, pending_table(folder), done=False)
    return StudyResult(folder, write_study_report(folder))
