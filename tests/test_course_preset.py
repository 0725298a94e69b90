"""The ``course`` preset's building blocks (issue 12): preset and auto choice, the narrow I3D, the
shipped stage-1 backbone, no-video baselines, computed Fig. 5 verdicts, stored-feature options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pecop_lib
from pecop_lib.config import COURSE_NOTICE, auto_preset, resolve
from pecop_lib.data.dataset import AQARecord
from pecop_lib.data.synthetic.world import ACTIONS_VERSION, MANIFEST, actions_identity
from pecop_lib.data.transforms import ClipTransform
from pecop_lib.eval.uncertainty import Interval
from pecop_lib.finetune import FinetuneOptions, FinetuneResult, Reported, Setting
from pecop_lib.finetune.report import beats_baseline, no_video_baseline
from pecop_lib.models import build_backbone
from pecop_lib.notebooks import declared_parameters, discover_notebooks
from pecop_lib.pretrain.artifacts import SHIPPED_STAGE1
from pecop_lib.pretrain.stage1_artifact import load_stage1, shipped_stage1, stage1_key, stage1_spec
from pecop_lib.studies.tables import compare_cells


def test_course_preset_resolves_with_its_notice(monkeypatch):
    cfg = resolve("course")
    assert cfg.notice == COURSE_NOTICE
    assert resolve("smoke").notice == pecop_lib.SMOKE_NOTICE and resolve("tutorial").notice is None
    assert pecop_lib.titled("Fig", "course").endswith(f"({COURSE_NOTICE})")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert auto_preset() == "course"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert auto_preset() == "tutorial"


def test_every_notebook_accepts_the_course_preset():
    for path in discover_notebooks():
        assert "PRESET" in declared_parameters(path), path.name
    assert resolve("course").finetune_features == "stored"


def test_narrow_i3d_keeps_the_blocks_and_scales_every_channel():
    full, narrow = build_backbone("i3d", seed=0), build_backbone("i3d", seed=0, width=0.25)
    assert narrow.feature_dim == 256 and full.feature_dim == 1024
    assert [n for n, _ in full.named_parameters()] == [n for n, _ in narrow.named_parameters()]
    ratio = sum(p.numel() for p in full.parameters()) / sum(p.numel() for p in narrow.parameters())
    assert 14 < ratio < 17  # convolutions scale with width squared
    assert narrow.site_channels()["mixed_5c"] == 256
    out = narrow.forward_pooled(torch.randn(2, 3, 16, 48, 48))
    assert out.shape == (2, 256)
    with pytest.raises(ValueError, match="width 0.3"):
        build_backbone("i3d", width=0.3)


def test_shipped_stage1_matches_the_course_preset(tmp_path):
    """The committed checkpoint is found for the course world's action set on any machine."""
    world = tmp_path / "world"
    (world / "Kinetics-synth").mkdir(parents=True)
    cfg = resolve("course")
    spec = {"size": cfg.data_synthetic_size, "aqa_videos": cfg.data_synthetic_aqa_videos, "jigsaws_trials": 1,
            "action_videos": cfg.data_synthetic_action_videos, "action_frames": cfg.data_synthetic_action_frames,
            "seed": 0}
    (world / MANIFEST).write_text(json.dumps({"actions_version": ACTIONS_VERSION, "spec": spec}))
    actions = world / "Kinetics-synth"
    assert actions_identity(actions)["action_videos"] == cfg.data_synthetic_action_videos
    found = shipped_stage1(stage1_key(stage1_spec(cfg), actions))
    assert found is not None and found.parent == SHIPPED_STAGE1
    record = load_stage1(found).record
    assert record["val_acc"] >= 0.5 and record["shipped"]["command"].startswith("python scripts/train_course_stage1.py")
    assert sum(p.stat().st_size for p in found.iterdir()) <= 10 * 1024 * 1024
    # another seed's action set has another key: nothing shipped for it
    assert shipped_stage1(stage1_key(stage1_spec(resolve("course", seed=1)), actions)) is None


def _record(score, difficulty=None, frames=None):
    return AQARecord(id=str(score), key=str(score), score=float(score), group="g", difficulty=difficulty,
                     extras={} if frames is None else {"num_frames": frames})


def test_no_video_baseline_picks_the_feature_direction_on_training():
    train = [_record(s, difficulty=d) for s, d in [(1, 3.0), (2, 2.0), (3, 1.0)]]  # negative on training
    test = [_record(s, difficulty=d) for s, d in [(10, 2.5), (20, 1.5), (30, 1.2), (40, 0.5)]]
    name, rho = no_video_baseline(train, test)
    assert name == "difficulty alone" and rho == pytest.approx(1.0)
    assert no_video_baseline([_record(1), _record(2)], [_record(3), _record(4)]) == (
        "training mean (a constant: rho 0)", 0.0)


def test_beats_baseline_margin_is_the_interval_low_minus_the_baseline():
    def result(low):
        rep = Reported("honest", 0.9, 3, "", Interval(0.9, low, 0.97, 0.95))
        return FinetuneResult(Setting("core", "MTL-AQA"), "PECoP", [], np.zeros(3), [], np.zeros(0),
                              {"honest": rep}, {})
    best = beats_baseline({"Dom-G": [result(0.80)], "PECoP": [result(0.86)]}, {"MTL-AQA": ("difficulty alone", 0.84)})
    entry = best["MTL-AQA"]
    assert entry["backbone"] == "PECoP" and entry["head"] == "CoRe"
    assert entry["margin"] == pytest.approx(0.86 - 0.84)


def test_compare_cells_states_the_verdict_from_the_numbers():
    assert compare_cells([0.5, 0.6, 0.55], [0.3, 0.35, 0.32]).startswith("PECoP above other: +0.227")
    assert compare_cells([0.3, 0.35, 0.32], [0.5, 0.6, 0.55]).startswith("PECoP below other")
    assert compare_cells([0.5, 0.6, 0.55], [0.5, 0.62, 0.52]).startswith("no clear difference")
    assert compare_cells([0.5], [0.3, 0.4]).startswith("not measured")


def test_stored_features_need_a_frozen_backbone_and_evaluation_drops_randomness():
    with pytest.raises(ValueError, match="features='stored' needs train_backbone='frozen'"):
        FinetuneOptions(features="stored", train_backbone="all")
    FinetuneOptions(features="stored", train_backbone="frozen")
    train = ClipTransform(crop=32, random_crop=True, flip=True)
    assert not train.evaluation().is_random and train.evaluation().crop == 32


def test_course_notebook_07_runs_fig5_only_with_a_diving_and_a_motor_task():
    from pecop_lib.studies.plans import ablation_plan

    plan = ablation_plan(pecop_lib.resolve("course"))
    assert {study: len(runs) for study, runs in plan.items()} == {"fig5": 30, "table5": 0, "table6": 0, "switches": 0}
    assert {(r.setting.dataset, r.setting.task) for r in plan["fig5"]} == {("MTL-AQA", None), ("PD4T", "Leg agility")}
    assert {r.strategy for r in plan["fig5"]} == {"dom_g", "dom_s", "hpt_bn", "hpt", "pecop"}
    assert {r.seed for r in plan["fig5"]} == {0, 1, 2}
