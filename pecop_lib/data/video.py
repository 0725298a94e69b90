"""Frame sources: uint8 RGB frames for an explicit list of positions, from mp4 files or JPEG folders.

Two sources share one interface (:class:`FrameSource`): ``len(source)`` is the number of frames
that really decode, and ``source.read(positions)`` returns ``(T, H, W, 3)`` uint8 RGB, positions
clamped to the decodable range. :class:`VideoFile` decodes with decord and guards against its
known failure modes (over-reported frame counts, corrupt or empty files, the narrow widths whose
frames it misreads: :func:`decord_misreads_width`); :class:`FrameFolder` reads the pre-extracted
JPEG folders most AQA datasets ship. Writers for both formats are here too (:func:`write_mp4` with
PyAV/libx264, which refuses the widths decord misreads, :func:`write_frame_folder` with PIL).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pecop_lib.data.errors import VideoDecodeError
from pecop_lib.data.files import kind_of, regular_file
from pecop_lib.data.sampling import clamp

JPEG_SUFFIXES = (".jpg", ".jpeg")
FFMPEG_ROW_ALIGN = 32
"""Bytes to which FFmpeg's filters pad each row of the RGB frames they hand to decord."""
REENCODE_FIX = "copy it again or re-encode it (e.g. ffmpeg -i <file> -c:v libx264 <new>.mp4)"
"""The fix for a video file that cannot be read."""
DECODABLE_WIDTH_FIX = (
    "re-encode it to a width that is a multiple of 32 or at least 96 px (e.g. ffmpeg -i <file> -vf scale=64:-2 "
    "-c:v libx264 <new>.mp4), or extract its frames into a JPEG folder"
)


