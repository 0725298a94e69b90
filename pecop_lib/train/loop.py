"""The one training loop behind continual pretraining and AQA fine-tuning.

A recipe supplies a model, a *step function* ``step_fn(model, batch) -> StepOutput`` (forward pass
and loss), an optimiser, an optional scheduler and ``data(epoch) -> iterable of batches``; the
:class:`Trainer` does the rest:

* autocast (bf16 on recent GPUs, fp16 + gradient scaler on older ones, fp32 on the CPU unless asked),
  optional ``torch.compile``;
* gradient accumulation (the last, shorter group of an epoch is rescaled so that every optimiser
  step sees the mean gradient of the micro-batches it received);
* progress bars with loss and metrics, epoch and step records in ``metrics.json``, ``metrics.csv``
  and ``steps.csv``;
* a checkpoint at the end of every epoch (and optionally every N steps), written atomically,
  holding model, optimiser, scheduler, gradient scaler, every process's random generator states,
  the position (epoch, batch, step) and the history; ``fit(..., resume=True)`` continues exactly
  where the checkpoint left off (bit-identical on the CPU);
* a clear error on a non-finite loss, before it can reach the weights;
* DistributedDataParallel when started by ``torchrun`` (see :mod:`pecop_lib.train.distributed`):
  gradients are averaged across processes, metrics reduced, files written by rank 0;
* on a CPU, one core per loader worker: ``fit`` runs with ``min(current, max(1, cores - workers))``
  intra-op threads and restores the previous count afterwards (:mod:`pecop_lib.train.threads`);
* on a GPU, cuDNN autotuning (``torch.backends.cudnn.benchmark``) during ``fit`` unless PyTorch was
  asked for deterministic algorithms, the previous value restored afterwards
  (:mod:`pecop_lib.train.autotune`).

Exactness of ``resume`` needs ``data(epoch)`` to return the same batches for the same epoch
whatever happened before (e.g. :func:`pecop_lib.train.data.epoch_loader`). A resume from an
epoch-end checkpoint is then exact. A resume from a mid-epoch checkpoint restores the generators of
the epoch start, rebuilds ``data(epoch)``, skips the batches already used (they are loaded and
discarded) and restores the generators of the checkpoint; it is exact when the batches have a
``len()`` (DataLoader, list) or their random draws do not use the main process's global generators
(loader workers, per-sample generators). CUDA kernels may add their own non-determinism on GPUs.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pecop_lib.atomic import atomic_write_json, atomic_write_text
from pecop_lib.config import resolve_device
from pecop_lib.outputs import progress
from pecop_lib.train.autotune import cudnn_autotuning
from pecop_lib.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    record_checkpoint,
    remove_partial_writes,
    save_checkpoint,
)
from pecop_lib.train.distributed import DistributedContext
from pecop_lib.train.precision import autocast, autocast_dtype, grad_scaler
from pecop_lib.train.rng import capture_rng_state, restore_rng_state, seed_everything
from pecop_lib.train.threads import cpu_training_threads

T = TypeVar("T")

CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class StepOutput:
    """What a step function returns for one (micro-)batch.

    Attributes:
        loss: Scalar loss to minimise (a mean over the batch).
        metrics: Extra scalars to log (0-d tensors or floats), e.g. accuracies; same keys every step.
        count: Samples in the batch; weights the epoch averages (and the DDP reduction).
    """

    loss: torch.Tensor
    metrics: Mapping[str, torch.Tensor | float] = field(default_factory=dict)
    count: int = 1


StepFn = Callable[[nn.Module, Any], StepOutput]
EpochData = Callable[[int], Iterable[Any]]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite: a training loss (training stopped before the weights were touched) or
    a held-out pretext measurement after an epoch (:func:`~pecop_lib.pretrain.continual.continual_pretrain`)."""


