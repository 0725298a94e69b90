"""I3D: shapes at several clip sizes, pooling conventions, and numerical identity with the official port.

The identity test builds a state dict in the official PECoP layout (``model.`` prefix,
``tuning_module`` adapters) with random weights and non-trivial BatchNorm statistics, loads it into
our I3D, and compares the Mixed_5c map with a reference forward written here from the facts in
``reference/pecop-method.md`` (static TF-SAME padding, zero-padded ceil-mode max-pools, BN eps 1e-5,
adapter after each Mixed concatenation).
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pecop_lib.models import I3D, build_backbone, load_weights, pool_features

# Mixed blocks from the reference doc: input channels, (b0, b1a, b1b, b2a, b2b, b3b)
MIXED = {
    "mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


def _official_state(seed: int) -> dict[str, torch.Tensor]:
    """Random official-layout PECoP state dict (backbone, adapters, classifier, heads)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def unit(name: str, cin: int, cout: int, k: int) -> None:
        fan_in = cin * k**3
        state[f"model.{name}.conv3d.weight"] = torch.randn(cout, cin, k, k, k, generator=g) * (2.0 / fan_in) ** 0.5
        state[f"model.{name}.batch3d.weight"] = 0.5 + torch.rand(cout, generator=g)
        state[f"model.{name}.batch3d.bias"] = 0.2 * torch.randn(cout, generator=g)
        state[f"model.{name}.batch3d.running_mean"] = 0.3 * torch.randn(cout, generator=g)
        state[f"model.{name}.batch3d.running_var"] = 0.2 + torch.rand(cout, generator=g)
        state[f"model.{name}.batch3d.num_batches_tracked"] = torch.tensor(123)

    unit("conv3d_1a_7x7", 3, 64, 7)
    unit("conv3d_2b_1x1", 64, 64, 1)
    unit("conv3d_2c_3x3", 64, 192, 3)
    for block, (cin, (b0, b1a, b1b, b2a, b2b, b3b)) in MIXED.items():
        unit(f"{block}.branch_0", cin, b0, 1)
        unit(f"{block}.branch_1.0", cin, b1a, 1)
        unit(f"{block}.branch_1.1", b1a, b1b, 3)
        unit(f"{block}.branch_2.0", cin, b2a, 1)
        unit(f"{block}.branch_2.1", b2a, b2b, 3)
        unit(f"{block}.branch_3.1", cin, b3b, 1)
        c = b0 + b1b + b2b + b3b
        tm = f"model.{block}.tuning_module"
        state[f"{tm}.se"] = 0.5 + torch.rand(1, c, 1, 1, 1, generator=g)
        state[f"{tm}.conv1.weight"] = 0.1 * torch.randn(c // 4, 4, 3, 3, 3, generator=g)
        state[f"{tm}.conv1.bias"] = 0.1 * torch.randn(c // 4, generator=g)
        state[f"{tm}.conv2.weight"] = 0.1 * torch.randn(c, c // 4, 1, 1, 1, generator=g)
        state[f"{tm}.conv2.bias"] = 0.1 * torch.randn(c, generator=g)
    state["model.conv3d_0c_1x1.conv3d.weight"] = torch.randn(400, 1024, 1, 1, 1, generator=g) * 0.01
    state["model.conv3d_0c_1x1.conv3d.bias"] = torch.zeros(400)
    state["logits_p.conv3d.weight"] = torch.randn(5, 1024, 1, 1, 1, generator=g)
    state["logits_p.conv3d.bias"] = torch.zeros(5)
    state["logits_s.conv3d.weight"] = torch.randn(4, 1024, 1, 1, 1, generator=g)
    state["logits_s.conv3d.bias"] = torch.zeros(4)
    return state


def _same_pad(k: tuple[int, int, int], s: tuple[int, int, int]) -> list[int]:
    """TF-SAME from kernel and stride only, as F.pad wants it (W, H, T pairs)."""
    out: list[int] = []
    for kk, ss in zip(reversed(k), reversed(s)):
        total = max(kk - ss, 0)
        out += [total // 2, total - total // 2]
    return out


def _reference_mixed5c(x: torch.Tensor, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """Independent functional forward of PECoP's adapter I3D (eval-mode BN, eps 1e-5)."""
    w = {k[len("model."):]: v.double() for k, v in sd.items() if k.startswith("model.")}

    def unit(x: torch.Tensor, name: str, k: int, s: int = 1) -> torch.Tensor:
        x = F.pad(x, _same_pad((k,) * 3, (s,) * 3))
        x = F.conv3d(x, w[f"{name}.conv3d.weight"], stride=s)
        bn = f"{name}.batch3d"
        x = F.batch_norm(
            x, w[f"{bn}.running_mean"], w[f"{bn}.running_var"], w[f"{bn}.weight"], w[f"{bn}.bias"],
            training=False, eps=1e-5,
        )  # fmt: skip
        return F.relu(x)

    def maxpool(x: torch.Tensor, k: tuple[int, int, int], s: tuple[int, int, int]) -> torch.Tensor:
        return F.max_pool3d(F.pad(x, _same_pad(k, s), value=0.0), k, s, ceil_mode=True)

    def mixed(x: torch.Tensor, b: str) -> torch.Tensor:
        y0 = unit(x, f"{b}.branch_0", 1)
        y1 = unit(unit(x, f"{b}.branch_1.0", 1), f"{b}.branch_1.1", 3)
        y2 = unit(unit(x, f"{b}.branch_2.0", 1), f"{b}.branch_2.1", 3)
        y3 = unit(maxpool(x, (3, 3, 3), (1, 1, 1)), f"{b}.branch_3.1", 1)
        out = torch.cat([y0, y1, y2, y3], 1)
        tm = f"{b}.tuning_module"
        hidden = F.relu(
            F.conv3d(out, w[f"{tm}.conv1.weight"], w[f"{tm}.conv1.bias"], padding=1, groups=out.shape[1] // 4)
        )
        return out + w[f"{tm}.se"] * F.conv3d(hidden, w[f"{tm}.conv2.weight"], w[f"{tm}.conv2.bias"])

    x = unit(x, "conv3d_1a_7x7", 7, 2)
    x = maxpool(x, (1, 3, 3), (1, 2, 2))
    x = unit(unit(x, "conv3d_2b_1x1", 1), "conv3d_2c_3x3", 3)
    x = maxpool(x, (1, 3, 3), (1, 2, 2))
    x = mixed(mixed(x, "mixed_3b"), "mixed_3c")
    x = maxpool(x, (3, 3, 3), (2, 2, 2))
    for b in ("mixed_4b", "mixed_4c", "mixed_4d", "mixed_4e", "mixed_4f"):
        x = mixed(x, b)
    x = maxpool(x, (2, 2, 2), (2, 2, 2))
    return mixed(mixed(x, "mixed_5b"), "mixed_5c")


@pytest.mark.parametrize("size", [(16, 64, 64), (9, 67, 59)])
def test_mixed5c_identical_to_official_port_reference(size: tuple[int, int, int]) -> None:
    sd = _official_state(seed=1)
    model = build_backbone("i3d", adapters=True, num_classes=400)
    report = load_weights(model, sd)
    assert report.layout == "pecop_official"
    assert sorted(report.extras) == [
        "logits_p.conv3d.bias", "logits_p.conv3d.weight", "logits_s.conv3d.bias", "logits_s.conv3d.weight",
    ]  # fmt: skip
    model = model.double().eval()
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        ours = model.forward_features(x)
        ref = _reference_mixed5c(x, sd)
    assert ours.shape == ref.shape
    assert (ref < 0).any(), "adapter outputs should go negative so zero-padded max-pools are exercised"
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("size", "expected"),
    [((8, 64, 64), (1, 2, 2)), ((16, 112, 112), (2, 4, 4)), ((16, 96, 128), (2, 3, 4)), ((12, 80, 80), (2, 3, 3))],
)
def test_feature_map_shapes(size: tuple[int, int, int], expected: tuple[int, int, int]) -> None:
    model = build_backbone("i3d", adapters=True, seed=0).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        fmap = model.forward_features(x)
        pooled = model.forward_pooled(x)
    assert fmap.shape == (1, 1024, *expected)
    assert pooled.shape == (1, model.feature_dim) == (1, 1024)
    torch.testing.assert_close(pooled, fmap.mean(dim=(2, 3, 4)))


def test_forward_rejects_channels_last_clip() -> None:
    model = build_backbone("i3d")
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\).*permute"):
        model.forward_features(torch.zeros(1, 8, 3, 32, 32))


def test_pool_modes_match_official_avgpools() -> None:
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(2, 8, 4, 7, 7, generator=g)
    official = torch.nn.AvgPool3d((2, 7, 7), stride=1)(fmap).flatten(2)  # CoRe/PECoP at 224 px
    torch.testing.assert_close(pool_features(fmap, "official"), official)
    torch.testing.assert_close(pool_features(fmap, "window2"), official)
    # PECoP's heads average the 3 windows: weights (1, 2, 2, 1) / 6 over the 4 time steps
    manual = (fmap.mean((3, 4)) * torch.tensor([1.0, 2, 2, 1]) / 6).sum(-1)
    torch.testing.assert_close(pool_features(fmap, "official").mean(-1), manual)
    small = torch.randn(2, 8, 2, 4, 4, generator=g)
    finediving = torch.nn.AvgPool3d((2, 4, 4), stride=1)(small).flatten(2)  # TSA at 112 px
    torch.testing.assert_close(pool_features(small, "window2"), finediving)
    torch.testing.assert_close(pool_features(small, "adaptive")[..., 0], small.mean((2, 3, 4)))
    with pytest.raises(ValueError, match="7x7 map"):
        pool_features(small, "official")
    with pytest.raises(ValueError, match="T'=1"):
        pool_features(torch.zeros(1, 8, 1, 7, 7), "window2")
    with pytest.raises(ValueError, match="unknown pool mode"):
        pool_features(small, "max")


def test_i3d_classifier_logits_and_bn_options() -> None:
    model = I3D(num_classes=400, bn_eps=1e-3, bn_momentum=0.01)
    assert all(bn.eps == 1e-3 and bn.momentum == 0.01 for _, bn in model.batchnorm_layers())
    assert len(model.batchnorm_layers()) == 57
    with torch.no_grad():
        assert model.eval().forward_logits(torch.randn(1, 3, 8, 32, 32)).shape == (1, 400)
    with pytest.raises(RuntimeError, match="num_classes=400"):
        I3D().forward_logits(torch.zeros(1, 3, 8, 32, 32))


def test_build_backbone_rejects_unknown_names_and_options() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        build_backbone("resnet50")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bn_epsilon'\]"):
        build_backbone("i3d", bn_epsilon=1e-3)
    a, b = build_backbone("i3d", seed=3), build_backbone("i3d", seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_models_room_never_imports_data() -> None:
    root = Path(__file__).resolve().parents[1] / "pecop_lib" / "models"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            assert not any(n.startswith("pecop_lib.data") for n in names), f"{path.name} imports {names}"


@pytest.mark.slow
def test_full_size_clip_32x224() -> None:
    """Paper geometry: 32x224x224 -> Mixed_5c (1024, 4, 7, 7); official pooling keeps 3 windows."""
    model = build_backbone("i3d", seed=0, pool="official").eval()
    start = time.process_time()
    with torch.no_grad():
        fmap = model.forward_features(torch.randn(1, 3, 32, 224, 224))
    assert fmap.shape == (1, 1024, 4, 7, 7)
    assert pool_features(fmap, "official").shape == (1, 1024, 3)
    torch.testing.assert_close(pool_features(fmap, "window2"), pool_features(fmap, "official"))
    assert time.process_time() - start < 300  # CPU seconds, generous on a shared 2-core machine