def decord_misreads_width(width: int) -> bool:
    """True for the frame widths whose RGB frames decord (0.6) returns with a wrong layout.

    FFmpeg pads each RGB24 row (``3 * width`` bytes) to a multiple of :data:`FFMPEG_ROW_ALIGN` bytes by
    widening it to the next multiple of 2, 4, 8, ... pixels until the row length is such a multiple
    (``libavutil``'s frame buffers). decord takes a frame whose row length is a multiple of the width
    for a compact array and reads ``row / width`` channels per pixel: a padded row of exactly 4 or 6
    times the width gives frames of shape ``(H, W, 4)`` or ``(H, W, 6)`` (garbage from ``vr[i]``, an
    error from ``get_batch``). Among even widths that is 2, 4, 6, 8, 12, 16, 24, 48 and 72 px, at any
    height (checked against decord 0.6.0 for every even width up to 128 px); widths that are multiples
    of 32, or of at least 96 px, are never affected.

    Args:
        width: Frame width in pixels.

    Returns:
        Whether decord misreads frames of that width.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    step = 1
    row = 3 * width
    while row % FFMPEG_ROW_ALIGN and step < FFMPEG_ROW_ALIGN:
        step *= 2
        row = 3 * (-(-width // step) * step)
    return row != 3 * width and row % width == 0


@runtime_checkable
class FrameSource(Protocol):
    """Anything that yields uint8 RGB frames for a list of positions."""

    path: Path

    def __len__(self) -> int: ...

    def read(self, positions: np.ndarray) -> np.ndarray: ...


def _check_length(path: Path, available: int, min_frames: int) -> None:
    if available < max(min_frames, 1):
        raise VideoDecodeError(
            f"{path}: only {available} decodable frame(s), at least {max(min_frames, 1)} needed; "
            "re-extract or re-encode this video, or drop it from the split"
        )


def _frame_files(folder: Path) -> list[str]:
    """Names of the JPEG files of a frame folder; a FIFO, device, socket or broken link among them is refused
    before anything is opened (decoding a FIFO would block forever)."""
    names = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.lower().endswith(JPEG_SUFFIXES):
                continue
            if not entry.is_file():
                try:
                    kind = kind_of(entry.stat().st_mode)
                except FileNotFoundError:
                    kind = "a broken link"
                raise VideoDecodeError(f"frame file {folder / entry.name} is {kind}, not a regular file (reading it "
                                       "could block forever); replace it with the extracted frame")
            names.append(entry.name)
    return names


class FrameFolder:
    """A folder of JPEG frames, ordered by file name.

    Args:
        path: The folder.
        pattern: Optional regular expression every file name must match (the dataset's official
            naming, e.g. ``r"\\d{8}\\.jpg"``); a mismatch raises, naming the file.
        min_frames: Raise :class:`VideoDecodeError` if fewer frames exist.
    """

    def __init__(self, path: str | os.PathLike[str], *, pattern: str | None = None, min_frames: int = 1) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise VideoDecodeError(f"frame folder {self.path} does not exist; check the dataset root and layout")
        names = sorted(_frame_files(self.path))
        if pattern is not None:
            rx = re.compile(pattern)
            bad = [n for n in names if not rx.fullmatch(n)]
            if bad:
                raise VideoDecodeError(
                    f"{self.path / bad[0]}: file name does not follow the expected pattern {pattern!r} "
                    f"({len(bad)} such file(s)); re-extract frames with the official naming"
                )
        self.files = [self.path / n for n in names]
        _check_length(self.path, len(self.files), min_frames)

    def __len__(self) -> int:
        return len(self.files)

    def numbers(self) -> np.ndarray:
        """The integer frame numbers in the file names (e.g. FineDiving's absolute numbers)."""
        return np.array([int(re.sub(r"\D", "", f.stem) or -1) for f in self.files], dtype=np.int64)

    def check_consecutive(self, first: int | None = None) -> None:
        """Raise if a frame file is missing: the numbers must run ``first, first + 1, ...`` without gaps.

        A missing frame would otherwise shift every later frame silently.

        Args:
            first: The number the first file must carry (e.g. 1 for ffmpeg's ``%08d.jpg``); ``None``
                accepts the folder's smallest number.

        Raises:
            VideoDecodeError: Naming the first missing frame file.
        """
        numbers = self.numbers()
        start = int(numbers[0]) if first is None else first
        gaps = np.flatnonzero(numbers != np.arange(start, start + len(numbers)))
        if gaps.size:
            missing = start + int(gaps[0])
            stem = self.files[0].stem
            name = re.sub(r"\d+", lambda m: f"{missing:0{len(m.group())}d}", stem, count=1) + self.files[0].suffix
            raise VideoDecodeError(
                f"{self.path / name}: frame file missing (the folder's frame numbers must run from {start} without "
                "gaps); re-extract the frames of this video"
            )

    @staticmethod
    @contextlib.contextmanager
    def _jpeg(file: Path) -> Iterator[Any]:
        """Open one frame with PIL; a corrupt or unreadable file raises :class:`VideoDecodeError` naming it."""
        from PIL import Image

        try:
            with Image.open(file) as img:
                yield img
        except (OSError, SyntaxError) as exc:
            raise VideoDecodeError(f"{file}: corrupt or unreadable JPEG ({exc}); re-extract this frame") from exc

    def frame_size(self) -> tuple[int, int]:
        """``(height, width)`` of the first frame, read from its JPEG header (nothing is decoded)."""
        with self._jpeg(self.files[0]) as img:
            width, height = img.size
        return height, width

    def read(self, positions: np.ndarray) -> np.ndarray:
        """Decode the frames at ``positions`` (clamped): uint8 ``(T, H, W, 3)`` RGB."""
        out = []
        for p in clamp(positions, len(self.files)):
            with self._jpeg(self.files[int(p)]) as img:
                out.append(np.asarray(img.convert("RGB")))
        if len({f.shape for f in out}) > 1:
            raise VideoDecodeError(f"{self.path}: frames of different sizes; re-extract the folder at one size")
        return np.stack(out)


class VideoFile:
    """A video file decoded with decord (the package's video decoder).

    On opening, the last frame is decoded to verify the container's frame count; if it fails, the
    true decodable count is found by bisection (decord issue #373: ``len(vr)`` can over-report).

    Args:
        path: The video file (mp4 or anything decord's FFmpeg reads).
        min_frames: Raise :class:`VideoDecodeError` if fewer frames decode.
        num_threads: decord decoding threads (1 keeps worker processes lean and results stable).
    """

    def __init__(self, path: str | os.PathLike[str], *, min_frames: int = 1, num_threads: int = 1) -> None:
        import decord

        self.path = regular_file(path, "video file", error=VideoDecodeError)
        if self.path.stat().st_size == 0:
            raise VideoDecodeError(f"{self.path}: empty file (0 bytes); re-download or re-encode it")
        try:
            self._reader = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=num_threads)
        except Exception as exc:  # decord raises DECORDError / RuntimeError subclasses
            raise VideoDecodeError(
                f"{self.path}: cannot open as a video ({exc}); the file is truncated, corrupt, holds no video frames "
                f"or is not a video: {REENCODE_FIX}"
            ) from exc
        self._length = self._verified_length(len(self._reader))
        if self._length == 0:
            self._check_frame_layout()
        self.fps = float(self._reader.get_avg_fps())
        _check_length(self.path, self._length, min_frames)

    def _decodes(self, position: int) -> bool:
        try:
            self._reader.get_batch([position]).asnumpy()
            return True
        except Exception:  # noqa: BLE001 (any decode failure means "not decodable")
            return False

    def _verified_length(self, reported: int) -> int:
        if reported <= 0 or self._decodes(reported - 1):
            return max(reported, 0)
        low, high = 0, reported - 1  # invariant: frames < low decode (or low == 0), frame high fails
        if not self._decodes(0):
            return 0
        low = 1
        while low < high:
            mid = (low + high) // 2
            if self._decodes(mid):
                low = mid + 1
            else:
                high = mid
        return low

    def _check_frame_layout(self) -> None:
        """Raise if decord lays this video's frames out with a wrong channel count (see :func:`decord_misreads_width`).

        Called when not even frame 0 decodes: ``get_batch`` then fails on every frame, while a single
        frame (``reader[0]``, no copy) still shows the layout decord took. A frame 0 that does not
        decode at all is a corrupt file, reported by the caller as 0 decodable frames.
        """
        try:
            shape = tuple(self._reader[0].shape)
        except Exception:  # noqa: BLE001 (no frame at all: corrupt, reported by the frame count check)
            return
        if len(shape) == 3 and shape[2] != 3:
            height, width, channels = shape
            raise VideoDecodeError(
                f"{self.path}: decord cannot decode this {width}x{height} px video: for a frame width of {width} px "
                f"it lays the RGB rows out as {channels} channels per pixel instead of 3 (a decord bug at widths "
                f"16, 24, 48, 72 px and some below 16); {DECODABLE_WIDTH_FIX}"
            )

    def __len__(self) -> int:
        return self._length

    def read(self, positions: np.ndarray) -> np.ndarray:
        """Decode the frames at ``positions`` (clamped): uint8 ``(T, H, W, 3)`` RGB."""
        pos = clamp(positions, self._length)
        try:
            return self._reader.get_batch(pos.tolist()).asnumpy()
        except Exception as exc:
            raise VideoDecodeError(f"{self.path}: decoding frames failed ({exc}); the file may be corrupt") from exc


