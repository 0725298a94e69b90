"""Execution switches (channels_last_3d, fused adapters) keep the eager fp32 outputs; static padding; no graph breaks."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from pecop_lib.models import build_backbone, list_adapters, mark_trainable
from pecop_lib.models.fast_path import FastPath, apply_fast_path, fast_path_of
from pecop_lib.models.i3d import TFMaxPool3d, Unit3D, tf_same_padding

SWITCHES = [FastPath(channels_last=True), FastPath(fused_adapters=True), FastPath(channels_last=True, fused_adapters=True)]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _adapted_i3d() -> torch.nn.Module:
    model = build_backbone("i3d", adapters=True, seed=0)
    mark_trainable(model, "pecop")
    return model


def _pooled_and_grads(model: torch.nn.Module, clips: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    pooled = model.forward_pooled(clips)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(pooled.square().sum(), [dict(model.named_parameters())[n] for n in names])
    return pooled.detach(), dict(zip(names, grads, strict=True))


def test_symmetric_tf_same_padding_is_folded_into_the_convolutions() -> None:
    model = build_backbone("i3d")
    explicit = {name for name, m in model.named_modules() if isinstance(m, Unit3D) and m.pad is not None}
    assert explicit == {"conv3d_1a_7x7"}  # the one asymmetric convolution (pads 2 / 3)
    assert tf_same_padding((7, 7, 7), (2, 2, 2)) == (2, 3, 2, 3, 2, 3)
    assert all(isinstance(m.pad, torch.nn.ConstantPad3d) for m in model.modules() if isinstance(m, TFMaxPool3d))
    unit = model.mixed_3b.branch_1[1]  # 3x3x3 stride 1: TF-SAME pads (1, 1) per dimension, folded
    assert unit.conv3d.padding == (1, 1, 1) and unit.conv3d.in_channels == 96
    x = torch.randn(1, 96, 5, 9, 9, generator=torch.Generator().manual_seed(0))
    explicit_pad = F.conv3d(F.pad(x, tf_same_padding((3, 3, 3), (1, 1, 1))), unit.conv3d.weight)
    torch.testing.assert_close(unit.conv3d(x), explicit_pad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fast", SWITCHES, ids=lambda f: f.label)
def test_fast_path_matches_eager_fp32_outputs_and_adapter_gradients(fast: FastPath) -> None:
    eager = _adapted_i3d().eval()  # fixed BatchNorm statistics: a well-conditioned comparison
    clips = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    ref_out, ref_grads = _pooled_and_grads(eager, clips)
    model = apply_fast_path(copy.deepcopy(eager), fast)
    out, grads = _pooled_and_grads(model, clips)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and len(grads) == 9 * 5  # down w/b, up w/b, alpha per adapter
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-5 * float(ref_grads[name].abs().max()),
                                   msg=name)
    assert model.state_dict().keys() == eager.state_dict().keys()
    if fast.channels_last:
        assert model.conv3d_1a_7x7.conv3d.weight.is_contiguous(memory_format=torch.channels_last_3d)


def test_fast_path_in_training_mode_is_as_accurate_as_eager_fp32() -> None:
    """BatchNorm on batch statistics of tiny maps amplifies rounding: judge both against float64."""
    eager = _adapted_i3d().requires_grad_(False)
    clips = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(2))
    exact = copy.deepcopy(eager).double().forward_pooled(clips.double())
    eager_error = float((eager.forward_pooled(clips).double() - exact).norm() / exact.norm())
    fast = apply_fast_path(copy.deepcopy(eager), FastPath(channels_last=True, fused_adapters=True))
    fast_error = float((fast.forward_pooled(clips).double() - exact).norm() / exact.norm())
    assert fast_error <= 3 * eager_error + 1e-6, (fast_error, eager_error)


def test_fast_path_switches_off_again_and_reports_its_state() -> None:
    model = _adapted_i3d().eval()
    clips = torch.randn(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(3))
    before = model.forward_pooled(clips)
    apply_fast_path(model, FastPath(channels_last=True, fused_adapters=True))
    assert fast_path_of(model) == FastPath(True, True)
    assert all(a.fused for a in list_adapters(model).values())
    apply_fast_path(model, FastPath())
    assert fast_path_of(model) == FastPath() and FastPath().label == "eager"
    assert model.conv3d_1a_7x7.conv3d.weight.is_contiguous()
    torch.testing.assert_close(model.forward_pooled(clips), before, rtol=0, atol=0)


def test_fused_adapters_need_adapters_and_channels_last_works_on_r3d18() -> None:
    with pytest.raises(ValueError, match="has no adapters"):
        apply_fast_path(build_backbone("i3d"), FastPath(fused_adapters=True))
    r3d = build_backbone("r3d18", adapters=True, seed=0).eval()
    clips = torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(4))
    ref = r3d.forward_pooled(clips)
    apply_fast_path(r3d, FastPath(channels_last=True, fused_adapters=True))
    torch.testing.assert_close(r3d.forward_pooled(clips), ref, rtol=1e-5, atol=1e-6)


def test_fused_adapter_keeps_the_autocast_dtype_and_the_residual() -> None:
    model = _adapted_i3d().eval()
    adapter = list_adapters(model)["mixed_3b"]
    h = torch.randn(2, 256, 2, 4, 4)
    adapter.fused = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = adapter(h.bfloat16())
    assert out.dtype == torch.bfloat16 and out.shape == h.shape
    adapter.fused = False
    torch.testing.assert_close(out.float(), adapter(h.bfloat16().float()), rtol=0.05, atol=0.05)
    adapter.enabled = False
    adapter.fused = True
    assert adapter(h) is h


@pytest.mark.slow
@pytest.mark.parametrize("fast", [FastPath(), FastPath(channels_last=True, fused_adapters=True)], ids=lambda f: f.label)
def test_adapter_hooks_cause_no_graph_break(fast: FastPath) -> None:
    torch._dynamo.reset()
    model = apply_fast_path(_adapted_i3d(), fast)
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 8, 32, 32))  # BatchNorm in training mode
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons


@pytest.mark.gpu
def test_gpu_bf16_and_fast_paths_stay_close_to_strict_fp32() -> None:
    """The cuDNN guard: bf16 conv3d (some cuDNN versions miscompute it) and the fast paths vs fp32 without TF32."""
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    clips = torch.randn(2, 3, 16, 112, 112, generator=torch.Generator().manual_seed(5)).to(device)
    eager = _adapted_i3d().to(device).eval()

    def pooled(model: torch.nn.Module, dtype: torch.dtype | None) -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            return model.forward_pooled(clips).float()

    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        exact = pooled(eager, None)
        fast = apply_fast_path(copy.deepcopy(eager), FastPath(channels_last=True, fused_adapters=True))
        torch.testing.assert_close(pooled(fast, None), exact, rtol=1e-3, atol=1e-4)  # cuDNN picks other algorithms
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
    for model in (eager, fast):
        out = pooled(model, torch.bfloat16)
        assert torch.isfinite(out).all()
        assert float((out - exact).norm() / exact.norm()) < 5e-2