@dataclass
class TrainHistory:
    """Records of a run: one dict per epoch and one per optimiser step, plus the last checkpoint."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None


def move_to_device(batch: T, device: torch.device, *, non_blocking: bool = False) -> T:
    """Move every tensor in a (nested) tuple / list / dict / named tuple batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)  # type: ignore[return-value]
    if isinstance(batch, Mapping):
        return type(batch)({k: move_to_device(v, device, non_blocking=non_blocking) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(v, device, non_blocking=non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device, non_blocking=non_blocking) for v in batch)
    return batch


def _with_last(items: Iterable[T]) -> Iterator[tuple[T, bool]]:
    """Yield ``(item, is_last)`` pairs (one item of look-ahead)."""
    iterator = iter(items)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for upcoming in iterator:
        yield current, False
        current = upcoming
    yield current, True


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _fmt(values: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in values.items())


class Trainer:
    """Runs a step function over epochs with accumulation, autocast, checkpoints, resume and DDP.

    Freeze parameters (``requires_grad_``) before building the trainer: under DDP only the
    parameters trainable at construction are synchronised.

    Args:
        model: The module to train; moved to the device. Its ``state_dict`` is what checkpoints hold.
        step_fn: ``step_fn(model, batch) -> StepOutput``; called inside autocast with the batch
            already on the device and ``model`` possibly wrapped (DDP, compile).
        optimizer: Built on ``model``'s parameters.
        scheduler: Optional LR scheduler, stepped per epoch or per optimiser step.
        run_dir: Folder for ``checkpoints/``, ``metrics.json``, ``metrics.csv``, ``steps.csv``;
            ``None`` writes nothing (no resume possible).
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"`` or a :class:`torch.device`; ignored when
            ``distributed`` is given (its device is used).
        precision: ``"auto"`` (bf16/fp16 autocast on GPU, fp32 on CPU), ``"fp32"``, ``"bf16"``,
            ``"fp16"`` (GPU only, with a gradient scaler).
        compile: Wrap the model in ``torch.compile`` for the forward/backward passes: ``True`` uses
            the default backend (inductor), a string names another backend (e.g. ``"aot_eager"``).
        grad_accum_steps: Micro-batches per optimiser step.
        max_grad_norm: Clip the global gradient norm to this value (``None``: no clipping).
        scheduler_interval: ``"epoch"`` or ``"step"``.
        checkpoint_every_steps: Also checkpoint every N optimiser steps inside an epoch.
        keep_last: Keep only the N newest checkpoint files (``None``: keep all).
        distributed: The process's :class:`DistributedContext`; with several processes the model is
            wrapped in DDP.
        find_unused_parameters: Passed to DDP (needed if some trainable parameters get no gradient).
        desc: Label of the progress bars.
        show_progress: Draw progress bars and epoch summaries (rank 0 only).
        seed: Seed the global Python, NumPy and torch generators with ``seed + rank`` here, at the start of
            the run, so that what the step function draws from them (dropout masks) does not depend on
            what the process did before (e.g. training another stage first). A resume then restores the
            generators stored in the checkpoint. ``None`` leaves them alone.
        loader_workers: Worker processes of the loader behind ``data`` (0: it loads in this process).
            On a CPU device, :meth:`fit` leaves them a core each: it trains with
            :func:`~pecop_lib.train.threads.cpu_training_threads` (``min(current, max(1, cores -
            loader_workers))`` intra-op threads, the previous count restored afterwards, also on an error).
        cudnn_benchmark: ``torch.backends.cudnn.benchmark`` during :meth:`fit` on a CUDA device:
            ``None`` turns it on unless ``torch.use_deterministic_algorithms(True)`` or
            ``torch.backends.cudnn.deterministic`` asks for repeatable kernels
            (:func:`~pecop_lib.train.autotune.use_cudnn_benchmark`); ``True`` / ``False`` decide. Worth it
            when input shapes repeat (every recipe of the package: fixed clip sizes). The previous value is
            restored after :meth:`fit`; other devices leave the flag alone.
    """

    def __init__(
        self,
        model: nn.Module,
        step_fn: StepFn,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        *,
        run_dir: str | os.PathLike[str] | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        compile: bool | str = False,
        grad_accum_steps: int = 1,
        max_grad_norm: float | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        checkpoint_every_steps: int | None = None,
        keep_last: int | None = None,
        distributed: DistributedContext | None = None,
        find_unused_parameters: bool = False,
        desc: str = "train",
        show_progress: bool = True,
        seed: int | None = None,
        loader_workers: int = 0,
        cudnn_benchmark: bool | None = None,
    ) -> None:
        if grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        if checkpoint_every_steps is not None and checkpoint_every_steps < 1:
            raise ValueError(f"checkpoint_every_steps must be >= 1 or None, got {checkpoint_every_steps}")
        if loader_workers < 0:
            raise ValueError(f"loader_workers must be >= 0, got {loader_workers}")
        self.dist = distributed or DistributedContext(device=resolve_device(device))
        self.device = self.dist.device
        if seed is not None:
            seed_everything(seed + self.dist.rank)
        self.model = model.to(self.device)
        self.step_fn = step_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.amp_dtype = autocast_dtype(precision, self.device)
        self.scaler = grad_scaler(self.device, self.amp_dtype)
        self.grad_accum_steps = grad_accum_steps
        self.max_grad_norm = max_grad_norm
        self.scheduler_interval = scheduler_interval
        self.checkpoint_every_steps = checkpoint_every_steps
        self.keep_last = keep_last
        self.desc = desc
        self.loader_workers = loader_workers
        self.cudnn_benchmark = cudnn_benchmark
        self.show_progress = show_progress and self.dist.is_main
        wrapped: nn.Module = model
        if self.dist.is_distributed:
            wrapped = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=find_unused_parameters,
            )
        self.ddp = wrapped if isinstance(wrapped, DistributedDataParallel) else None
        if compile:
            wrapped = torch.compile(wrapped) if compile is True else torch.compile(wrapped, backend=compile)
        self.forward_model: nn.Module = wrapped
        self.history = TrainHistory()
        self._position = {"epoch": 0, "batch": 0, "step": 0}
        self._running: list[float] | None = None  # global [loss*n, n, metric*n, ...] sums of the epoch
        self._metric_keys: list[str] | None = None
        self._epoch_rng: dict[str, Any] | None = None  # generator states at the start of this epoch
        self._pending_rng: tuple[dict[str, Any] | None, dict[str, Any]] | None = None  # set by a resume

    # ----------------------------------------------------------------------------------- public
    @property
    def checkpoint_dir(self) -> Path | None:
        """``run_dir/checkpoints`` (``None`` without a run folder)."""
        return self.run_dir / CHECKPOINT_DIR if self.run_dir is not None else None

    def fit(self, data: EpochData, epochs: int, *, resume: bool | str | os.PathLike[str] = False,
            of: int | None = None) -> TrainHistory:
        """Train until ``epochs`` epochs are complete.

        Args:
            data: ``data(epoch) -> iterable of batches`` (epoch counted from 0); must give the same
                batches for the same epoch (see the module docstring).
            epochs: Total number of epochs (a resumed run counts the epochs already done).
            resume: ``True`` continues from the newest checkpoint in ``run_dir``, a path from that
                file, ``False`` starts from scratch.
            of: Planned epochs of a run trained in parts (``fit(d, 1, of=6)``, then 2, ...), shown in the progress.

        Returns:
            The run's :class:`TrainHistory` (also on ``self.history``).

        Raises:
            TypeError: If ``data`` is not callable.
            FileNotFoundError: If ``resume=True`` but no checkpoint exists.
            NonFiniteLossError: If a loss is NaN or infinite (message names epoch, step, batch, value).
        """
        if not callable(data):
            raise TypeError(
                f"data must be a function epoch -> iterable of batches (e.g. pecop_lib.train.epoch_loader(...)), "
                f"got {type(data).__name__}"
            )
        if resume:
            self._resume(resume)
        self.optimizer.zero_grad(set_to_none=True)
        with (cpu_training_threads(self.device, self.loader_workers),
              cudnn_autotuning(self.device, self.cudnn_benchmark)):
            for epoch in range(self._position["epoch"], epochs):
                self._run_epoch(data, epoch, of or epochs)
        self.dist.barrier()
        return self.history

    # ---------------------------------------------------------------------------------- helpers
    def _resume(self, resume: bool | str | os.PathLike[str]) -> None:
        if resume is True:
            if self.checkpoint_dir is None:
                raise ValueError("resume=True needs a run_dir with checkpoints")
            path = latest_checkpoint(self.checkpoint_dir)
            if path is None:
                raise FileNotFoundError(
                    f"resume=True but {self.checkpoint_dir} holds no checkpoint (no {self.checkpoint_dir}/latest.json); "
                    "start without resume"
                )
        else:
            path = Path(resume)
        if self.checkpoint_dir is not None and self.dist.is_main:
            remove_partial_writes(self.checkpoint_dir)  # what a killed run was writing
        state = load_checkpoint(path, map_location="cpu")  # generator states must stay on the CPU
        if state["world_size"] != self.dist.world_size:
            raise ValueError(
                f"{path} was written by {state['world_size']} process(es) but this run has {self.dist.world_size}; "
                "an exact resume needs the same number (start torchrun with that many processes)"
            )
        if state["grad_accum_steps"] != self.grad_accum_steps:
            raise ValueError(
                f"{path} was written with grad_accum_steps={state['grad_accum_steps']}, this run uses "
                f"{self.grad_accum_steps}; resume with the same value"
            )
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise RuntimeError(f"the model does not match checkpoint {path}: {exc}") from exc
        self.optimizer.load_state_dict(state["optimizer"])
        for name, obj in (("scheduler", self.scheduler), ("scaler", self.scaler)):
            if (obj is None) != (state[name] is None):
                raise ValueError(f"{path} {'has' if state[name] is not None else 'has no'} {name} state but this run "
                                 f"{'has none' if obj is None else 'has one'}; build the run as it was")
            if obj is not None:
                obj.load_state_dict(state[name])
        epoch_start = state["rng_epoch_start"]
        self._pending_rng = (epoch_start[self.dist.rank] if epoch_start else None, state["rng"][self.dist.rank])
        self._position = dict(state["position"])
        self._running = list(state["running"]) if state["running"] is not None else None
        self.history = TrainHistory(list(state["history"]["epochs"]), list(state["history"]["steps"]), path)
        self._metric_keys = state["metric_keys"]

    def _checkpoint(self, name: str, *, mid_epoch: bool) -> None:
        if self.checkpoint_dir is None:
            return
        rng_states = self.dist.all_gather_object(capture_rng_state())
        epoch_start = self.dist.all_gather_object(self._epoch_rng) if mid_epoch else None
        if not self.dist.is_main:
            self.dist.barrier()
            return
        state = {
            "position": dict(self._position),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_states,
            "rng_epoch_start": epoch_start,
            "history": {"epochs": self.history.epochs, "steps": self.history.steps},
            "running": self._running,
            "metric_keys": self._metric_keys,
            "world_size": self.dist.world_size,
            "grad_accum_steps": self.grad_accum_steps,
        }
        path = save_checkpoint(self.checkpoint_dir / name, state)
        record_checkpoint(self.checkpoint_dir, name, keep_last=self.keep_last)
        self.history.checkpoint = path
        self.dist.barrier()

    def _write_metrics(self) -> None:
        if self.run_dir is None or not self.dist.is_main:
            return
        atomic_write_json(self.run_dir / "metrics.json", {"epochs": self.history.epochs, "steps": self.history.steps})
        _write_csv(self.run_dir / "metrics.csv", self.history.epochs)
        _write_csv(self.run_dir / "steps.csv", self.history.steps)

    def _reduce(self, out: StepOutput) -> torch.Tensor:
        """Global ``[loss * n, n, metric_1 * n, ...]`` sums over processes for one micro-batch."""
        keys = sorted(out.metrics)
        if self._metric_keys is None:
            self._metric_keys = keys
        elif keys != self._metric_keys:
            raise ValueError(f"step_fn returned metrics {keys} but earlier steps returned {self._metric_keys}")
        count = float(out.count)
        values = [out.loss.detach().float() * count, torch.tensor(count, device=self.device)]
        values += [torch.as_tensor(out.metrics[k], device=self.device).detach().float() * count for k in keys]
        return self.dist.all_reduce_sum(torch.stack([v.to(self.device) for v in values]))

    def _optimizer_step(self, micro_batches: int) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if micro_batches < self.grad_accum_steps:  # a short last group: mean over what it received
            for p in params:
                p.grad.mul_(self.grad_accum_steps / micro_batches)
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()

    def _named(self, sums: list[float]) -> dict[str, float]:
        """``{"loss": mean, metric: mean, ...}`` from a ``[loss*n, n, metric*n, ...]`` sum vector."""
        count = max(sums[1], 1e-12)
        return {"loss": sums[0] / count, **{k: v / count for k, v in zip(self._metric_keys or [], sums[2:], strict=True)}}

    def _run_epoch(self, data: EpochData, epoch: int, epochs: int) -> None:
        self.model.train()
        skip = self._position["batch"] if self._position["epoch"] == epoch else 0
        pending, self._pending_rng = self._pending_rng, None
        if pending is not None:  # resuming: generators as they were where the checkpoint was taken
            restore_rng_state(pending[0] if skip else pending[1])
        if not skip:
            self._running = None
        self._epoch_rng = capture_rng_state()
        lr = float(self.optimizer.param_groups[0]["lr"])
        started = time.perf_counter()
        batches = data(epoch)
        total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
        iterator: Iterator[Any] = iter(batches)
        for _ in itertools.islice(iterator, skip):
            pass
        if pending is not None and skip:
            restore_rng_state(pending[1])
        # know the last batch (DDP gradient sync, short accumulation group): from len() if possible,
        # else by fetching one batch ahead
        pairs = ((b, i == total - 1) for i, b in enumerate(iterator, start=skip)) if total is not None else _with_last(iterator)
        bar = progress(
            pairs, desc=f"{self.desc} epoch {epoch + 1}/{epochs}", total=total, initial=skip,
            disable=not self.show_progress,
        )
        group_sums: torch.Tensor | None = None
        micro = 0
        for batch_index, (batch, is_last) in enumerate(bar, start=skip):
            batch = move_to_device(batch, self.device, non_blocking=self.device.type == "cuda")
            sync = micro + 1 == self.grad_accum_steps or is_last
            no_sync = self.ddp.no_sync() if self.ddp is not None and not sync else contextlib.nullcontext()
            with no_sync:
                with autocast(self.device, self.amp_dtype):
                    out = self.step_fn(self.forward_model, batch)
                if not isinstance(out, StepOutput):
                    raise TypeError(f"step_fn must return a StepOutput, got {type(out).__name__}")
                sums = self._reduce(out)
                loss_value = sums[0].item() / max(sums[1].item(), 1e-12)
                if not math.isfinite(loss_value):
                    last = self.history.checkpoint
                    raise NonFiniteLossError(
                        f"non-finite loss {loss_value} at epoch {epoch + 1}/{epochs}, optimizer step "
                        f"{self._position['step'] + 1}, batch {batch_index} of the epoch; training stopped "
                        f"before the update. Last good checkpoint: {last if last else 'none written yet'}. "
                        "Usual causes: a learning rate too high, fp16 overflow (try precision='bf16' or "
                        "'fp32'), or NaN/inf in the input data."
                    )
                loss = out.loss.float() / self.grad_accum_steps
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            micro += 1
            group_sums = sums if group_sums is None else group_sums + sums
            if not sync:
                continue
            step_lr = float(self.optimizer.param_groups[0]["lr"])
            self._optimizer_step(micro)
            micro = 0
            self._position.update(epoch=epoch, batch=batch_index + 1, step=self._position["step"] + 1)
            group = group_sums.tolist()
            group_sums = None
            self._running = group if self._running is None else [a + b for a, b in zip(self._running, group, strict=True)]
            step_values = self._named(group)
            self.history.steps.append({"step": self._position["step"], "epoch": epoch + 1, "lr": step_lr, **step_values})
            set_postfix = getattr(bar, "set_postfix", None)  # tqdm bars; plain iterators have none
            if set_postfix is not None:
                set_postfix(step_values, refresh=False)
            every = self.checkpoint_every_steps
            if every is not None and self._position["step"] % every == 0 and not is_last:
                self._checkpoint(f"step_{self._position['step']:07d}.pt", mid_epoch=True)
        if self._running is None:
            raise ValueError(f"data({epoch}) returned no batches; check the dataset and the batch size")
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            self.scheduler.step()
        summary = self._named(self._running)
        seconds = time.perf_counter() - started
        record = {"epoch": epoch + 1, "lr": lr, "steps": self._position["step"], **summary,
                  "samples": self._running[1], "seconds": seconds, "samples_per_s": self._running[1] / seconds}
        self.history.epochs.append(record)
        self._position.update(epoch=epoch + 1, batch=0)
        self._running = None
        self._write_metrics()
        self._checkpoint(f"epoch_{epoch + 1:03d}.pt", mid_epoch=False)
        if self.show_progress:
            print(f"{self.desc} epoch {epoch + 1}/{epochs}: {_fmt(summary)}", flush=True)
