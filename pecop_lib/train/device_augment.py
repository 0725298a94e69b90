"""Training steps whose clips are augmented on the training device, in batches.

With ``augment="device"`` the loader workers decode and hand over uint8 frames plus each clip's
random draw (:class:`~pecop_lib.data.gpu_augment.DeferredTransform`); pinned host memory and a
non-blocking copy bring the batch to the GPU, and :func:`device_augmented` applies the transform
to the whole batch there (:func:`~pecop_lib.data.gpu_augment.augment_batch`) before the step
function sees it. The step function is unchanged: it receives the same float clips it would have
received from workers that transform on the CPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pecop_lib.data.gpu_augment import RawClip, augment_batch
from pecop_lib.data.transforms import ClipTransform
from pecop_lib.train.loop import StepFn, StepOutput

AUGMENT_PLACES: tuple[str, ...] = ("workers", "device")
"""Where clips are transformed: in the loader ``workers`` (per clip, CPU) or on the training ``device`` (batched)."""


def augment_raw_clips(
    batch: Any, transform: ClipTransform, *, memory_format: torch.memory_format = torch.contiguous_format
) -> Any:
    """Replace every :class:`RawClip` of a (nested tuple / list / dict) batch by its transformed clips.

    Runs outside autocast (fp32, as the workers' transform), on the batch's device.
    """
    if isinstance(batch, RawClip):
        with torch.autocast(batch.frames.device.type, enabled=False):
            return augment_batch(batch, transform, memory_format=memory_format)
    if isinstance(batch, dict):
        return {k: augment_raw_clips(v, transform, memory_format=memory_format) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)) and not hasattr(batch, "_fields"):
        return type(batch)(augment_raw_clips(v, transform, memory_format=memory_format) for v in batch)
    return batch


def device_augmented(
    step_fn: StepFn, transform: ClipTransform, *, memory_format: torch.memory_format = torch.contiguous_format
) -> StepFn:
    """Wrap ``step_fn`` so that it receives clips transformed on the device from raw batches.

    Args:
        step_fn: The step function of worker-transformed batches (e.g. :func:`pretext_step`).
        transform: The transform the workers deferred.
        memory_format: Layout of the clips (``torch.channels_last_3d`` for a channels-last model).

    Returns:
        ``step(model, raw_batch) -> StepOutput``.
    """
    def step(model: nn.Module, batch: Any) -> StepOutput:
        return step_fn(model, augment_raw_clips(batch, transform, memory_format=memory_format))

    return step
