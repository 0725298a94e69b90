"""Which videos stage 2 reads: training splits only, MTL-AQA dive spans, the official normal pace."""

from __future__ import annotations

import numpy as np
import pytest
from _pretrain_world import tiny_world

from pecop_lib.data import MTLAQA
from pecop_lib.data.video import open_source
from pecop_lib.train.targets import check_target, official_normal_pace, open_target, pretraining_videos


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.getbasetemp())


def test_mtl_aqa_targets_are_the_training_dives(world) -> None:
    videos = pretraining_videos(world["MTL-AQA"], "MTL-AQA")
    train = MTLAQA(world["MTL-AQA"], "train", crop=32)
    test = MTLAQA(world["MTL-AQA"], "test", crop=32)
    assert len(videos) == len(train) and len(test) > 0  # one span per training dive, no test dive
    for video, record in zip(videos, train.records, strict=True):
        assert video.first == record.extras["start_frame"] - 1
        assert video.num_frames == record.extras["end_frame"] - record.extras["start_frame"] + 1
    video = videos[1]
    frames = video.read([1, 2, video.num_frames])  # 1-based within the span
    source = open_source(video.path)
    assert np.array_equal(frames, source.read(np.array([video.first, video.first + 1, video.first + video.num_frames - 1])))


def test_target_checks_name_the_fix(world, tmp_path) -> None:
    check_target("JIGSAWS", "Suturing")
    with pytest.raises(ValueError, match=r"JIGSAWS needs a task, one of \('Suturing', 'Knot_Tying', 'Needle_Passing'\)"):
        check_target("JIGSAWS", None)
    with pytest.raises(ValueError, match="FineDiving has a single task"):
        check_target("FineDiving", "Gait")
    with pytest.raises(ValueError, match="unknown target dataset 'Kinetics'"):
        open_target(world["MTL-AQA"], "Kinetics")
    with pytest.raises(FileNotFoundError, match="PD4T folder .* does not exist; check the data root"):
        pretraining_videos(tmp_path / "PD4T", "PD4T", task="Gait")


def test_official_normal_pace() -> None:
    assert official_normal_pace("PD4T", "Gait") == 3
    assert official_normal_pace("PD4T", "Leg agility") == official_normal_pace("MTL-AQA") == 1
