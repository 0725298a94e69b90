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
