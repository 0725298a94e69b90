"""Pretraining recipes on the :class:`~pecop_lib.train.loop.Trainer`: stage 1 and stage 2.

* **Stage 1, domain-general** (:func:`domain_general_pretrain`): supervised action classification
  of the whole backbone on the synthetic Kinetics-style action set, standing in for Kinetics-400
  weights when none are available (skip it when real weights are loaded).
* **Stage 2, continual pretraining** (:func:`continual_pretrain`): a self-supervised pretext task
  (VSPP, VideoPace or RSPNet) on the unlabeled target videos, training what the strategy owns:
  ``pecop`` (3D-Adapters), ``hpt`` (whole backbone), ``hpt_bn`` (BatchNorm affine), ``dom_s`` (whole
  backbone from random init); ``dom_g`` is "no stage 2" and returns the backbone untouched.

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
from torch.utils.data import Dataset

from pecop_lib.atomic import atomic_write_json, read_json
from pecop_lib.config import OPTIMIZERS, resolve_device
from pecop_lib.data.dataset import AQADataset
from pecop_lib.data.gpu_augment import DeferredTransform, collate_raw
from pecop_lib.data.source_cache import DecodedFrames, cached_source
from pecop_lib.data.transforms import ClipTransform, color_jitter
from pecop_lib.data.workers import worker_context
from pecop_lib.models.backbone import Backbone
from pecop_lib.models.fast_path import FastPath, apply_fast_path
from pecop_lib.models.strategies import get_strategy, mark_trainable
from pecop_lib.ssl import (
    PaceHead,
    PaceSampler,
    PretextModel,
    RSPNet,
    RSPNetSampler,
    VSPPHead,
    VSPPSampler,
    pace_loss,
    rspnet_loss,
    vspp_loss,
)
from pecop_lib.train.data import epoch_loader
from pecop_lib.train.device_augment import AUGMENT_PLACES, device_augmented
from pecop_lib.train.distributed import DistributedContext
from pecop_lib.train.loop import NonFiniteLossError, StepFn, StepOutput, Trainer, TrainHistory

PRETEXTS: tuple[str, ...] = ("vspp", "pace", "rspnet")
CHANNEL_ORDERS: tuple[str, ...] = ("rgb", "bgr")

Sampler = VSPPSampler | PaceSampler | RSPNetSampler


def _device(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else resolve_device(device)


@dataclass(frozen=True)
class TargetVideo:
    """One unlabeled target video for stage 2: a frame source and the span of it to sample from.

    Attributes:
        path: Frame folder or video file.
        first: 0-based position of the span's first frame in the source.
        num_frames: Frames in the span (the count the samplers see, like the official list file).
    """

    path: Path
    first: int
    num_frames: int

    def read(self, frames: Sequence[int], decoded: DecodedFrames | None = None) -> np.ndarray:
        """Decode 1-based frame numbers of the span (as the samplers return them): uint8 ``(T, H, W, 3)`` RGB.

        Args:
            frames: 1-based frame numbers within the span.
            decoded: Read through this cache of whole decoded videos (same frames, faster).
        """
        positions = self.first + np.asarray(frames, dtype=np.int64) - 1
        return decoded.read(self.path, positions) if decoded is not None else cached_source(self.path).read(positions)


def target_videos(dataset: AQADataset, *, annotated_span: bool = False) -> list[TargetVideo]:
    """The distinct videos of an AQA dataset split, for self-supervised pretraining.

    Args:
        dataset: Any :class:`~pecop_lib.data.dataset.AQADataset` (its scores are not used).
        annotated_span: Restrict each video to the record's ``start_frame..end_frame`` (1-based,
            MTL-AQA's CoRe layout, whose event folders hold many dives); otherwise the whole source.

    Returns:
        One :class:`TargetVideo` per distinct (source, span), in record order.

    Raises:
        ValueError: If ``annotated_span`` is set but a record has no ``start_frame``/``end_frame``,
            or the span exceeds its source.
    """
    videos: dict[tuple[Path, int, int], TargetVideo] = {}
    for index, record in enumerate(dataset.records):
        source = dataset.source(index)
        first, count = 0, len(source)
        if annotated_span:
            if "start_frame" not in record.extras or "end_frame" not in record.extras:
                raise ValueError(f"record {record.id} has no start_frame/end_frame; use annotated_span=False")
            first = int(record.extras["start_frame"]) - 1
            count = int(record.extras["end_frame"]) - first
            if first < 0 or first + count > len(source):
                raise ValueError(
                    f"record {record.id}: frames {first + 1}..{first + count} exceed {source.path} ({len(source)} frames)"
                )
        video = TargetVideo(Path(source.path), first, count)
        videos.setdefault((video.path, video.first, video.num_frames), video)
    return list(videos.values())


class PretextClips(Dataset):
    """Clips of target videos drawn by a pretext sampler, decoded and transformed.

    Item ``i`` reads video ``i % len(videos)`` (the list is repeated ``repeat`` times per epoch,
    official x20) and is a pure function of ``(seed, epoch, i)``.

    Items: VSPP ``(clip, labels)`` with ``labels = [speed_label, segment_label]``; VideoPace
    ``(clip, label)``; RSPNet ``(query, key, key_other_speed)`` where the two keys share one spatial
    transform draw (they are one window read at two speeds) and the query gets its own. Clips are
    float ``(3, T, H, W)``.

    Args:
        videos: Target videos.
        sampler: A :class:`VSPPSampler`, :class:`PaceSampler` or :class:`RSPNetSampler`.
        transform: Clip transform (geometry, flip, normalisation), e.g.
            ``official_transform("core_mtl", train=True, crop=crop)`` for PECoP's pipeline.
        repeat: Passes over the list per epoch.
        channel_order: ``"rgb"``, or ``"bgr"`` to feed BGR frames as the official cv2 loader does.
        jitter: Apply :func:`color_jitter` per frame (the original VSPP; off in PECoP's code).
        seed: Base seed.
        decoded: The videos kept decoded in memory (:class:`~pecop_lib.data.source_cache.DecodedFrames`;
            ``None``: a new one with the default budget, per loader process; ``DecodedFrames(0)``: off).
            Pass one to share it between datasets of the same videos. Speed only: the clips do not depend on it.
    """

    def __init__(
        self,
        videos: Sequence[TargetVideo],
        sampler: Sampler,
        transform: ClipTransform,
        *,
        repeat: int = 1,
        channel_order: str = "rgb",
        jitter: bool = False,
        seed: int = 0,
        decoded: DecodedFrames | None = None,
    ) -> None:
        if not videos:
            raise ValueError("no target videos: pass at least one TargetVideo (see target_videos())")
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
        if not isinstance(sampler, (VSPPSampler, PaceSampler, RSPNetSampler)):
            raise TypeError(f"unsupported sampler {type(sampler).__name__}")
        self.videos, self.sampler, self.transform = list(videos), sampler, transform
        self.repeat, self.channel_order, self.jitter = repeat, channel_order, jitter
        self.seed, self.epoch = int(seed), 0
        self.decoded = decoded if decoded is not None else DecodedFrames()

    def __len__(self) -> int:
        return len(self.videos) * self.repeat

    def set_epoch(self, epoch: int) -> None:
        """Select the random draws of ``epoch`` (called by :func:`~pecop_lib.train.data.epoch_loader`)."""
        self.epoch = int(epoch)

    def _clip(self, video: TargetVideo, frames: list[int], rng: np.random.Generator) -> np.ndarray:
        pixels = video.read(frames, self.decoded)
        if self.jitter:
            pixels = color_jitter(pixels, rng)
        return pixels[..., ::-1] if self.channel_order == "bgr" else pixels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        video = self.videos[index % len(self.videos)]
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        sample = self.sampler.sample(video.num_frames, rng)
        if isinstance(self.sampler, VSPPSampler):
            clip = self.transform(self._clip(video, sample.frames, rng), rng)
            return clip, torch.tensor([sample.speed_label, sample.segment_label])
        if isinstance(self.sampler, PaceSampler):
            return self.transform(self._clip(video, sample.frames, rng), rng), torch.tensor(sample.label)
        query = self.transform(self._clip(video, sample.query, rng), rng)
        keys = self._clip(video, sample.key + sample.key_other_speed, rng)
        key, key_other = self.transform(keys, rng).split(len(sample.key), dim=1)
        return query, key.contiguous(), key_other.contiguous()


def pretext_model(
    backbone: Backbone,
    sampler: Sampler,
    *,
    dropout: float = 0.5,
    rspnet_options: dict[str, Any] | None = None,
) -> nn.Module:
    """Backbone + the head(s) of the sampler's pretext task (heads trainable).

    Args:
        backbone: Pooled-feature backbone (trainable parameters already chosen).
        sampler: Decides the task and the head sizes.
        dropout: Dropout before the VSPP heads (official 0.5); VideoPace's head uses none.
        rspnet_options: Keyword arguments of :class:`~pecop_lib.ssl.rspnet.RSPNet` (queue size, ...).
    """
    if isinstance(sampler, VSPPSampler):
        head = VSPPHead(backbone.feature_dim, sampler.num_speed_classes, sampler.num_segment_classes, dropout=dropout)
        return PretextModel(backbone, head)
    if isinstance(sampler, PaceSampler):
        return PretextModel(backbone, PaceHead(backbone.feature_dim, sampler.num_classes))
    if isinstance(sampler, RSPNetSampler):
        return RSPNet(backbone, **(rspnet_options or {}))
    raise TypeError(f"unsupported sampler {type(sampler).__name__}")


def pretext_step(sampler: Sampler) -> StepFn:
    """The step function of the sampler's pretext task (loss and accuracies)."""
    if isinstance(sampler, VSPPSampler):
        def vspp_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
            clips, labels = batch
            loss, metrics = vspp_loss(model(clips), labels)
            return StepOutput(loss, metrics, count=len(clips))

        return vspp_step
    if isinstance(sampler, PaceSampler):
        def pace_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
            clips, labels = batch
            loss, metrics = pace_loss(model(clips), labels)
            return StepOutput(loss, metrics, count=len(clips))

        return pace_step

    def rspnet_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> StepOutput:
        loss, metrics = rspnet_loss(model(*batch))
        return StepOutput(loss, metrics, count=len(batch[0]))

    return rspnet_step


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
HELDOUT_SEED = 7919
"""Offset of the held-out clips' seed: the same clips at every epoch, never the training draws."""


@torch.no_grad()
def pretext_accuracy(
    model: nn.Module,
    videos: Sequence[TargetVideo],
    sampler: Sampler,
    transform: ClipTransform,
    *,
    clips_per_video: int = 4,
    channel_order: str = "rgb",
    batch_size: int = 16,
    seed: int = 0,
    device: str | torch.device = "auto",
    decoded: DecodedFrames | None = None,
) -> dict[str, float]:
    """Pretext accuracy on clips of ``videos`` (e.g. the target's test split, never trained on).

    The clips are a pure function of ``seed`` (drawn as epoch 0 of :class:`PretextClips`), so every
    epoch of a run is measured on the same clips. The model runs in evaluation mode (dropout off,
    BatchNorm running statistics) and is put back in its previous mode.

    Args:
        model: A VSPP or VideoPace :class:`~pecop_lib.ssl.PretextModel` (backbone + head).
        videos: Held-out videos.
        sampler: The pretext's sampler (VSPP or VideoPace; RSPNet has no accuracy).
        transform: Evaluation transform (centre crop, no flip).
        clips_per_video: Clips drawn per video.
        channel_order, batch_size, seed, device: Input order, batching, draws and device.
        decoded: Decoded videos to read from and fill (pass the same one at every epoch of a run, so the
            held-out videos are decoded once; see :class:`PretextClips`).

    Returns:
        VSPP: ``{"speed_acc", "segment_acc", "acc", "loss", "clips"}``; VideoPace ``{"acc", "loss", "clips"}``.

    Raises:
        TypeError: For an RSPNet sampler.
        ValueError: If ``videos`` is empty.
    """
    if isinstance(sampler, RSPNetSampler):
        raise TypeError("RSPNet is contrastive: it has no held-out accuracy; use VSPP or VideoPace")
    target = _device(device)
    clips = PretextClips(videos, sampler, transform, repeat=clips_per_video, channel_order=channel_order,
                         seed=seed + HELDOUT_SEED, decoded=decoded)
    loss_fn = vspp_loss if isinstance(sampler, VSPPSampler) else pace_loss
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    try:
        for start in range(0, len(clips), batch_size):
            items = [clips[i] for i in range(start, min(start + batch_size, len(clips)))]
            x = torch.stack([c for c, _ in items]).to(target)
            labels = torch.stack([y for _, y in items]).to(target)
            loss, metrics = loss_fn(model(x), labels)
            for name, value in {"loss": loss, **metrics}.items():
                sums[name] = sums.get(name, 0.0) + float(value) * len(items)
    finally:
        model.train(was_training)
    return {**{k: v / len(clips) for k, v in sums.items()}, "clips": len(clips)}


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
    device: str | torch.device = "auto",
    precision: str = "auto",
    compile: bool | str = False,
    grad_accum_steps: int = 1,
    checkpoint_every_steps: int | None = None,
    keep_last: int | None = None,
    num_workers: int = 0,
    augment: str = "workers",
    fast: FastPath | None = None,
    seed: int = 0,
    distributed: DistributedContext | None = None,
    resume: bool | str | os.PathLike[str] = False,
    show_progress: bool = True,
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
        run_dir, device, precision, compile, grad_accum_steps, checkpoint_every_steps, keep_last,
            distributed, resume, show_progress: See :class:`~pecop_lib.train.loop.Trainer`.
        num_workers: Loader worker processes.
        augment: ``"workers"``: the loader workers transform each clip; ``"device"``: they only
            decode, and the transform runs on the training device in batches
            (:mod:`pecop_lib.train.device_augment`; same clips for the same seed). VSPP and
            VideoPace only.
        fast: Execution switches of the backbone (:class:`~pecop_lib.models.fast_path.FastPath`);
            ``None`` leaves the backbone as it is.
        seed: Seed of the heads' initialisation, the data order, every sample draw and the dropout masks.
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
    context = distributed or DistributedContext(device=_device(device))
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
    data = epoch_loader(clips, batch_size // context.world_size, seed=seed, drop_last=True, num_workers=num_workers,
                        rank=context.rank, world_size=context.world_size, pin_memory=context.device.type == "cuda",
                        collate_fn=collate_raw if deferred else None)
    step = pretext_step(sampler)
    if deferred:
        layout = torch.channels_last_3d if fast is not None and fast.channels_last else torch.contiguous_format
        step = device_augmented(step, transform, memory_format=layout)
    trainer = Trainer(
        model, step, opt, scheduler, run_dir=run_dir,
        device=context.device, precision=precision, compile=compile,
        grad_accum_steps=grad_accum_steps, checkpoint_every_steps=checkpoint_every_steps, keep_last=keep_last,
        distributed=distributed, desc=f"{spec.label} {type(sampler).__name__.removesuffix('Sampler')}",
        show_progress=show_progress, seed=seed, loader_workers=num_workers,
    )
    started = time.perf_counter()
    if not heldout or isinstance(sampler, RSPNetSampler):
        history = trainer.fit(data, epochs, resume=resume)
        return PretrainResult(model, history, trainable, time.perf_counter() - started)
    eval_transform = heldout_transform or transform.evaluation()
    path = Path(run_dir) / HELDOUT_FILE if run_dir is not None else None
    records: list[dict[str, float]] = []
    if resume:
        trainer.fit(data, 0, resume=resume)  # load the newest checkpoint, train nothing
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
        trainer.fit(data, epoch + 1)
        measure(epoch + 1)
    return PretrainResult(model, trainer.history, trainable, time.perf_counter() - started, records)


class _ActionClassifier(nn.Module):
    """``forward`` = the backbone's Kinetics-style classifier (so DDP sees the call)."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_logits(clips)


def _classification_step(model: nn.Module, batch: dict[str, Any]) -> StepOutput:
    logits = model(batch["clip"])
    labels = batch["label"]
    loss = nn.functional.cross_entropy(logits, labels)
    return StepOutput(loss, {"acc": (logits.argmax(1) == labels).float().mean()}, count=len(labels))


def _collate_actions(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"clip": torch.stack([i["clip"] for i in items]), "label": torch.stack([i["label"] for i in items])}




def domain_general_pretrain(
    backbone: Backbone,
    dataset: Dataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    optimizer: str = "sgd",
    run_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    num_workers: int = 0,
    seed: int = 0,
    distributed: DistributedContext | None = None,
    resume: bool | str | os.PathLike[str] = False,
    show_progress: bool = True,
) -> PretrainResult:
    """Stage 1: supervised action classification of the whole backbone (and its classifier).

    Stands in for Kinetics-400 pretraining on the synthetic action set
    (:class:`~pecop_lib.data.formats.kinetics.KineticsActions`, items ``{"clip", "label"}``). SGD
    (momentum) or Adam, cosine annealing to 0 over ``epochs`` (stepped per epoch), BatchNorm in
    training mode. Its recipe is ours to choose (it stands in for Kinetics): Adam learns the
    synthetic actions from scratch in far fewer steps on a CPU (docs/course.md).

    Args:
        backbone: Built with ``num_classes`` = the number of action classes.
        dataset: Items with ``"clip"`` ``(3, T, H, W)`` and ``"label"`` (class index).
        epochs, batch_size, lr, momentum, weight_decay: The optimisation (``momentum``: SGD only).
        optimizer: ``"sgd"`` or ``"adam"``.
        run_dir, device, precision, num_workers, seed, distributed, resume, show_progress: As in
            :func:`continual_pretrain`.

    Raises:
        RuntimeError: If the backbone has no classifier.
    """
    if not backbone.has_classifier:
        raise RuntimeError(f"{backbone.name} has no classifier; build it with num_classes=<number of action classes>")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown stage-1 optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    backbone.requires_grad_(True)
    backbone.bn_mode = "train"
    context = distributed or DistributedContext(device=_device(device))
    if batch_size % context.world_size:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {context.world_size} processes")
    model = _ActionClassifier(backbone)
    opt, scheduler = cosine_optimizer(model.parameters(), kind=optimizer, lr=lr, momentum=momentum,
                                      weight_decay=weight_decay, t_max=epochs, eta_min=0.0)
    data = epoch_loader(dataset, batch_size // context.world_size, seed=seed, drop_last=True, num_workers=num_workers,
                        rank=context.rank, world_size=context.world_size, collate_fn=_collate_actions,
                        pin_memory=context.device.type == "cuda")
    trainer = Trainer(model, _classification_step, opt, scheduler, run_dir=run_dir,
                      device=context.device, precision=precision, distributed=distributed,
                      desc="domain-general", show_progress=show_progress, seed=seed, loader_workers=num_workers)
    started = time.perf_counter()
    history = trainer.fit(data, epochs, resume=resume)
    return PretrainResult(model, history, [n for n, _ in backbone.named_parameters()], time.perf_counter() - started)


@torch.no_grad()
def action_accuracy(
    backbone: Backbone, dataset: Dataset, *, batch_size: int = 8, device: str | torch.device = "auto",
    num_workers: int = 0,
) -> float:
    """Top-1 accuracy of the backbone's action classifier on a dataset (evaluation mode).

    Args:
        backbone: Built with ``num_classes`` = the number of action classes.
        dataset: Items with ``"clip"`` ``(3, T, H, W)`` and ``"label"`` (e.g. the ``val`` split of
            :class:`~pecop_lib.data.formats.kinetics.KineticsActions`).
        batch_size, device, num_workers: Evaluation settings.

    Returns:
        The fraction of clips whose arg-max class is the label (chance: 1 / number of classes).

    Raises:
        RuntimeError: If the backbone has no classifier.
        ValueError: If the dataset is empty.
    """
    if not backbone.has_classifier:
        raise RuntimeError(f"{backbone.name} has no classifier; build it with num_classes=<number of action classes>")
    if len(dataset) == 0:
        raise ValueError("the evaluation dataset is empty")
    target = _device(device)
    was_training = backbone.training
    backbone.to(target).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         multiprocessing_context=worker_context(num_workers),
                                         collate_fn=_collate_actions)
    correct = 0
    try:
        for batch in loader:
            logits = backbone.forward_logits(batch["clip"].to(target))
            correct += int((logits.argmax(1).cpu() == batch["label"]).sum())
    finally:
        backbone.train(was_training)
    return correct / len(dataset)
