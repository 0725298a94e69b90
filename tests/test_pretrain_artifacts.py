"""Load-or-train artifacts of stage 1 and stage 2: keys, reuse, resume, rebuild, costs, config mapping."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from _worlds import TINY_SPEC, tiny_world
from safetensors.torch import load_file

from pecop_lib.config import ConfigError, resolve
from pecop_lib.data import official_transform
from pecop_lib.data.formats.kinetics import KineticsActions
from pecop_lib.data.synthetic.actions import ACTION_CLASSES, TIMING_CLASSES
from pecop_lib.data.synthetic.world import actions_identity
from pecop_lib.models import build_backbone, export_state_dict, list_adapters
from pecop_lib.models.adapter_checkpoint import bn_stats_state_dict
from pecop_lib.models.adapters import is_adapter_key
from pecop_lib.models.loading import WeightsMismatchError
from pecop_lib.pretrain.artifacts import (
    CURRICULUM_DIR,
    STAGE1_RECORD,
    STAGE2_RECORD,
    WEIGHTS_FILE,
    BackboneSource,
    backbone_options,
    kinetics_source,
    scratch_source,
)
from pecop_lib.pretrain.pretext import pretext_accuracy
from pecop_lib.pretrain.stage1_artifact import (
    Stage1Spec,
    load_stage1,
    stage1_backbone,
    stage1_folder,
    stage1_key,
    stage1_spec,
    train_stage1,
)
from pecop_lib.pretrain.stage2_artifact import (
    Stage2Artifact,
    demo_stage2_spec,
    heldout_check,
    stage2_backbone,
    stage2_costs,
    stage2_folder,
    stage2_key,
    stage2_spec,
)
from pecop_lib.pretrain.targets import heldout_videos, pretraining_videos
from pecop_lib.store import digest, file_sha256
from pecop_lib.train.context import RunContext
from pecop_lib.train.loop import CHECKPOINT_DIR

SMOKE = resolve("smoke", seed=3)
STAGE1 = stage1_spec(SMOKE)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def stage1(world, tmp_path_factory):
    return stage1_backbone(STAGE1, world["Kinetics-synth"], label="smoke", root=tmp_path_factory.mktemp("art"),
                           run=RunContext(device="cpu", show_progress=False))


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_stage1_trains_once_then_loads(stage1, world) -> None:
    assert stage1.trained
    folder = stage1.folder
    assert folder.name.startswith("stage1-i3d-smoke-seed3-")
    weights = folder / WEIGHTS_FILE
    mtime = weights.stat().st_mtime_ns
    assert not (folder / CHECKPOINT_DIR).exists()  # trainer checkpoints removed once the artifact is complete
    record = json.loads((folder / STAGE1_RECORD).read_text())
    train_clips = len(ACTION_CLASSES) * (TINY_SPEC.action_videos - 1)  # one video per class held out for validation
    assert record["spec"] == stage1.record["spec"] and len(record["history"]["steps"]) == train_clips // 4  # batch 4, short batch dropped
    assert 0.0 <= record["val_acc"] <= 1.0 and record["chance_acc"] == pytest.approx(1 / len(ACTION_CLASSES))
    again = stage1_backbone(STAGE1, world["Kinetics-synth"], label="smoke", root=folder.parent,
                            run=RunContext(device="cpu", show_progress=False))
    assert not again.trained and again.folder == folder and weights.stat().st_mtime_ns == mtime
    # the rebuilt backbone holds exactly the stored weights (the action classifier stays in the file)
    stored = load_file(str(weights))
    rebuilt = again.build().state_dict()
    assert set(stored) - set(rebuilt) == {"conv3d_0c_1x1.conv3d.weight", "conv3d_0c_1x1.conv3d.bias"}
    assert all(torch.equal(rebuilt[k], stored[k]) for k in rebuilt)


def test_keys_follow_the_settings_not_the_label(world, tmp_path: Path) -> None:
    actions = world["Kinetics-synth"]
    base = stage1_folder(STAGE1, actions, label="smoke", root=tmp_path)
    assert stage1_folder(STAGE1, actions, label="other", root=tmp_path).name.split("-")[-1] == base.name.split("-")[-1]
    assert stage1_folder(replace(STAGE1, lr=0.5), actions, label="smoke", root=tmp_path) != base
    assert stage1_folder(replace(STAGE1, seed=4), actions, label="smoke", root=tmp_path) != base
    source = BackboneSource("stage1", "i3d", backbone_options("i3d"), "/x/model.safetensors", "abc")
    spec = stage2_spec(SMOKE)
    key = stage2_key(spec, source, world["MTL-AQA"])
    assert stage2_key(replace(spec, lr=0.5), source, world["MTL-AQA"]) != key
    assert stage2_key(spec, replace(source, identity="abd"), world["MTL-AQA"]) != key
    assert stage2_key(spec, source, world["Kinetics-synth"]) != key
    # the official optimiser and the package's resize stay out of the key (artifacts cached before these settings
    # existed stay valid)
    before = {k: v for k, v in asdict(spec).items() if k not in ("fold", "optimizer", "resize")}
    assert spec.optimizer == "sgd" and key == digest(("stage2", before, source.kind, source.backbone,
                                                       dict(source.options), source.identity,
                                                       str(Path(world["MTL-AQA"]).resolve())))
    assert stage2_key(replace(spec, optimizer="adam"), source, world["MTL-AQA"]) != key
    with pytest.raises(ValueError, match="unknown stage-2 optimizer 'lion'.*pretrain_optimizer"):
        replace(spec, optimizer="lion")
    # dom_s starts from random init whatever source it is given
    dom_s = stage2_spec(SMOKE, strategy="dom_s")
    assert stage2_folder(dom_s, source, world["MTL-AQA"], root=tmp_path) == stage2_folder(
        dom_s, scratch_source("i3d"), world["MTL-AQA"], root=tmp_path)


@pytest.mark.slow
def test_interrupted_stage1_resumes_from_its_checkpoint(world, tmp_path: Path) -> None:
    spec = replace(STAGE1, epochs=2)
    actions = world["Kinetics-synth"]
    folder = stage1_folder(spec, actions, root=tmp_path)
    done = train_stage1(spec, actions, folder, keep_checkpoints=True, run=RunContext(device="cpu", show_progress=False))
    original = load_file(str(folder / WEIGHTS_FILE))
    # an interruption after epoch 1: the artifact was never completed, the epoch-1 checkpoint exists
    (folder / STAGE1_RECORD).unlink()
    (folder / WEIGHTS_FILE).unlink()
    (folder / CHECKPOINT_DIR / "epoch_002.pt").unlink()
    (folder / CHECKPOINT_DIR / "latest.json").write_text(json.dumps({"latest": "epoch_001.pt", "files": ["epoch_001.pt"]}))
    resumed = stage1_backbone(spec, actions, root=tmp_path, run=RunContext(device="cpu", show_progress=False))
    assert resumed.trained and resumed.folder == folder
    first, second = resumed.record["history"]["epochs"]
    assert first == done.record["history"]["epochs"][0]  # epoch 1 restored from the checkpoint, not retrained
    assert second["seconds"] != done.record["history"]["epochs"][1]["seconds"]  # epoch 2 ran again
    again = load_file(str(folder / WEIGHTS_FILE))
    assert all(torch.equal(again[k], original[k]) for k in original)  # same weights as the uninterrupted run


@pytest.mark.slow
def test_pecop_stage2_stores_adapters_and_rebuilds(stage1, world, tmp_path: Path) -> None:
    spec = stage2_spec(SMOKE, strategy="pecop")
    artifact = stage2_backbone(spec, stage1.source, world["MTL-AQA"], label="smoke", root=tmp_path,
                               run=RunContext(device="cpu", show_progress=False))
    assert artifact.trained and artifact.weights_path == artifact.folder / "adapters"
    assert artifact.folder.name.startswith("stage2-pecop-vspp-MTL-AQA-smoke-seed3-")
    record = artifact.record
    assert record["source"]["identity"] == stage1.record["key"]
    assert record["data"]["videos"] == len(pretraining_videos(world["MTL-AQA"], "MTL-AQA")) > 0
    assert record["trainable_backbone_params"] == 1_109_068  # the 9 adapters (paper: ~1M)
    assert record["head_params"] == 1024 * 5 + 5 + 1024 * 4 + 4  # speed (5-way, official) + segment heads
    assert record["stored_bytes"] == sum(f.stat().st_size for f in artifact.weights_path.iterdir())

    initial = stage1.source.build(spec.adapter_config(), seed=spec.seed)
    trained = artifact.build()
    stage1_state, before, after = _state(stage1.build()), _state(initial), _state(trained)
    frozen = [k for k in after if not is_adapter_key(k) and not k.endswith(("running_mean", "running_var",
                                                                          "num_batches_tracked"))]
    assert all(torch.equal(after[k], stage1_state[k]) for k in frozen)  # the backbone did not move
    moved = [k for k in after if is_adapter_key(k) and not torch.equal(after[k], before[k])]
    assert moved and len(list_adapters(trained)) == 9
    stats = bn_stats_state_dict(trained)
    assert any(not torch.equal(v, stage1_state[k]) for k, v in stats.items())  # BN statistics re-estimated (train mode)

    mtime = (artifact.folder / STAGE2_RECORD).stat().st_mtime_ns
    loaded = stage2_backbone(spec, stage1.source, world["MTL-AQA"], label="smoke", root=tmp_path,
                             run=RunContext(device="cpu", show_progress=False))
    assert not loaded.trained and (artifact.folder / STAGE2_RECORD).stat().st_mtime_ns == mtime
    assert all(torch.equal(v, after[k]) for k, v in loaded.build().state_dict().items())

    # the stored pretext heads rebuild the trained model: its last held-out measurement is reproduced
    videos = heldout_videos(world["MTL-AQA"], "MTL-AQA")
    transform = official_transform("pecop_stage2", train=True, crop=spec.crop, resize=spec.resize).evaluation()
    again = pretext_accuracy(loaded.pretext_model(), videos, spec.sampler(), transform, clips_per_video=4,
                             seed=spec.seed, device="cpu")
    last = record["heldout"]["epochs"][-1]
    assert {k: again[k] for k in ("speed_acc", "segment_acc", "clips")} == {
        k: last[k] for k in ("speed_acc", "segment_acc", "clips")}
    assert again["loss"] == pytest.approx(last["loss"], rel=1e-5)
    # the final check: other clips (seed + 1), as many per video as asked, binomial standard errors
    check = heldout_check(loaded, world["MTL-AQA"], clips_per_video=3, device="cpu")
    assert check["clips"] == 3 * len(videos) > 0
    for name in ("speed", "segment"):
        p = check[f"{name}_acc"]
        assert check[f"{name}_se"] == pytest.approx(math.sqrt(p * (1 - p) / check["clips"]))
    assert heldout_check(loaded, world["MTL-AQA"], clips_per_video=3, device="cpu") == check


@pytest.mark.slow
def test_hpt_bn_and_dom_g_stage2(stage1, world, tmp_path: Path) -> None:
    reference = _state(stage1.build())
    hpt_bn = stage2_backbone(stage2_spec(SMOKE, strategy="hpt_bn"), stage1.source, world["MTL-AQA"], root=tmp_path,
                             run=RunContext(device="cpu", show_progress=False))
    assert hpt_bn.weights_path.name == WEIGHTS_FILE
    with pytest.raises(ValueError, match="keeps the backbone only"):
        hpt_bn.pretext_model()  # only PECoP's adapter folder stores the pretext heads
    state = hpt_bn.build().state_dict()
    changed = {k for k, v in state.items() if not torch.equal(v, reference[k]) and not k.endswith(
        ("running_mean", "running_var", "num_batches_tracked"))}
    assert changed and all(".batch3d." in k for k in changed)  # only BatchNorm affine parameters trained
    dom_g = stage2_backbone(stage2_spec(SMOKE, strategy="dom_g"), stage1.source, world["MTL-AQA"], root=tmp_path,
                            run=RunContext(device="cpu", show_progress=False))
    assert dom_g.weights_path is None and dom_g.record["stored_bytes"] == 0 and not dom_g.record["history"]["epochs"]
    assert all(torch.equal(v, reference[k]) for k, v in dom_g.build().state_dict().items())


def test_kinetics_source_checks_and_identifies_the_file(tmp_path: Path) -> None:
    model = build_backbone("i3d", num_classes=400, seed=1)
    path = tmp_path / "model_rgb.pth"
    torch.save(export_state_dict(model, "hassony2"), path)
    source = kinetics_source(path)
    assert source.kind == "weights" and source.identity == file_sha256(path)
    built = source.build(seed=0).state_dict()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in built.items())
    with pytest.raises(FileNotFoundError, match="do not exist"):
        kinetics_source(tmp_path / "missing.pth")
    with pytest.raises(WeightsMismatchError):
        kinetics_source(path, "r3d18")
    with pytest.raises(ValueError, match="needs a weights path"):
        BackboneSource("weights", "i3d")


def test_missing_artifact_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a finished stage-1 artifact"):
        load_stage1(tmp_path)


def test_costs_from_a_record(tmp_path: Path) -> None:
    epochs = [{"seconds": 10.0, "samples": 40.0}, {"seconds": 30.0, "samples": 40.0}]
    record = {"spec": {"strategy": "pecop"}, "history": {"epochs": epochs, "steps": []}, "seconds": 41.0,
              "trainable_backbone_params": 7, "head_params": 2, "stored_bytes": 100, "peak_memory_bytes": None,
              "device_name": "cpu"}
    costs = stage2_costs(Stage2Artifact(tmp_path, record, trained=False))
    assert costs["strategy"] == "PECoP" and costs["epochs"] == 2
    assert costs["seconds_per_epoch"] == 20.0 and costs["clips_per_s"] == 2.0
    assert (costs["trainable_params"], costs["stored_bytes"]) == (7, 100)


def test_specs_from_the_config() -> None:
    cfg = resolve("paper")
    assert stage2_spec(cfg, strategy="pecop").epochs == 8 and stage2_spec(cfg, strategy="hpt").epochs == 16
    assert stage2_spec(cfg).lr == 0.01 and stage2_spec(cfg).channel_order == "bgr"
    assert stage2_spec(cfg, dataset="PD4T", task="Gait").normal_pace == 3
    assert stage2_spec(cfg, dataset="PD4T", task="Finger tapping").normal_pace == 1
    assert stage2_spec(resolve("paper", pretrain_normal_pace=2), dataset="PD4T", task="Gait").normal_pace == 2
    assert stage2_spec(cfg, strategy="hpt").adapter_config() is None
    assert stage2_spec(cfg).adapter_config().reduction == 4
    sampler = stage2_spec(cfg).sampler()
    assert (sampler.clip_len, sampler.num_speed_classes, sampler.num_segment_classes) == (32, 5, 4)
    assert stage2_spec(cfg, pretext="pace").sampler().num_classes == 4
    assert stage1_spec(cfg) == Stage1Spec(backbone="i3d", clip_len=32, crop=224, epochs=cfg.pretrain_general_epochs,
                                          batch_size=cfg.pretrain_general_batch_size, lr=cfg.pretrain_general_lr,
                                          pool="window2", seed=0)  # the official temporal weighting (fidelity)
    assert demo_stage2_spec(cfg, dataset="PD4T", task="Gait") == stage2_spec(cfg, dataset="PD4T", task="Gait")
    course = resolve("course")
    demo = demo_stage2_spec(course, dataset="PD4T", task="Leg agility")
    shared = stage2_spec(course, strategy="pecop", dataset="PD4T", task="Leg agility")
    assert (demo.clip_len, demo.epochs, shared.clip_len, shared.epochs) == (32, 10, 16, 6)
    assert demo == replace(shared, clip_len=32, epochs=10) and stage1_spec(course).clip_len == 16
    with pytest.raises(ConfigError, match="pretrain_demo_clip_len=8 leaves one"):
        resolve("paper", pretrain_demo_clip_len=8)
    with pytest.raises(ValueError, match="needs a task"):
        stage2_spec(cfg, dataset="PD4T")
    with pytest.raises(ValueError, match="unknown target dataset"):
        stage2_spec(cfg, dataset="UCF101")
    with pytest.raises(ValueError, match="unknown pretext"):
        stage2_spec(cfg, pretext="videopace")


def test_leave_out_keeps_label_indices(world) -> None:
    actions = KineticsActions(world["Kinetics-synth"], "train", clip_len=8, crop=32)
    constant = actions.leave_out(TIMING_CLASSES)
    assert constant.classes == actions.classes and len(actions.classes) == len(ACTION_CLASSES)
    assert {e.label for e in constant.entries} == set(ACTION_CLASSES) - set(TIMING_CLASSES)
    assert len(constant) == len(actions) - sum(e.label in TIMING_CLASSES for e in actions.entries) > 0
    first = constant[0]
    assert int(first["label"]) == actions.classes.index(constant.entries[0].label)  # the whole set's index
    with pytest.raises(ValueError, match="no class \\['jumping'\\]"):
        actions.leave_out(["jumping"])
    with pytest.raises(ValueError, match="leaves no clip"):
        actions.leave_out(actions.classes)


@pytest.mark.slow
def test_stage1_curriculum_trains_constant_pace_classes_first(world, tmp_path: Path) -> None:
    spec = replace(STAGE1, epochs=1, curriculum_epochs=1)
    assert stage1_key(spec, world["Kinetics-synth"]) != stage1_key(STAGE1, world["Kinetics-synth"])
    # without a curriculum the key is the one computed before the field existed
    before = {k: v for k, v in asdict(STAGE1).items() if k != "curriculum_epochs"}
    assert stage1_key(STAGE1, world["Kinetics-synth"]) == digest(
        ("stage1", before, actions_identity(world["Kinetics-synth"])))
    artifact = stage1_backbone(spec, world["Kinetics-synth"], root=tmp_path,
                               run=RunContext(device="cpu", show_progress=False))
    record = artifact.record
    curriculum = record["curriculum"]
    whole = KineticsActions(world["Kinetics-synth"], "train", clip_len=spec.clip_len, crop=spec.crop)
    assert curriculum["left_out"] == list(TIMING_CLASSES)
    assert curriculum["train_clips"] == len(whole.leave_out(TIMING_CLASSES)) < record["data"]["train_clips"]
    assert len(curriculum["history"]["epochs"]) == 1 and len(record["history"]["epochs"]) == 1
    assert record["seconds"] >= curriculum["seconds"] > 0
    assert not (artifact.folder / CURRICULUM_DIR).exists()  # its checkpoints go with the others
    assert artifact.spec == spec  # the record rebuilds the spec, curriculum included
    curves = artifact.step_curves()
    first, second = curves["constant-pace classes"], curves["all classes"]
    assert len(first) == len(curriculum["history"]["steps"]) and len(second) == len(record["history"]["steps"])
    assert [s["step"] for s in second] == [s["step"] + len(first) for s in record["history"]["steps"]]  # one axis


@pytest.mark.slow
def test_stage1_curriculum_resumes_after_its_first_phase(world, tmp_path: Path) -> None:
    spec = replace(STAGE1, epochs=1, curriculum_epochs=1)
    actions = world["Kinetics-synth"]
    folder = stage1_folder(spec, actions, root=tmp_path)
    done = train_stage1(spec, actions, folder, keep_checkpoints=True, run=RunContext(device="cpu", show_progress=False))
    original = load_file(str(folder / WEIGHTS_FILE))
    # interrupted before the second phase saved anything: only the curriculum's checkpoints exist
    for path in (folder / STAGE1_RECORD, folder / WEIGHTS_FILE):
        path.unlink()
    shutil.rmtree(folder / CHECKPOINT_DIR)
    resumed = stage1_backbone(spec, actions, root=tmp_path, run=RunContext(device="cpu", show_progress=False))
    assert resumed.trained
    assert resumed.record["curriculum"]["history"] == done.record["curriculum"]["history"]  # loaded, not retrained
    again = load_file(str(folder / WEIGHTS_FILE))
    assert all(torch.equal(again[k], original[k]) for k in original)  # same weights as the uninterrupted run
