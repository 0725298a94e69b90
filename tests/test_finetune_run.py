"""Fine-tuning runs on a tiny synthetic world: every recipe trains and evaluates, both protocols are
recorded, resume continues exactly, the backbone loader refuses what it cannot load."""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from pecop_lib.config import resolve
from pecop_lib.finetune import (
    EVALUATION_FILE,
    FinetuneOptions,
    Setting,
    finetune,
    load_finetune_backbone,
    open_finetune_data,
    validation_split,
)
from pecop_lib.train.context import RunContext
from pecop_lib.train.loop import CHECKPOINT_DIR
from tests._heads_stand_ins import TinyBackbone, single_thread  # noqa: F401 (autouse fixture)
from tests._worlds import finetune_world

OPTIONS = FinetuneOptions(epochs=2, batch_size=2, decode="expectation", exemplars=2, exemplar_missing="any",
                          val_fraction=0.25, eval_batch_size=4, bootstrap=50)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return finetune_world(tmp_path_factory.getbasetemp())


def _run(world, setting, tmp_path, options=OPTIONS, resume=False):
    data = open_finetune_data(world[setting.dataset], setting, crop=32, clip_frames=16, seed=0)
    backbone = TinyBackbone(128)
    torch.manual_seed(0)
    run = RunContext(device="cpu", seed=0, resume=resume, show_progress=False)
    return finetune(backbone, setting, data, options, run_dir=tmp_path / "run", run=run), backbone


@pytest.mark.parametrize("setting", [
    Setting("usdl", "MTL-AQA"), Setting("musdl", "MTL-AQA"), Setting("musdl", "JIGSAWS", "Suturing", 1),
    Setting("usdl", "PD4T", "Gait"), Setting("core", "MTL-AQA"), Setting("core", "FineDiving"),
    Setting("core", "JIGSAWS", "Knot_Tying", 0), Setting("tsa", "FineDiving"),
    Setting("mlp", "MTL-AQA"), Setting("mlp", "JIGSAWS", "Suturing", 1),  # the baseline: one file in heads/, no edit here
], ids=lambda s: s.label)
def test_every_recipe_trains_and_reports_both_protocols(world, tmp_path, setting):
    result, _ = _run(world, setting, tmp_path)
    assert len(result.epochs) == 2 and len(result.history.epochs) == 2
    for record in result.epochs:
        assert math.isfinite(record["train_loss"]) and math.isfinite(record["test_l2"])
        assert len(record["test_pred"]) == len(result.test_true) and np.isfinite(record["test_pred"]).all()
        assert len(record["val_pred"]) == len(result.val_true) >= 2
        if len(set(record["test_pred"])) > 1 and np.ptp(result.test_true) > 0:
            assert record["test_rho"] is not None and -1 <= record["test_rho"] <= 1
    official = setting.recipe.official_protocol  # last-10 mean for (M)USDL on JIGSAWS only
    assert set(result.reported) == {official, "honest"}
    summary = result.summary()
    assert summary[f"{official}_rho"] is None or -1 <= summary[f"{official}_rho"] <= 1
    assert summary["train_videos"] + summary["val_videos"] == len(open_finetune_data(
        world[setting.dataset], setting, crop=32, clip_frames=16).train)
    if setting.head == "tsa":
        assert {"test_tiou_0.5", "test_tiou_0.75"} <= set(result.epochs[-1]) and result.test_transitions.shape[1] == 2
    if setting.head in ("usdl", "musdl"):
        dists = np.asarray(result.epochs[-1]["distributions"])
        assert dists.shape[0] == result.distribution_targets.shape[0] == min(4, len(result.test_true))
        np.testing.assert_allclose(dists.sum(-1), 1.0, atol=1e-5)
    stored = json.loads((tmp_path / "run" / EVALUATION_FILE).read_text())
    assert [r["epoch"] for r in stored["epochs"]] == [1, 2]
    assert (result.difficulty_baseline is None) == (setting.dataset in ("JIGSAWS", "PD4T"))


def test_resume_continues_exactly(world, tmp_path):
    setting = Setting("core", "PD4T", "Gait")
    straight, model_a = _run(world, setting, tmp_path / "a")
    _run(world, setting, tmp_path / "b", FinetuneOptions(**{**OPTIONS.__dict__, "epochs": 1}))
    with pytest.raises(ValueError, match="another run"):  # different options: refuse to mix runs
        _run(world, setting, tmp_path / "b", FinetuneOptions(**{**OPTIONS.__dict__, "exemplars": 3}), resume=True)
    resumed, model_b = _run(world, setting, tmp_path / "b", resume=True)
    assert [r["test_pred"] for r in resumed.epochs] == [r["test_pred"] for r in straight.epochs]
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # a run stopped between its last checkpoint and that epoch's evaluation re-evaluates it
    path = tmp_path / "b" / "run" / EVALUATION_FILE
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({**stored, "epochs": stored["epochs"][:1]}))
    again, _ = _run(world, setting, tmp_path / "b", resume=True)
    assert [r["test_pred"] for r in again.epochs] == [r["test_pred"] for r in straight.epochs]


