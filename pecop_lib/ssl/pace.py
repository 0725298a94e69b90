"""VideoPace: pace prediction (Wang et al., ECCV 2020), one of the pretexts of PECoP's Table 5 ablation.

A whole clip is read at one frame step (the *pace*) drawn from ``1..max_pace``; the network
classifies the pace. Unlike VSPP there is no normal-pace context and no segment.

As in the official loader (laura-wang/video-pace, ``datasets/ucf101.py``): the start frame is uniform
in ``1..N`` (the true count, no margin), frames are ``start + k * pace``, and when the next frame
would pass frame N the clip continues from frame 1; label ``pace - 1``; plain cross-entropy.
Official defaults ``max_sr=4``, ``clip_len=64`` (its example uses 16); PECoP's ablation setting of
these is not published, so the recipe uses the VSPP clip length. The official pipeline also applies
per-frame colour jitter, a transform concern outside the sampler. The official backbones end in a
plain linear classifier; :class:`PaceHead` adds optional dropout (default 0, i.e. the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pecop_lib.ssl.draws import RandomSource, randint
from pecop_lib.ssl.pretext import accuracy


def pace_indices(num_frames: int, start: int, pace: int, *, clip_len: int = 32) -> list[int]:
    """1-based frame numbers of a VideoPace clip, as the official loader reads them.

    Args:
        num_frames: Frame count of the video (N).
        start: 1-based first frame, in ``1..N``.
        pace: Frame step, ``>= 1``.
        clip_len: Frames per clip.

    Returns:
        ``clip_len`` frame numbers; after the last frame that fits, reading restarts at frame 1.

    Example:
        >>> pace_indices(20, 15, 3, clip_len=8)
        [15, 18, 1, 4, 7, 10, 13, 16]
    """
    if not 1 <= start <= num_frames:
        raise ValueError(f"start {start} is outside 1..{num_frames} (the video's frames)")
    if pace < 1 or clip_len < 1:
        raise ValueError(f"pace and clip_len must be >= 1, got pace={pace}, clip_len={clip_len}")
    frames: list[int] = []
    origin, steps = start, 0
    for _ in range(clip_len):
        frames.append(origin + steps * pace)
        if origin + (steps + 1) * pace > num_frames:
            origin, steps = 1, 0
        else:
            steps += 1
    return frames


class PaceSample(NamedTuple):
    """One VideoPace example before decoding."""

    frames: list[int]
    label: int
    pace: int
    start: int


@dataclass(frozen=True)
class PaceSampler:
    """Draws VideoPace clips: a pure function of (number of frames, random generator).

    Args:
        clip_len: Frames per clip.
        max_pace: Largest pace (official ``max_sr`` = 4); the head has ``max_pace`` classes.
    """

    clip_len: int = 32
    max_pace: int = 4

    def __post_init__(self) -> None:
        if self.max_pace < 2:
            raise ValueError(f"max_pace must be >= 2 for a classification task, got {self.max_pace}")

    @property
    def num_classes(self) -> int:
        """Width of the pace head."""
        return self.max_pace

    def sample(self, num_frames: int, rng: RandomSource) -> PaceSample:
        """Draw pace (uniform in ``1..max_pace``) and start (uniform in ``1..N``); label ``pace - 1``."""
        if num_frames < 1:
            raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
        pace = randint(rng, 1, self.max_pace)
        start = randint(rng, 1, num_frames)
        return PaceSample(pace_indices(num_frames, start, pace, clip_len=self.clip_len), pace - 1, pace, start)


class PaceHead(nn.Module):
    """Linear pace classifier on pooled features ``(B, C) -> (B, max_pace)``.

    Args:
        feature_dim: Width C of the pooled features.
        num_classes: Number of paces.
        dropout: Dropout before the classifier (0 = the official plain linear layer).
    """

    def __init__(self, feature_dim: int, num_classes: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(feature_dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C)`` features to ``(B, num_classes)`` pace logits."""
        return self.fc(self.dropout(features))


def pace_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Cross-entropy on the pace label, with ``{"acc"}``.

    Args:
        logits: ``(B, K)`` pace logits.
        labels: ``(B,)`` labels ``pace - 1``.
    """
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    return F.cross_entropy(logits, labels), {"acc": accuracy(logits, labels)}
