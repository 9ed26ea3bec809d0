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
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from samkit.errors import SamkitError

OPTIMIZERS = ("sgd", "adamw", "sam", "asam", "msam", "fsam")
BASES = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
SCHEDULE_UNITS = ("step", "epoch")
PRECISIONS = ("fp32", "bf16")
EXECUTIONS = ("auto", "loop", "vectorized")
MSAM_DEFAULT_SHARDS = 4

# Fields that say where or how a run is executed, not what is computed: left out of the hash so a
# run moved to another data folder (or labelled differently in a study) is still the same run.
# The shard execution is one of those: loop and vectorized compute the same update (to rounding).
# So are the threads a run uses, and where an --init-from source lies (its identity, init_from_id,
# is hashed instead).
_NOT_HASHED = (
    "data_root", "download", "device", "label", "quiet", "execution", "threads", "init_from"
)  # fmt: skip


@dataclass
class TrainConfig:
    """Everything that defines one training run (``samkit train`` flags and YAML keys).

    Optimizer names: ``sgd`` / ``adamw`` are the plain base optimizers (one forward-backward pass
    per step); ``sam`` is SAM (Foret et al.), ``asam`` SAM with ``adaptive=True`` (Kwon et al.),
    ``msam`` SAM with m-sharpness shards (``shards`` defaults to 4 when neither ``shards`` nor
    ``shard_size`` is set), ``fsam`` Friendly-SAM (Li et al.) — all on the ``base`` optimizer, two
    passes per step. ``sam`` with ``shards > 1`` is the same as ``msam``.

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
    eta: float = 0.0
    shards: int | None = None
    shard_size: int | None = None
    execution: str = "auto"
    sigma: float = 1.0
    lmbda: float = 0.9
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
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
    precision: str = "fp32"
    seed: int = 0
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
        """Whether the optimizer is a SAM variant (two passes per step)."""
        return self.optimizer in ("sam", "asam", "msam", "fsam")

    def sam_shards(self) -> tuple[int | None, int | None]:
        """``(shards, shard_size)`` as passed to the SAM optimizer."""
        if self.optimizer == "msam" and self.shards is None and self.shard_size is None:
            return MSAM_DEFAULT_SHARDS, None
        if self.shard_size is not None:
            return None, self.shard_size
        return (1 if self.shards is None else self.shards), None

    # ---- validation ---------------------------------------------------------------------------
    def validated(self) -> TrainConfig:
        """Return ``self`` after checking every field; :class:`SamkitError` on the first bad one."""
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("base", self.base, BASES)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("schedule_unit", self.schedule_unit, SCHEDULE_UNITS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("execution", self.execution, EXECUTIONS)
        if not isinstance(self.dataset, str) or not self.dataset:
            raise SamkitError("dataset must be a dataset name such as 'mnist1d' (see samkit.data).")
        if not isinstance(self.model, str) or not self.model:
            raise SamkitError("model must be a model name such as 'cnn1d' (see samkit.models).")
        for name in ("batch_size", "epochs", "eval_batch_size"):
            _positive_int(name, getattr(self, name))
        for name in ("train_subset", "test_subset", "max_steps_per_epoch", "train_eval_examples"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        for name in ("shards", "shard_size", "threads"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        for name in ("init_from", "init_from_id"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise SamkitError(f"{name} must be a path (a string), got {getattr(self, name)!r}.")
        if self.shards is not None and self.shard_size is not None:
            raise SamkitError(
                f"shards={self.shards} and shard_size={self.shard_size} are both set; give one: "
                "shards (number of shards per batch) or shard_size (examples per shard)."
            )
        if not self.is_sam and (self.shards not in (None, 1) or self.shard_size is not None):
            raise SamkitError(
                f"shards/shard_size only apply to SAM variants, not optimizer={self.optimizer!r}; "
                "use --optimizer msam (or sam/asam/fsam) to split batches into shards."
            )
        if self.shards is not None and self.shards > self.batch_size:
            raise SamkitError(
                f"shards={self.shards} is larger than batch_size={self.batch_size}: every shard "
                "needs at least one example; use fewer shards or a larger batch."
            )
        if self.shard_size is not None and self.shard_size > self.batch_size:
            raise SamkitError(
                f"shard_size={self.shard_size} is larger than batch_size={self.batch_size}; "
                "a shard is a part of a batch."
            )
        for name in ("rho", "eta", "sigma", "momentum", "weight_decay", "warmup_epochs"):
            _number(name, getattr(self, name), low=0.0)
        _number("lr", self.lr, low=0.0, strict=True)
        _number("lmbda", self.lmbda, low=0.0, high=1.0, high_open=True)  # as FriendlySAM checks
        _number("label_smoothing", self.label_smoothing, low=0.0, high=1.0, high_open=True)
        _number("label_noise", self.label_noise, low=0.0, high=1.0)
        _number("step_gamma", self.step_gamma, low=0.0, strict=True)
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
        for name in ("dataset_options", "model_options"):
            if not isinstance(getattr(self, name), dict):
                raise SamkitError(f"{name} must be a mapping of option: value.")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise SamkitError(f"seed must be a non-negative integer, got {self.seed!r}.")
        return self

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
        if f.type in ("float",) and isinstance(value, (int, str)) and not isinstance(value, bool):
            try:
                setattr(cfg, f.name, float(value))
            except ValueError as err:
                raise SamkitError(f"{f.name} must be a number, got {value!r}.") from err


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SamkitError(f"{name} must be one of {', '.join(choices)}; got {value!r}.")


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SamkitError(f"{name} must be a positive integer, got {value!r}.")


def _number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    strict: bool = False,
    high_open: bool = False,
) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        raise SamkitError(f"{name} must be a number, got {value!r}.")
    if low is not None and (value < low or (strict and value == low)):
        bound = ">" if strict else ">="
        raise SamkitError(f"{name} must be {bound} {low}, got {value}.")
    if high is not None and (value > high or (high_open and value == high)):
        bound = "<" if high_open else "<="
        raise SamkitError(f"{name} must be {bound} {high}, got {value}.")


# Fields added after runs were first saved: hashed only when set, so every earlier run keeps its
# hash (and stays resumable and reusable by a study).
_HASHED_WHEN_SET = ("init_from_id",)


def config_hash(cfg: TrainConfig) -> str:
    """Short SHA-256 of the fields that change the result (see module doc)."""
    payload = {
        k: v
        for k, v in cfg.to_dict().items()
        if k not in _NOT_HASHED and not (k in _HASHED_WHEN_SET and v is None)
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a YAML config (keys as in :class:`TrainConfig`; ``-`` or ``_`` both accepted)."""
    path = Path(path)
    if not path.is_file():
        raise SamkitError(f"config file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SamkitError(f"config file {path} is not valid YAML: {err}") from err
    return TrainConfig.from_dict(data, source=str(path)).validated()


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML, atomically."""
    write_text_atomic(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace``: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
