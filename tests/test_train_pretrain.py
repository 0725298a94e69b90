"""Pretraining recipes: clips read the sampled frames, strategies train only what they own, stage 1 runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _worlds import finetune_world

from pecop_lib.data import PD4T, KineticsActions, official_transform
from pecop_lib.data.transforms import ClipTransform, color_jitter
from pecop_lib.data.video import write_frame_folder
from pecop_lib.models import build_backbone
from pecop_lib.models.strategies import trainable_names
from pecop_lib.pretrain.continual import HELDOUT_FILE, continual_pretrain, cosine_optimizer
from pecop_lib.pretrain.general import domain_general_pretrain
from pecop_lib.pretrain.pretext import (
    HELDOUT_SEED,
    PretextClips,
    TargetVideo,
    pretext_accuracy,
    target_videos,
)
from pecop_lib.ssl import PaceSampler, RSPNetSampler, VSPPSampler
from pecop_lib.ssl.vspp import VSPPLogits
from pecop_lib.train.context import RunContext
from pecop_lib.train.loop import NonFiniteLossError

STEP = 5  # frame k (1-based) has the uniform colour (STEP * k, 60, 200)


@pytest.fixture(scope="module")
def numbered_video(tmp_path_factory) -> Path:
    frames = np.zeros((50, 16, 16, 3), dtype=np.uint8)
    frames[..., 0] = (STEP * np.arange(1, 51))[:, None, None]
    frames[..., 1], frames[..., 2] = 60, 200
    return write_frame_folder(frames, tmp_path_factory.mktemp("numbered") / "video", quality=100)


def _frame_numbers(clip: torch.Tensor, channel: int = 0) -> list[int]:
    """Recover the frame numbers from a clip (3, T, H, W) in [0, 1] (no normalisation)."""
    return [round(v / STEP) for v in (clip[channel].mean(dim=(1, 2)) * 255).tolist()]


PLAIN = ClipTransform(normalize=False)


def test_vspp_clips_hold_exactly_the_sampled_frames_and_labels(numbered_video: Path) -> None:
    sampler = VSPPSampler(clip_len=8, normal_pace=1)
    dataset = PretextClips([TargetVideo(numbered_video, 0, 50)], sampler, PLAIN, repeat=3, seed=4)
    assert len(dataset) == 3
    for index in range(3):
        clip, labels = dataset[index]
        expected = sampler.sample(50, np.random.default_rng([4, 0, index]))
        assert clip.shape == (3, 8, 16, 16)
        assert _frame_numbers(clip) == expected.frames
        assert labels.tolist() == [expected.speed_label, expected.segment_label]
    dataset.set_epoch(1)
    assert _frame_numbers(dataset[0][0]) == sampler.sample(50, np.random.default_rng([4, 1, 0])).frames


def test_span_offset_and_bgr_order(numbered_video: Path) -> None:
    sampler = PaceSampler(clip_len=4, max_pace=2)
    rgb = PretextClips([TargetVideo(numbered_video, 10, 30)], sampler, PLAIN, seed=0)
    bgr = PretextClips([TargetVideo(numbered_video, 10, 30)], sampler, PLAIN, seed=0, channel_order="bgr")
    clip, label = rgb[0]
    sample = sampler.sample(30, np.random.default_rng([0, 0, 0]))
    assert _frame_numbers(clip) == [10 + f for f in sample.frames]  # span starts at position 10 = frame 11
    assert label.item() == sample.label
    assert torch.equal(bgr[0][0], rgb[0][0].flip(0))  # channels reversed, as cv2 reads them
    assert round(bgr[0][0][0].mean().item() * 255) == 200


def test_rspnet_keys_share_one_spatial_draw(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pattern = rng.integers(0, 256, (1, 24, 24, 3), dtype=np.uint8).repeat(40, axis=0)
    folder = write_frame_folder(pattern, tmp_path / "noise", quality=100)
    transform = ClipTransform(crop=12, random_crop=True, flip=True, normalize=False)
    dataset = PretextClips([TargetVideo(folder, 0, 40)], RSPNetSampler(clip_len=4, speeds=(2, 3)), transform, repeat=20)
    crops_differ = 0
    for index in range(20):
        query, key, key_other = dataset[index]
        assert query.shape == key.shape == key_other.shape == (3, 4, 12, 12)
        assert torch.equal(key[:, 0], key_other[:, 0])  # same window start, same crop and flip
        crops_differ += not torch.equal(query[:, 0], key[:, 0])
    assert crops_differ > 0  # the query has its own spatial draw


def test_color_jitter_is_seeded_per_frame_and_optional() -> None:
    frames = np.random.default_rng(1).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    a = color_jitter(frames, np.random.default_rng(3))
    b = color_jitter(frames, np.random.default_rng(3))
    assert a.dtype == np.uint8 and a.shape == frames.shape and np.array_equal(a, b)
    assert not np.array_equal(a, frames)
    assert np.array_equal(color_jitter(frames, np.random.default_rng(3), p=0.0), frames)
    changed = [not np.array_equal(x, y) for x, y in zip(color_jitter(frames, np.random.default_rng(5), p=1.0), frames,
                                                           strict=True)]
    assert all(changed)


def test_clip_dataset_rejects_bad_settings(numbered_video: Path) -> None:
    with pytest.raises(ValueError, match="no target videos"):
        PretextClips([], VSPPSampler(), PLAIN)
    with pytest.raises(ValueError, match="channel_order must be one of"):
        PretextClips([TargetVideo(numbered_video, 0, 50)], VSPPSampler(), PLAIN, channel_order="bgrx")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return finetune_world(tmp_path_factory.getbasetemp())


def test_target_videos_are_the_split_videos(world) -> None:
    dataset = PD4T(world["PD4T"], "Gait", "train", crop=32)
    videos = target_videos(dataset)
    assert len(videos) == len(dataset)
    assert all(v.first == 0 and v.num_frames == len(dataset.source(i)) for i, v in enumerate(videos))
    with pytest.raises(ValueError, match="no start_frame/end_frame"):
        target_videos(dataset, annotated_span=True)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["pecop", "hpt", "hpt_bn", "dom_s", "dom_g"])
def test_each_strategy_changes_only_the_parameters_it_owns(world, tmp_path: Path, strategy: str) -> None:
    videos = target_videos(PD4T(world["PD4T"], "Gait", "train", crop=32))[:2]
    backbone = build_backbone("i3d", adapters=strategy == "pecop", seed=0)
    before = _params(backbone)
    buffers = {k: v.clone() for k, v in backbone.named_buffers()}
    result = continual_pretrain(
        backbone, videos, VSPPSampler(clip_len=8), official_transform("core_mtl", train=True, crop=32),
        strategy=strategy, epochs=1, batch_size=2, list_repeat=1, run_dir=tmp_path,
            run=RunContext(device="cpu", show_progress=False))
    after = _params(backbone)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    owned = set(trainable_names(backbone, strategy))
    assert changed == owned
    if strategy == "dom_g":
        assert result.model is None and not changed and not result.history.epochs
        assert all(torch.equal(v, buffers[k]) for k, v in backbone.named_buffers())
        return
    assert changed  # something was trained
    assert len(result.history.steps) == 1 and np.isfinite(result.history.epochs[0]["loss"])
    head = [n for n, p in result.model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    assert head  # the VSPP heads train too


@pytest.mark.slow
def test_domain_general_stage_trains_the_classifier(world, tmp_path: Path) -> None:
    actions = KineticsActions(world["Kinetics-synth"], "train", clip_len=8, crop=32)
    backbone = build_backbone("r3d18", num_classes=len(actions.classes), seed=0)
    before = _params(backbone)
    result = domain_general_pretrain(backbone, actions, epochs=1, batch_size=4, lr=0.01,
                                     run_dir=tmp_path, run=RunContext(device="cpu", show_progress=False))
    assert len(result.history.steps) == len(actions) // 4
    after = _params(backbone)
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert not torch.equal(before["stem.0.weight"], after["stem.0.weight"])
    assert (tmp_path / "checkpoints" / "epoch_001.pt").is_file()
    with pytest.raises(RuntimeError, match="has no classifier"):
        domain_general_pretrain(build_backbone("r3d18"), actions, epochs=1, batch_size=4, lr=0.01,
                                run=RunContext(device="cpu"))


class _ConstantVSPP(torch.nn.Module):
    """Always answers speed class 0 and segment class 1, whatever the clip."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, clips: torch.Tensor) -> VSPPLogits:
        batch = clips.shape[0]
        speed = torch.zeros(batch, 5)
        speed[:, 0] = self.scale
        segment = torch.zeros(batch, 4)
        segment[:, 1] = self.scale
        return VSPPLogits(speed, segment)


