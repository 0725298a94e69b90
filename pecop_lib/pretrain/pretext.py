"""The pretext task on the target's unlabeled videos: the videos (:class:`TargetVideo`), their pretext
clips (:class:`PretextClips`: a sampler's frame indices, decoded and transformed), the backbone with the
pretext head, its step, and its accuracy on fixed clips of videos never trained on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from pecop_lib.config import resolve_device
from pecop_lib.data.dataset import AQADataset
from pecop_lib.data.source_cache import DecodedFrames, cached_source
from pecop_lib.data.transforms import ClipTransform, color_jitter, frames_of
from pecop_lib.models.backbone import Backbone
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
from pecop_lib.train.loop import StepFn, StepOutput

PRETEXTS: tuple[str, ...] = ("vspp", "pace", "rspnet")
CHANNEL_ORDERS: tuple[str, ...] = ("rgb", "bgr")

Sampler = VSPPSampler | PaceSampler | RSPNetSampler


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
        with frames_of(str(video.path)):
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
    if isinstance(sampler, (VSPPSampler, PaceSampler)):  # clips and their labels
        loss_fn = vspp_loss if isinstance(sampler, VSPPSampler) else pace_loss

        def labelled_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
            clips, labels = batch
            loss, metrics = loss_fn(model(clips), labels)
            return StepOutput(loss, metrics, count=len(clips))

        return labelled_step

    def rspnet_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> StepOutput:
        loss, metrics = rspnet_loss(model(*batch))
        return StepOutput(loss, metrics, count=len(batch[0]))

    return rspnet_step
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
    target = resolve_device(device)
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
