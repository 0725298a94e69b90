"""Sources opened once per process: same frames as a fresh source, per-process, errors not cached;
whole small videos kept decoded: same frames, within the budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from pecop_lib.data import VideoDecodeError, VideoFile, source_cache
from pecop_lib.data.source_cache import DecodedFrames, cached_source, clear_source_cache
from pecop_lib.data.video import FrameFolder, write_frame_folder, write_mp4


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)  # 32 px: decord misreads a few narrow widths
    return write_mp4(frames, tmp_path_factory.mktemp("cache") / "clip.mp4")


class _Reads(Dataset):
    def __init__(self, path: Path, positions: list[np.ndarray]) -> None:
        self.path, self.positions = path, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(cached_source(self.path).read(self.positions[i]))


def test_a_cached_source_reads_what_a_fresh_one_reads_in_any_order(video: Path) -> None:
    clear_source_cache()
    rng = np.random.default_rng(1)
    positions = [np.sort(rng.choice(40, 8, replace=False)) for _ in range(6)] + [np.arange(39, -1, -5)]
    source = cached_source(video)
    assert cached_source(video) is source and cached_source(str(video)) is source
    for p in positions:  # seeks backwards and forwards on one decoder
        np.testing.assert_array_equal(source.read(p), VideoFile(video).read(p))
    loader = DataLoader(_Reads(video, positions), batch_size=None, num_workers=2)  # forked workers: own decoders
    for p, frames in zip(positions, loader, strict=True):
        np.testing.assert_array_equal(frames.numpy(), VideoFile(video).read(p))


def test_the_cache_is_per_process(video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_source_cache()
    parent = cached_source(video)
    monkeypatch.setattr(source_cache.os, "getpid", lambda: -1)  # what a forked worker sees: another pid
    assert cached_source(video) is not parent


def test_errors_are_not_cached(tmp_path: Path, video: Path) -> None:
    missing = tmp_path / "later.mp4"
    with pytest.raises(VideoDecodeError, match="does not exist"):
        cached_source(missing)
    missing.write_bytes(video.read_bytes())
    assert len(cached_source(missing)) == 40
    with pytest.raises(VideoDecodeError, match="at least 41"):
        cached_source(video, min_frames=41)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    return write_frame_folder(frames, tmp_path_factory.mktemp("cache") / "frames")


@pytest.mark.parametrize("kind", ["mp4", "folder"])
def test_decoded_frames_read_what_the_source_reads(kind: str, video: Path, folder: Path) -> None:
    path = video if kind == "mp4" else folder
    source = VideoFile(video) if kind == "mp4" else FrameFolder(folder)
    n = len(source)
    decoded = DecodedFrames()
    positions = [np.array([0, 3, 3, 7]), np.array([n - 2, n - 1, n + 4]), np.array([-3, 0, 1])]  # clamped at both ends
    for p in positions:
        np.testing.assert_array_equal(decoded.read(path, p), source.read(p))
    assert decoded.used == n * source.read(np.zeros(1, dtype=np.int64)).nbytes  # decoded whole, once


def test_decoded_frames_keep_to_the_budget_and_never_evict(video: Path, folder: Path) -> None:
    folder_bytes = 12 * 16 * 16 * 3
    decoded = DecodedFrames(max_bytes=folder_bytes + 10)  # room for the folder, not for the 40-frame mp4
    np.testing.assert_array_equal(decoded.read(folder, np.arange(4)), FrameFolder(folder).read(np.arange(4)))
    np.testing.assert_array_equal(decoded.read(video, np.arange(5)), VideoFile(video).read(np.arange(5)))
    assert decoded.used == folder_bytes  # the mp4 is read through the open sources, the folder stays
    off = DecodedFrames(max_bytes=0)
    np.testing.assert_array_equal(off.read(video, np.arange(3)), VideoFile(video).read(np.arange(3)))
    assert off.used == 0
    with pytest.raises(ValueError, match="max_bytes must be >= 0"):
        DecodedFrames(max_bytes=-1)
