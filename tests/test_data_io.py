"""Data room, low level: restricted unpickler, frame selection, frame sources, transforms."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from pecop_lib.data import sampling
from pecop_lib.data.errors import DataFormatError, UnsafePickleError, VideoDecodeError
from pecop_lib.data.safe_pickle import safe_load, safe_loads
from pecop_lib.data.transforms import ClipTransform, official_transform
from pecop_lib.data.video import (
    FrameFolder,
    VideoFile,
    media_geometry,
    open_source,
    write_frame_folder,
    write_mp4,
)


# ----------------------------------------------------------------- restricted unpickler
class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_safe_load_refuses_code_execution(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"x": _Exploit(str(marker))}))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*(posix|os)\.system"):
        safe_load(bad)
    assert not marker.exists()


def test_safe_load_refuses_builtins_eval():
    payload = b"cbuiltins\neval\n(S'1+1'\ntR."
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        safe_loads(payload, "x.pkl")


def test_safe_load_reads_numpy_and_containers(tmp_path):
    obj = {(1, 2): {"a": np.arange(7, dtype=np.float64), "s": {1, 2}, "f": np.float64(2.5)}, "l": [("x", 3)]}
    for protocol in (2, 4, 5):
        path = tmp_path / f"ok{protocol}.pkl"
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
        out = safe_load(path)
        np.testing.assert_array_equal(out[(1, 2)]["a"], np.arange(7))
        assert out[(1, 2)]["s"] == {1, 2} and out["l"] == [("x", 3)] and out[(1, 2)]["f"] == 2.5


def test_safe_load_missing_and_truncated(tmp_path):
    with pytest.raises(DataFormatError, match="does not exist"):
        safe_load(tmp_path / "nope.pkl")
    (tmp_path / "t.pkl").write_bytes(pickle.dumps({"a": 1})[:-3])
    with pytest.raises(DataFormatError, match=r"t\.pkl: not a readable pickle"):
        safe_load(tmp_path / "t.pkl")


def test_safe_load_real_annotation_pickles(real_annotations):
    data = safe_load(real_annotations / "mtl-aqa-musdl" / "augmented_final_annotations_dict.pkl")
    assert len(data) == 1412
    np.testing.assert_array_equal(data[(1, 1)]["judge_scores"], [9.5, 9, 9.5, 9, 8.5, 9.5, 8.5])


# ----------------------------------------------------------------- sampling (pure index functions)
def test_window_ending_at_matches_core_rule():
    pos = sampling.window_ending_at(200, 103, shift=0)
    assert len(pos) == 103 and pos[0] == 97 and pos[-1] == 199  # positions end_frame-103 .. end_frame-1
    assert sampling.window_ending_at(200, 103, shift=-3)[-1] == 196


def test_leading_window_and_linspace():
    np.testing.assert_array_equal(sampling.leading_window(5, 2), [2, 3, 4, 5, 6])
    np.testing.assert_array_equal(sampling.linspace_positions(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(sampling.linspace_positions(300, 160)[:3], [0, 1, 3])  # trunc of 0, 1.88, 3.76
    # FineDiving: numbers 489..592 (104 frames), 96 samples; positions index the folder
    pos = sampling.linspace_numbers(489, 592, 96)
    assert pos[0] == 0 and pos[-1] == 103 and len(pos) == 96
    np.testing.assert_array_equal(pos, (np.linspace(489, 592, 96).astype(int) - 489))


def test_subsample_and_clamp():
    np.testing.assert_array_equal(sampling.subsample(np.arange(10, 20), 4), [10, 13, 16, 19])
    np.testing.assert_array_equal(sampling.clamp(np.array([-2, 0, 5, 9]), 5), [0, 0, 4, 4])
    with pytest.raises(ValueError):
        sampling.contiguous_window(10, 8, 3)


# ----------------------------------------------------------------- frame sources
def _frames(t: int = 12, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = np.zeros((t, size, size, 3), np.uint8)
    for i in range(t):  # a bright square moving right over a gradient: frames are distinguishable
        base[i, :, :, 2] = np.linspace(0, 200, size, dtype=np.uint8)[None, :]
        base[i, 8:16, i : i + 8] = (255, 255, 0)
    return base + rng.integers(0, 3, base.shape, dtype=np.uint8)


def test_mp4_round_trip_decodes_with_decord(tmp_path):
    frames = _frames()
    path = write_mp4(frames, tmp_path / "v.mp4")
    video = VideoFile(path)
    assert len(video) == len(frames)
    out = video.read(np.arange(len(frames)))
    assert out.dtype == np.uint8 and out.shape == frames.shape
    assert np.abs(out.astype(int) - frames).mean() < 8.0  # lossy H.264 + yuv420p chroma
    # every decoded frame is closest to its own source frame (right frames, right order)
    dist = np.abs(out[:, None].astype(int) - frames[None].astype(int)).mean(axis=(2, 3, 4))
    np.testing.assert_array_equal(dist.argmin(axis=1), np.arange(len(frames)))
    # positions past the end are clamped to the last decodable frame
    np.testing.assert_array_equal(video.read(np.array([11, 50])), out[[11, 11]])


def test_mp4_writer_is_deterministic(tmp_path):
    """Eight encodes of one clip give one file. (With PyAV converting RGB inside ``encode()``, ten
    encodes of a 217-frame synthetic Gait video gave six different files, and the synthetic world
    differed between two generations with the same seed.)"""
    from pecop_lib.data.synthetic import motor
    from pecop_lib.data.synthetic.world import _rng, world_spec

    # the clip that showed it: course world, PD4T Gait video 60 (most clips encode the same by luck)
    rng = _rng(world_spec("course", 0), "PD4T", motor.TASKS.index("Gait"), 60)
    frames, _ = motor.render_task(rng, "Gait", 64, 2, "r")
    files = {write_mp4(frames, tmp_path / f"{i}.mp4").read_bytes() for i in range(8)}
    assert len(files) == 1


def test_video_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match=r"empty\.mp4: empty file"):
        VideoFile(empty)
    good = write_mp4(_frames(), tmp_path / "good.mp4").read_bytes()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(good[: len(good) // 2])  # moov atom lost
    with pytest.raises(VideoDecodeError, match=r"corrupt\.mp4"):
        VideoFile(corrupt)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(VideoDecodeError, match=r"garbage\.mp4"):
        VideoFile(garbage)
    with pytest.raises(VideoDecodeError, match=r"good\.mp4: only 12 decodable frame\(s\), at least 20 needed"):
        VideoFile(tmp_path / "good.mp4", min_frames=20)
    with pytest.raises(VideoDecodeError, match="does not exist"):
        VideoFile(tmp_path / "missing.mp4")


def test_frame_folder_round_trip_and_errors(tmp_path):
    frames = _frames(6)
    folder = write_frame_folder(frames, tmp_path / "clip", name_format="{:05d}.jpg", first=489)
    source = open_source(folder, pattern=r"\d{5}\.jpg")
    assert isinstance(source, FrameFolder) and len(source) == 6
    np.testing.assert_array_equal(source.numbers(), np.arange(489, 495))
    out = source.read(np.array([0, 5, 9]))
    assert out.shape == (3, 32, 32, 3) and np.abs(out[1].astype(int) - frames[5]).mean() < 6
    with pytest.raises(VideoDecodeError, match="only 6 decodable"):
        FrameFolder(folder, min_frames=7)
    with pytest.raises(VideoDecodeError, match=r"img_1\.jpg: file name does not follow"):
        (folder / "img_1.jpg").write_bytes((folder / "00489.jpg").read_bytes())
        FrameFolder(folder, pattern=r"\d{5}\.jpg")
    (folder / "img_1.jpg").unlink()
    (folder / "00490.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoDecodeError, match=r"00490\.jpg: corrupt or unreadable JPEG"):
        FrameFolder(folder).read(np.array([1]))
    with pytest.raises(VideoDecodeError, match="does not exist"):
        FrameFolder(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoDecodeError, match="only 0 decodable"):
        FrameFolder(tmp_path / "empty")


# ----------------------------------------------------------------- transforms
def test_clip_transform_shapes_and_normalisation():
    frames = np.full((4, 40, 60, 3), 255, np.uint8)
    clip = ClipTransform(resize=(36, 64), crop=32)(frames)
    assert clip.shape == (3, 4, 32, 32) and clip.dtype == torch.float32
    expected = (1.0 - 0.485) / 0.229
    assert torch.allclose(clip[0], torch.full_like(clip[0], expected), atol=1e-5)


def test_clip_transform_flip_and_crop_are_seeded():
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    frames[:, :, :4] = 255  # left half white
    t = ClipTransform(crop=None, flip=True, normalize=False)
    outs = [t(frames, np.random.default_rng(s))[0, 0, 0, 0].item() for s in range(20)]
    assert set(outs) == {0.0, 1.0}  # flipped sometimes, not always
    a = ClipTransform(crop=4, random_crop=True, normalize=False)(_frames(3), np.random.default_rng(1))
    b = ClipTransform(crop=4, random_crop=True, normalize=False)(_frames(3), np.random.default_rng(1))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="needs an rng"):
        t(frames)
    with pytest.raises(ValueError, match="smaller than the crop"):
        ClipTransform(crop=16)(frames)


def test_official_conventions():
    core = official_transform("core_mtl", train=True, crop=224)
    assert core.resize == (455, 256) and core.random_crop and core.flip
    musdl = official_transform("musdl_mtl", train=True, crop=224)
    assert musdl.resize == (256, 455) and not musdl.random_crop and musdl.flip
    assert official_transform("tsa_finediving", train=False, crop=112).resize == (200, 112)
    jig = official_transform("musdl_jigsaws", train=True, crop=224)
    assert jig.resize is None and not jig.is_random
    assert official_transform("core_mtl", train=False, crop=112).resize == (228, 128)
    with pytest.raises(ValueError, match="unknown transform convention"):
        official_transform("nope", train=True)


def test_media_geometry_reads_headers_of_videos_and_frame_folders(tmp_path):
    frames = np.zeros((6, 32, 64, 3), np.uint8)
    assert media_geometry(write_mp4(frames, tmp_path / "v.mp4", fps=25)) == ((32, 64), 25.0)
    assert media_geometry(write_frame_folder(frames, tmp_path / "frames")) == ((32, 64), None)  # no rate stored
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(VideoDecodeError, match=r"notes\.mp4: cannot read a video stream's header"):
        media_geometry(tmp_path / "notes.mp4")
