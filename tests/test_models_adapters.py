"""3D-Adapter (Eq. 1), injection API, strategies, BatchNorm mode and parameter counts (Table 2)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from pecop_lib.models import (
    Adapter3D,
    AdapterConfig,
    AdapterTargetError,
    adapter_parameter_table,
    adapters_disabled,
    build_backbone,
    inject_adapters,
    list_adapters,
    mark_trainable,
    parameter_summary,
    remove_adapters,
    set_adapters_enabled,
    strategy_parameter_counts,
    table2,
)

CLIP = (1, 3, 8, 32, 32)

# Reference doc: per-block adapter parameters 109*C/4 + C^2/4 + 2C (I3D, lambda 4)
I3D_ADAPTERS = {
    "mixed_3b": 23_872, "mixed_3c": 71_640, "mixed_4b": 80_512, "mixed_4c": 80_512, "mixed_4d": 80_512,
    "mixed_4e": 85_140, "mixed_4f": 197_392, "mixed_5b": 197_392, "mixed_5c": 292_096,
}  # fmt: skip


def test_adapter_computes_eq1() -> None:
    torch.manual_seed(0)
    adapter = Adapter3D(16, reduction=4)
    with torch.no_grad():
        adapter.alpha.copy_(torch.linspace(0.5, 2.0, 16))
    h = torch.randn(2, 16, 3, 5, 5)
    down = F.conv3d(h, adapter.down.weight, adapter.down.bias, padding=1, groups=4)
    expected = h + adapter.alpha.view(1, -1, 1, 1, 1) * F.conv3d(F.relu(down), adapter.up.weight, adapter.up.bias)
    torch.testing.assert_close(adapter(h), expected)
    assert adapter.down.weight.shape == (4, 4, 3, 3, 3)  # C/lambda outputs, lambda inputs per group
    adapter.enabled = False
    assert torch.equal(adapter(h), h)


def test_adapter_options_and_errors() -> None:
    dw = Adapter3D(32, reduction=4, groups="depthwise")
    assert dw.down[0].groups == 32 and dw.down[0].weight.shape == (32, 1, 3, 3, 3)
    assert dw.down[1].weight.shape == (8, 32, 1, 1, 1)
    assert Adapter3D(32, reduction=8).up.weight.shape == (32, 4, 1, 1, 1)
    with pytest.raises(ValueError, match="not divisible"):
        Adapter3D(30, reduction=4)
    with pytest.raises(ValueError, match="unknown adapter init"):
        AdapterConfig(init="xavier")
    with pytest.raises(ValueError, match="unknown adapter config keys"):
        AdapterConfig.from_dict({"lambda": 4})


def test_i3d_adapter_parameter_table_and_table2_counts() -> None:
    model = build_backbone("i3d", adapters=True, seed=0)
    rows = {r["site"]: r for r in adapter_parameter_table(model)}
    assert {site: r["total"] for site, r in rows.items()} == I3D_ADAPTERS
    assert rows["mixed_5c"] == {
        "site": "mixed_5c", "channels": 1024, "bottleneck": 256,
        "down": 256 * 4 * 27 + 256, "up": 1024 * 256 + 1024, "alpha": 1024, "total": 292_096,
    }  # fmt: skip
    assert parameter_summary(model) == {
        "backbone": 12_287_264, "classifier": 0, "adapters": 1_109_068, "total": 13_396_332,
    }  # fmt: skip
    with_logits = build_backbone("i3d", num_classes=400)
    assert parameter_summary(with_logits)["total"] == 12_697_264
    hpt, pecop = table2("i3d")
    assert (hpt["strategy"], hpt["trainable_params"]) == ("HPT", 12_287_264)
    assert (pecop["strategy"], pecop["trainable_params"]) == ("PECoP", 1_109_068)
    assert pecop["stored_bytes"] <= 4.5e6 < hpt["stored_bytes"]
    assert 1_109_068 * 4 < pecop["stored_bytes"] < pecop["stored_bytes_with_bn_stats"]
    assert 12_697_264 * 4 < hpt["stored_bytes"] < 52e6


def test_r3d18_adapter_count() -> None:
    model = build_backbone("r3d18", adapters=True, seed=0)
    per_c = {64: 2_896, 128: 7_840, 256: 23_872, 512: 80_512}  # reference doc, I3D formula per block
    assert [r["total"] for r in adapter_parameter_table(model)] == [per_c[c] for c in (64, 64, 128, 128, 256, 256, 512, 512)]
    assert parameter_summary(model)["adapters"] == 230_240
    assert parameter_summary(model)["backbone"] == 33_371_472 - (512 * 400 + 400)  # torchvision meta minus fc


@pytest.mark.parametrize("name", ["i3d", "r3d18"])
def test_zero_up_init_leaves_backbone_output_unchanged(name: str) -> None:
    x = torch.randn(*CLIP)
    plain = build_backbone(name, seed=0).eval()
    zero = build_backbone(name, adapters={"init": "zero_up"}, seed=0).eval()
    official = build_backbone(name, adapters=True, seed=0).eval()
    with torch.no_grad():
        ref = plain.forward_features(x)
        assert torch.equal(zero.forward_features(x), ref)
        assert not torch.allclose(official.forward_features(x), ref, atol=1e-3)
        with adapters_disabled(official):
            assert torch.equal(official.forward_features(x), ref)
    # zero_up adapters still learn: the up-projection receives a gradient at step 0
    zero.train()
    mark_trainable(zero, "pecop")
    zero.forward_pooled(torch.randn(2, *CLIP[1:])).sum().backward()  # batch 2: train-mode BN on a 1x1x1 map
    site = zero.adapter_sites[-1]
    assert zero.get_submodule(site).adapter.up.weight.grad.abs().sum() > 0


def test_injection_targets_list_enable_remove() -> None:
    model = build_backbone("i3d", seed=0)
    with pytest.raises(AdapterTargetError, match=r"\['mixed_9z'\] match no module"):
        inject_adapters(model, AdapterConfig(targets=("mixed_3b", "mixed_9z")))
    with pytest.raises(AdapterTargetError, match="matches no module"):
        inject_adapters(model, AdapterConfig(targets=r"layer\d\.\d"))
    with pytest.raises(AdapterTargetError, match="cannot carry an adapter"):
        inject_adapters(model, AdapterConfig(targets=("conv3d_1a_7x7",)))
    assert not list_adapters(model), "a failed injection must not change the model"
    names = inject_adapters(model, AdapterConfig(targets=r"mixed_5.", reduction=8), seed=1)
    assert names == ["mixed_5b", "mixed_5c"] == list(list_adapters(model))
    assert model.adapter_config.targets == ("mixed_5b", "mixed_5c")
    with pytest.raises(AdapterTargetError, match="already has adapters"):
        inject_adapters(model, AdapterConfig())
    x = torch.randn(*CLIP)
    model.eval()
    with torch.no_grad():
        adapted = model.forward_features(x)
        set_adapters_enabled(model, False)
        off = model.forward_features(x)
        set_adapters_enabled(model, True)
        assert torch.equal(model.forward_features(x), adapted)
        clone = copy.deepcopy(model)
        assert remove_adapters(model) == ["mixed_5b", "mixed_5c"]
        assert not any(".adapter." in k for k in model.state_dict())
        assert torch.equal(model.forward_features(x), off)
        assert torch.equal(clone.forward_features(x), adapted), "a deep copy keeps working adapters"
    assert model.adapter_config is None


def _bn_affine(model: torch.nn.Module) -> set[str]:
    return {
        f"{m_name}.{p}"
        for m_name, m in model.named_modules()
        if isinstance(m, torch.nn.BatchNorm3d)
        for p in ("weight", "bias")
    }


@pytest.mark.parametrize("name", ["i3d", "r3d18"])
def test_strategies_train_exactly_what_they_say(name: str) -> None:
    model = build_backbone(name, adapters=True, num_classes=400, seed=0)
    params = dict(model.named_parameters())
    classifier = {n for n in params if n.startswith(model.classifier_prefix + ".")}
    adapters = {n for n in params if ".adapter." in n}
    expected = {
        "pecop": adapters,
        "hpt": set(params) - classifier,
        "hpt_bn": _bn_affine(model),
        "dom_s": set(params) - classifier,
        "dom_g": set(),
    }
    for strategy, names in expected.items():
        got = mark_trainable(model, strategy)
        assert set(got) == names, strategy
        assert {n for n, p in params.items() if p.requires_grad} == names, strategy
    counts = strategy_parameter_counts(model)
    if name == "i3d":
        assert counts == {
            "pecop": 1_109_068, "hpt": 13_396_332, "hpt_bn": 14_560, "dom_s": 13_396_332, "dom_g": 0,
        }  # fmt: skip
    with pytest.raises(ValueError, match="unknown strategy"):
        mark_trainable(model, "lora")
    with pytest.raises(ValueError, match="has none"):
        mark_trainable(build_backbone(name), "pecop")


def test_finetuning_and_strategies_share_one_trainable_rule() -> None:
    from pecop_lib.finetune import set_trainable
    from pecop_lib.models.strategies import STRATEGIES, TRAINS, mark_parameters

    model = build_backbone("r3d18", adapters=True, num_classes=400, seed=0)
    assert set_trainable(model, "adapters") == mark_parameters(model, "adapters") == mark_trainable(model, "pecop")
    assert set_trainable(model, "all") == mark_trainable(model, "hpt")
    assert set_trainable(model, "frozen") == mark_parameters(model, "none") == []
    assert not any(p.requires_grad for p in model.parameters())
    assert mark_parameters(model, "bn_affine") == mark_trainable(model, "hpt_bn")
    assert set(TRAINS) == {s.trains for s in STRATEGIES.values()}
    with pytest.raises(ValueError, match="unknown trainable set 'heads'"):
        mark_parameters(model, "heads")
    with pytest.raises(ValueError, match="train_backbone='adapters' needs a backbone with adapters"):
        set_trainable(build_backbone("r3d18"), "adapters")


def test_pecop_gradients_reach_only_adapters() -> None:
    model = build_backbone("r3d18", adapters=True, seed=0)
    mark_trainable(model, "pecop")
    model.forward_pooled(torch.randn(*CLIP)).sum().backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (".adapter." in n), n


@pytest.mark.parametrize("name", ["i3d", "r3d18"])
def test_bn_mode_is_honoured_by_train(name: str) -> None:
    x = torch.randn(2, 3, 8, 32, 32)
    model = build_backbone(name, adapters=True, seed=0, bn_mode="frozen")
    model.train()
    assert model.training and all(not bn.training for _, bn in model.batchnorm_layers())
    assert all(a.training for a in list_adapters(model).values())
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    with torch.no_grad():
        frozen_out = model.forward_features(x)
        eval_out = model.eval().forward_features(x)
    assert torch.equal(frozen_out, eval_out), "frozen BN normalises with running statistics"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    model.bn_mode = "train"
    model.train()
    assert all(bn.training for _, bn in model.batchnorm_layers())
    with torch.no_grad():
        model.forward_features(x)
    changed = [k for k, v in before.items() if not torch.equal(model.state_dict()[k], v)]
    assert len(changed) == len(before), "train mode re-estimates every running statistic"
    with pytest.raises(ValueError, match="unknown BatchNorm mode"):
        model.bn_mode = "eval"


def test_adapter_drift_zero_for_zero_up_positive_for_official() -> None:
    from pecop_lib.models.adapters import adapter_drift

    x = torch.randn(2, 3, 8, 32, 32)
    zero = adapter_drift(build_backbone("i3d", adapters={"init": "zero_up"}, seed=0), x)
    official = adapter_drift(build_backbone("i3d", adapters=True, seed=0), x)
    assert list(zero) == list(official) == list(I3D_ADAPTERS)
    assert all(v == 0.0 for v in zero.values())
    assert all(0.01 < v < 10 for v in official.values())
