"""Frame sources opened once per process and reused: no re-opening of a video for every clip.

Opening an mp4 with decord costs more than reading a clip from it: the container is parsed and
:class:`~pecop_lib.data.video.VideoFile` decodes the last frame to verify the frame count (decord
can over-report it). Measured on the synthetic Kinetics-style set (24 frames at 32 px): 119 ms to
open, 25 ms to read 16 frames. Datasets that read many clips from the same videos (stage 1 reads
each action video once per epoch, continual pretraining each target video 10-20 times per epoch)
spend most of their loading time opening files.

:func:`cached_source` keeps the most recently used sources of *this process* (the key includes the
process id: a loader worker never reuses a decoder it inherited from its parent by ``fork``, whose
file offset it would share). Frames read through a cached source are the ones a fresh source
reads (decord seeks by frame index; tested).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from pecop_lib.data.sampling import clamp
from pecop_lib.data.video import FrameSource, open_source

CACHED_SOURCES = 32
"""Open sources kept per process (decoders hold a file and a little memory each)."""


@functools.lru_cache(maxsize=CACHED_SOURCES)
def _open(pid: int, path: str, min_frames: int, pattern: str | None) -> FrameSource:
    del pid  # part of the cache key only
    return open_source(path, min_frames=min_frames, pattern=pattern)


def cached_source(path: str | os.PathLike[str], *, min_frames: int = 1, pattern: str | None = None) -> FrameSource:
    """:func:`~pecop_lib.data.video.open_source`, reusing this process's source of the same file.

    Args:
        path: Frame folder or video file.
        min_frames: As :func:`open_source` (checked when the source is first opened).
        pattern: As :func:`open_source`.

    Raises:
        VideoDecodeError: As :func:`open_source` (errors are not cached: the next call tries again).
    """
    return _open(os.getpid(), str(Path(path)), int(min_frames), pattern)


def clear_source_cache() -> None:
    """Forget every cached source of this process (e.g. after files were rewritten)."""
    _open.cache_clear()


DECODED_BYTES = 512 * 2**20
"""Default budget of a :class:`DecodedFrames` (bytes of uint8 pixels; per instance, so per loader process)."""


class DecodedFrames:
    """Whole small videos decoded once and kept in memory, up to a byte budget.

    Continual pretraining reads each target video 10-20 times per epoch; for small videos opening
    and seeking cost far more than the pixels (the course world's PD4T Gait, 88 videos of about 210
    frames at 64 px: 20 clips/s through :func:`cached_source`, whose 32 open sources cycle, against
    123 clips/s from decoded arrays; decoding all 88 once takes about 3 s and 224 MB;
    ``benchmarks/bench_decoded_frames.py``). A source whose pixels fit the remaining budget is
    decoded whole at its first read; later reads index the array. Nothing is evicted: once the
    budget is spent, further sources are read through :func:`cached_source` as before, so a budget
    smaller than the data never makes reading slower than without it (no thrashing). Real
    full-resolution videos exceed any sensible budget and are never decoded whole.

    Frames are the ones :func:`cached_source` returns for the same positions (clamped to the
    source), so results do not depend on the budget (tested).

    Args:
        max_bytes: Budget in bytes; 0 turns the cache off.
    """

    def __init__(self, max_bytes: int = DECODED_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes, self.used = int(max_bytes), 0
        self._frames: dict[str, np.ndarray | None] = {}  # None: too large for what was left

    def read(self, path: str | os.PathLike[str], positions: np.ndarray) -> np.ndarray:
        """Frames at 0-based ``positions`` of the source at ``path`` (clamped): uint8 ``(T, H, W, 3)`` RGB.

        Raises:
            VideoDecodeError: As :meth:`~pecop_lib.data.video.FrameSource.read`.
        """
        key = str(Path(path))
        if key not in self._frames:
            self._frames[key] = self._decode_whole(key)
        frames = self._frames[key]
        if frames is None:
            return cached_source(key).read(positions)
        return frames[clamp(np.asarray(positions, dtype=np.int64), len(frames))]

    def _decode_whole(self, key: str) -> np.ndarray | None:
        source = cached_source(key)
        if self.max_bytes - self.used <= 0:
            return None
        first = source.read(np.zeros(1, dtype=np.int64))
        if first.nbytes * len(source) > self.max_bytes - self.used:
            return None
        frames = source.read(np.arange(len(source), dtype=np.int64))
        self.used += frames.nbytes
        return frames