def media_geometry(path: str | os.PathLike[str]) -> tuple[tuple[int, int], float | None]:
    """Frame size and frame rate of a video, read from headers only (nothing is decoded).

    Args:
        path: A video file (its container's header, read with PyAV) or a frame folder (the header
            of its first JPEG; a folder stores no frame rate).

    Returns:
        ``((height, width), fps)``; ``fps`` is ``None`` for a frame folder or a container without one.

    Raises:
        VideoDecodeError: A file that is not a readable video, or a folder without frames.
    """
    path = Path(path)
    if path.is_dir():
        return FrameFolder(path).frame_size(), None
    import av

    regular_file(path, "video file", error=VideoDecodeError)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            size = (int(stream.codec_context.height), int(stream.codec_context.width))
            return size, float(stream.average_rate) if stream.average_rate else None
    except (av.FFmpegError, IndexError) as exc:
        raise VideoDecodeError(
            f"{path}: cannot read a video stream's header ({exc or 'no video stream'}); {REENCODE_FIX}"
        ) from exc


def check_mp4_width(width: int, what: str) -> None:
    """Raise ``ValueError`` if decord would misread mp4 frames ``width`` px wide (:func:`decord_misreads_width`).

    Args:
        width: Frame width in pixels.
        what: What is being written, for the message (e.g. ``"write_mp4 <path>"``).
    """
    if decord_misreads_width(width):
        raise ValueError(
            f"{what}: frames {width} px wide cannot be read back from an mp4 by decord (the package's video "
            "decoder misreads widths 16, 24, 48, 72 px and some below 16); use another even width (a multiple of 32, or "
            "at least 96 px, is always safe) or write a JPEG frame folder"
        )


def open_source(path: str | os.PathLike[str], *, min_frames: int = 1, pattern: str | None = None) -> FrameSource:
    """A :class:`FrameFolder` for a directory, else a :class:`VideoFile`."""
    path = Path(path)
    if path.is_dir():
        return FrameFolder(path, pattern=pattern, min_frames=min_frames)
    return VideoFile(path, min_frames=min_frames)


def write_frame_folder(
    frames: np.ndarray,
    folder: str | os.PathLike[str],
    *,
    name_format: str = "{:08d}.jpg",
    first: int = 1,
    quality: int = 90,
) -> Path:
    """Write ``(T, H, W, 3)`` uint8 RGB frames as JPEGs ``name_format.format(first + t)``.

    Each frame goes through a temporary name and a rename, so a crash never leaves a half-written
    JPEG under an official name.
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(np.asarray(frames, dtype=np.uint8)):
        target = folder / name_format.format(first + t)
        tmp = target.with_name(target.name + ".tmp")
        Image.fromarray(frame).save(tmp, format="JPEG", quality=quality)
        os.replace(tmp, target)
    return folder


def write_mp4(frames: np.ndarray, path: str | os.PathLike[str], *, fps: int = 30, crf: int = 18) -> Path:
    """Encode ``(T, H, W, 3)`` uint8 RGB frames as H.264 mp4 (PyAV, yuv420p, one thread).

    Identical frames give identical bytes: one encoder thread, and no macroblock-tree rate control
    (x264's ``mbtree``, whose output varies from one encode of a clip to the next). Height and width
    must be even (yuv420p), and the width one that decord reads back (:func:`decord_misreads_width`).
    The file is written atomically.

    Raises:
        ValueError: On odd frame sizes, a width decord misreads or an empty frame array.
    """
    import av

    from pecop_lib.atomic import atomic_path

    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] != 3:
        raise ValueError(f"write_mp4 needs (T, H, W, 3) frames with T >= 1, got shape {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"write_mp4 needs even height and width for yuv420p, got {height}x{width}")
    check_mp4_width(width, f"write_mp4 {path}")
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.thread_type = "NONE"
            stream.codec_context.thread_count = 1
            stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1",
                              # mbtree=0: x264's macroblock-tree rate control is not repeatable
                              # (measured: 3 different files in 6 encodes of one clip, even with
                              # one thread); without it 40 encodes of each of 4 such clips agreed
                              "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0:mbtree=0"}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return Path(path)
