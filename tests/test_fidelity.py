"""The fidelity switches (docs/fidelity.md): each difference from the official code, with hand-computed values,
and the `paper` preset holding every official value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pecop_lib.config import resolve
from pecop_lib.finetune import FinetuneResult, Setting, select_epochs
from pecop_lib.models.backbone import pool_features


def _time_weights(mode: str, t: int) -> torch.Tensor:
    """The weight of each time step in the pooled vector: pool one-hot-in-time maps."""
    fmap = torch.zeros(t, 1, t, 3, 3)
    for i in range(t):
        fmap[i, 0, i] = 1.0
    return pool_features(fmap, mode).mean(dim=-1)[:, 0]


def test_stage2_pooling_weights_by_hand() -> None:
    # official AvgPool3d((2, 7, 7)), stride 1, then the mean over the T'-1 windows: at T' = 4 the windows
    # (0,1), (1,2), (2,3) give 1/2 * 1/3 to the ends and 2 * 1/2 * 1/3 to the middle steps
    torch.testing.assert_close(_time_weights("window2", 4), torch.tensor([1 / 6, 1 / 3, 1 / 3, 1 / 6]))
    torch.testing.assert_close(_time_weights("window2", 3), torch.tensor([1 / 4, 1 / 2, 1 / 4]))
    torch.testing.assert_close(_time_weights("window2", 2), torch.tensor([1 / 2, 1 / 2]))  # = adaptive at T' = 2
    torch.testing.assert_close(_time_weights("adaptive", 4), torch.full((4,), 1 / 4))


def _trajectory() -> list[dict]:
    """Five epochs where rho, L2, R-l2 and tIoU peak at different epochs."""
    rho = [0.50, 0.70, 0.90, 0.80, 0.85]
    l2 = [90.0, 40.0, 60.0, 35.0, 50.0]
    rl2 = [3.0, 1.6, 2.9, 1.7, 2.0]
    tiou5 = [0.4, 0.6, 0.5, 0.7, 0.65]
    tiou75 = [0.1, 0.2, 0.15, 0.1, 0.3]
    return [{"test_rho": r, "val_rho": None, "test_pred": [0.0, 1.0, 2.0], "test_l2": a, "test_rl2": b,
             "test_tiou_0.5": c, "test_tiou_0.75": d} for r, a, b, c, d in zip(rho, l2, rl2, tiou5, tiou75, strict=True)]


@pytest.mark.parametrize("head", ["core", "tsa"])
def test_best_over_epochs_beside_the_values_at_the_best_rho(head: str) -> None:
    epochs = _trajectory()
    reported = select_epochs(epochs, np.arange(3.0), "official", validation=False, bootstrap=0)
    dataset = "FineDiving" if head == "tsa" else "MTL-AQA"
    result = FinetuneResult(Setting(head, dataset), "x", epochs, np.arange(3.0), ["a", "b", "c"], np.zeros(0),
                            reported, {})
    summary = result.summary()
    # the package: the values of the best-rho epoch (3)
    assert summary["official_epoch"] == 3 and summary["official_l2"] == 60.0 and summary["official_rl2"] == 2.9
    # the official runners: each minimum (maximum) over all epochs, from whichever epoch reached it
    assert summary["best_over_epochs_l2"] == 35.0 and summary["best_over_epochs_rl2"] == 1.6
    if head == "tsa":
        assert summary["official_tiou_0.5"] == 0.5 and summary["official_tiou_0.75"] == 0.15
        assert summary["best_over_epochs_tiou_0.5"] == 0.7 and summary["best_over_epochs_tiou_0.75"] == 0.3
    else:
        assert "best_over_epochs_tiou_0.5" not in summary and "official_tiou_0.5" not in summary


def test_best_over_epochs_without_finite_values() -> None:
    epochs = [{"test_rho": None, "val_rho": None, "test_pred": [0.0], "test_l2": None, "test_rl2": None}]
    result = FinetuneResult(Setting("core", "MTL-AQA"), "x", epochs, np.zeros(1), ["a"], np.zeros(0), {}, {})
    assert result.best_over_epochs() == {"l2": None, "rl2": None}


def test_presets_pool_stage_2_the_official_way_or_say_why_not() -> None:
    assert resolve("paper").pretrain_pool == "window2" and resolve("tutorial").pretrain_pool == "window2"
    # smoke: 8-frame clips leave I3D one time step (window2 needs two); course: 16-frame clips leave two,
    # where both poolings are the same mean, and its shipped stage 1 is keyed with "adaptive"
    assert resolve("smoke").pretrain_pool == "adaptive" and resolve("course").pretrain_pool == "adaptive"


def test_window_pooling_refuses_clips_too_short_at_resolve() -> None:
    with pytest.raises(Exception, match="pretrain_clip_len=8 leaves one.*pretrain_pool='adaptive'"):
        resolve("tutorial", pretrain_clip_len=8)
    assert resolve("tutorial", pretrain_clip_len=8, pretrain_pool="adaptive").pretrain_clip_len == 8


def test_official_resize_is_each_readers_nearest_neighbour() -> None:
    from PIL import Image

    from pecop_lib.data.transforms import ClipTransform

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(1, 37, 23, 3), dtype=np.uint8)
    size = (61, 17)  # (H, W): up in height, down in width
    plain = {"normalize": False, "resize": size}
    # PIL's NEAREST (CoRe and TSA read their frames with PIL): source pixel floor((i + 0.5) * in / out)
    pil = np.asarray(Image.fromarray(frame[0]).resize((size[1], size[0]), Image.NEAREST), dtype=np.float32) / 255
    exact = ClipTransform(interpolation="nearest-exact", **plain)(frame)[:, 0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(exact, pil)
    # OpenCV's INTER_NEAREST (PECoP's stage 2 reads with cv2): source pixel floor(i * in / out)
    rows = np.floor(np.arange(size[0]) * 37 / size[0]).astype(int)
    cols = np.floor(np.arange(size[1]) * 23 / size[1]).astype(int)
    cv2_like = frame[0][rows][:, cols].astype(np.float32) / 255
    nearest = ClipTransform(interpolation="nearest", **plain)(frame)[:, 0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(nearest, cv2_like)
    assert not np.array_equal(exact, nearest)  # the two readers differ


@pytest.mark.parametrize(("height", "floor_top", "round_top"), [(455, 115, 116), (454, 115, 115), (453, 114, 114)])
def test_centre_crop_rounding(height: int, floor_top: int, round_top: int) -> None:
    from pecop_lib.data.transforms import ClipTransform

    # torch_videovision / torchvision: int(round((H - c) / 2)), Python's rounding (114.5 -> 114, 115.5 -> 116)
    assert ClipTransform(crop=224).draw((height, 300))[0] == floor_top
    assert ClipTransform(crop=224, round_centre=True).draw((height, 300))[0] == round_top


def test_official_transform_flavours() -> None:
    from pecop_lib.data.transforms import official_transform

    package = official_transform("core_mtl", train=False, crop=224)
    assert package.interpolation == "bilinear" and not package.round_centre
    assert official_transform("core_mtl", train=False, crop=224, resize="official").interpolation == "nearest-exact"
    assert official_transform("tsa_finediving", train=False, crop=112, resize="official").interpolation == "nearest-exact"
    stage2 = official_transform("pecop_stage2", train=True, crop=224, resize="official")
    assert stage2.interpolation == "nearest" and stage2.round_centre and stage2.resize == (455, 256)
    musdl = official_transform("musdl_mtl", train=False, crop=224, resize="official")
    assert musdl.interpolation == "bilinear" and musdl.round_centre  # its random interpolation is not reproduced
    with pytest.raises(ValueError, match="unknown resize 'bicubic'"):
        official_transform("core_mtl", train=False, resize="bicubic")


def test_resize_switch_reaches_the_loaders_and_stage_2(tmp_path) -> None:
    from dataclasses import replace

    from _worlds import tiny_world

    from pecop_lib.finetune import FinetuneOptions, open_finetune_data
    from pecop_lib.pretrain.artifacts import scratch_source
    from pecop_lib.pretrain.stage2_artifact import stage2_key, stage2_spec

    world = tiny_world(tmp_path)
    core = Setting("core", "MTL-AQA")
    data = open_finetune_data(world["MTL-AQA"], core, crop=32, resize="official")
    assert data.test.transform.interpolation == "nearest-exact" and data.test.transform.round_centre
    assert open_finetune_data(world["MTL-AQA"], core, crop=32).test.transform.interpolation == "bilinear"
    with pytest.raises(ValueError, match="resize must be one of"):
        FinetuneOptions(resize="cubic")
    assert "resize" not in FinetuneOptions().keyed() and FinetuneOptions(resize="official").keyed()["resize"] == "official"
    spec = stage2_spec(resolve("tutorial"), dataset="MTL-AQA")
    source = scratch_source()
    # the package's value stays out of the key (artifacts cached before the switch stay valid); the official enters it
    assert spec.resize == "official"
    assert stage2_key(replace(spec, resize="bilinear"), source, world["MTL-AQA"]) != stage2_key(spec, source, world["MTL-AQA"])
    with pytest.raises(ValueError, match="pretrain_resize"):
        replace(spec, resize="area")


def test_paper_preset_holds_every_official_value() -> None:
    """Every fidelity switch (docs/fidelity.md) and its official value under `paper`."""
    official = {
        "pretrain_pool": "window2",  # 1: AvgPool3d((2, 7, 7)) stride 1, then the mean over time
        "pretrain_resize": "official",  # 5: cv2 nearest neighbour, rounded centre crop
        "finetune_resize": "official",  # 5: PIL nearest neighbour, rounded centre crop
        "finetune_exemplar_draws": "per_epoch",  # 3: exemplars drawn anew for every query at every epoch
        "finetune_segment_pairs": "joint",  # 2: TSA segments both videos of a pair in one PSNet call
    }
    cfg = resolve("paper")
    assert {key: getattr(cfg, key) for key in official} == official


def test_exemplar_draws_per_epoch_or_fixed() -> None:
    from pecop_lib.finetune import FinetuneOptions
    from pecop_lib.heads import draw_exemplars

    train = ["a"] * 12 + ["b"] * 12
    queries = ["a", "b", "a", "b"]
    fixed = draw_exemplars(queries, train, 5, seed=3).indices
    np.testing.assert_array_equal(fixed, draw_exemplars(queries, train, 5, seed=3).indices)  # fixed: one draw per run
    epoch1 = draw_exemplars(queries, train, 5, seed=3, epoch=1).indices
    epoch2 = draw_exemplars(queries, train, 5, seed=3, epoch=2).indices
    assert not np.array_equal(epoch1, epoch2) and not np.array_equal(epoch1, fixed)  # official: drawn anew
    np.testing.assert_array_equal(epoch1, draw_exemplars(queries, train, 5, seed=3, epoch=1).indices)  # reproducible
    # by hand: query 2 of epoch 1 permutes group a's members with default_rng([3, 1, 2])
    np.testing.assert_array_equal(epoch1[2], np.random.default_rng([3, 1, 2]).permutation(np.arange(12))[:5])
    np.testing.assert_array_equal(fixed[2], np.random.default_rng([3, 2]).permutation(np.arange(12))[:5])
    assert all(set(row) <= set(range(12)) for row in epoch1[[0, 2]])  # still the query's group
    assert all(set(row) <= set(range(12, 24)) for row in epoch2[[1, 3]])
    with pytest.raises(ValueError, match="exemplar_draws must be one of"):
        FinetuneOptions(exemplar_draws="sometimes")
    assert "exemplar_draws" not in FinetuneOptions().keyed()
    assert FinetuneOptions(exemplar_draws="per_epoch").keyed()["exemplar_draws"] == "per_epoch"


@pytest.mark.parametrize("segment_pairs", ["joint", "separate"])
def test_tsa_segments_a_pair_in_one_batchnorm_batch_or_two(segment_pairs: str) -> None:
    from pecop_lib.heads.tsa import TSA
    from pecop_lib.heads.windows import WindowFeatures

    torch.manual_seed(0)
    head = TSA(num_windows=9, num_frames=96, feature_dim=128, segment_pairs=segment_pairs).train()
    n = 3
    a = WindowFeatures(torch.randn(n, 9, 128), torch.randn(n, 9, 128, 2, 2))
    b = WindowFeatures(torch.randn(n, 9, 128) + 1.0, torch.randn(n, 9, 128, 2, 2) - 1.0)
    bn = next(m for m in head.psnet.modules() if isinstance(m, torch.nn.BatchNorm1d))
    inputs: list[torch.Tensor] = []
    bn.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().clone()))
    head.pair(a, b)
    batches = [x.shape[0] for x in inputs]
    momentum = bn.momentum
    expected = torch.zeros_like(bn.running_mean)
    for x in inputs:  # PyTorch's update, one per call: (1 - m) * running + m * batch mean
        expected = (1 - momentum) * expected + momentum * x.mean(dim=(0, 2))
    torch.testing.assert_close(bn.running_mean, expected)
    if segment_pairs == "joint":  # official: pooled features of the 2N videos, then their 2N x H' x W' map rows
        assert batches == [2 * n, 2 * n * 4]
    else:  # one call per side: N videos, N x H' x W' map rows, then the other side
        assert batches == [n, n * 4, n, n * 4]
    # with BatchNorm fixed (eval) the two ways give the same pair outputs
    other = TSA(num_windows=9, num_frames=96, feature_dim=128,
                segment_pairs="separate" if segment_pairs == "joint" else "joint")
    other.load_state_dict(head.state_dict())
    for x, y in zip(head.eval().pair(a, b), other.eval().pair(a, b), strict=True):
        torch.testing.assert_close(x, y)
    with pytest.raises(ValueError, match="unknown segment_pairs"):
        TSA(feature_dim=128, segment_pairs="both")


def test_per_device_batch_states_batchnorms_batch(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from pecop_lib.cli import _pretrain_overrides, build_parser, per_device_batch

    assert per_device_batch(None) is None
    monkeypatch.setenv("WORLD_SIZE", "4")  # torchrun --nproc_per_node 4: the official 4 DataParallel replicas
    assert per_device_batch(4) == 16
    assert "4 per device x 4 processes = 16 per step" in capsys.readouterr().err
    monkeypatch.delenv("WORLD_SIZE")
    assert per_device_batch(4) == 4 and per_device_batch(2, world_size=3) == 6
    with pytest.raises(ValueError, match="--per-device-batch must be >= 1"):
        per_device_batch(0)
    parser = build_parser()
    args = parser.parse_args(["pretrain", "--preset", "smoke", "--strategy", "pecop", "--per-device-batch", "4",
                              "--grad-accum", "4"])
    overrides = _pretrain_overrides(args)
    assert overrides["pretrain_batch_size"] == 4 and overrides["train_grad_accum_steps"] == 4
    with pytest.raises(SystemExit):  # one or the other
        parser.parse_args(["pretrain", "--preset", "smoke", "--strategy", "pecop", "--per-device-batch", "4",
                           "--batch-size", "16"])
    capsys.readouterr()
    args = parser.parse_args(["finetune", "--preset", "smoke", "--head", "core", "--dataset", "MTL-AQA",
                              "--backbone-checkpoint", "none", "--per-device-batch", "2"])
    assert args.per_device_batch == 2
