"""Stage 2, continual pretraining (:func:`continual_pretrain`): a self-supervised pretext task (VSPP,
VideoPace or RSPNet) on the unlabeled target videos, training what the strategy owns: ``pecop``
(3D-Adapters), ``hpt`` (whole backbone), ``hpt_bn`` (BatchNorm affine), ``dom_s`` (whole backbone from
random init); ``dom_g`` is "no stage 2" and returns the backbone untouched.

The official recipe (``train.py`` of Plrbear/PECoP): SGD lr 0.01 (hard-coded; README 1e-3),
momentum 0.9, weight decay 1e-4, ``CosineAnnealingLR(T_max=22, eta_min=1e-6)`` stepped per epoch,
8 epochs, batch 16, the video list repeated x20, flip -> resize to 455 H x 256 W -> random crop
224 -> ImageNet normalisation applied to **BGR** frames, colour jitter built but never applied,
BatchNorm in training mode (running statistics re-estimated on the target data). Every item is an
argument here; :mod:`pecop_lib.config` holds the official values in the ``paper`` preset.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pecop_lib.atomic import atomic_write_json, read_json
from pecop_lib.config import OPTIMIZERS
from pecop_lib.data.gpu_augment import DeferredTransform, collate_raw
from pecop_lib.data.source_cache import DecodedFrames
from pecop_lib.data.transforms import ClipTransform
from pecop_lib.models.backbone import Backbone
from pecop_lib.models.fast_path import FastPath, apply_fast_path
from pecop_lib.models.strategies import get_strategy, mark_trainable
from pecop_lib.pretrain.pretext import (
    PretextClips,
    Sampler,
    TargetVideo,
    pretext_accuracy,
    pretext_model,
    pretext_step,
)
from pecop_lib.ssl import (
    RSPNetSampler,
)
from pecop_lib.train.context import RunContext
from pecop_lib.train.data import epoch_loader
from pecop_lib.train.device_augment import AUGMENT_PLACES, device_augmented
from pecop_lib.train.loop import NonFiniteLossError, Trainer, TrainHistory


def cosine_optimizer(
    params: Sequence[nn.Parameter], *, lr: float, momentum: float, weight_decay: float, t_max: int, eta_min: float,
    kind: str = "sgd",
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.CosineAnnealingLR]:
    """An optimiser with cosine annealing stepped per epoch; ``kind="sgd"`` is the official recipe.

    Args:
        params: Only the trainable parameters (the official code passes all; frozen ones get no
            gradient, so SGD and its weight decay skip them either way).
        lr, weight_decay: Both optimisers (Adam's weight decay is the L2 term, as in torch.optim.Adam).
        momentum: SGD only (no Nesterov).
        t_max, eta_min: ``CosineAnnealingLR`` (official: 22 epochs, 1e-6).
        kind: One of :data:`OPTIMIZERS`.

    Raises:
        ValueError: On another ``kind``.
    """
    if kind not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {kind!r}; choose one of {OPTIMIZERS}")
    params = list(params)
    optimizer: torch.optim.Optimizer
    if kind == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=eta_min)


@dataclass
class PretrainResult:
    """Outcome of a pretraining run.

    Attributes:
        model: The trained module (backbone + pretext head(s); ``None`` for ``dom_g``).
        history: The trainer's records (empty for ``dom_g``).
        trainable: Names of the backbone parameters the strategy trained.
        seconds: Wall time of the training.
        heldout: Per epoch, the pretext accuracies on clips of videos not trained on
            (``{"epoch", "speed_acc", "segment_acc", "acc", "loss", "clips"}`` for VSPP; empty when no
            held-out videos were given or the pretext has no accuracy, RSPNet).
    """

    model: nn.Module | None
    history: TrainHistory
    trainable: list[str]
    seconds: float
    heldout: list[dict[str, float]] = field(default_factory=list)


HELDOUT_FILE = "heldout.json"
"""Per-epoch held-out pretext accuracies in a stage-2 run folder (read back on resume)."""


def continual_pretrain(
    backbone: Backbone,
    videos: Sequence[TargetVideo],
    sampler: Sampler,
    transform: ClipTransform,
    *,
    strategy: str = "pecop",
    epochs: int = 8,
    batch_size: int = 16,
    lr: float = 0.01,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    cosine_t_max: int = 22,
    eta_min: float = 1e-6,
    dropout: float = 0.5,
    list_repeat: int = 20,
    channel_order: str = "rgb",
    color_jitter: bool = False,
    bn_mode: str = "train",
    rspnet_options: dict[str, Any] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    run: RunContext = RunContext(),
    augment: str = "workers",
    fast: FastPath | None = None,
    heldout: Sequence[TargetVideo] | None = None,
    heldout_transform: ClipTransform | None = None,
    heldout_clips_per_video: int = 4,
) -> PretrainResult:
    """Stage 2: train what ``strategy`` owns with a pretext task on the target videos.

    The backbone is modified in place (trainable flags, BatchNorm mode, weights). Build it first
    (adapters injected for ``pecop``; Kinetics or stage-1 weights loaded, except for ``dom_s``,
    which starts from random init).

    Args:
        backbone: From :func:`pecop_lib.models.build_backbone`.
        videos: The unlabeled target videos (:func:`target_videos`).
        sampler: The pretext's sampler (its type selects VSPP, VideoPace or RSPNet).
        transform: Clip transform (PECoP: ``official_transform("core_mtl", train=True, crop=...)``).
        strategy: ``pecop``, ``hpt``, ``hpt_bn``, ``dom_s`` or ``dom_g`` (no training).
        epochs: Epochs (official 8 for PECoP; the poster's full-model runs use 16).
        batch_size: Clips per optimiser step over all processes (official 16); each of G DDP
            processes reads ``batch_size / G``.
        lr, optimizer, momentum, weight_decay, cosine_t_max, eta_min: The optimiser and its schedule
            (:func:`cosine_optimizer`; official: SGD, lr 0.01).
        dropout: Before each VSPP head.
        list_repeat: Passes over the video list per epoch (official x20).
        channel_order: ``"bgr"`` reproduces the official cv2 input.
        color_jitter: Per-frame colour jitter (the original VSPP; PECoP's code never applies it).
        bn_mode: Backbone BatchNorm: ``"train"`` (official) or ``"frozen"``.
        rspnet_options: Passed to :class:`~pecop_lib.ssl.rspnet.RSPNet`.
        run_dir: Folder of the trainer's checkpoints and metrics (see :class:`~pecop_lib.train.loop.Trainer`).
        run: How the run executes (:class:`~pecop_lib.train.context.RunContext`; ``grad_accum_steps``
            0 means 1). Its seed seeds the heads' initialisation, the data order, every sample draw
            and the dropout masks.
        augment: ``"workers"``: the loader workers transform each clip; ``"device"``: they only
            decode, and the transform runs on the training device in batches
            (:mod:`pecop_lib.train.device_augment`; same clips for the same seed). VSPP and
            VideoPace only.
        fast: Execution switches of the backbone (:class:`~pecop_lib.models.fast_path.FastPath`);
            ``None`` leaves the backbone as it is.
        heldout: Videos never trained on (the target's test split): after every epoch the pretext
            accuracy is measured on ``heldout_clips_per_video`` fixed clips of each
            (:func:`pretext_accuracy`), kept in ``PretrainResult.heldout`` and in
            ``run_dir/heldout.json`` (read back on resume). VSPP and VideoPace only.
        heldout_transform: Their transform (default: ``transform`` without random crop and flip).
        heldout_clips_per_video: Held-out clips per video.

    Returns:
        The :class:`PretrainResult`.

    Raises:
        ValueError: On an unknown strategy, a batch size not divisible by the process count,
            ``pecop`` on a backbone without adapters, or ``augment="device"`` with RSPNet.
        NonFiniteLossError: If the training loss, or a held-out accuracy or loss, is not finite
            (diverged weights: nothing non-finite is written to ``heldout.json``).
    """
    if augment not in AUGMENT_PLACES:
        raise ValueError(f"augment must be one of {AUGMENT_PLACES}, got {augment!r}")
    if augment == "device" and isinstance(sampler, RSPNetSampler):
        raise ValueError("augment='device' supports VSPP and VideoPace; RSPNet's keys share one draw: use 'workers'")
    spec = get_strategy(strategy)
    trainable = mark_trainable(backbone, strategy)
    if spec.trains == "none":
        return PretrainResult(None, TrainHistory(), trainable, 0.0)
    context, seed = run.process, run.seed
    if batch_size % context.world_size:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {context.world_size} processes")
    backbone.bn_mode = bn_mode
    if fast is not None:
        apply_fast_path(backbone, fast)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = pretext_model(backbone, sampler, dropout=dropout, rspnet_options=rspnet_options)
    params = [p for p in model.parameters() if p.requires_grad]
    opt, scheduler = cosine_optimizer(params, kind=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      t_max=cosine_t_max, eta_min=eta_min)
    deferred = augment == "device"
    clips = PretextClips(videos, sampler, DeferredTransform(transform) if deferred else transform, repeat=list_repeat,
                         channel_order=channel_order, jitter=color_jitter, seed=seed)
    # drop_last (the official loader keeps the short last batch): BatchNorm in training mode cannot
    # normalise a one-clip batch at small sizes, and equal batches keep the BN statistics comparable
    data = epoch_loader(clips, batch_size // context.world_size, seed=seed, drop_last=True, num_workers=run.num_workers,
                        rank=context.rank, world_size=context.world_size, pin_memory=context.device.type == "cuda",
                        collate_fn=collate_raw if deferred else None)
    step = pretext_step(sampler)
    if deferred:
        layout = torch.channels_last_3d if fast is not None and fast.channels_last else torch.contiguous_format
        step = device_augmented(step, transform, memory_format=layout)
    trainer = Trainer(model, step, opt, scheduler, run_dir=run_dir,
                      desc=f"{spec.label} {type(sampler).__name__.removesuffix('Sampler')}", **run.trainer_options())
    started = time.perf_counter()
    if not heldout or isinstance(sampler, RSPNetSampler):
        history = trainer.fit(data, epochs, resume=run.resume)
        return PretrainResult(model, history, trainable, time.perf_counter() - started)
    eval_transform = heldout_transform or transform.evaluation()
    path = Path(run_dir) / HELDOUT_FILE if run_dir is not None else None
    records: list[dict[str, float]] = []
    if run.resume:
        trainer.fit(data, 0, resume=run.resume)  # load the newest checkpoint, train nothing
        if path is not None and path.is_file():
            stored = read_json(path, fix="delete it and resume (the held-out curve restarts at the resumed epoch)")
            records = [r for r in stored["epochs"] if r["epoch"] <= len(trainer.history.epochs)]

    heldout_frames = DecodedFrames()  # the held-out videos, decoded once for every measurement

    def measure(epoch: int) -> None:
        state = torch.random.get_rng_state()
        values = pretext_accuracy(model, heldout, sampler, eval_transform, clips_per_video=heldout_clips_per_video,
                                  channel_order=channel_order, batch_size=batch_size, seed=seed, device=context.device,
                                  decoded=heldout_frames)
        torch.random.set_rng_state(state)
        broken = sorted(k for k, v in values.items() if not np.isfinite(v))
        if broken:  # the training loss stayed finite but the weights left the range the model computes in
            last = trainer.history.epochs[-1]["loss"] if trainer.history.epochs else float("nan")
            raise NonFiniteLossError(
                f"held-out pretext {', '.join(broken)} not finite after epoch {epoch} (last training loss "
                f"{last:.3g}): the weights diverged; lower the learning rate (pretrain_lr)")
        records.append({"epoch": epoch, **values})
        if path is not None and context.is_main:
            atomic_write_json(path, {"videos": len(heldout), "clips_per_video": heldout_clips_per_video,
                                     "epochs": records})

    done = len(trainer.history.epochs)
    if done == 0:  # before training: where the pretext starts
        records.clear()
        measure(0)
    elif not records or records[-1]["epoch"] != done:  # stopped between a checkpoint and its measurement
        measure(done)
    for epoch in range(done, epochs):
        trainer.fit(data, epoch + 1, of=epochs)
        measure(epoch + 1)
    return PretrainResult(model, trainer.history, trainable, time.perf_counter() - started, records)