def test_pretext_accuracy_counts_the_fixed_heldout_clips(numbered_video: Path) -> None:
    sampler = VSPPSampler(clip_len=8, normal_pace=1)
    videos = [TargetVideo(numbered_video, 0, 50), TargetVideo(numbered_video, 5, 40)]
    model = _ConstantVSPP().train()
    values = pretext_accuracy(model, videos, sampler, PLAIN, clips_per_video=5, batch_size=3, seed=2, device="cpu")
    clips = PretextClips(videos, sampler, PLAIN, repeat=5, seed=2 + HELDOUT_SEED)
    labels = torch.stack([clips[i][1] for i in range(len(clips))])
    assert values["clips"] == 10
    assert values["speed_acc"] == pytest.approx((labels[:, 0] == 0).float().mean().item())
    assert values["segment_acc"] == pytest.approx((labels[:, 1] == 1).float().mean().item())
    assert values["acc"] == pytest.approx((values["speed_acc"] + values["segment_acc"]) / 2)
    assert model.training  # put back in its mode
    again = pretext_accuracy(model, videos, sampler, PLAIN, clips_per_video=5, seed=2, device="cpu")  # other batches
    assert again == pytest.approx(values)
    with pytest.raises(TypeError, match="RSPNet is contrastive"):
        pretext_accuracy(model, videos, RSPNetSampler(clip_len=4), PLAIN, device="cpu")


