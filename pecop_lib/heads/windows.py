"""Clip windowing: how the AQA heads cut a clip into 16-frame backbone windows.

Every official head runs its I3D on short windows of a longer clip and works on the window
features (facts: ``reference/aqa-heads.md`` Sec. 2-5):

======================  ===========  ==============================================  ============
scheme                  clip frames  window starts (16 frames each)                  backbone
======================  ===========  ==============================================  ============
``musdl_mtl_aqa``       103          0, 10, ..., 80 and **87** (the last 16 frames)  one call per
                                                                                     window
``core_mtl_aqa``        103          0, 10, ..., 80 and **86**                       all windows
                                                                                     in one call
``musdl_jigsaws``       160          0, 16, ..., 144 (non-overlapping)               one call
``tsa_finediving``      96           0, 10, ..., 80 (9 windows)                      one call
======================  ===========  ==============================================  ============

USDL, MUSDL and CoRe average the window features into one video feature; TSA keeps the window
sequence (and the feature maps). MUSDL on MTL-AQA calls the backbone once per window (so a
BatchNorm in training mode sees per-window batch statistics); the other official codes pack the
windows of all clips into one batch, window-major (``torch.cat([clips[:, :, s:s+16] for s in
starts])``). :attr:`Windowing.batched` selects either.

PD4T has no official fine-tuning code; its clips are 103 linspace frames, so the CoRe scheme
applies. Clips shortened for small presets (``data_clip_frames``) use :func:`evenly_spaced`
windows with the same count (fewer if the clip is too short), see :func:`windowing_for`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from pecop_lib.models.backbone import Backbone, check_clip, pool_features

WINDOW_FRAMES = 16
"""Frames per backbone window in every official head."""


@dataclass(frozen=True)
class Windowing:
    """Where the backbone windows of a clip start, and how they are batched.

    Attributes:
        clip_frames: Frames per clip ``T``.
        window: Frames per window.
        starts: First frame of each window (0-based, within the clip).
        batched: ``True``: all windows of all clips in one backbone call (CoRe, TSA, MUSDL on
            JIGSAWS); ``False``: one call per window (MUSDL on MTL-AQA).
        name: Scheme name, for messages and plots.

    Raises:
        ValueError: If a window does not fit into the clip.
    """

    clip_frames: int
    window: int
    starts: tuple[int, ...]
    batched: bool = True
    name: str = "custom"

    def __post_init__(self) -> None:
        if self.window < 1 or not self.starts:
            raise ValueError(f"windowing {self.name!r} needs window >= 1 and at least one start, got {self}")
        bad = [s for s in self.starts if s < 0 or s + self.window > self.clip_frames]
        if bad:
            raise ValueError(
                f"windowing {self.name!r}: windows starting at {bad} (length {self.window}) do not fit "
                f"a {self.clip_frames}-frame clip"
            )

    @property
    def num_windows(self) -> int:
        """Number of windows."""
        return len(self.starts)

    def indices(self) -> np.ndarray:
        """Frame indices of every window, int64 ``(num_windows, window)``."""
        return np.asarray(self.starts, dtype=np.int64)[:, None] + np.arange(self.window, dtype=np.int64)


OFFICIAL_WINDOWINGS: dict[str, Windowing] = {
    "musdl_mtl_aqa": Windowing(
        103, WINDOW_FRAMES, (*range(0, 90, 10), 87), batched=False, name="musdl_mtl_aqa"
    ),
    "core_mtl_aqa": Windowing(103, WINDOW_FRAMES, (*range(0, 90, 10), 86), batched=True, name="core_mtl_aqa"),
    "musdl_jigsaws": Windowing(
        160, WINDOW_FRAMES, tuple(range(0, 160, 16)), batched=True, name="musdl_jigsaws"
    ),
    "tsa_finediving": Windowing(
        96, WINDOW_FRAMES, tuple(range(0, 90, 10)), batched=True, name="tsa_finediving"
    ),
}
"""The official schemes (see the module docstring)."""


def evenly_spaced(
    clip_frames: int, window: int, count: int, *, batched: bool = True, name: str = "even"
) -> Windowing:
    """``count`` windows with starts ``round(linspace(0, clip_frames - window, count))``, duplicates dropped.

    Not an official scheme (``linspace(0, 87, 10)`` is not ``0, 10, ..., 87``); used for clips
    shortened below the official length.

    Raises:
        ValueError: If ``window`` exceeds ``clip_frames`` or ``count`` < 1.
    """
    if not 1 <= window <= clip_frames or count < 1:
        raise ValueError(
            f"evenly_spaced needs 1 <= window <= clip_frames and count >= 1, got {window}, {clip_frames}, {count}"
        )
    starts = np.unique(np.rint(np.linspace(0, clip_frames - window, count)).astype(np.int64))
    return Windowing(clip_frames, window, tuple(int(s) for s in starts), batched=batched, name=name)


def windowing_for(scheme: str, clip_frames: int | None = None, window: int = WINDOW_FRAMES) -> Windowing:
    """The official scheme, or its evenly spaced stand-in for a shortened clip.

    Args:
        scheme: A key of :data:`OFFICIAL_WINDOWINGS`.
        clip_frames: Frames per clip; ``None`` or the official length gives the official scheme.
        window: Window length for shortened clips (capped at ``clip_frames``).

    Returns:
        The windowing; for a shortened clip ``min(official count, clip_frames - window + 1)``
        evenly spaced windows, batched as the official scheme.

    Raises:
        ValueError: On an unknown scheme (listing the known ones).
    """
    if scheme not in OFFICIAL_WINDOWINGS:
        raise ValueError(f"unknown windowing scheme {scheme!r}; choose one of {sorted(OFFICIAL_WINDOWINGS)}")
    official = OFFICIAL_WINDOWINGS[scheme]
    if clip_frames is None or clip_frames == official.clip_frames:
        return official
    window = min(window, clip_frames)
    count = min(official.num_windows, clip_frames - window + 1)
    return evenly_spaced(clip_frames, window, count, batched=official.batched, name=f"{scheme}@{clip_frames}")


class WindowFeatures(NamedTuple):
    """Backbone features of the windows of a clip batch.

    Attributes:
        pooled: ``(B, num_windows, C)``, pooled as the backbone's ``pool`` mode says.
        maps: ``(B, num_windows, C, H', W')``, the last feature map averaged over time (TSA's
            ``feamap.mean(-3)``), or ``None`` when not asked for.
    """

    pooled: torch.Tensor
    maps: torch.Tensor | None = None

    def video(self) -> torch.Tensor:
        """Video-level feature ``(B, C)``: the mean over windows (USDL, MUSDL, CoRe)."""
        return self.pooled.mean(dim=1)

    def select(self, index: torch.Tensor | slice | int) -> WindowFeatures:
        """The features of a subset of the batch (same indexing on both tensors)."""
        return WindowFeatures(self.pooled[index], None if self.maps is None else self.maps[index])

    @staticmethod
    def cat(parts: list[WindowFeatures]) -> WindowFeatures:
        """Concatenate along the batch axis."""
        maps = None if parts[0].maps is None else torch.cat([p.maps for p in parts])  # type: ignore[misc]
        return WindowFeatures(torch.cat([p.pooled for p in parts]), maps)


def encode_windows(
    backbone: Backbone, clips: torch.Tensor, windowing: Windowing, *, maps: bool = False
) -> WindowFeatures:
    """Run the backbone on the windows of a clip batch.

    Args:
        backbone: Any :class:`~pecop_lib.models.backbone.Backbone` (I3D, R3D-18, with or without adapters).
        clips: ``(B, 3, T, H, W)`` with ``T == windowing.clip_frames``.
        windowing: Where the windows start and whether they share one backbone call.
        maps: Also return the time-averaged feature maps (TSA).

    Returns:
        :class:`WindowFeatures` with ``pooled`` ``(B, num_windows, C)`` (and ``maps``).

    Raises:
        ValueError: If the clip length differs from the windowing's.
    """
    check_clip(clips)
    if clips.shape[2] != windowing.clip_frames:
        raise ValueError(
            f"windowing {windowing.name!r} expects {windowing.clip_frames}-frame clips, got {tuple(clips.shape)}; "
            "build it with windowing_for(scheme, clip_frames=<your clip length>)"
        )
    batch = clips.shape[0]
    windows = [clips[:, :, s : s + windowing.window] for s in windowing.starts]
    if windowing.batched:
        fmaps = [backbone.forward_features(torch.cat(windows))]
    else:
        fmaps = [backbone.forward_features(w) for w in windows]
    fmap = torch.cat(fmaps)  # (num_windows * B, C, T', H', W'), window-major
    pooled = pool_features(fmap, backbone.pool).mean(dim=-1)
    pooled = pooled.reshape(windowing.num_windows, batch, -1).transpose(0, 1)
    if not maps:
        return WindowFeatures(pooled)
    spatial = fmap.mean(dim=2)
    spatial = spatial.reshape(windowing.num_windows, batch, *spatial.shape[1:]).transpose(0, 1)
    return WindowFeatures(pooled, spatial)
