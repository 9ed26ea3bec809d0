"""The configuration of one training run: a dataclass with validation and YAML load/save.

A run is reproducible from its saved ``config.yaml`` alone: every field that changes the result is
here, and :func:`config_hash` fingerprints them (fields that only say *where* the run happens —
``data_root``, ``download``, ``device``, ``label`` — are left out of the hash).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from samkit import _atomic
from samkit._checks import check_choice, check_number, check_positive_int, check_seed
from samkit.errors import SamkitError
from samkit.optim import registry

# The names a run config takes come from the registry (samkit.optim.registry.KINDS).
OPTIMIZERS = tuple(registry.kind("optimizer").names())
BASES = tuple(registry.kind("base").names())
EXECUTIONS = tuple(registry.kind("execution").names())
SCOPES = tuple(registry.kind("scope").names())
SCHEDULES = ("cosine", "step", "constant")
SCHEDULE_UNITS = ("step", "epoch")
PRECISIONS = ("fp32", "bf16")

# Fields that say where or how a run is executed, not what is computed: left out of the hash so a
# run moved to another data folder (or labelled differently in a study) is still the same run.
# The shard execution is one of those: loop and vectorized compute the same update (to rounding).
# So are the threads a run uses, where an --init-from source lies (its identity, init_from_id, is
# hashed instead) and how often steps are logged.
_NOT_HASHED = (
    "data_root", "download", "device", "label", "quiet", "execution", "threads", "init_from",
    "log_every_steps", "memory_budget",
)  # fmt: skip
# Fields added after runs were first saved enter the hash only when they differ from these values,
# which reproduce the earlier behaviour: a run folder saved before a field existed keeps its hash
# (and stays resumable and reusable by a study).
_HASHED_WHEN_SET: dict[str, Any] = {
    "optimizer_options": {},
    "micro_batch_size": None,
    "max_grad_norm": None,
    "cadence": None,
    "init_from_id": None,
    "scope": None,
    "head_penalty": 0.0,
    "feature_penalty": 0.0,
}
# Rule options that are run settings of their own (flags --eta, --sigma, --lmbda), not optimizer_options.
_FLAT_OPTIONS = tuple(registry.RUN_SETTING_OPTIONS)


@dataclass
class TrainConfig:
    """Everything that defines one training run (``samkit train`` flags and YAML keys).

    The names ``optimizer``, ``base``, ``cadence``, ``scope`` and ``execution`` take are those of
    :mod:`samkit.optim.registry` (``samkit optimizers`` lists them, the API index too): ``sgd`` /
    ``adamw`` are plain base optimizers (one forward-backward pass per step); the others are
    SAM-family rules on the ``base`` optimizer (``msam``: ``shards`` defaults to 4 when neither
    ``shards`` nor ``shard_size`` is set). A rule's options are ``optimizer_options``
    (``{"alpha": 0.1}`` for GSAM), except those of
    :data:`~samkit.optim.registry.RUN_SETTING_OPTIONS` (``eta``, ``sigma``, ``lmbda``), which are
    settings of their own, with their rule's defaults.

    Example:
        >>> cfg = TrainConfig(optimizer="sam", rho=0.05, epochs=2).validated()
    """

    # data
    dataset: str = "mnist1d"
    data_root: str | None = None
    download: bool = False
    dataset_options: dict[str, Any] = field(default_factory=dict)
    label_noise: float = 0.0
    train_subset: int | None = None  # first N train examples only (quick runs, tests)
    test_subset: int | None = None
    # model
    model: str = "cnn1d"
    model_options: dict[str, Any] = field(default_factory=dict)
    # fine-tuning: start from another run's weights (a run folder or its checkpoint.pt); the
    # source's identity ("<config hash>:<weights digest>") is filled in when the run is planned
    init_from: str | None = None
    init_from_id: str | None = None
    # optimizer
    optimizer: str = "sgd"
    base: str = "sgd"
    rho: float = 0.05
    eta: float = registry.run_setting_default("eta")
    shards: int | None = None
    shard_size: int | None = None
    micro_batch_size: int | None = None  # memory: split each shard's passes (BatchNorm: per piece)
    execution: str = "auto"
    memory_budget: int | None = None  # bytes for the vectorized shards' stacked copies (None: default)
    sigma: float = registry.run_setting_default("sigma")
    lmbda: float = registry.run_setting_default("lmbda")
    optimizer_options: dict[str, Any] = field(default_factory=dict)  # the rule's other options
    cadence: str | None = None  # when to ascend, e.g. "every:k=5,reuse=looksam" (None: always)
    scope: str | None = None  # which parameters SAM perturbs: norm | last | weights (None: all)
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    max_grad_norm: float | None = None  # clip the descent gradient's global norm (None: no clipping)
    # schedule
    schedule: str = "cosine"
    schedule_unit: str = "step"
    warmup_epochs: float = 0.0
    step_milestones: list[float] = field(default_factory=lambda: [0.3, 0.6, 0.8])
    step_gamma: float = 0.2
    # training
    batch_size: int = 128
    epochs: int = 10
    max_steps_per_epoch: int | None = None  # cap on steps per epoch (quick runs, tests)
    label_smoothing: float = 0.0
    # L2 penalties of the training loss (Baek et al.'s cheap stand-in for SAM under label noise):
    # (head_penalty / 2) ||W_last||^2 and (feature_penalty / 2) mean ||features||^2, the features
    # being the last linear layer's input
    head_penalty: float = 0.0
    feature_penalty: float = 0.0
    precision: str = "fp32"
    seed: int = 0
    log_every_steps: int = 50  # a steps.jsonl row (and TensorBoard scalars) every N steps; 0: none
    # evaluation
    eval_batch_size: int = 1024
    train_eval_examples: int | None = None  # eval-mode train metrics on the first N (None: all)
    # execution (not hashed)
    device: str = "cpu"
    threads: int | None = None  # torch.set_num_threads for this run (None: torch's default)
    label: str | None = None  # a name for the run in a study (e.g. "msam"), for reports

    # ---- derived settings ------------------------------------------------------------------
    @property
    def is_sam(self) -> bool:
        """Whether the optimizer is a SAM-family rule on a base optimizer (not a plain one)."""
        return registry.entry(self.optimizer).is_sam

    def sam_shards(self) -> tuple[int | None, int | None]:
        """``(shards, shard_size)`` as passed to the SAM optimizer (the name's default shards)."""
        if self.shard_size is not None:
            return None, self.shard_size
        if self.shards is None:
            return registry.entry(self.optimizer).defaults.get("shards", 1), None
        return self.shards, None

    def rule_options(self) -> dict[str, Any]:
        """The options the optimizer's rule is built with (``eta``, ``sigma``, ``lmbda`` among them)."""
        options = registry.entry(self.optimizer).options
        flat = {k: getattr(self, k) for k in _FLAT_OPTIONS if k in options}
        return {**flat, **self.optimizer_options}

    @property
    def passes_per_step(self) -> int:
        """Forward-backward passes per step of this optimizer (1 plain, 2 SAM, k + 1 multi-step)."""
        return registry.entry(self.optimizer).passes_per_step(self.rule_options())

    def optimizer_settings(self) -> dict[str, Any]:
        """samkit's knobs and the rule's options the optimizer is built with (the base optimizer's
        settings aside): what :func:`samkit.create_optimizer` receives and checks. A plain optimizer
        gets only the SAM knobs a user set (which it refuses); its micro-batches and clipping are
        the training loop's."""
        if not self.is_sam:
            given = {"shards": None if self.shards == 1 else self.shards, "shard_size": self.shard_size,
                     "cadence": self.cadence}  # fmt: skip
            return {k: v for k, v in given.items() if v is not None}
        return {
            "rho": self.rho,
            "shards": self.shards,  # None: the name's default (msam: 4)
            "shard_size": self.shard_size,
            "micro_batch_size": self.micro_batch_size,
            "max_grad_norm": self.max_grad_norm,
            "cadence": self.cadence,
            "execution": self.execution,
            **({"memory_budget": self.memory_budget} if self.memory_budget is not None else {}),
            **self.rule_options(),
        }

    # ---- validation ---------------------------------------------------------------------------
    def validated(self) -> TrainConfig:
        """Return ``self`` after checking every field; :class:`SamkitError` on the first bad one."""
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("base", self.base, BASES)
        check_choice("execution", self.execution, EXECUTIONS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("schedule_unit", self.schedule_unit, SCHEDULE_UNITS)
        check_choice("precision", self.precision, PRECISIONS)
        if not isinstance(self.dataset, str) or not self.dataset:
            raise SamkitError("dataset must be a dataset name such as 'mnist1d' (see samkit.data).")
        if not isinstance(self.model, str) or not self.model:
            raise SamkitError("model must be a model name such as 'cnn1d' (see samkit.models).")
        for name in ("batch_size", "epochs", "eval_batch_size"):
            check_positive_int(name, getattr(self, name))
        for name in ("train_subset", "test_subset", "max_steps_per_epoch", "train_eval_examples",
                     "memory_budget"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        if self.threads is not None:
            check_positive_int("threads", self.threads)
        if self.train_subset is not None and self.train_subset < self.batch_size:
            raise SamkitError(
                f"train_subset={self.train_subset} is smaller than batch_size={self.batch_size}: "
                "no full batch to train on; lower --batch-size or use more data."
            )
        for name in ("init_from", "init_from_id"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise SamkitError(f"{name} must be a path (a string), got {getattr(self, name)!r}.")
        if self.micro_batch_size is not None:  # also the training loop's, for a plain optimizer
            check_positive_int("micro_batch_size", self.micro_batch_size)
        if self.max_grad_norm is not None:
            check_number("max_grad_norm", self.max_grad_norm, low=0.0, low_open=True)
        if self.log_every_steps != 0:
            check_positive_int("log_every_steps", self.log_every_steps)
        if self.cadence is not None and not isinstance(self.cadence, str):
            raise SamkitError(f"cadence must be a spec such as 'every:k=5', got {self.cadence!r}.")
        if self.scope is not None:
            check_choice("scope", self.scope, SCOPES)
            if not self.is_sam:
                raise SamkitError(
                    f"scope only applies to the SAM family (which parameters are perturbed), not "
                    f"optimizer={self.optimizer!r}."
                )
        for name in ("head_penalty", "feature_penalty"):
            check_number(name, getattr(self, name), low=0.0)
        for name in ("momentum", "weight_decay", "warmup_epochs"):
            check_number(name, getattr(self, name), low=0.0)
        check_number("lr", self.lr, low=0.0, low_open=True)
        check_number("label_smoothing", self.label_smoothing, low=0.0, high=1.0, high_open=True)
        check_number("label_noise", self.label_noise, low=0.0, high=1.0)
        check_number("step_gamma", self.step_gamma, low=0.0, low_open=True)
        if not isinstance(self.step_milestones, list) or not all(
            isinstance(m, (int, float)) and 0 < m < 1 for m in self.step_milestones
        ):
            raise SamkitError(
                f"step_milestones must be a list of fractions of training in (0, 1), "
                f"got {self.step_milestones!r} (e.g. [0.3, 0.6, 0.8])."
            )
        if self.warmup_epochs >= self.epochs:
            raise SamkitError(
                f"warmup_epochs={self.warmup_epochs} must be smaller than epochs={self.epochs}."
            )
        for name in ("dataset_options", "model_options", "optimizer_options"):
            if not isinstance(getattr(self, name), dict):
                raise SamkitError(f"{name} must be a mapping of option: value.")
        check_seed("seed", self.seed)
        if self.data_root is not None and (not isinstance(self.data_root, str) or not self.data_root):
            raise SamkitError(f"data_root must be a folder, got {self.data_root!r}.")
        check_number("rho", self.rho, low=0.0)
        for name, (owner, _) in registry.RUN_SETTING_OPTIONS.items():
            # set for every optimizer, so checked for every one: by the rule that defines it
            registry.check_settings(owner, **{name: getattr(self, name)})
        from samkit.data._registry import check_dataset
        from samkit.models._registry import check_model

        check_dataset(self.dataset, self.dataset_options)  # names and options, nothing loaded
        check_model(self.model, self.model_options)
        self._check_optimizer_options()
        return self

    def _check_optimizer_options(self) -> None:
        if not isinstance(self.optimizer_options, dict):
            raise SamkitError("optimizer_options must be a mapping of option: value.")
        options = registry.entry(self.optimizer).options
        flat = sorted(set(self.optimizer_options) & set(_FLAT_OPTIONS))
        if flat:
            raise SamkitError(
                f"{', '.join(flat)} are run settings of their own: set --{flat[0]} (YAML key "
                f"{flat[0]}), not an optimizer option."
            )
        unknown = sorted(set(self.optimizer_options) - set(options))
        if unknown:
            accepted = sorted(set(options) - set(_FLAT_OPTIONS))
            raise SamkitError(
                f"optimizer {self.optimizer!r} does not take option(s) {', '.join(unknown)}; it "
                f"accepts: {', '.join(accepted) or '(none)'}."
            )
        # The optimizer checks its own settings (the rule's options, shards, cadence, ...).
        registry.check_settings(self.optimizer, batch_size=self.batch_size, **self.optimizer_settings())

    # ---- conversion -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """All fields as plain JSON/YAML values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from a mapping; unknown keys are an error that lists the known ones."""
        if not isinstance(data, dict):
            raise SamkitError(
                f"{source}: expected a mapping of key: value, got {type(data).__name__}."
            )
        data = {k.replace("-", "_"): v for k, v in data.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SamkitError(
                f"{source}: unknown key(s) {', '.join(unknown)}; "
                f"known keys: {', '.join(sorted(known))}."
            )
        cfg = cls(**data)
        _coerce_numbers(cfg)
        return cfg

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes}).validated()


def _coerce_numbers(cfg: TrainConfig) -> None:
    # YAML reads "1e-3" as a string and "1" as an int; accept both where a float is meant.
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.type in ("float", "float | None") and isinstance(value, (int, str)) and not isinstance(
            value, bool
        ):
            try:
                setattr(cfg, f.name, float(value))
            except ValueError as err:
                raise SamkitError(f"{f.name} must be a number, got {value!r}.") from err


def config_hash(cfg: TrainConfig) -> str:
    """Short SHA-256 of the fields that change the result (see module doc)."""
    payload = {
        k: v
        for k, v in cfg.to_dict().items()
        if k not in _NOT_HASHED and not (k in _HASHED_WHEN_SET and v == _HASHED_WHEN_SET[k])
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a YAML config (keys as in :class:`TrainConfig`; ``-`` or ``_`` both accepted)."""
    path = Path(path)
    if not path.is_file():
        raise SamkitError(f"config file {path} does not exist.")
    try:
        text = path.read_text()
        data = yaml.safe_load(text)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        reason = " ".join(str(err).split())  # one line (YAML's spans several)
        raise SamkitError(f"config file {path} is not valid YAML: {reason}") from err
    if data is None:  # an empty file (a damaged run folder's, or a --config left blank)
        raise SamkitError(f"config file {path} is empty; the file was left as is.")
    return TrainConfig.from_dict(data, source=str(path)).validated()


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML, atomically (missing parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic.write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
