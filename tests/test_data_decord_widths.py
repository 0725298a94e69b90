"""decord misreads mp4 frames of a few narrow widths (16, 24, 48, 72 px; some below 16): the rule that
predicts them agrees with the real decoder, ``VideoFile`` says so by name instead of reporting an empty
video, and neither ``write_mp4`` nor the synthetic world writes such files."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from pecop_lib.data import VideoDecodeError
from pecop_lib.data.synthetic import WorldSpec, generate_world
from pecop_lib.data.video import VideoFile, decord_misreads_width, write_mp4

MISREAD_EVEN = [2, 4, 6, 8, 12, 16, 24, 48, 72]  # measured with decord 0.6.0 over every even width 2..128


def _encode(frames: np.ndarray, path: Path) -> Path:
    """H.264 mp4 written with PyAV directly (``write_mp4`` refuses the widths under test)."""
    height, width = frames.shape[1:3]
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _pyav_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_rule_lists_the_misread_widths() -> None:
    assert [w for w in range(2, 1025, 2) if decord_misreads_width(w)] == MISREAD_EVEN
    assert not any(decord_misreads_width(w) for w in range(96, 4097))  # real videos are never affected
    assert not any(decord_misreads_width(32 * k) for k in range(1, 64))
    with pytest.raises(ValueError, match="width must be >= 1"):
        decord_misreads_width(0)


@pytest.mark.parametrize("width", [16, 24, 32, 40, 48, 56, 64, 72, 80, 96])
def test_rule_agrees_with_decord_and_video_file_names_the_problem(tmp_path: Path, width: int) -> None:
    frames = np.random.default_rng(width).integers(0, 256, (3, 18, width, 3), dtype=np.uint8)
    path = _encode(frames, tmp_path / f"w{width}.mp4")
    if decord_misreads_width(width):
        with pytest.raises(VideoDecodeError) as info:
            VideoFile(path)
        message = str(info.value)
        assert str(path) in message and f"{width}x18 px" in message and "channels per pixel instead of 3" in message
        assert "re-encode it to a width that is a multiple of 32" in message and "JPEG folder" in message
    else:
        video = VideoFile(path)
        assert len(video) == 3
        np.testing.assert_array_equal(video.read(np.arange(3)), _pyav_frames(path))  # the same decoded pixels


def test_a_video_without_any_decodable_frame_keeps_its_message(tmp_path: Path, monkeypatch) -> None:
    """The layout check runs only when no frame decodes; if frame 0 does not decode at all either, the file is
    reported as having no decodable frame (simulated: a reader that opens but decodes nothing)."""
    import decord

    class NothingDecodes:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def __len__(self) -> int:
            return 5

        def __getitem__(self, index: int) -> object:
            raise RuntimeError("cannot decode")

        def get_batch(self, indices: list[int]) -> object:
            raise RuntimeError("cannot decode")

        def get_avg_fps(self) -> float:
            return 30.0

    path = tmp_path / "broken.mp4"
    path.write_bytes(b"not empty")
    monkeypatch.setattr(decord, "VideoReader", NothingDecodes)
    with pytest.raises(VideoDecodeError, match=r"broken\.mp4: only 0 decodable frame\(s\)"):
        VideoFile(path)


def test_writer_and_world_refuse_misread_widths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"write_mp4 .*v\.mp4: frames 48 px wide cannot be read back") as info:
        write_mp4(np.zeros((2, 32, 48, 3), np.uint8), tmp_path / "v.mp4")
    assert "a multiple of 32, or at least 96 px, is always safe" in str(info.value)
    assert not (tmp_path / "v.mp4").exists()
    assert len(VideoFile(write_mp4(np.zeros((2, 48, 32, 3), np.uint8), tmp_path / "tall.mp4"))) == 2  # height: any
    spec = WorldSpec(size=48, aqa_videos=8, jigsaws_trials=1, action_videos=2, action_frames=8)
    with pytest.raises(ValueError, match=r"synthetic world size 48 .*data_synthetic_size.* PD4T, Kinetics-synth"):
        generate_world(tmp_path / "world", spec, datasets=("MTL-AQA", "PD4T", "Kinetics-synth"))
    assert not (tmp_path / "world").exists()  # refused before anything was written
