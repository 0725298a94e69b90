"""Which videos stage 2 reads: training splits only (JIGSAWS: of the fold evaluated), MTL-AQA dive spans, the
official normal pace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _worlds import tiny_jigsaws, tiny_world

from pecop_lib.data import MTLAQA, safe_load
from pecop_lib.data.video import open_source
from pecop_lib.pretrain.targets import (
    JIGSAWS_FOLDS,
    TARGET_TASKS,
    check_evaluation_split,
    check_fold,
    check_target,
    named_target,
    official_normal_pace,
    open_target,
    pretraining_videos,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def jigsaws(tmp_path_factory) -> Path:
    return tiny_jigsaws(tmp_path_factory.getbasetemp())["JIGSAWS"]


def _trial(video_path: Path) -> str:
    """``.../frames/Suturing_B001_capture1`` -> ``Suturing_B001``."""
    return video_path.name.removesuffix("_capture1")


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


def test_named_target_finds_the_dataset_of_a_task() -> None:
    assert named_target("MTL-AQA") == ("MTL-AQA", None) and named_target("FineDiving") == ("FineDiving", None)
    assert named_target("Leg agility") == ("PD4T", "Leg agility") and named_target("Suturing") == ("JIGSAWS", "Suturing")
    for bad in ("PD4T", "Leg Agility", ""):  # a multi-task dataset needs its task; names are exact
        with pytest.raises(ValueError, match=rf"unknown stage-2 target '{bad}': .*'MTL-AQA'.*'Leg agility'"):
            named_target(bad)


def test_course_notebook_03_pretrains_on_leg_agility_and_07_reuses_its_runs() -> None:
    import pecop_lib
    from pecop_lib.studies.plans import FIG5_TARGETS, parse_tasks

    course, smoke = pecop_lib.resolve("course"), pecop_lib.resolve("smoke")
    assert named_target(course.pretrain_demo_task) == ("PD4T", "Leg agility")
    assert named_target(smoke.pretrain_demo_task) == ("MTL-AQA", None)
    # notebook 03's stage-2 target is one of Fig. 5's tasks, so notebook 07 loads its PECoP and HPT runs
    assert named_target(course.pretrain_demo_task) in {FIG5_TARGETS[t] for t in parse_tasks(course.ablation_fig5_tasks)}


def test_official_normal_pace() -> None:
    assert official_normal_pace("PD4T", "Gait") == 3
    assert official_normal_pace("PD4T", "Leg agility") == official_normal_pace("MTL-AQA") == 1


@pytest.mark.parametrize("task", ["Suturing", "Knot_Tying"])
def test_jigsaws_targets_are_the_training_trials_of_the_fold_evaluated(jigsaws, task) -> None:
    splits = safe_load(jigsaws / "info" / "splits.pkl")[task]  # the split file itself, not the loader
    seen_as_test = set()
    for fold in JIGSAWS_FOLDS:
        videos = pretraining_videos(jigsaws, "JIGSAWS", task=task, fold=fold)
        trials = [_trial(v.path) for v in videos]
        assert sorted(trials) == sorted(t for k, f in enumerate(splits) if k != fold for t in f)  # the other 3 folds
        assert splits[fold] and not set(trials) & set(splits[fold])  # never one of the fold's test trials
        assert all(v.first == 0 and v.num_frames == len(open_source(v.path)) for v in videos)  # whole trials
        seen_as_test |= set(splits[fold])
    assert len(seen_as_test) == sum(len(f) for f in splits)  # every trial is some fold's test trial


def test_jigsaws_folds_from_the_real_split_file(real_annotations, tmp_path) -> None:
    """The published MUSDL folds (103 trials) give the same split to stage 2; trials listed without videos."""
    source = real_annotations / "jigsaws-musdl"
    (tmp_path / "info").mkdir()
    for name in ("label.pkl", "splits.pkl"):
        (tmp_path / "info" / name).symlink_to(source / name)
    splits = safe_load(source / "splits.pkl")
    assert set(splits) == set(TARGET_TASKS["JIGSAWS"])
    for task in TARGET_TASKS["JIGSAWS"]:
        for fold in JIGSAWS_FOLDS:
            trials = open_target(tmp_path, "JIGSAWS", task=task, fold=fold).trials
            test = set(splits[task][fold])
            assert test and not set(trials) & test
            assert sorted(trials) == sorted(t for k, f in enumerate(splits[task]) if k != fold for t in f)


def test_fold_checks_name_the_choices(world, jigsaws) -> None:
    check_fold("JIGSAWS", 3)
    check_fold("PD4T", None)
    for bad in (None, 4, -1, True, "1"):
        with pytest.raises(ValueError, match=r"JIGSAWS needs the test fold being evaluated, one of \(0, 1, 2, 3\)"):
            pretraining_videos(jigsaws, "JIGSAWS", task="Suturing", fold=bad)
    with pytest.raises(ValueError, match=r"MTL-AQA has a single train/test split; do not pass fold=0 \(only JIGSAWS"):
        pretraining_videos(world["MTL-AQA"], "MTL-AQA", fold=0)
    with pytest.raises(ValueError, match="FineDiving has a single train/test split"):
        open_target(world["MTL-AQA"], "FineDiving", fold=2)


def test_evaluation_on_another_fold_of_the_pretraining_task_is_refused() -> None:
    check_evaluation_split(("JIGSAWS", "Suturing", 1), "JIGSAWS", "Suturing", 1)
    check_evaluation_split(("JIGSAWS", "Suturing", 1), "JIGSAWS", "Knot_Tying", 0)  # other task: other videos
    check_evaluation_split(("MTL-AQA", None, None), "JIGSAWS", "Suturing", 2)
    check_evaluation_split(("JIGSAWS", "Suturing", 1), "MTL-AQA", None, None)
    with pytest.raises(ValueError, match=r"pretrained for JIGSAWS Suturing fold 1: its training videos include the "
                                         r"test videos of fold 3; use the fold-3 stage-2 backbone \(pecop pretrain "
                                         r"--fold 3\) or evaluate fold 1 only \(--fold 1\)"):
        check_evaluation_split(("JIGSAWS", "Suturing", 1), "JIGSAWS", "Suturing", 3)
