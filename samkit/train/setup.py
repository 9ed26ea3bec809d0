"""Build what a run needs from its config: data, model, optimizer, LR schedule, loss.

Shared by the training loop and :func:`samkit.train.load_run`, so a saved run is rebuilt exactly as
it was trained.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from samkit.errors import SamkitError
from samkit.train.config import TrainConfig

Batch = tuple[Any, Tensor]


def load_data(cfg: TrainConfig, device: torch.device) -> Any:
    """The run's dataset (label noise seeded by ``cfg.seed``), subset as configured."""
    from samkit.data import load_dataset

    try:
        ds = load_dataset(
            cfg.dataset,
            root=cfg.data_root,
            download=cfg.download,
            label_noise=cfg.label_noise,
            seed=cfg.seed,
            **cfg.dataset_options,
        )
    except SamkitError:
        raise
    except (FileNotFoundError, OSError) as err:
        raise SamkitError(
            f"dataset {cfg.dataset!r} could not be loaded from data_root={cfg.data_root!r}: {err}. "
            "Point --data-root at the data, or pass --download where the dataset supports it."
        ) from err
    if cfg.train_subset is not None and cfg.train_subset < len(ds.train):
        ds.train = ds.train.subset(torch.arange(cfg.train_subset))
    if cfg.test_subset is not None and cfg.test_subset < len(ds.test):
        ds.test = ds.test.subset(torch.arange(cfg.test_subset))
    return ds.to(device)


def device_of(name: str) -> torch.device:
    """The torch device ``name`` names, refused (:class:`SamkitError`) when it is not one or is
    not here (no CUDA, no such GPU, no MPS)."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise SamkitError(f"device {name!r} is not a valid torch device ({err}).") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SamkitError(
            f"device {name!r} was asked for but CUDA is not available; use --device cpu."
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SamkitError(
            f"device {name!r}: there is no such GPU here ({torch.cuda.device_count()} visible); "
            "use --device cuda:0 (or cpu)."
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SamkitError(
            f"device {name!r} was asked for but MPS is not available; use --device cpu."
        )
    return device


def build_model(cfg: TrainConfig, ds: Any, device: torch.device) -> nn.Module:
    """The run's model, initialised from ``cfg.seed`` (the global torch RNG is seeded here)."""
    from samkit.models import build_model as _build

    torch.manual_seed(cfg.seed)
    try:
        model = _build(
            cfg.model,
            num_classes=ds.num_classes,
            input_shape=tuple(ds.input_shape),
            **cfg.model_options,
        )
    except OSError as err:  # weights fetched by name: not cached here, and no network
        raise SamkitError(_model_not_loaded(cfg.model, err)) from err
    return model.to(device)


def _model_not_loaded(name: str, err: OSError) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if name.startswith("hf:"):
        return (
            f"model {name!r} could not be loaded: it is not in the local Hugging Face cache and "
            f"the hub could not be reached ({first}). Run once with network access (the files "
            "are then cached under ~/.cache/huggingface, or $HF_HOME), copy that cache to this "
            "machine, or give a local folder: --model hf:/path/to/model. For an offline smoke "
            "run, --model hf:tiny-random-config needs no files."
        )
    return f"model {name!r} could not be loaded ({type(err).__name__}: {first})."


def build_optimizer(
    cfg: TrainConfig, model: nn.Module, total_steps: int | None = None
) -> torch.optim.Optimizer:
    """The configured optimizer by its registry name: a plain base optimizer, or a SAM-family rule
    wrapping the ``base`` optimizer (see :func:`samkit.create_optimizer`), with its cadence
    (told ``total_steps`` when it is defined by fractions of training)."""
    from samkit.optim.registry import create_optimizer

    settings: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    base = cfg.base if cfg.is_sam else cfg.optimizer
    if base == "sgd":
        settings.update(momentum=cfg.momentum, nesterov=cfg.nesterov)
    params: Any = [p for p in model.parameters() if p.requires_grad]
    if not cfg.is_sam:
        return create_optimizer(cfg.optimizer, params, **settings)
    if cfg.scope is not None:  # a name of the registry's scopes: its samkit.scope helper
        from samkit.optim import registry

        params = registry.kind("scope").get(cfg.scope)(model)
    opt = create_optimizer(cfg.optimizer, params, base=cfg.base, **cfg.optimizer_settings(), **settings)
    cadence = getattr(opt, "cadence", None)
    if cadence is not None and cadence.needs_total_steps() and cadence.total_steps is None:
        if total_steps is None:
            raise SamkitError(f"cadence {cfg.cadence!r} needs the number of training steps.")
        cadence.set_total_steps(total_steps)
    return opt