def test_resume_without_checkpoint_is_an_error(world, tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        _run(world, Setting("usdl", "MTL-AQA"), tmp_path, resume=True)


def test_validation_is_subject_disjoint_for_surgery(world):
    setting = Setting("musdl", "JIGSAWS", "Suturing", 0)
    data = open_finetune_data(world["JIGSAWS"], setting, crop=32, clip_frames=16)
    train, val = validation_split(data, setting, 0.2, seed=0)
    subjects = [r.extras["subject"] for r in data.train.records]
    assert len(val) >= 2 and not {subjects[i] for i in train} & {subjects[i] for i in val}
    assert validation_split(data, setting, 0.0, seed=0) == (list(range(len(data.train))), [])


def test_open_data_errors(world, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_finetune_data(tmp_path / "nowhere", Setting("core", "MTL-AQA"))
    data = open_finetune_data(world["FineDiving"], Setting("tsa", "FineDiving"), crop=224, clip_frames=16)
    assert data.test[0]["clip"].shape[-1] == 112  # TSA's official crop caps the requested 224


def test_backbone_loader(tmp_path):
    from safetensors.torch import save_file

    from pecop_lib.models import build_backbone, save_adapter_checkpoint
    from pecop_lib.models.adapters import list_adapters

    random_init, text = load_finetune_backbone("i3d", "none", seed=3)
    assert "random" in text and random_init.pool == "window2" and not random_init.has_classifier
    base = build_backbone("i3d", seed=1)
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(tmp_path / "base.safetensors"))
    plain, _ = load_finetune_backbone("i3d", tmp_path / "base.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), base.state_dict().values(), strict=True))
    adapted = build_backbone("i3d", adapters=True, seed=1)
    with torch.no_grad():
        next(p for n, p in adapted.named_parameters() if ".adapter." in f".{n}").add_(1.0)
    save_adapter_checkpoint(adapted, tmp_path / "adapters")
    with pytest.raises(ValueError, match="--base-weights"):
        load_finetune_backbone("i3d", tmp_path / "adapters")
    loaded, text = load_finetune_backbone("i3d", tmp_path / "adapters", base_weights=tmp_path / "base.safetensors")
    assert list_adapters(loaded) and "PECoP adapters" in text
    adapter_keys = [k for k in adapted.state_dict() if ".adapter." in f".{k}"]
    assert all(torch.equal(loaded.state_dict()[k], adapted.state_dict()[k]) for k in adapter_keys)
    with pytest.raises(ValueError, match="not those the adapters"):  # other base weights: refused by hash
        load_finetune_backbone("i3d", tmp_path / "adapters", base_weights=_other_base(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_finetune_backbone("i3d", tmp_path / "missing.pt")


def _other_base(tmp_path):
    from safetensors.torch import save_file

    from pecop_lib.models import build_backbone

    other = build_backbone("i3d", seed=2)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "other.safetensors"))
    return tmp_path / "other.safetensors"


@pytest.mark.slow
def test_backbone_loader_reads_pretraining_artifacts(world, tmp_path):
    from pecop_lib.pretrain.stage1_artifact import Stage1Spec, stage1_backbone

    artifact = stage1_backbone(Stage1Spec(clip_len=8, crop=32, epochs=1, batch_size=2), world["Kinetics-synth"],
                               root=tmp_path, run=RunContext(device="cpu", show_progress=False))
    loaded, text = load_finetune_backbone("i3d", artifact.folder)
    assert "pretraining artifact" in text and loaded.pool == "window2"
    expected = artifact.build().state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(ValueError, match="model_backbone='i3d'"):
        load_finetune_backbone("r3d18", artifact.folder)


def test_the_training_loop_keys_reach_fine_tuning(world, tmp_path):
    options = FinetuneOptions.from_config(resolve("smoke", train_grad_accum_steps=3, train_checkpoint_every_steps=1))
    assert (options.grad_accum_steps, options.checkpoint_every_steps) == (3, 1)
    assert FinetuneOptions.from_config(resolve("smoke")).grad_accum_steps == 0  # 0: the recipe's official value
    setting = Setting("core", "PD4T", "Gait")  # CoRe's recipe accumulates 2 pairs per step
    official, _ = _run(world, setting, tmp_path / "official", replace(OPTIONS, epochs=1))
    assert official.hyper["grad_accum_steps"] == 2
    assert not any((tmp_path / "official" / "run" / CHECKPOINT_DIR).glob("step_*.pt"))
    chosen, _ = _run(world, setting, tmp_path / "chosen", replace(OPTIONS, epochs=1, grad_accum_steps=1,
                                                                   checkpoint_every_steps=1))
    assert chosen.hyper["grad_accum_steps"] == 1
    assert chosen.history.epochs[0]["steps"] > official.history.epochs[0]["steps"] >= 1  # a step per micro-batch
    assert any((tmp_path / "chosen" / "run" / CHECKPOINT_DIR).glob("step_*.pt"))  # checkpoints inside the epoch


@pytest.mark.parametrize("draws", ["fixed", "per_epoch"])
def test_exemplars_are_drawn_per_epoch_only_when_asked(world, tmp_path, monkeypatch, draws):
    evaluation = importlib.import_module("pecop_lib.finetune.evaluation")
    epochs_drawn = []
    original = evaluation.draw_exemplars

    def spy(*args, **kwargs):
        epochs_drawn.append(kwargs.get("epoch"))
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluation, "draw_exemplars", spy)
    options = FinetuneOptions(**{**OPTIONS.__dict__, "exemplar_draws": draws})
    result, _ = _run(world, Setting("core", "MTL-AQA"), tmp_path, options)
    assert len(result.epochs) == 2
    # official: the exemplars of every query are drawn anew for each evaluated epoch; fixed: once for the run
    assert epochs_drawn == ([None, 1, 2] if draws == "per_epoch" else [None])
