"""Frame selection as pure functions of indices (no decoding, unit-testable).

Every function returns **positions**: 0-based indices into a video's decodable frames or into the
sorted file list of a frame folder. Decoders (:mod:`pecop_lib.data.video`) turn positions into
frames. The official rules, per dataset:

* MTL-AQA, CoRe layout: the 103 positions ending at ``end_frame`` (:func:`window_ending_at`),
  train shift ``randint(-3, 3)`` of ``end_frame``.
* MTL-AQA, MUSDL layout (one folder per clip): positions ``0..102`` plus a train shift
  ``randint(0, 6)`` (:func:`leading_window`).
* JIGSAWS: 160 positions ``np.linspace(0, n-1, 160)`` truncated to int (:func:`linspace_positions`).
* FineDiving: 96 frame *numbers* ``np.linspace(first, last, 96)`` truncated, minus ``first``
  (:func:`linspace_numbers`).
"""

from __future__ import annotations

import numpy as np


def window_ending_at(end_frame: int, length: int = 103, shift: int = 0) -> np.ndarray:
    """CoRe's MTL-AQA clip: positions ``end_frame + shift - length + i`` for ``i < length``.

    With ffmpeg's 1-based frame files, position ``p`` is file ``p + 1``, so the clip ends on the
    file numbered ``end_frame + shift``.

    Args:
        end_frame: The annotation's ``end_frame``.
        length: Clip length (103 in CoRe and MUSDL).
        shift: Temporal jitter added to ``end_frame`` (train: ``randint(-3, 3)``).

    Returns:
        int64 positions, shape ``(length,)``; may hold values outside the video (see :func:`clamp`).
    """
    stop = int(end_frame) + int(shift)
    return np.arange(stop - length, stop, dtype=np.int64)


def leading_window(length: int = 103, shift: int = 0) -> np.ndarray:
    """MUSDL's MTL-AQA clip: positions ``0..length-1`` of a per-clip folder, plus ``shift``.

    Returns:
        int64 positions, shape ``(length,)``.
    """
    return np.arange(length, dtype=np.int64) + int(shift)


def linspace_positions(num_frames: int, count: int) -> np.ndarray:
    """``np.linspace(0, num_frames - 1, count)`` truncated to int (JIGSAWS, PD4T).

    Raises:
        ValueError: If ``num_frames`` < 1 or ``count`` < 1.
    """
    if num_frames < 1 or count < 1:
        raise ValueError(f"linspace_positions needs num_frames >= 1 and count >= 1, got {num_frames}, {count}")
    return np.linspace(0, num_frames - 1, count).astype(np.int64)


def linspace_numbers(first: int, last: int, count: int) -> np.ndarray:
    """FineDiving's rule: frame numbers ``np.linspace(first, last, count)`` truncated, minus ``first``.

    The folder's files are named by absolute frame numbers ``first..last``; the result indexes
    the sorted file list and the per-frame label array alike.
    """
    if last < first or count < 1:
        raise ValueError(f"linspace_numbers needs last >= first and count >= 1, got {first}, {last}, {count}")
    return np.linspace(first, last, count).astype(np.int64) - int(first)


def subsample(positions: np.ndarray, count: int) -> np.ndarray:
    """Keep ``count`` of ``positions``, evenly spread (``linspace`` over the list), order kept.

    Used to shorten an official clip (e.g. 103 frames) for small presets without changing which
    stretch of video it covers.
    """
    positions = np.asarray(positions, dtype=np.int64)
    if count < 1 or len(positions) == 0:
        raise ValueError(f"subsample needs count >= 1 and a non-empty list, got {count} of {len(positions)}")
    return positions[np.linspace(0, len(positions) - 1, count).astype(np.int64)]


def clamp(positions: np.ndarray, num_frames: int) -> np.ndarray:
    """Clamp positions to ``[0, num_frames - 1]`` (repeat the first/last real frame)."""
    if num_frames < 1:
        raise ValueError("clamp needs num_frames >= 1")
    return np.clip(np.asarray(positions, dtype=np.int64), 0, num_frames - 1)


def contiguous_window(num_frames: int, length: int, start: int) -> np.ndarray:
    """Positions ``start .. start+length-1`` (the domain-general action clips).

    Raises:
        ValueError: If the window does not fit into ``num_frames``.
    """
    if start < 0 or start + length > num_frames:
        raise ValueError(f"window [{start}, {start + length}) does not fit a video of {num_frames} frames")
    return np.arange(start, start + length, dtype=np.int64)
