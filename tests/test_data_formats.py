"""Data room: each loader reads its synthetic twin (generate -> load -> sample), the real annotation
files, and raises named errors on bad input; generation is deterministic."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pecop_lib.data import JIGSAWS, MTLAQA, PD4T, FineDiving, KineticsActions
from pecop_lib.data.errors import DataFormatError
from pecop_lib.data.formats import finediving, jigsaws, mtl_aqa, pd4t
from pecop_lib.data.sampling import window_ending_at
from pecop_lib.data.synthetic import WorldSpec, generate_world, load_world, synthetic_world
from pecop_lib.data.synthetic.actions import (
    ACTION_CLASSES,
    TIMED_MOTIONS,
    TIMING_CLASSES,
    render_action,
    timing_warp,
)
from pecop_lib.data.synthetic.motor import updrs_score
from pecop_lib.data.synthetic.world import ACTIONS_VERSION

SPEC = WorldSpec(size=32, aqa_videos=16, jigsaws_trials=1, action_videos=2, action_frames=16, seed=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), SPEC)


def _copy(world, name, tmp_path) -> Path:
    return Path(shutil.copytree(world[name], tmp_path / name))


# ----------------------------------------------------------------- MTL-AQA
def test_mtl_aqa_round_trip(world):
    root = world["MTL-AQA"]
    train, test = MTLAQA(root, "train", crop=32), MTLAQA(root, "test", crop=32)
    assert len(train) + len(test) == SPEC.aqa_videos and not set(train.keys) & set(test.keys)
    ann = train.annotations
    assert mtl_aqa.rule_deviations(ann) == []  # final = middle three x difficulty, everywhere
    assert set(ann[train.keys[0]]) >= {"judge_scores", "dive_number", "start_frame", "end_frame", "position",
                                       "armstand", "rotation_type", "ss_no", "tw_no", "primary_view"}
    sample = test[0]
    key = test.keys[0]
    assert sample["clip"].shape == (3, 103, 32, 32)
    assert sample["score"].item() == pytest.approx(ann[key]["final_score"])
    judges = sample["judge_scores"].numpy()
    assert sorted(judges)[2:5] == sorted(ann[key]["judge_scores"])[2:5]
    assert np.sort(judges)[2:5].sum() * sample["difficulty"].item() == pytest.approx(sample["score"].item(), abs=0.01)
    assert sample["group"] == f"{ann[key]['difficulty']:.1f}" and sample["id"] == mtl_aqa.clip_id(key)
    # the clip ends on the file numbered end_frame (evaluation: no shift)
    source = test.source(0)
    last = source.read(window_ending_at(ann[key]["end_frame"])[-1:])
    assert source.files[ann[key]["end_frame"] - 1].name == f"{ann[key]['end_frame']:08d}.jpg"
    np.testing.assert_array_equal(last, source.read(np.array([ann[key]["end_frame"] - 1])))
    # the musdl per-clip layout reads too (as the same loader with layout='musdl')
    assert (root / "info" / "augmented_final_annotations_dict.pkl").is_file()


def test_mtl_aqa_train_jitter_is_seeded(world):
    ds = MTLAQA(world["MTL-AQA"], "train", crop=32, clip_frames=8, seed=1)
    a, b = ds[0]["clip"], ds[0]["clip"]
    assert torch.equal(a, b)
    different = False
    for epoch in range(1, 6):
        ds.set_epoch(epoch)
        different |= not torch.equal(ds[0]["clip"], a)
    assert different
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["clip"].shape == (2, 3, 8, 32, 32) and batch["judge_scores"].shape == (2, 7)


def test_mtl_aqa_bad_inputs(world, tmp_path):
    root = _copy(world, "MTL-AQA", tmp_path)
    path = root / "info" / "final_annotations_dict_with_dive_number.pkl"
    good = pickle.loads(path.read_bytes())
    key = sorted(good)[0]
    for change, message in (
        (lambda r: r.pop("end_frame"), r"lacks key\(s\) \['end_frame'\]"),
        (lambda r: r.update(final_score=500.0), "final_score 500.0 outside"),
        (lambda r: r.update(judge_scores=np.array([11.0] * 7)), r"judge_scores\[0\] 11.0 outside \[0, 10\]"),
    ):
        bad = {k: dict(v) for k, v in good.items()}
        change(bad[key])
        path.write_bytes(pickle.dumps(bad))
        with pytest.raises(DataFormatError, match=rf"{path.name}: record \({key[0]}, {key[1]}\).*{message}"):
            MTLAQA(root, "train", judge_outliers="raise")
    path.write_bytes(pickle.dumps(good))
    split = root / "info" / "test_split_0.pkl"
    official = split.read_bytes()
    split.write_bytes(pickle.dumps([(99, 99)]))
    with pytest.raises(DataFormatError, match=r"test_split_0\.pkl: split key \(99, 99\) has no annotation"):
        MTLAQA(root, "test")
    with pytest.raises(DataFormatError, match=r"test_split_0\.pkl: split key"):  # opening train checks test too
        MTLAQA(root, "train")
    split.write_bytes(official)
    shutil.rmtree(root / "new_total_frames_256s")
    with pytest.raises(DataFormatError, match="frames folder .* does not exist"):
        MTLAQA(root, "train")
    with pytest.raises(DataFormatError, match="no MTL-AQA annotation file"):
        MTLAQA(tmp_path, "train")


def test_mtl_aqa_real_annotations_with_musdl_layout(real_annotations, tmp_path):
    from pecop_lib.data.video import write_frame_folder

    musdl = real_annotations / "mtl-aqa-musdl"
    with pytest.warns(UserWarning, match=r"record \(4, 49\): judge_scores\[\d\] 45\.0 outside \[0, 10\]"):
        ann = mtl_aqa.load_annotations(musdl / "augmented_final_annotations_dict.pkl", need_judges=True)
    with pytest.raises(DataFormatError, match=r"augmented_final_annotations_dict\.pkl: record \(4, 49\)"):
        mtl_aqa.load_annotations(musdl / "augmented_final_annotations_dict.pkl", judge_outliers="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # CoRe's copy has 4.5 where MUSDL's has 45.0
        core = mtl_aqa.load_annotations(real_annotations / "mtl-aqa-core" / "final_annotations_dict_with_dive_number.pkl")
    assert len(ann) == len(core) == 1412 and core[(1, 1)]["dive_number"] == "407C"
    deviations = mtl_aqa.rule_deviations(ann)
    assert len(deviations) == 28 and (1, 70) in deviations
    # a MUSDL-layout root: the real info files plus generated frame folders for one clip
    info = tmp_path / "data" / "info"
    info.mkdir(parents=True)
    for name in ("augmented_final_annotations_dict.pkl", "train_split_0.pkl", "test_split_0.pkl"):
        (info / name).symlink_to(musdl / name)
    test_keys = pickle.loads((musdl / "test_split_0.pkl").read_bytes())
    assert len(test_keys) == 353 and len(pickle.loads((musdl / "train_split_0.pkl").read_bytes())) == 1059
    frames = np.zeros((109, 16, 16, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(109, dtype=np.uint8)[:, None, None] * 2
    write_frame_folder(frames, tmp_path / "data" / "frames" / mtl_aqa.clip_id(test_keys[0]))
    with pytest.warns(UserWarning, match="45.0"):
        ds = MTLAQA(tmp_path / "data", "test", layout="musdl", crop=16)
    assert len(ds) == 353
    sample = ds[0]
    rec = ann[test_keys[0]]
    assert sample["clip"].shape == (3, 103, 16, 16) and sample["score"].item() == pytest.approx(rec["final_score"])
    np.testing.assert_allclose(sample["judge_scores"].numpy(), rec["judge_scores"])


# ----------------------------------------------------------------- JIGSAWS
def test_jigsaws_round_trip_and_folds(world):
    root = world["JIGSAWS"]
    labels = jigsaws.load_labels(root / "info" / "label.pkl")
    assert len(labels) == 3 * 8 * SPEC.jigsaws_trials
    for task in jigsaws.TASKS:
        tests = [set(JIGSAWS(root, task, f, "test", crop=32).trials) for f in range(4)]
        everything = set.union(*tests)
        assert sum(map(len, tests)) == len(everything) == 8 * SPEC.jigsaws_trials
        for fold in range(4):
            train = JIGSAWS(root, task, fold, "train", crop=32)
            assert set(train.trials) == everything - tests[fold]
    ds = JIGSAWS(root, "Knot_Tying", 2, "test", crop=32)
    sample = ds[0]
    assert sample["clip"].shape == (3, 160, 32, 32)
    assert sample["score"].item() == sum(sample["subscores"].tolist())
    meta = jigsaws.read_meta_file(root / "Knot_Tying" / "meta_file_Knot_Tying.txt")
    assert meta[ds.trials[0]]["subscores"] == labels[ds.trials[0]]
    assert meta[ds.trials[0]]["grs"] == sample["score"].item()


def test_jigsaws_real_labels_and_splits(real_annotations):
    labels = jigsaws.load_labels(real_annotations / "jigsaws-musdl" / "label.pkl")
    splits = jigsaws.load_splits(real_annotations / "jigsaws-musdl" / "splits.pkl", labels)
    assert len(labels) == 103
    assert {t: [len(f) for f in folds] for t, folds in splits.items()} == {
        "Needle_Passing": [7, 7, 7, 7], "Suturing": [9, 10, 10, 10], "Knot_Tying": [9, 9, 9, 9]}


def test_jigsaws_bad_inputs(world, tmp_path):
    root = _copy(world, "JIGSAWS", tmp_path)
    path = root / "info" / "label.pkl"
    labels = pickle.loads(path.read_bytes())
    name = sorted(labels)[0]
    for bad, message in (([1, 2, 3, 4, 5, 6], r"sub-scores\[5\] 6 outside \[1, 5\]"),
                         ([1, 2, 3.5, 4, 5, 2], r"sub-scores\[2\] 3.5 is not a whole number .*never truncated"),
                         ([1, 2, float("nan"), 4, 5, 2], r"sub-scores\[2\] is nan \(not a finite number\)"),
                         ([1, 2, 3], r"sub-scores \[1, 2, 3\] must be 6 numbers")):
        path.write_bytes(pickle.dumps({**labels, name: bad}))
        with pytest.raises(DataFormatError, match=rf"label\.pkl: record '{name}': {message}"):
            JIGSAWS(root, "Suturing", 0)
    path.write_bytes(pickle.dumps(labels))
    splits = pickle.loads((root / "info" / "splits.pkl").read_bytes())
    splits["Suturing"] = splits["Suturing"][:3]
    (root / "info" / "splits.pkl").write_bytes(pickle.dumps(splits))
    with pytest.raises(DataFormatError, match="task 'Suturing' has 3 folds, expected 4"):
        JIGSAWS(root, "Suturing", 0)
    meta = root / "Suturing" / "meta_file_Suturing.txt"
    meta.write_text("Suturing_B001\t\tN\t\t13\t\t2\t\t2\t\t2\t\t3\t\t2\t\t3\n")
    with pytest.raises(DataFormatError, match=r"meta_file_Suturing\.txt:1: GRS 13 differs from the sum 14"):
        jigsaws.read_meta_file(meta)
    meta.write_text("Suturing_B001\t\tN\t\t13.5\t\t2\t\t2\t\t2\t\t3\t\t2\t\t3\n")
    with pytest.raises(DataFormatError, match=r"meta_file_Suturing\.txt:1: GRS 13.5 is not a whole number"):
        jigsaws.read_meta_file(meta)
    meta.write_text("Suturing_B001\t\tN\t\t14\t\t2\t\ttwo\t\t2\t\t3\t\t2\t\t3\n")
    with pytest.raises(DataFormatError, match=r"meta_file_Suturing\.txt:1: sub-scores 'two' is not a number"):
        jigsaws.read_meta_file(meta)


# ----------------------------------------------------------------- FineDiving
def test_finediving_round_trip_transitions(world):
    root = world["FineDiving"]
    ds = FineDiving(root, "train", crop=32)
    fields = pickle.loads((root / "Annotations" / "FineDiving_fine-grained_annotation.pkl").read_bytes())
    for index in range(len(ds)):
        sample = ds[index]
        key = ds.keys[index]
        assert sample["clip"].shape == (3, 96, 32, 32)
        assert sample["group"] == fields[key]["action_type"]
        assert sample["score"].item() == pytest.approx(fields[key]["dive_score"])
        # transitions = first sampled frame of flight and of entry (absolute numbers from the annotation)
        first = fields[key]["start_frame"]
        numbers = np.linspace(first, fields[key]["end_frame"], 96).astype(int)
        t1, t2 = fields[key]["steps_transit_frames"]
        assert sample["transitions"].tolist() == [int(np.argmax(numbers >= t1)), int(np.argmax(numbers >= t2))]
        judges = np.sort(fields[key]["judge_scores"])
        assert judges[2:5].sum() * fields[key]["difficulty"] == pytest.approx(fields[key]["dive_score"], abs=0.01)
    table = pickle.loads((root / "Annotations" / "Sub_action_Types_Table.pkl").read_bytes())
    assert "Entry" in table.values()
    assert finediving.transitions_from_labels(np.array([4, 4, 7, 7, 9, 9, 2, 2])).tolist() == [2, 6]


def test_finediving_test_split_size(world, tmp_path):
    # default: the real split's 75/25 of aqa_videos; set: the training split keeps 12 dives, the test split has 20
    default = FineDiving(world["FineDiving"], "train", crop=32), FineDiving(world["FineDiving"], "test", crop=32)
    assert (len(default[0]), len(default[1])) == SPEC.finediving_split() == (12, 4)
    spec = WorldSpec(**{**SPEC.__dict__, "finediving_test_dives": 20})
    assert spec.finediving_split() == (12, 20) and spec.key() == SPEC.key() + "-fdtest20"
    larger = generate_world(tmp_path / "fd", spec, datasets=("FineDiving",))
    train, test = (FineDiving(larger["FineDiving"], split, crop=32) for split in ("train", "test"))
    assert (len(train), len(test)) == (12, 20) and not set(train.keys) & set(test.keys)
    with pytest.raises(ValueError, match="finediving_test_dives >= 0"):
        WorldSpec(finediving_test_dives=-1)


def test_finediving_label_frame_mismatch(world, tmp_path):
    root = _copy(world, "FineDiving", tmp_path)
    path = root / "Annotations" / "fine-grained_annotation_aqa.pkl"
    aqa = pickle.loads(path.read_bytes())
    split = pickle.loads((root / "Annotations" / "train_split.pkl").read_bytes())
    key = split[0]
    rec = list(aqa[key])
    rec[4] = rec[4][:-4]  # 4 labels short, as ('14', 55) in FineDiving issue #1
    aqa[key] = rec
    path.write_bytes(pickle.dumps(aqa))
    with pytest.raises(DataFormatError, match=rf"record \('{key[0]}', {key[1]}\) has \d+ frame labels but .* holds \d+ frames"):
        FineDiving(root, "train")


# ----------------------------------------------------------------- PD4T
def test_pd4t_round_trip(world):
    root = world["PD4T"]
    latents = world.latents("PD4T")
    for task in pd4t.TASKS:
        train, test = PD4T(root, task, "train", crop=32), PD4T(root, task, "test", crop=32)
        assert len(train) + len(test) == SPEC.aqa_videos and len(test) > 0
        assert not {e.subject for e in train.entries} & {e.subject for e in test.entries}
    ds = PD4T(root, "Finger tapping", "test", crop=32, clip_frames=12)
    sample = ds[0]
    assert sample["clip"].shape == (3, 12, 32, 32)
    row = latents[latents["id"] == f"Finger tapping/{ds.entries[0].video_id}"].iloc[0]
    assert sample["score"].item() == row["score"]
    measured = {k: row[f"measured_{k}"] for k in ("hesitations", "amplitude_decrement", "slowing", "irregularity")}
    assert updrs_score(measured) == row["score"]  # the score is the rule applied to the measured dynamics
    assert ds.entries[0].num_frames == len(ds.source(0))


def test_pd4t_bad_inputs(world, tmp_path):
    root = _copy(world, "PD4T", tmp_path)
    csv_path = root / "Annotations" / "Gait" / "train.csv"
    rows = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(rows[:1] + [rows[1].rsplit(",", 1)[0] + ",7"] + rows[2:]) + "\n")
    with pytest.raises(DataFormatError, match=r"train\.csv:2: score 7 outside \[0, 4\]"):
        PD4T(root, "Gait")
    for score, message in (("2.5", r"score 2.5 is not a whole number"), ("inf", r"score is inf \(not a finite"),
                           ("nan", r"score is nan \(not a finite"), ("high", r"score 'high' is not a number")):
        csv_path.write_text("\n".join(rows[:1] + [rows[1].rsplit(",", 1)[0] + "," + score] + rows[2:]) + "\n")
        with pytest.raises(DataFormatError, match=rf"train\.csv:2: {message}"):
            PD4T(root, "Gait")
    # a UTF-8 byte order mark (as spreadsheet programs write it) reads as the same rows; another encoding is refused
    csv_path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(rows) + "\n").encode())
    assert [e.video_id for e in PD4T(root, "Gait").entries] == [r.split(",")[0] for r in rows if r]
    csv_path.write_bytes(("\n".join(rows) + "\n").encode() + "caf\u00e9_001,90,1\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"train\.csv is not UTF-8 text \(byte 0xe9 at offset \d+\); save it"):
        PD4T(root, "Gait")
    test_rows = (root / "Annotations" / "Gait" / "test.csv").read_text().splitlines()
    csv_path.write_text("\n".join(rows + test_rows[:1]) + "\n")
    with pytest.raises(DataFormatError, match="subject-disjoint"):
        PD4T(root, "Gait")
    csv_path.write_text("\n".join(rows) + "\n")
    ds = PD4T(root, "Gait", "train")
    ds.video_path(0).write_bytes(b"\x00" * 100)
    with pytest.raises(DataFormatError, match=rf"{ds.video_path(0).name}: cannot open as a video"):
        ds[0]


# ----------------------------------------------------------------- domain-general actions
def test_actions_round_trip(world):
    train = KineticsActions(world["Kinetics-synth"], "train", clip_len=8, crop=32)
    val = KineticsActions(world["Kinetics-synth"], "val", clip_len=8, crop=32)
    assert len(ACTION_CLASSES) >= 10 and train.classes == sorted(ACTION_CLASSES)
    assert len(train) + len(val) == len(ACTION_CLASSES) * SPEC.action_videos
    sample = val[0]
    assert sample["clip"].shape == (3, 8, 32, 32) and 0 <= sample["label"].item() < len(ACTION_CLASSES)


# ----------------------------------------------------------------- determinism and caching
def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "world.json"}


@pytest.mark.slow
def test_generation_is_deterministic_and_worker_independent(world, tmp_path):
    again = generate_world(tmp_path / "a", SPEC, workers=2)
    a, b = _digest(again.root), _digest(world.root)
    assert a.keys() == b.keys()
    assert {k: v for k, v in a.items() if not k.endswith(".mp4")} == {k: v for k, v in b.items() if not k.endswith(".mp4")}
    # mp4 bytes: x264 under parallel load is not always bit-exact; the decoded videos must agree
    from pecop_lib.data.video import VideoFile

    for name in (k for k in a if k.endswith(".mp4") and a[k] != b[k]):
        x, y = VideoFile(again.root / name), VideoFile(world.root / name)
        assert len(x) == len(y)
        frames = np.arange(len(x))
        assert np.abs(x.read(frames).astype(int) - y.read(frames)).mean() < 3.0, name
    other = generate_world(tmp_path / "b", WorldSpec(**{**SPEC.__dict__, "seed": 4}), datasets=("PD4T",))
    assert _digest(other["PD4T"]) != _digest(world["PD4T"])


def test_synthetic_world_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PECOP_CACHE_DIR", str(tmp_path))
    spec = WorldSpec(size=20, aqa_videos=8, jigsaws_trials=1, action_videos=2, action_frames=8)  # 16: decord misreads
    first = synthetic_world(spec=spec)
    assert first.root == tmp_path / "synthetic" / spec.key() and load_world(first.root) is not None
    stamp = (first.root / "world.json").stat().st_mtime_ns
    assert synthetic_world(spec=spec).root == first.root
    assert (first.root / "world.json").stat().st_mtime_ns == stamp  # reused, not regenerated
    manifest = json.loads((first.root / "world.json").read_text())
    # a world cached before finediving_test_dives existed (its manifest lacks the field) is still reused
    spec_before = {k: v for k, v in manifest["spec"].items() if k != "finediving_test_dives"}
    (first.root / "world.json").write_text(json.dumps({**manifest, "spec": spec_before}))
    stamp = (first.root / "world.json").stat().st_mtime_ns
    assert synthetic_world(spec=spec).root == first.root
    assert (first.root / "world.json").stat().st_mtime_ns == stamp
    (first.root / "world.json").write_text(json.dumps({**manifest, "actions_version": ACTIONS_VERSION - 1}))
    assert load_world(first.root) is None  # an older action set is not reused (a stage-1 backbone depends on it)


def test_timing_warp_by_hand():
    t = np.linspace(0.0, 1.0, 5)  # 0, .25, .5, .75, 1
    np.testing.assert_allclose(timing_warp("start_moving", 0.5, t), [0, 0, 0, 0.5, 1])
    np.testing.assert_allclose(timing_warp("stop_moving", 0.5, t), [0, 0.5, 1, 1, 1])
    # pause 0.35..0.65 (width 0.3): times before run at 1/0.7, then still at 0.35/0.7 = 0.5, then resume
    np.testing.assert_allclose(timing_warp("pause_midway", 0.5, t), [0, 0.25 / 0.7, 0.5, 0.45 / 0.7, 1])
    with pytest.raises(ValueError, match="unknown timing class 'jump'"):
        timing_warp("jump", 0.5, t)


@pytest.mark.parametrize("kind", TIMING_CLASSES)
def test_timing_classes_are_still_exactly_when_they_say(kind):
    label = ACTION_CLASSES.index(kind)
    frames, latents = render_action(np.random.default_rng(3), label, 32, 24)
    motion = np.abs(np.diff(frames.astype(int), axis=0)).mean(axis=(1, 2, 3))  # (23,) change between frames
    u = np.linspace(0.0, 1.0, 24)
    moving = np.diff(timing_warp(kind, latents["tau"], u)) > 0
    assert latents["label"] == kind and latents["motion"] in TIMED_MOTIONS
    assert np.all(motion[~moving] == 0) and np.all(motion[moving] > 0)
