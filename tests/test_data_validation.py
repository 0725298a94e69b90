"""Validation on the way in: special files refused before they are opened, text encodings, the field schemas
(types, finiteness, whole numbers, ranges) of every format, frame gaps and declared frame counts.

Every bad input is built for real on disk (a real FIFO, a real socket, real bytes) in a copy of a tiny world.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import socket
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pecop_lib.data import JIGSAWS, MTLAQA, PD4T, FineDiving, KineticsActions
from pecop_lib.data.errors import DataFormatError, VideoDecodeError
from pecop_lib.data.files import read_text, regular_file
from pecop_lib.data.formats.fields import Field, check_field, check_fields, check_value, parse_number
from pecop_lib.data.formats.finediving import FINEDIVING_FIELDS
from pecop_lib.data.formats.jigsaws import JIGSAWS_FIELDS
from pecop_lib.data.formats.mtl_aqa import MTL_AQA_FIELDS
from pecop_lib.data.formats.pd4t import PD4T_FIELDS
from pecop_lib.data.synthetic import WorldSpec, generate_world
from pecop_lib.doctor import check_dataset

SPEC = WorldSpec(size=32, aqa_videos=12, jigsaws_trials=1, action_videos=2, action_frames=16, seed=5)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), SPEC)


def _copy(world, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(world[name], tmp_path / name))


def _returns_within(call: Callable[[], object], seconds: float = 20.0) -> BaseException | None:
    """Run ``call`` in a thread; fail if it is still running after ``seconds`` (it blocked on a FIFO)."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the call blocked for {seconds} s (it opened a FIFO)"
    return outcome[0]


def _make_fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


# ----------------------------------------------------------------------------- special files
def test_regular_file_names_each_kind_without_opening(tmp_path):
    fifo, folder, sock_path = tmp_path / "pipe.csv", tmp_path / "folder.csv", tmp_path / "s.csv"
    os.mkfifo(fifo)
    folder.mkdir()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        for path, kind in ((fifo, "a FIFO (named pipe)"), (folder, "a folder"), (sock_path, "a socket")):
            error = _returns_within(lambda path=path: regular_file(path, "label file"))
            assert isinstance(error, DataFormatError)
            assert str(error).startswith(f"label file {path} is {kind}, not a regular file") and "replace it" in str(error)
    finally:
        server.close()
    with pytest.raises(DataFormatError, match=r"label file .*missing\.csv does not exist; check the dataset root"):
        regular_file(tmp_path / "missing.csv", "label file")
    if Path("/dev/zero").exists():  # a device would be read without end
        with pytest.raises(DataFormatError, match="is a character device"):
            read_text("/dev/zero", "annotation file")
    link = tmp_path / "link.csv"
    link.symlink_to(fifo)
    with pytest.raises(DataFormatError, match="is a FIFO"):  # links are followed to what they point at
        regular_file(link, "label file")
    good = tmp_path / "good.csv"
    good.write_text("a,1\n")
    assert regular_file(good, "label file") == good


@pytest.mark.parametrize("where", ["annotation pickle", "split pickle", "frame file"])
def test_mtl_aqa_refuses_a_fifo_instead_of_blocking(world, tmp_path, where):
    root = _copy(world, "MTL-AQA", tmp_path)
    target = {
        "annotation pickle": root / "info" / "final_annotations_dict_with_dive_number.pkl",
        "split pickle": root / "info" / "test_split_0.pkl",
        "frame file": sorted((root / "new_total_frames_256s").glob("*/*.jpg"))[5],
    }[where]
    _make_fifo(target)
    error = _returns_within(lambda: MTLAQA(root, "train", crop=32)[0] and MTLAQA(root, "test", crop=32)[0])
    assert isinstance(error, DataFormatError) and f"{target} is a FIFO (named pipe)" in str(error)
    assert "replace it with the" in str(error)


def test_pd4t_video_and_csv_fifos_are_refused(world, tmp_path):
    root = _copy(world, "PD4T", tmp_path)
    ds = PD4T(root, "Gait", "train", crop=32)
    _make_fifo(ds.video_path(0))
    error = _returns_within(lambda: ds[0])
    assert isinstance(error, VideoDecodeError) and f"video file {ds.video_path(0)} is a FIFO" in str(error)
    csv_path = root / "Annotations" / "Gait" / "test.csv"
    _make_fifo(csv_path)
    error = _returns_within(lambda: PD4T(root, "Gait", "train", crop=32))
    assert isinstance(error, DataFormatError) and f"PD4T annotation file {csv_path} is a FIFO" in str(error)


def test_doctor_reports_a_fifo_in_a_data_root_and_returns(world, tmp_path):
    root = _copy(world, "JIGSAWS", tmp_path)
    _make_fifo(root / "info" / "label.pkl")
    findings: list = []
    assert _returns_within(lambda: findings.extend(check_dataset("jigsaws", root, crop=32))) is None
    assert [f.level for f in findings] == ["error"] and "label.pkl is a FIFO (named pipe)" in findings[0].message