# Smallest SAM shard for which BatchNorm's per-shard statistics are a fair stand-in for the batch's
# (docs/data_models.md: "norm"); smaller shards get a warning. Measured on MNIST-1D's cnn1d at
# rho = 0 (where SAM with shards differs from SGD only through the per-shard statistics).
BATCHNORM_MIN_SHARD = 16


def shard_examples(cfg: TrainConfig, world_size: int = 1) -> int | None:
    """Examples in each SAM shard of a step (the "m" of m-sharpness); ``None`` for plain optimizers.

    Under torchrun each rank perturbs its own part of the batch, so a shard is at most
    ``batch_size / world_size`` examples.
    """
    if not cfg.is_sam:
        return None
    shards, shard_size = cfg.sam_shards()
    local = cfg.batch_size // max(1, world_size)
    return min(local, shard_size) if shard_size is not None else max(1, local // (shards or 1))


def batchnorm_shard_warning(cfg: TrainConfig, model: nn.Module, world_size: int = 1) -> str | None:
    """A warning when a BatchNorm model trains with SAM shards below :data:`BATCHNORM_MIN_SHARD`."""
    m = shard_examples(cfg, world_size)
    if m is None or m >= BATCHNORM_MIN_SHARD:
        return None
    if not any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in model.modules()):
        return None
    return (
        f"SAM shards of {m} example(s) with a BatchNorm model ({cfg.model}): each shard's pass "
        f"normalises with the statistics of those {m} example(s) only, and the running statistics "
        "used at evaluation become an average of per-shard statistics, which a model trained on "
        f"them does not match (1-SAM can fall to chance accuracy even at rho = 0). Use shards of at "
        f"least {BATCHNORM_MIN_SHARD} examples, or a per-example normalisation: "
        "--model-option norm=group (or norm=layer)."
    )


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """``factor(t)``: the LR multiplier after ``t`` scheduler steps (steps or epochs, per config).

    Cosine decays to 0 over all of training; ``step`` multiplies by ``step_gamma`` at each
    milestone (fractions of training); linear warmup over ``warmup_epochs`` comes first.
    """
    per_epoch = steps_per_epoch if cfg.schedule_unit == "step" else 1
    total = cfg.epochs * per_epoch
    warmup = cfg.warmup_epochs * per_epoch
    milestones = [m * total for m in cfg.step_milestones]

    def factor(t: int) -> float:
        if warmup > 0 and t < warmup:
            return (t + 1) / (warmup + 1)
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "step":
            return cfg.step_gamma ** sum(t >= m for m in milestones)
        progress = (t - warmup) / max(1.0, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_loss_fn(label_smoothing: float = 0.0) -> Callable[[nn.Module, Batch], Tensor]:
    """``loss_fn(model, (inputs, targets))``: mean cross-entropy (the training objective)."""

    def loss_fn(model: nn.Module, batch: Batch) -> Tensor:
        inputs, targets = batch
        logits = model(inputs)  # in at least float32 (bf16 under autocast; float64 stays)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)

    return loss_fn


def training_loss(cfg: TrainConfig) -> Callable[[nn.Module, Batch], Tensor]:
    r"""The run's training objective: cross-entropy (with label smoothing), plus the L2 penalties of
    Baek, Kolter & Raghunathan ("Why is SAM robust to label noise?", ICLR 2024), who find SAM's gain
    under label noise to come from its effect on the network Jacobian, which acts like penalties on
    the last layer's weights and the last hidden activations:

    .. math:: L = \mathrm{CE} + \tfrac{\lambda_W}{2} \lVert W_\text{last} \rVert^2
        + \tfrac{\lambda_\phi}{2}\, \tfrac1n \textstyle\sum_i \lVert \phi(x_i) \rVert^2

    with :math:`\phi(x)` the input of the model's last ``nn.Linear`` (``head_penalty`` is
    :math:`\lambda_W`, ``feature_penalty`` :math:`\lambda_\phi`; our reading of their regularised
    SGD, one pass per step). Evaluation uses plain cross-entropy."""
    base = make_loss_fn(cfg.label_smoothing)
    head, features = cfg.head_penalty, cfg.feature_penalty
    if not head and not features:
        return base

    def loss_fn(model: nn.Module, batch: Batch) -> Tensor:
        layer = last_linear(model)
        seen: list[Tensor] = []
        handle = layer.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        try:
            loss = base(model, batch)
        finally:
            handle.remove()
        dtype = loss.dtype  # (at least float32)
        if head:
            loss = loss + 0.5 * head * layer.weight.to(dtype).square().sum()
        if features:
            phi = seen[-1].to(dtype).flatten(1)
            loss = loss + 0.5 * features * phi.square().sum(dim=1).mean()
        return loss

    return loss_fn


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` in registration order (its head), found once per model."""
    found = getattr(model, "_samkit_last_linear", None)
    if found is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise SamkitError(
                "head_penalty / feature_penalty need a model with an nn.Linear head; this one has none."
            )
        found = linears[-1]
        object.__setattr__(model, "_samkit_last_linear", found)  # not a submodule: no state_dict entry
    return found


def error_fn(model: nn.Module, batch: Batch) -> Tensor:
    """Fraction of ``batch`` the model gets wrong (top-1)."""
    inputs, targets = batch
    return (model(inputs).argmax(dim=-1) != targets).float().mean()


def train_step(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Batch], Tensor],
    batch: Batch,
    *,
    micro_batch_size: int | None = None,
    max_grad_norm: float | None = None,
) -> Tensor:
    """One update for any optimizer; returns the detached mean loss.

    SAM-family optimizers do their own step (micro-batches and clipping are their settings). A plain
    base optimizer takes the same route with no ascent (:class:`samkit.optim.plain.PlainStep`):
    zero_grad, forward/backward accumulated over micro-batches of at most ``micro_batch_size``
    examples (each weighted by its share of the batch), clipping to ``max_grad_norm``, step, and
    the same counters and step record.
    """
    step = getattr(optimizer, "train_step", None)
    if step is not None:
        return step(model, loss_fn, batch)
    from samkit.optim.plain import plain_step

    return plain_step(optimizer, micro_batch_size, max_grad_norm).train_step(model, loss_fn, batch)


def passes_per_step(optimizer: torch.optim.Optimizer) -> int:
    """Forward-backward passes of a full step (1 for plain optimizers, 2 for SAM, ...)."""
    return int(getattr(optimizer, "passes_per_step", 1))


def step_counters(optimizer: torch.optim.Optimizer, micro_batch_size: int | None = None,
                  max_grad_norm: float | None = None) -> Any:
    """The :class:`~samkit.optim.update.Counters` of the steps :func:`train_step` takes with
    ``optimizer`` (steps, passes, examples): a SAM-family optimizer's own, a plain one's
    :class:`~samkit.optim.plain.PlainStep`'s — one set of counters for either."""
    counts = getattr(optimizer, "counts", None)
    if counts is not None:
        return counts
    from samkit.optim.plain import plain_step

    return plain_step(optimizer, micro_batch_size, max_grad_norm).counts


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: Any,
    *,
    batch_size: int,
    max_examples: int | None = None,
    autocast: Any = None,
) -> dict[str, float]:
    """Eval-mode mean cross-entropy (no label smoothing) and accuracy over a split."""
    was_training = model.training
    model.eval()
    n = len(split) if max_examples is None else min(max_examples, len(split))
    total_loss = torch.zeros((), dtype=torch.float64)
    correct = 0
    try:
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n))
            inputs, targets = split.batch(idx)
            with autocast() if autocast else contextlib.nullcontext():
                logits = model(inputs).float()
            total_loss += F.cross_entropy(logits, targets, reduction="sum").double().cpu()
            correct += int((logits.argmax(dim=-1) == targets).sum())
    finally:
        model.train(was_training)
    if n == 0:
        raise SamkitError("cannot evaluate on an empty split.")
    return {"loss": float(total_loss) / n, "acc": correct / n}


def batches_of(split: Any, batch_size: int, max_examples: int | None = None) -> list[Batch]:
    """The first ``max_examples`` of a split in order, as ``(inputs, targets)`` batches."""
    if batch_size < 1:
        raise SamkitError(f"batch_size must be >= 1, got {batch_size}.")
    n = len(split) if max_examples is None else min(max_examples, len(split))
    return [
        split.batch(torch.arange(start, min(start + batch_size, n)))
        for start in range(0, n, batch_size)
    ]
