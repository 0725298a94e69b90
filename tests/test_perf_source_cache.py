"""Sources opened once per process: same frames as a fresh source, per-process, errors not cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from pecop_lib.data import VideoDecodeError, VideoFile, source_cache
from pecop_lib.data.source_cache import cached_source, clear_source_cache
from pecop_lib.data.video import write_mp4


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
