"""Checkpoint layouts: detection, strict loading, round trips with identical outputs, adapter checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from pecop_lib.models import (
    WeightsMismatchError,
    adapters_disabled,
    build_backbone,
    detect_layout,
    export_state_dict,
    list_adapters,
    load_adapter_checkpoint,
    load_weights,
    save_adapter_checkpoint,
    save_official_checkpoint,
    stored_nbytes,
)
from pecop_lib.models.adapter_checkpoint import ADAPTER_FILE, BN_STATS_FILE, CONFIG_FILE

CLIP = (2, 3, 8, 32, 32)


def _randomise_bn(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics and affine values, so that eps and stats matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.05 + 0.5 * torch.rand(m.num_features, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))


def _features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval().forward_features(x)


@pytest.fixture(scope="module")
def source() -> torch.nn.Module:
    """An I3D with Kinetics classifier and adapters, random weights and BN statistics."""
    model = build_backbone("i3d", adapters=True, num_classes=400, seed=11)
    _randomise_bn(model, 12)
    return model.eval()


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return torch.randn(*CLIP, generator=torch.Generator().manual_seed(5))


def test_hassony2_round_trip_and_classifier_extras(source: torch.nn.Module, clip: torch.Tensor) -> None:
    with torch.no_grad():
        plain = build_backbone("i3d", num_classes=400, seed=11)
        plain.load_state_dict({k: v for k, v in source.state_dict().items() if ".adapter." not in k})
    hassony2 = export_state_dict(plain, "hassony2")
    assert "conv3d_0c_1x1.conv3d.weight" in hassony2 and detect_layout(hassony2) == "hassony2"
    # into a model without classifier: the classifier comes back in extras, not silently dropped
    ours = build_backbone("i3d", seed=99)
    report = load_weights(ours, hassony2)
    assert report.layout == "hassony2" and report.missing == []
    assert sorted(report.extras) == ["conv3d_0c_1x1.conv3d.bias", "conv3d_0c_1x1.conv3d.weight"]
    assert torch.equal(_features(ours, clip), _features(plain, clip))
    with pytest.raises(ValueError, match="classifier='zeros'"):
        export_state_dict(ours, "hassony2")
    back = export_state_dict(ours, "hassony2", classifier=report.extras)
    assert back.keys() == hassony2.keys() and all(torch.equal(back[k], hassony2[k]) for k in back)
    # a backbone-only checkpoint into an adapted model: adapters keep their init and are reported
    adapted = build_backbone("i3d", adapters=True, seed=3)
    init = {k: v.clone() for k, v in adapted.state_dict().items() if ".adapter." in k}
    report = load_weights(adapted, hassony2)
    assert report.missing == list(init) and len(init) == 45
    assert all(torch.equal(adapted.state_dict()[k], v) for k, v in init.items())


@pytest.mark.parametrize("prefix", ["model.", "module.model.", ""])
def test_official_pecop_round_trip(source: torch.nn.Module, clip: torch.Tensor, prefix: str, tmp_path: Path) -> None:
    heads = {
        "logits_p.conv3d.weight": torch.randn(5, 1024, 1, 1, 1), "logits_p.conv3d.bias": torch.randn(5),
        "logits_s.conv3d.weight": torch.randn(4, 1024, 1, 1, 1), "logits_s.conv3d.bias": torch.randn(4),
    }  # fmt: skip
    path = save_official_checkpoint(source, tmp_path / "gait_adapter08.pth.tar", prefix=prefix, heads=heads)
    state = torch.load(path, weights_only=True)
    assert len(state) == 389 + 4  # official: 344 backbone + 45 adapter keys, plus the two VSPP heads
    outer = "module." if prefix.startswith("module.") else ""
    assert state[f"{prefix}mixed_3b.tuning_module.se"].shape == (1, 256, 1, 1, 1)
    assert state[f"{prefix}mixed_3b.tuning_module.conv1.weight"].shape == (64, 4, 3, 3, 3)
    assert f"{outer}logits_p.conv3d.weight" in state
    assert detect_layout(state) == ("pecop_official" if prefix or heads else "hassony2")
    target = build_backbone("i3d", adapters=True, num_classes=400, seed=0)
    report = load_weights(target, path)
    assert report.layout == "pecop_official"
    assert set(report.extras) == set(heads) and all(torch.equal(report.extras[k], v) for k, v in heads.items())
    assert torch.equal(_features(target, clip), _features(source, clip))
    again = export_state_dict(target, "pecop_official", prefix=prefix, heads=report.extras)
    assert again.keys() == state.keys() and all(torch.equal(again[k], state[k]) for k in state)


def test_piergiaj_round_trip_and_bn_eps(source: torch.nn.Module, clip: torch.Tensor) -> None:
    plain = build_backbone("i3d", num_classes=400)
    plain.load_state_dict({k: v for k, v in source.state_dict().items() if ".adapter." not in k})
    piergiaj = export_state_dict(plain, "piergiaj")
    assert {"Conv3d_1a_7x7.bn.running_var", "Mixed_3b.b1b.conv3d.weight", "Mixed_5c.b3b.bn.weight",
            "logits.conv3d.bias"} <= set(piergiaj)  # fmt: skip
    assert not any(k.startswith(("conv3d_", "mixed_")) or ".batch3d." in k for k in piergiaj)
    assert detect_layout(piergiaj) == "piergiaj"
    ours = build_backbone("i3d", num_classes=400)
    report = load_weights(ours, piergiaj)
    assert report.converted["Mixed_3b.b1b.conv3d.weight"] == "mixed_3b.branch_1.1.conv3d.weight"
    assert any("eps 0.001" in n for n in report.notes)
    assert torch.equal(_features(ours, clip), _features(plain, clip))
    hassony2 = export_state_dict(ours, "hassony2")
    assert all(torch.equal(hassony2[k], v) for k, v in plain.state_dict().items())
    # piergiaj's own numerics (eps 1e-3) reproduced in a CoRe-style eps 1e-5 model
    piergiaj_model = build_backbone("i3d", num_classes=400, bn_eps=1e-3, bn_momentum=0.01)
    load_weights(piergiaj_model, piergiaj)
    core_style = build_backbone("i3d", num_classes=400)
    load_weights(core_style, piergiaj, adjust_bn_eps=True)
    x = clip.double()
    expected = _features(piergiaj_model.double(), x)
    # equal up to the float32 rounding of the shifted running_var
    torch.testing.assert_close(_features(core_style.double(), x), expected, rtol=1e-5, atol=1e-6)
    assert (_features(ours.double(), x) - expected).abs().max() > 1e-3  # eps alone makes a difference
    with pytest.raises(ValueError, match="has no adapter keys"):
        export_state_dict(source, "piergiaj")
    with pytest.raises(ValueError, match="lambda=8"):
        export_state_dict(build_backbone("i3d", adapters={"reduction": 8}), "pecop_official", classifier="zeros")


def test_old_checkpoint_without_batch_counters(source: torch.nn.Module) -> None:
    state = export_state_dict(build_backbone("i3d", num_classes=400), "hassony2")
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    report = load_weights(build_backbone("i3d", num_classes=400), old)
    assert len(report.filled) == 57 and all(k.endswith("num_batches_tracked") for k in report.filled)


def test_mismatched_checkpoints_raise_naming_the_keys(source: torch.nn.Module) -> None:
    state = export_state_dict(source, "pecop_official")
    broken = dict(state)
    del broken["model.mixed_4c.branch_2.1.batch3d.running_var"]
    broken["model.mixed_4c.branch_9.conv3d.weight"] = torch.zeros(1)
    broken["model.mixed_5c.tuning_module.conv2.bias"] = torch.zeros(7)
    model = build_backbone("i3d", adapters=True, num_classes=400, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsMismatchError) as err:
        load_weights(model, broken)
    message = str(err.value)
    assert "mixed_4c.branch_2.1.batch3d.running_var" in message
    assert "model.mixed_4c.branch_9.conv3d.weight" in message
    assert "model.mixed_5c.tuning_module.conv2.bias: checkpoint (7,) vs model (1024,)" in message
    assert err.value.missing == ["mixed_4c.branch_2.1.batch3d.running_var"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items()), "model untouched on error"
    with pytest.raises(WeightsMismatchError, match="build the model with adapters=True"):
        load_weights(build_backbone("i3d", num_classes=400), state)
    partial = {k: v for k, v in state.items() if "mixed_3b.tuning_module" not in k}
    with pytest.raises(WeightsMismatchError, match="mixed_3b.adapter.alpha"):
        load_weights(build_backbone("i3d", adapters=True, num_classes=400), partial)
    tv = torchvision.models.video.r3d_18(weights=None).state_dict()
    with pytest.raises(WeightsMismatchError, match=r"r3d18 checkpoint .* build_backbone\('r3d18'\)"):
        load_weights(model, tv)
    with pytest.raises(ValueError, match="unknown checkpoint layout"):
        load_weights(model, {"encoder.weight": torch.zeros(1)})


def test_unreadable_files_raise(tmp_path: Path) -> None:
    model = build_backbone("r3d18")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_weights(model, tmp_path / "missing.pth")
    bad = tmp_path / "pickled.pth"
    torch.save({"state_dict": {"stem.0.weight": torch.zeros(1)}, "optimizer": object()}, bad)
    with pytest.raises(ValueError, match="weights_only"):
        load_weights(model, bad)


def test_r3d18_local_torchvision_file(tmp_path: Path, clip: torch.Tensor) -> None:
    torch.manual_seed(4)
    reference = torchvision.models.video.r3d_18(weights=None)
    _randomise_bn(reference, 6)
    path = tmp_path / "r3d_18-b3b3357e.pth"
    torch.save(reference.state_dict(), path)
    model = build_backbone("r3d18", adapters=True, num_classes=400)
    report = load_weights(model, path)
    assert report.layout == "torchvision_r3d18" and len(report.missing) == 8 * 5
    x = torch.randn(2, 3, 8, 56, 56)
    with torch.no_grad(), adapters_disabled(model):
        torch.testing.assert_close(model.eval().forward_logits(x), reference.eval()(x), rtol=0, atol=0)
    without_fc = build_backbone("r3d18")
    assert sorted(load_weights(without_fc, path).extras) == ["fc.bias", "fc.weight"]
    round_trip = export_state_dict(without_fc, "torchvision_r3d18", classifier=reference.state_dict())
    assert all(torch.equal(round_trip[k], v) for k, v in reference.state_dict().items())


def test_adapter_checkpoint_round_trip(tmp_path: Path, clip: torch.Tensor) -> None:
    kinetics = build_backbone("i3d", seed=21)
    _randomise_bn(kinetics, 22)
    backbone_file = tmp_path / "kinetics.safetensors"
    save_file(export_state_dict(kinetics, "hassony2", classifier="zeros"), str(backbone_file))

    trained = build_backbone("i3d", adapters=True, seed=1)
    load_weights(trained, backbone_file)
    with torch.no_grad():
        for adapter in list_adapters(trained).values():
            adapter.alpha.mul_(1.5)  # stands in for training
        trained.train().forward_features(torch.randn(2, 3, 8, 32, 32))  # BN statistics re-estimated
    heads = {"logits_p.conv3d.weight": torch.randn(5, 1024, 1, 1, 1)}
    folder = save_adapter_checkpoint(trained, tmp_path / "ckpt", heads=heads, metadata={"epoch": 8})
    adapter_bytes = (folder / ADAPTER_FILE).stat().st_size
    assert adapter_bytes <= 4.5e6
    tensors_only = stored_nbytes({k: v for k, v in trained.state_dict().items() if ".adapter." in k})
    assert 0 < adapter_bytes - tensors_only < 1000  # plus the metadata (format, backbone hash)
    assert (folder / BN_STATS_FILE).stat().st_size < 0.1e6
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["adapter"] == {"reduction": 4, "groups": "width", "init": "official",
                                 "targets": list(trained.adapter_sites)}  # fmt: skip
    assert config["backbone"] == "i3d" and config["strategy"] == "pecop" and config["metadata"] == {"epoch": 8}

    # a fresh model: backbone weights first, then the adapters (injected from the stored config)
    fresh = build_backbone("i3d", seed=7)
    load_weights(fresh, backbone_file)
    report = load_weights(fresh, folder)
    assert report.layout == "pecop_lib_adapters" and list(report.extras) == list(heads)
    assert torch.equal(_features(fresh, clip), _features(trained, clip))
    # without the BN statistics the Kinetics statistics stay: different outputs
    no_bn = build_backbone("i3d", seed=7)
    load_weights(no_bn, backbone_file)
    load_adapter_checkpoint(no_bn, folder, load_bn_stats=False)
    assert not torch.allclose(_features(no_bn, clip), _features(trained, clip))
    with pytest.raises(ValueError, match="not those the adapters"):
        load_adapter_checkpoint(build_backbone("i3d", seed=5), folder)
    with pytest.raises(ValueError, match="reduction"):
        load_adapter_checkpoint(build_backbone("i3d", adapters={"reduction": 8}), folder, check_backbone=False)


def test_adapter_checkpoint_reloads_to_identical_outputs(tmp_path: Path, clip: torch.Tensor) -> None:
    model = build_backbone("r3d18", adapters=True, seed=2)
    _randomise_bn(model, 3)
    with torch.no_grad():
        model.train().forward_features(torch.randn(2, 3, 8, 32, 32))
    expected = _features(model, clip)
    folder = save_adapter_checkpoint(model, tmp_path / "r3d")
    fresh = build_backbone("r3d18", seed=2)
    _randomise_bn(fresh, 3)
    load_adapter_checkpoint(fresh, folder)
    assert torch.equal(_features(fresh, clip), expected)
    with pytest.raises(ValueError, match="no adapters to save"):
        save_adapter_checkpoint(build_backbone("r3d18"), tmp_path / "none")