# ----------------------------------------------------------------------------- text encodings
def test_kinetics_csv_with_a_byte_order_mark_reads_the_same_rows(world, tmp_path):
    root = _copy(world, "Kinetics-synth", tmp_path)
    path = root / "annotations" / "train.csv"
    before = [(e.label, e.youtube_id, e.time_start) for e in KineticsActions(root, "train", clip_len=8, crop=32).entries]
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    after = [(e.label, e.youtube_id, e.time_start) for e in KineticsActions(root, "train", clip_len=8, crop=32).entries]
    assert after == before and len(before) > 0
    path.write_bytes(path.read_bytes().replace(b"label,", b"lab\xe9l,", 1))
    with pytest.raises(DataFormatError, match=r"train\.csv is not UTF-8 text \(byte 0xe9 at offset 6\)"):
        KineticsActions(root, "train", clip_len=8, crop=32)
    path.write_bytes(path.read_bytes().replace(b"lab\xe9l,", b"label,", 1))
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    cells = lines[1].split(",")
    path.write_text("\n".join(lines[:1] + [",".join(cells[:2] + ["12.5"] + cells[3:])] + lines[2:]) + "\n")
    with pytest.raises(DataFormatError, match=r"train\.csv:2: time_start 12.5 is not a whole number"):
        KineticsActions(root, "train", clip_len=8, crop=32)


# ----------------------------------------------------------------------------- field schemas
def test_check_value_types_finiteness_whole_numbers_and_ranges():
    score = Field("score", low=0, high=4, integer=True)
    assert check_value(score, 3, "f:1") == 3 and isinstance(check_value(score, np.float32(2.0), "f:1"), int)
    for value, message in ((True, "is True \\(bool\\), not a number"), ("3", "is '3' \\(str\\), not a number"),
                           (None, "is None"), (float("nan"), "is nan \\(not a finite number\\)"),
                           (np.float64("inf"), "is inf"), (2.5, "2.5 is not a whole number"),
                           (5, "5 outside \\[0, 4\\]"), (-1, "-1 outside")):
        with pytest.raises(DataFormatError, match=rf"^f:1: score {message}"):
            check_value(score, value, "f:1")
    difficulty = Field("difficulty", low=0, high=5, low_open=True)
    assert difficulty.range_text() == "(0, 5]" and Field("n", low=1).range_text() == ">= 1"
    with pytest.raises(DataFormatError, match=r"difficulty 0 outside \(0, 5\]"):
        check_value(difficulty, 0, "f")
    judges = Field("judge_scores", low=0, high=10, count=3, outside="warn")
    with pytest.warns(UserWarning, match=r"f: judge_scores\[1\] 45.0 outside \[0, 10\] \(kept as published"):
        assert check_field(judges, np.array([9.0, 45.0, 8.5]), "f") == (9.0, 45.0, 8.5)
    with pytest.raises(DataFormatError, match=r"judge_scores\[2\] is nan"):  # never a warning, even where ranges warn
        check_field(judges, [9.0, 8.0, float("nan")], "f")
    with pytest.raises(DataFormatError, match=r"judge_scores \[9.0, 8.0\] must be 3 numbers"):
        check_field(judges, [9.0, 8.0], "f")
    labels = Field("frame_labels", low=0, integer=True, count=0)
    assert check_field(labels, np.array([0, 0, 1, 2]), "f") == (0, 0, 1, 2)
    with pytest.raises(DataFormatError, match=r"frame_labels\[2\] 1.5 is not a whole number"):
        check_field(labels, np.array([0.0, 1.0, 1.5]), "f")
    with pytest.raises(DataFormatError, match=r"lacks field\(s\) \['score'\]"):
        check_fields({}, [score], "f")
    assert parse_number("7", "score", "f") == 7 and parse_number("2.5", "score", "f") == 2.5
    with pytest.raises(DataFormatError, match="f: score 'seven' is not a number"):
        parse_number("seven", "score", "f")


def test_every_format_declares_its_schema():
    assert {f.name for f in MTL_AQA_FIELDS} >= {"start_frame", "end_frame", "difficulty", "final_score", "judge_scores"}
    assert {f.name for f in FINEDIVING_FIELDS} == {"final_score", "difficulty", "frame_labels"}
    assert {f.name for f in PD4T_FIELDS} == {"num_frames", "score"} and all(f.integer for f in PD4T_FIELDS)
    assert {f.name for f in JIGSAWS_FIELDS} == {"sub-scores", "GRS"} and all(f.integer for f in JIGSAWS_FIELDS)


def _rewrite(path: Path, edit: Callable[[dict], None]) -> None:
    data = pickle.loads(path.read_bytes())
    edit(data)
    path.write_bytes(pickle.dumps(data))


