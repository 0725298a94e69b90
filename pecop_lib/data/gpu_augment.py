"""Batched clip augmentation on the training device: loader workers decode, the GPU transforms.

:class:`~pecop_lib.data.transforms.ClipTransform` turns one clip's uint8 frames into a normalised
float clip in the loader worker: float conversion, an antialiased resize, crop, flip and
normalisation of every frame on the CPU, then a float32 clip (4 bytes per value) through shared
memory and the host-to-device copy. At the paper's size that CPU work, not the model, limits
the clips per second a GPU sees.

Here the work is split where it is cheapest:

* **worker** (:class:`DeferredTransform`, a drop-in for the transform): decode, draw the crop
  offset and flip coin with the same generator calls in the same order as the transform
  (:meth:`ClipTransform.draw`), and return the uint8 frames with the draw (:class:`RawClip`);
* **device** (:func:`augment_batch`): the whole batch at once, with no per-clip or per-frame
  Python loop: uint8 -> float, one ``interpolate`` call over ``B*T`` frames, crop and flip as one
  gather (each clip's offsets and flip are index arithmetic), normalisation in place; the result
  can come out directly in ``channels_last_3d``.

For the same seed the two paths produce the same clips (same draws, same operations; on a CPU
bit-identical, on a GPU within float rounding of the resize), see ``tests/test_perf_gpu_augment.py``.
Frames of one batch must share one size (one dataset's frames do); :func:`collate_raw` says so
clearly otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import default_collate

from pecop_lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ClipTransform


class RawClip(NamedTuple):
    """Decoded frames and the transform's random draw, as a loader worker hands them over.

    Attributes:
        frames: uint8 ``(T, H, W, 3)`` RGB (``(B, T, H, W, 3)`` once batched).
        draw: int64 ``(3,)`` ``[top, left, flip]`` in the resized frame (``(B, 3)`` once batched).
    """

    frames: torch.Tensor
    draw: torch.Tensor


@dataclass(frozen=True)
class DeferredTransform:
    """Worker half of a :class:`ClipTransform`: draws its randomness, leaves the pixels as they are.

    Call it where the transform would be called (``transform(frames, rng)``); apply
    :func:`augment_batch` with the same transform to the batch on the device.

    Attributes:
        transform: The transform to defer.
    """

    transform: ClipTransform

    @property
    def is_random(self) -> bool:
        """As the deferred transform."""
        return self.transform.is_random

    def __call__(self, frames: np.ndarray, rng: np.random.Generator | None = None) -> RawClip:
        """``(T, H, W, 3)`` uint8 frames -> :class:`RawClip` (the same draws as ``transform(frames, rng)``)."""
        top, left, flip = self.transform.draw(frames.shape[1:3], rng)
        pixels = torch.from_numpy(np.ascontiguousarray(frames))
        return RawClip(pixels, torch.tensor([top, left, int(flip)], dtype=torch.int64))


def collate_raw(items: Sequence[Any]) -> Any:
    """``default_collate`` that first checks the :class:`RawClip` frames of a batch share one size.

    Raises:
        ValueError: Naming the different frame shapes (re-extract the frames at one size, or use
            the per-clip transform in the workers).
    """
    def shapes(item: Any) -> list[tuple[int, ...]]:
        if isinstance(item, RawClip):
            return [tuple(item.frames.shape)]
        if isinstance(item, (tuple, list)):
            return [s for part in item for s in shapes(part)]
        if isinstance(item, dict):
            return [s for part in item.values() for s in shapes(part)]
        return []

    found = {s for item in items for s in shapes(item)}
    if len(found) > 1:
        raise ValueError(
            f"clips of one batch have frames of different shapes {sorted(found)}; device augmentation stacks the "
            "raw frames: re-extract the videos at one frame size, or augment in the loader workers instead"
        )
    return default_collate(list(items))


def augment_batch(
    raw: RawClip, transform: ClipTransform, *, memory_format: torch.memory_format = torch.contiguous_format
) -> torch.Tensor:
    """Apply ``transform`` to a batch of raw clips on their device, with their recorded draws.

    Args:
        raw: Batched :class:`RawClip`: frames uint8 ``(B, T, H, W, 3)``, draw int64 ``(B, 3)``;
            both on the device that should do the work.
        transform: The transform whose :class:`DeferredTransform` produced ``raw``.
        memory_format: ``torch.contiguous_format`` or ``torch.channels_last_3d`` for the result.

    Returns:
        float32 ``(B, 3, T, crop, crop)`` (``(B, 3, T, H', W')`` without a crop), equal to stacking
        ``transform(frames_i, rng_i)`` over the batch.

    Raises:
        ValueError: On a frames tensor that is not uint8 ``(B, T, H, W, 3)``, or frames smaller than the crop.
    """
    frames, draw = raw
    if frames.dtype != torch.uint8 or frames.dim() != 5 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (B, T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    b, t, height, width, _ = frames.shape
    x = frames.permute(0, 1, 4, 2, 3).float().div_(255.0).reshape(b * t, 3, height, width)  # NHWC-strided, as per clip
    if transform.resize is not None and (height, width) != tuple(transform.resize):
        x = transform.resize_frames(x)
        height, width = transform.resize
    crop_h, crop_w = (transform.crop, transform.crop) if transform.crop is not None else (height, width)
    if crop_h > height or crop_w > width:
        raise ValueError(f"frames of {height}x{width} are smaller than the crop {transform.crop}")
    device = x.device
    draw = draw.to(device)
    top, left, flip = draw[:, 0], draw[:, 1], draw[:, 2].bool()
    rows = top[:, None] + torch.arange(crop_h, device=device)  # (B, crop_h)
    span = torch.arange(crop_w, device=device)
    cols = left[:, None] + torch.where(flip[:, None], crop_w - 1 - span, span)  # (B, crop_w), reversed when flipped
    x = x.view(b, t, 3, height, width)
    channel_last = memory_format == torch.channels_last_3d
    if channel_last:  # gather straight into (B, T, h, w, 3): the NDHWC memory of a channels_last_3d clip
        out = x[torch.arange(b, device=device)[:, None, None, None], torch.arange(t, device=device)[None, :, None, None],
                :, rows[:, None, :, None], cols[:, None, None, :]]
        shape = (1, 1, 1, 1, 3)
    else:  # gather straight into (B, 3, T, h, w)
        out = x[torch.arange(b, device=device)[:, None, None, None, None],
                torch.arange(t, device=device)[None, None, :, None, None],
                torch.arange(3, device=device)[None, :, None, None, None],
                rows[:, None, None, :, None], cols[:, None, None, None, :]]
        shape = (1, 3, 1, 1, 1)
    if transform.normalize:
        out.sub_(torch.tensor(IMAGENET_MEAN, device=device).view(shape))
        out.div_(torch.tensor(IMAGENET_STD, device=device).view(shape))
    return out.permute(0, 4, 1, 2, 3) if channel_last else out
