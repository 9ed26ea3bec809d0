"""The training loop: epochs over in-memory tensors, evaluation, checkpoint/resume, cost.

One short function tells the story (:func:`train`): the split lives on the device, each epoch
draws a permutation from a seeded generator, batches are index lookups, ``ds.augment`` (if any)
draws from its own seeded generator, and one step function serves every optimizer. After each
epoch the metrics row and a checkpoint (model, optimizer, scheduler, every RNG state, counters,
the metrics history) are written atomically, so ``resume`` continues bit-exactly (same machine,
same torch, same thread count).

The run folder's policy (its lock, new / resume / overwrite, the environment record) is
:mod:`samkit.train.run_folder`; stopping on a signal is :mod:`samkit.train.signals`; the progress
bar, TensorBoard and ``steps.jsonl`` rows are :mod:`samkit.train.progress`.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from samkit.errors import SamkitError, SamkitWarning
from samkit.optim import NonFiniteError
from samkit.train import run_files, run_folder
from samkit.train.config import TrainConfig, config_hash, load_config
from samkit.train.distributed import Ranks, from_environment, unwrap, wrap
from samkit.train.environment import environment
from samkit.train.init_from import load_init_weights, resolve_init
from samkit.train.progress import (
    TensorBoard,
    hparams,
    load_average,
    log_step,
    max_load,
    progress_bar,
)
from samkit.train.setup import (
    batchnorm_shard_warning,
    build_model,
    build_optimizer,
    device_of,
    evaluate,
    load_data,
    lr_factor,
    passes_per_step,
    step_counters,
    train_step,
    training_loss,
)
from samkit.train.signals import Interrupts, RunInterrupted
from samkit.train.signals import name as signal_name

__all__ = ["RunInterrupted", "SmallShardWarning", "hparams", "log_step", "train"]


def train(
    cfg: TrainConfig | None,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    command: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    interrupt_after_steps: int | None = None,
) -> dict[str, Any]:
    """Train one run into folder ``out`` and return its summary (also in ``out/summary.json``).

    Args:
        cfg: the run's config; ``None`` with ``resume=True`` (the folder's ``config.yaml`` is used).
        out: the run folder. A new run refuses a non-empty folder unless ``overwrite``.
        resume: continue the run in ``out`` from its checkpoint. A folder with no checkpoint
            and no epoch recorded (killed before its first checkpoint) starts from the beginning;
            one whose ``metrics.jsonl`` records epochs but whose checkpoint is missing is refused
            (restarting would silently discard them). A complete run is returned as is.
        overrides: with ``resume``, config fields to change that do not alter the computation
            (``device``, ``execution``) or extend it (``epochs``, which re-derives the LR
            schedule).
        interrupt_after_steps: test hook: behave as if Ctrl-C came after this many steps.

    Raises:
        SamkitError: bad config, missing data, existing folder, corrupt checkpoint.
        RunInterrupted: stopped by Ctrl-C after saving a checkpoint.
    """
    out = Path(out)
    # Under torchrun every process runs this; only rank 0 writes (and locks), after all have checked.
    ranks, device = from_environment(_device_hint(out, cfg, overrides or {}))
    if resume:
        run_folder.check_resumable(out)
    else:
        if cfg is None:
            raise SamkitError("train() needs a config unless resume=True.")
        cfg = resolve_init(cfg.validated())  # records the --init-from source's identity
        run_folder.check_new(out, overwrite)
    purpose = "resume it" if resume else "overwrite it" if overwrite else "train into it"
    with (
        run_folder.removed_if_refused(out),  # a run refused before it writes leaves no folder
        run_folder.hold(out, enabled=ranks.is_main, purpose=purpose),
    ):
        ranks.barrier()
        if resume:
            cfg = run_folder.resume_config(out, cfg, overrides or {}, write=ranks.is_main)
        elif ranks.is_main:
            run_folder.prepare_new(out, overwrite)  # checked again: now under the lock
        ranks.barrier()
        summary = run_folder.complete_summary(out, cfg)
        if summary is not None:
            return summary
        threads = torch.get_num_threads()
        try:
            if cfg.threads is not None:
                torch.set_num_threads(cfg.threads)
            run = _Run(cfg, out, ranks, device, quiet=quiet, command=command)
            return run.fit(interrupt_after_steps)
        finally:
            torch.set_num_threads(threads)  # the caller's process keeps its own setting


def _device_hint(out: Path, cfg: TrainConfig | None, overrides: dict[str, Any]) -> str:
    """The device the run will use (to pick the process-group backend before anything else)."""
    if "device" in overrides:
        return str(overrides["device"])
    if cfg is not None:
        return cfg.device
    try:
        return load_config(out / run_files.CONFIG).device
    except Exception:  # a missing/bad config is reported by the resume path itself
        return "cpu"


class _Run:
    """State of one run in progress."""

    def __init__(
        self,
        cfg: TrainConfig,
        out: Path,
        ranks: Ranks,
        device: str,
        *,
        quiet: bool,
        command: list[str] | None,
    ):
        self.cfg, self.out, self.quiet = cfg, out, quiet
        self.ranks = ranks  # the torchrun job train() joined (world size 1 without one)
        self.device = device_of(device)
        self.hash = config_hash(cfg)
        self.ds = load_data(cfg, self.device)
        n = len(self.ds.train)
        if n < cfg.batch_size:
            raise SamkitError(
                f"the train split has {n} examples, fewer than batch_size={cfg.batch_size}; "
                "lower --batch-size or use more data."
            )
        full = n // cfg.batch_size  # drop the last partial batch: every step sees batch_size
        self.steps_per_epoch = min(full, cfg.max_steps_per_epoch or full)
        self.local = self.ranks.local_slice(cfg.batch_size)  # this rank's part of each batch
        model = build_model(cfg, self.ds, self.device)
        ckpt = out / run_files.CHECKPOINT
        if cfg.init_from_id is not None and not ckpt.is_file():  # resumed runs have their own
            load_init_weights(cfg, model)
        warning = batchnorm_shard_warning(cfg, model, self.ranks.world_size)
        if warning and self.ranks.is_main:
            warnings.warn(warning, SmallShardWarning, stacklevel=3)
        # Under torchrun: DDP, so a SAM optimizer perturbs per rank (m-sharpness across ranks).
        self.model = wrap(model, self.ranks, self.device)
        # the noisy examples, to measure how many of their wrong labels the model fits
        flipped = getattr(self.ds.train, "flipped", None)
        self.flipped = (
            self.ds.train.subset(flipped) if flipped is not None and bool(flipped.any()) else None
        )
        self.optimizer = build_optimizer(cfg, self.model, cfg.epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(cfg, self.steps_per_epoch)
        )
        self.loss_fn = training_loss(cfg)
        self.passes_per_step = passes_per_step(self.optimizer)
        # steps, passes and examples: the optimizer's own counters (a plain one's PlainStep's)
        self.counts = step_counters(self.optimizer, cfg.micro_batch_size, cfg.max_grad_norm)
        self.order_gen = torch.Generator().manual_seed(cfg.seed)
        self.augment_gen = torch.Generator().manual_seed(cfg.seed + 1_000_003)
        self.autocast = _autocast(cfg.precision, self.device)
        # progress of the run (all restored from a checkpoint)
        self.epoch = 0  # completed epochs
        self.step_in_epoch = 0
        self.perm: torch.Tensor | None = None
        self.epoch_loss = torch.zeros((), dtype=torch.float64)
        self.train_time = self.wall_time = 0.0
        self.last_lr = float("nan")
        # what execution the steps ran and why, kept in the checkpoint: a run resumed after its
        # last step (killed while writing its summary) takes no step that could say it
        self.execution_used: str | None = None
        self.execution_reason: str | None = None
        self.history: list[dict[str, Any]] = []
        self.writer: Any = None  # TensorBoard, while fit() runs on rank 0 (when installed)
        self.saved: tuple[int, int] | None = None  # (epoch, step) of the last checkpoint written
        if ckpt.is_file():
            self._restore(run_files.load_checkpoint(ckpt, self.device))
        env = environment(self.device, command)
        env["world_size"] = self.ranks.world_size
        if self.ranks.is_main:
            run_folder.record_environment(out, cfg, env)

    # ---- the counters: the optimizer's ---------------------------------------------------------
    @property
    def steps(self) -> int:
        """Steps taken (every one: a step that is not taken stops the run)."""
        return self.counts.steps

    @property
    def passes(self) -> float:
        """Forward-backward passes over a batch (a pass over a fraction ``f`` counting ``f``)."""
        return self.counts.passes

    @property
    def example_passes(self) -> int:
        """Examples through every pass, over the global batch (every rank's part)."""
        return round(self.counts.passes * self.cfg.batch_size)

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self, interrupt_after_steps: int | None) -> dict[str, Any]:
        try:
            return self._fit(interrupt_after_steps)
        except run_files.WriteError as err:  # the file system refused: say what is safe, and how on
            raise SamkitError(err.message(self._stopped_at())) from None

    def _fit(self, interrupt_after_steps: int | None) -> dict[str, Any]:
        cfg = self.cfg
        started = time.perf_counter()
        wall_before = self.wall_time
        bar = progress_bar(
            cfg.epochs * self.steps_per_epoch,
            self.epoch * self.steps_per_epoch + self.step_in_epoch,
            disable=self.quiet or not self.ranks.is_main,
        )
        writer = self.writer = TensorBoard(self.out / "tensorboard") if self.ranks.is_main else None
        try:
            with Interrupts() as interrupts:
                while self.epoch < cfg.epochs:
                    if self.step_in_epoch == 0:
                        self.perm = torch.randperm(len(self.ds.train), generator=self.order_gen)
                        self.epoch_loss.zero_()
                    while self.step_in_epoch < self.steps_per_epoch:
                        t0 = time.perf_counter()
                        loss = self._step()
                        self.train_time += time.perf_counter() - t0
                        bar.update(1)
                        bar.set_postfix(epoch=self.epoch + 1, loss=f"{loss:.4f}", refresh=False)
                        stop = (
                            interrupt_after_steps is not None
                            and self.steps >= interrupt_after_steps
                        )
                        requested = self._agreed(interrupts.requested)
                        if requested is not None or stop:
                            self._interrupt(wall_before + time.perf_counter() - started, requested)
                    self._end_epoch(wall_before + time.perf_counter() - started, writer)
        except KeyboardInterrupt:
            raise RunInterrupted(
                f"stopped at once (a second signal); the last checkpoint is from the "
                f"{self._position(self.saved)}. Continue with: samkit train --resume {self.out}",
                interrupts.requested,
            ) from None
        except BaseException:
            if writer is not None:
                writer.close()
            raise
        finally:
            bar.close()
        summary = self._summary()
        if writer is not None:  # the run's settings beside its final metrics (TensorBoard's HPARAMS)
            writer.add_hparams(hparams(cfg), {f"final/{k}": summary[k] for k in ("test_acc", "test_loss")})
            writer.close()
        return summary

    def _agreed(self, signum: int | None) -> int | None:
        """Under torchrun, the ranks stop at the same step when any of them got a signal (one
        that stopped alone would leave the others in the next step's all-reduce)."""
        if not self.ranks.distributed:
            return signum
        flag = torch.tensor([signum or 0], dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item()) or None

    def _interrupt(self, wall_time: float, signum: int | None) -> None:
        self.wall_time = wall_time
        self._checkpoint()
        by = "" if signum is None else f" by {signal_name(signum)}"
        raise RunInterrupted(
            f"interrupted{by} at epoch {self.epoch + 1}, step {self.step_in_epoch}; checkpoint "
            f"saved. Continue with: samkit train --resume {self.out}",
            signum,
        )

    @staticmethod
    def _position(at: tuple[int, int] | None) -> str:
        """``end of epoch 2`` or ``epoch 3, step 1`` for (completed epochs, steps into the next)."""
        if at is None:
            return "no checkpoint"
        epoch, step = at
        return f"end of epoch {epoch}" if step == 0 else f"epoch {epoch + 1}, step {step}"

    def _stopped_at(self) -> str:
        """What a failed write leaves: where the run stopped, the intact checkpoint, how to go on."""
        now = self._position((self.epoch, self.step_in_epoch))
        if self.saved is None:
            kept = "no checkpoint was written yet, so --resume starts it from the beginning"
        else:
            kept = f"its last checkpoint ({self._position(self.saved)}) is intact"
        return (
            f"The run stopped at the {now}; {kept}. Then continue with: samkit train --resume "
            f"{self.out}"
        )

    def _step(self) -> float:
        cfg = self.cfg
        lo = self.step_in_epoch * cfg.batch_size
        assert self.perm is not None
        inputs, targets = self.ds.train.batch(self.perm[lo : lo + cfg.batch_size])
        if self.ds.augment is not None:  # the whole global batch: same generator on every rank
            inputs = self.ds.augment(inputs, self.augment_gen)
        if self.ranks.distributed:
            inputs, targets = _slice(inputs, self.local), targets[self.local]
        self.model.train()
        with self.autocast():
            try:
                loss = train_step(
                    self.optimizer,
                    self.model,
                    self.loss_fn,
                    (inputs, targets),
                    micro_batch_size=cfg.micro_batch_size,
                    max_grad_norm=cfg.max_grad_norm,
                )
            except NonFiniteError as err:  # a SAM variant refused the step: same diagnosis
                raise self._non_finite(inputs, None) from err
        if self.ranks.distributed:  # log the global batch's loss on every rank
            loss = loss.detach().clone()
            torch.distributed.all_reduce(loss)
            loss /= self.ranks.world_size
        if not torch.isfinite(loss):
            raise self._non_finite(inputs, float(loss))
        self.epoch_loss += loss.double().cpu()
        self.step_in_epoch += 1
        self.last_lr = self.optimizer.param_groups[0]["lr"]  # the LR this step used
        every = cfg.log_every_steps
        if every and self.steps % every == 0 and self.ranks.is_main:
            log_step(self.out / run_files.STEPS, self.writer, self.steps, float(loss), self.last_lr,
                     getattr(self.optimizer, "last_step", None))
        if cfg.schedule_unit == "step":
            self.scheduler.step()
        return float(loss)

    def _non_finite(self, inputs: Any, loss: float | None) -> SamkitError:
        """The error for a NaN/inf loss or gradient: blames the data when the inputs are not
        finite, else the optimization, with the command-line flags that address it."""
        cfg = self.cfg
        where = f"epoch {self.epoch + 1}, step {self.step_in_epoch + 1}"
        tensors = inputs.values() if isinstance(inputs, dict) else [inputs]
        if not all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point()):
            return SamkitError(
                f"the training inputs of {where} are not finite (NaN or inf): the data is broken, "
                f"not the optimization, and no training setting can fix it. Check the files of "
                f"dataset {cfg.dataset!r} (--data-root {cfg.data_root}) and its "
                "--dataset-option values (e.g. a constant feature divided by a zero standard "
                "deviation)."
            )
        remedies = f"lower --lr (now {cfg.lr:g})"
        if cfg.is_sam:
            remedies += f" or --rho (now {cfg.rho:g})"
        if cfg.warmup_epochs == 0:
            remedies += ", or add a warmup (--warmup-epochs)"
        if cfg.precision != "fp32":
            remedies += ", or train in --precision fp32"
        what = "or its gradient became non-finite" if loss is None else f"became {loss}"
        return SamkitError(
            f"the training loss {what} at {where} (the inputs are finite): the optimization "
            f"diverged. To fix it, {remedies}; then start again with --overwrite (or another "
            "--out)."
        )

    def _end_epoch(self, wall_time: float, writer: Any) -> None:
        cfg = self.cfg
        if cfg.schedule_unit == "epoch":
            self.scheduler.step()
        kw = dict(batch_size=cfg.eval_batch_size, autocast=self.autocast)
        model = unwrap(self.model)  # the same weights on every rank: no communication needed
        tr = evaluate(model, self.ds.train, max_examples=cfg.train_eval_examples, **kw)
        te = evaluate(model, self.ds.test, **kw)
        # accuracy on the flipped labels = the fraction of wrong labels the model has memorised
        memorised = None if self.flipped is None else evaluate(model, self.flipped, **kw)["acc"]
        self.epoch += 1
        self.wall_time = wall_time
        row = {
            "epoch": self.epoch,
            "train_loss": tr["loss"],
            "train_acc": tr["acc"],
            "train_loss_running": float(self.epoch_loss) / self.step_in_epoch,
            "test_loss": te["loss"],
            "test_acc": te["acc"],
            "lr": self.last_lr,
            "steps": self.steps,
            "passes": self.passes,
            "example_passes": self.example_passes,
            "train_time": self.train_time,
            "wall_time": self.wall_time,
            "memorised": memorised,
            "load": load_average(),
        }
        self.history.append(row)
        self.step_in_epoch = 0
        self.perm = None
        # The checkpoint first: metrics.jsonl never records an epoch the checkpoint lacks, so a
        # process killed between the two writes (or during the checkpoint) resumes; a resume
        # rewrites metrics.jsonl from the checkpoint's history.
        self._checkpoint()
        if self.ranks.is_main:
            run_files.write_metrics(self.out / run_files.METRICS, self.history)
        if writer is not None:
            for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
                writer.add_scalar(key, row[key], self.epoch)

    def _summary(self) -> dict[str, Any]:
        last = self.history[-1]
        summary = {
            "status": "complete",
            "label": self.cfg.label or self.cfg.optimizer,
            "optimizer": self.cfg.optimizer,
            "seed": self.cfg.seed,
            "config_hash": self.hash,
            "epochs": self.epoch,
            "train_loss": last["train_loss"],
            "train_acc": last["train_acc"],
            "memorised": last.get("memorised"),
            "test_loss": last["test_loss"],
            "test_acc": last["test_acc"],
            "best_test_acc": max(r["test_acc"] for r in self.history),
            "steps": self.steps,
            "passes": self.passes,
            "example_passes": self.example_passes,
            "passes_per_step": self.passes_per_step,
            "ascent_steps": getattr(self.optimizer, "ascent_steps", None),
            # what execution="auto" chose for the last step, and why (None for a plain optimizer)
            **self._execution(),
            "train_time": self.train_time,
            "wall_time": self.wall_time,
            "load_max": max_load(self.history),
            "num_params": sum(p.numel() for p in self.model.parameters()),
            "train_examples": len(self.ds.train),
            "test_examples": len(self.ds.test),
            "world_size": self.ranks.world_size,
        }
        if self.ranks.is_main:
            run_files.write_json(self.out / run_files.SUMMARY, summary)
        self.ranks.barrier()
        return summary

    # ---- checkpoint ---------------------------------------------------------------------------
    def _checkpoint(self) -> None:
        if not self.ranks.is_main:  # the state is replicated: rank 0 writes it once
            return
        rng = {
            "torch": torch.get_rng_state(),
            "order": self.order_gen.get_state(),
            "augment": self.augment_gen.get_state(),
        }
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        run_files.save_checkpoint(
            self.out / run_files.CHECKPOINT,
            {
                "config_hash": self.hash,
                "resume_hash": run_folder.resume_hash(self.cfg),
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "perm": self.perm,
                "epoch_loss": self.epoch_loss.clone(),
                "model": unwrap(self.model).state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng,
                "counters": {
                    "steps": self.steps,
                    "passes": self.passes,
                    "example_passes": self.example_passes,
                    "train_time": self.train_time,
                    "wall_time": self.wall_time,
                    "last_lr": self.last_lr,
                    **self._execution(),
                },
                "history": self.history,
            },
        )
        self.saved = (self.epoch, self.step_in_epoch)

    def _execution(self) -> dict[str, str | None]:
        """``execution_used`` and ``execution_reason``: the optimizer's last step's, or the
        checkpoint's when no step ran in this process."""
        if getattr(self.optimizer, "execution_used", None) is not None:
            return {"execution_used": self.optimizer.execution_used,
                    "execution_reason": getattr(self.optimizer, "execution_reason", None)}  # fmt: skip
        return {"execution_used": self.execution_used, "execution_reason": self.execution_reason}

    def _restore(self, state: dict[str, Any]) -> None:
        # A resumed run may extend --epochs (RESUMABLE_OVERRIDES): compare everything else.
        same = (state.get("resume_hash") == run_folder.resume_hash(self.cfg) if "resume_hash" in state
                else state.get("config_hash") == self.hash)
        if not same:
            raise SamkitError(
                f"checkpoint in {self.out} was written for another config (hash "
                f"{state.get('config_hash')} != {self.hash}); the folder was left untouched."
            )
        try:
            unwrap(self.model).load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"]["torch"].cpu())
            self.order_gen.set_state(state["rng"]["order"].cpu())
            self.augment_gen.set_state(state["rng"]["augment"].cpu())
            if "cuda" in state["rng"] and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
            self.epoch = int(state["epoch"])
            self.step_in_epoch = int(state["step_in_epoch"])
            self.perm = None if state["perm"] is None else state["perm"].cpu()
            self.epoch_loss = state["epoch_loss"].double().cpu()
            counters = dict(state["counters"])
            counts = self.counts  # (a SAM optimizer's were restored with its state: the same values)
            counts.steps, counts.passes = int(counters.pop("steps")), float(counters.pop("passes"))
            del counters["example_passes"]  # the global batch's, from passes (example_passes)
            counts.example_passes = round(counts.passes * (self.cfg.batch_size // self.ranks.world_size))
            for key, value in counters.items():
                setattr(self, key, value)
            self.history = list(state["history"])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise SamkitError(
                f"checkpoint in {self.out} does not match this run ({type(err).__name__}: {err}); "
                "the folder was left untouched."
            ) from err
        self.saved = (self.epoch, self.step_in_epoch)
        if self.ranks.is_main:
            run_folder.after_restore(self.out, self.history, self.steps)


class SmallShardWarning(SamkitWarning):
    """SAM shards too small for the model's BatchNorm (see ``batchnorm_shard_warning``)."""


def _slice(inputs: Any, part: slice) -> Any:
    """This rank's part of a batch of inputs (a tensor or a dict of tensors, e.g. for text)."""
    if isinstance(inputs, dict):
        return {k: v[part] for k, v in inputs.items()}
    return inputs[part]


def _autocast(precision: str, device: torch.device) -> Callable[[], Any]:
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext
