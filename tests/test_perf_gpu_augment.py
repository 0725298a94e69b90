"""Batched device augmentation equals the per-clip transform (same draws, same crops, same flips)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _heads_stand_ins import TinyBackbone

from pecop_lib.data.gpu_augment import DeferredTransform, RawClip, augment_batch, collate_raw
from pecop_lib.data.transforms import ClipTransform, official_transform
from pecop_lib.data.video import write_frame_folder
from pecop_lib.pretrain import pretext_model, pretext_step
from pecop_lib.pretrain.pretext import PretextClips, TargetVideo
from pecop_lib.ssl import VSPPSampler
from pecop_lib.train import Trainer, epoch_loader
from pecop_lib.train.context import RunContext
from pecop_lib.train.device_augment import device_augmented

TRANSFORMS = {
    "core_mtl_train": official_transform("core_mtl", train=True, crop=24),  # resize, random crop, flip
    "musdl_mtl_train": official_transform("musdl_mtl", train=True, crop=24),  # resize, centre crop, flip
    "tsa_test": official_transform("tsa_finediving", train=False, crop=24),  # resize, centre crop
    "plain_train": official_transform("plain", train=True, crop=16),  # no resize
    "no_crop_no_norm": ClipTransform(resize=(20, 30), flip=True, normalize=False),
}


def _frames(n: int, t: int = 5, size: tuple[int, int] = (27, 41)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (t, *size, 3), dtype=np.uint8) for _ in range(n)]


def _both(transform: ClipTransform, frames: list[np.ndarray], memory_format=torch.contiguous_format):
    reference = torch.stack([transform(f, np.random.default_rng([7, i])) for i, f in enumerate(frames)])
    deferred = DeferredTransform(transform)
    batch = collate_raw([deferred(f, np.random.default_rng([7, i])) for i, f in enumerate(frames)])
    return reference, batch, augment_batch(batch, transform, memory_format=memory_format)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_batched_augmentation_equals_the_per_clip_transform(name: str) -> None:
    transform = TRANSFORMS[name]
    reference, batch, out = _both(transform, _frames(8))
    assert isinstance(batch, RawClip) and batch.frames.dtype == torch.uint8 and batch.draw.shape == (8, 3)
    assert out.shape == reference.shape and out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-6)
    if transform.flip:  # the seeds give both outcomes of the coin: the flip really is per clip
        assert 0 < int(batch.draw[:, 2].sum()) < 8


def test_channels_last_output_is_the_same_clip_in_ndhwc_memory() -> None:
    transform = TRANSFORMS["core_mtl_train"]
    reference, _, out = _both(transform, _frames(4), torch.channels_last_3d)
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-6)


def test_deferred_transform_makes_the_same_draws_in_the_same_order() -> None:
    transform = official_transform("core_mtl", train=True, crop=24)
    frames = _frames(1)[0]
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    clip = transform(frames, a)
    raw = DeferredTransform(transform)(frames, b)
    assert a.random() == b.random()  # both generators advanced identically: later draws still agree
    top, left, flip = raw.draw.tolist()
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255, size=transform.resize, mode="bilinear",
        antialias=True)[..., top : top + 24, left : left + 24]
    expected = (resized.flip(-1) if flip else resized).permute(1, 0, 2, 3)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1, 1)
    torch.testing.assert_close(clip, (expected - mean) / std, rtol=1e-5, atol=1e-5)
    assert torch.equal(raw.frames, torch.from_numpy(frames)) and DeferredTransform(transform).is_random
    with pytest.raises(ValueError, match="needs an rng"):
        DeferredTransform(transform)(frames)


def test_a_batch_of_different_frame_sizes_fails_clearly() -> None:
    deferred = DeferredTransform(TRANSFORMS["plain_train"])
    items = [(deferred(f, np.random.default_rng(i)), torch.tensor(i)) for i, f in
             enumerate(_frames(1, size=(20, 20)) + _frames(1, size=(24, 20)))]
    with pytest.raises(ValueError, match=r"different shapes .*augment in the loader workers"):
        collate_raw(items)
    with pytest.raises(ValueError, match="expected uint8 frames"):
        augment_batch(RawClip(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, dtype=torch.int64)), TRANSFORMS["plain_train"])


@pytest.mark.gpu
def test_gpu_augmentation_matches_the_cpu_transform() -> None:
    transform = TRANSFORMS["core_mtl_train"]
    reference, batch, _ = _both(transform, _frames(8, t=8, size=(90, 160)))
    gpu = RawClip(batch.frames.pin_memory().cuda(non_blocking=True), batch.draw.cuda())
    for memory_format in (torch.contiguous_format, torch.channels_last_3d):
        out = augment_batch(gpu, transform, memory_format=memory_format)
        assert out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), reference, rtol=0, atol=2e-3)  # resize rounding differs on the GPU


def _pretext_run(folder, transform, augment: str, workers: int = 0) -> list[float]:
    sampler = VSPPSampler(clip_len=4)
    deferred = augment == "device"
    clips = PretextClips([TargetVideo(folder, 0, 60)], sampler, DeferredTransform(transform) if deferred else transform,
                         repeat=6, seed=3)
    data = epoch_loader(clips, 3, seed=3, drop_last=True, num_workers=workers,
                        collate_fn=collate_raw if deferred else None)
    torch.manual_seed(0)
    model = pretext_model(TinyBackbone(8), sampler, dropout=0.0)
    step = device_augmented(pretext_step(sampler), transform) if deferred else pretext_step(sampler)
    trainer = Trainer(model, step, torch.optim.SGD(model.parameters(), lr=0.1), device="cpu", show_progress=False)
    return [s["loss"] for s in trainer.fit(data, 2).steps]


def test_pretext_training_with_device_augmentation_equals_worker_augmentation(tmp_path) -> None:
    frames = np.random.default_rng(1).integers(0, 256, (60, 30, 40, 3), dtype=np.uint8)
    folder = write_frame_folder(frames, tmp_path / "video", quality=95)
    transform = official_transform("core_mtl", train=True, crop=16)
    workers = _pretext_run(folder, transform, "workers")
    device = _pretext_run(folder, transform, "device", workers=1)  # through a real loader worker process
    assert len(workers) == 4
    np.testing.assert_allclose(device, workers, rtol=1e-6)


def test_continual_pretrain_with_device_augmentation_matches_the_plain_run(tmp_path) -> None:
    from pecop_lib.models import FastPath, build_backbone, fast_path_of, list_adapters
    from pecop_lib.pretrain import continual_pretrain
    from pecop_lib.ssl import RSPNetSampler

    frames = np.random.default_rng(2).integers(0, 256, (60, 36, 36, 3), dtype=np.uint8)
    videos = [TargetVideo(write_frame_folder(frames, tmp_path / "video", quality=95), 0, 60)]
    transform = official_transform("core_mtl", train=True, crop=32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = {}
        for augment, fast in (("workers", None), ("device", None), ("device", FastPath(True, True))):
            backbone = build_backbone("i3d", adapters=True, seed=0)
            result = continual_pretrain(backbone, videos, VSPPSampler(clip_len=8), transform, epochs=1, batch_size=2,
                                        list_repeat=4, augment=augment, fast=fast,
                                            run=RunContext(device="cpu", show_progress=False))
            runs[augment, fast] = ([s["loss"] for s in result.history.steps],
                                   list_adapters(backbone)["mixed_5c"].up.weight.detach().clone(), fast_path_of(backbone))
    finally:
        torch.set_num_threads(threads)
    plain, device, fast = runs["workers", None], runs["device", None], runs["device", FastPath(True, True)]
    assert len(device[0]) == 2
    np.testing.assert_allclose(device[0], plain[0], rtol=1e-6)  # same clips, same model: same training
    torch.testing.assert_close(device[1], plain[1], rtol=1e-5, atol=1e-7)
    # the fast path is applied (its accuracy in training mode: test_perf_fast_path.py, against float64)
    assert fast[2] == FastPath(True, True) and np.isfinite(fast[0]).all()
    with pytest.raises(ValueError, match="supports VSPP and VideoPace"):
        continual_pretrain(build_backbone("i3d", adapters=True, seed=0), videos, RSPNetSampler(clip_len=8), transform,
                           augment="device", run=RunContext(device="cpu"))
    with pytest.raises(ValueError, match="augment must be one of"):
        continual_pretrain(build_backbone("i3d", adapters=True, seed=0), videos, VSPPSampler(clip_len=8), transform,
                           augment="gpu", run=RunContext(device="cpu"))