@pytest.mark.slow
def test_heldout_accuracy_is_measured_before_and_after_every_epoch_and_resumes(world, tmp_path: Path) -> None:
    train = target_videos(PD4T(world["PD4T"], "Gait", "train", crop=32))[:2]
    test = target_videos(PD4T(world["PD4T"], "Gait", "test", crop=32))[:2]

    def run(epochs: int, resume: bool = False):
        return continual_pretrain(
            build_backbone("i3d", adapters=True, seed=0), train, VSPPSampler(clip_len=8),
            official_transform("core_mtl", train=True, crop=32), epochs=epochs, batch_size=2, list_repeat=1,
            run_dir=tmp_path, heldout=test, heldout_clips_per_video=2,
            run=RunContext(device="cpu", show_progress=False, resume=resume))

    first = run(1)
    assert [r["epoch"] for r in first.heldout] == [0, 1]
    assert all(r["clips"] == 4 and 0 <= r["segment_acc"] <= 1 for r in first.heldout)
    record = json.loads((tmp_path / HELDOUT_FILE).read_text())
    assert record["videos"] == 2 and record["epochs"] == first.heldout
    resumed = run(2, resume=True)
    assert [r["epoch"] for r in resumed.heldout] == [0, 1, 2]
    assert resumed.heldout[:2] == first.heldout  # read back, not measured again


@pytest.mark.slow
def test_heldout_values_that_are_not_finite_stop_the_run(world, tmp_path: Path, monkeypatch) -> None:
    from pecop_lib.pretrain import (
        continual as pretrain,  # the module whose stage 2 measures the held-out clips
    )

    calls = []

    def diverged(*args, **kwargs):
        calls.append(1)
        finite = len(calls) == 1  # before training the weights are fine
        return {"speed_acc": 0.25, "segment_acc": 0.25, "acc": 0.25, "loss": 2.8 if finite else float("nan"),
                "clips": 4}

    monkeypatch.setattr(pretrain, "pretext_accuracy", diverged)
    videos = target_videos(PD4T(world["PD4T"], "Gait", "train", crop=32))[:2]
    with pytest.raises(NonFiniteLossError, match="held-out pretext loss not finite after epoch 1"):
        continual_pretrain(
            build_backbone("i3d", adapters=True, seed=0), videos, VSPPSampler(clip_len=8),
            official_transform("core_mtl", train=True, crop=32), epochs=2, batch_size=2, list_repeat=1,
            run_dir=tmp_path, heldout=videos, run=RunContext(device="cpu", show_progress=False))
    record = json.loads((tmp_path / HELDOUT_FILE).read_text())
    assert [r["epoch"] for r in record["epochs"]] == [0]  # nothing non-finite written


def test_cosine_optimizer_builds_the_official_sgd_or_adam_with_one_schedule() -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    sgd, schedule = cosine_optimizer(params, lr=0.01, momentum=0.9, weight_decay=1e-4, t_max=22, eta_min=1e-6)
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.9 and not sgd.defaults["nesterov"]
    assert (schedule.T_max, schedule.eta_min) == (22, 1e-6)
    adam, schedule = cosine_optimizer(params, kind="adam", lr=1e-3, momentum=0.9, weight_decay=1e-4, t_max=4, eta_min=0.0)
    assert type(adam) is torch.optim.Adam and adam.defaults["lr"] == 1e-3 and adam.defaults["weight_decay"] == 1e-4
    for _ in range(4):
        adam.step()
        schedule.step()
    assert adam.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to eta_min over t_max epochs
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        cosine_optimizer(params, kind="lion", lr=1e-3, momentum=0.9, weight_decay=0.0, t_max=1, eta_min=0.0)