@pytest.mark.parametrize("field, value, message", [
    ("judge_scores", np.array([9.0, 8.5, np.nan, 9.0, 8.0, 9.5, 9.0]), r"judge_scores\[2\] is nan"),
    ("final_score", float("inf"), "final_score is inf"),
    ("start_frame", 10.5, "start_frame 10.5 is not a whole number"),
    ("difficulty", "3.2", r"difficulty is '3.2' \(str\), not a number"),
])
def test_mtl_aqa_refuses_bad_fields(world, tmp_path, field, value, message):
    root = _copy(world, "MTL-AQA", tmp_path)
    path = root / "info" / "final_annotations_dict_with_dive_number.pkl"
    key = sorted(pickle.loads(path.read_bytes()))[0]
    _rewrite(path, lambda data: data[key].update({field: value}))
    with pytest.raises(DataFormatError, match=rf"{path.name}: record \({key[0]}, {key[1]}\): {message}.*correct the"):
        MTLAQA(root, "train", crop=32)


def test_finediving_refuses_bad_fields(world, tmp_path):
    root = _copy(world, "FineDiving", tmp_path)
    path = root / "Annotations" / "fine-grained_annotation_aqa.pkl"
    key = sorted(pickle.loads(path.read_bytes()))[0]
    good = pickle.loads(path.read_bytes())[key]
    for index, value, message in ((4, np.where(np.arange(len(good[4])) == 3, np.nan, good[4]), r"frame_labels\[3\] is nan"),
                                  (1, float("nan"), "final_score is nan"), (2, -1.0, r"difficulty -1.0 outside \(0, 5\]")):
        _rewrite(path, lambda data: data.__setitem__(key, [value if i == index else v for i, v in enumerate(good)]))
        with pytest.raises(DataFormatError, match=rf"{re.escape(f'record {key!r}: ')}{message}"):
            FineDiving(root, "train", crop=32)


def test_real_annotations_pass_the_schemas_with_one_warning(real_annotations):
    from pecop_lib.data.formats import jigsaws, mtl_aqa

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mtl_aqa.load_annotations(real_annotations / "mtl-aqa-musdl" / "augmented_final_annotations_dict.pkl")
        mtl_aqa.load_annotations(real_annotations / "mtl-aqa-core" / "final_annotations_dict_with_dive_number.pkl")
        labels = jigsaws.load_labels(real_annotations / "jigsaws-musdl" / "label.pkl")
    assert len(caught) == 1 and "augmented_final_annotations_dict.pkl: record (4, 49): judge_scores[3] 45.0 outside " \
        "[0, 10] (kept as published" in str(caught[0].message)
    assert len(labels) == 103 and all(isinstance(s, int) for subs in labels.values() for s in subs)


# ----------------------------------------------------------------------------- media
def test_jigsaws_and_musdl_frame_gaps_are_refused(world, tmp_path):
    root = _copy(world, "JIGSAWS", tmp_path)
    ds = JIGSAWS(root, "Suturing", 0, "test", crop=32)
    frames = sorted((root / "frames" / f"{ds.trials[0]}_capture1").glob("*.jpg"))
    frames[7].unlink()
    with pytest.raises(VideoDecodeError, match=rf"{frames[7]}: frame file missing"):
        ds[0]


def test_pd4t_declared_frame_count_must_match_the_video(world, tmp_path):
    root = _copy(world, "PD4T", tmp_path)
    csv_path = root / "Annotations" / "Gait" / "train.csv"
    rows = csv_path.read_text().splitlines()
    video_id, frames, score = rows[0].split(",")
    for declared, fails in ((int(frames) + 1, False), (int(frames) - 1, False), (int(frames) + 40, True)):
        csv_path.write_text("\n".join([f"{video_id},{declared},{score}"] + rows[1:]) + "\n")
        ds = PD4T(root, "Gait", "train", crop=32)
        if fails:
            with pytest.raises(DataFormatError, match=rf"{frames} decodable frames, but Gait's annotation file "
                                                      rf"declares {declared} for {video_id}; .*copy it again"):
                ds[0]
        else:
            assert ds[0]["clip"].shape[1] > 0


@pytest.mark.parametrize("deferred", [False, True], ids=["worker-transform", "device-transform"])
def test_pretext_clips_and_action_clips_name_the_video_smaller_than_the_crop(world, deferred):
    """Every loader names the video whose frames are smaller than the crop, not only the AQA datasets
    (VSPP pretraining on a target's videos, the action set of stage 1; both transform paths)."""
    from pecop_lib.data.gpu_augment import DeferredTransform
    from pecop_lib.data.transforms import ClipTransform
    from pecop_lib.pretrain.pretext import PretextClips, TargetVideo
    from pecop_lib.ssl.vspp import VSPPSampler

    too_big = ClipTransform(crop=SPEC.size + 8, normalize=False)
    transform = DeferredTransform(too_big) if deferred else too_big
    video = next((world["PD4T"] / "Videos").rglob("*.mp4"))
    clips = PretextClips([TargetVideo(video, 0, 60)], VSPPSampler(clip_len=8), transform, seed=0)
    with pytest.raises(DataFormatError, match=rf"^{re.escape(str(video))}: frames of 32x32 are smaller than the crop 40"):
        clips[0]
    actions = KineticsActions(world["Kinetics-synth"], "train", clip_len=8, transform=transform)
    with pytest.raises(DataFormatError, match=r"Kinetics-synth/train/\w+/[\w-]+\.mp4: frames of 32x32 are smaller"):
        actions[0]
