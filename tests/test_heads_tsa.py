"""TSA: transition targets and predictions, step resampling, PSNet map layouts, parameter counts, tIoU of
predicted transitions, cached test path, overfitting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pecop_lib.eval import segment_iou, tiou_accuracy
from pecop_lib.heads.exemplars import draw_exemplars, predict_with_exemplars, training_partners
from pecop_lib.heads.tsa import (
    TSA,
    predict_transitions,
    resample_steps,
    teacher_forcing,
    transition_targets,
    usable_transitions,
)
from pecop_lib.heads.windows import WindowFeatures, Windowing, encode_windows
from tests._heads_stand_ins import (  # noqa: F401 (autouse fixture)
    TinyBackbone,
    predict_against_own_clips,
    single_thread,
    train_and_rank,
)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_transition_targets_on_hand_cases() -> None:
    target = transition_targets(torch.tensor([[2, 5], [1, 7]]), 8)
    assert target.shape == (2, 8, 2)
    assert torch.nonzero(target).tolist() == [[0, 2, 0], [0, 5, 1], [1, 1, 0], [1, 7, 1]]
    with pytest.raises(ValueError, match=r"in \[0, 8\)"):
        transition_targets(torch.tensor([[2, 8]]), 8)


def test_predicted_transitions_search_each_half_and_score_tiou() -> None:
    probs = torch.full((2, 8, 2), 0.1)
    probs[0, 3, 0] = probs[0, 6, 1] = 0.9
    probs[0, 6, 0] = 0.99  # a transition-1 peak in the second half is ignored
    probs[1, 0, 0] = probs[1, 4, 1] = 0.9
    pred = predict_transitions(probs)
    assert pred.tolist() == [[3, 6], [0, 4]]
    assert usable_transitions(pred, 8).tolist() == [[3, 6], [1, 4]]  # official: a predicted 0 becomes 1
    # tIoU of the flight step [t1, t2] against ground truth (2, 6) and (1, 4): 3 / 4 and 1
    truth = np.array([[2, 6], [1, 4]])
    np.testing.assert_allclose(segment_iou(usable_transitions(pred, 8).numpy(), truth), [0.75, 1.0])
    assert tiou_accuracy(usable_transitions(pred, 8).numpy(), truth) == {0.5: 1.0, 0.75: 1.0}


def test_usable_transitions_keep_every_step_non_empty() -> None:
    t = torch.tensor([[0, 5], [3, 3], [7, 7], [2, 6]])
    assert usable_transitions(t, 8).tolist() == [[1, 5], [3, 4], [6, 7], [2, 6]]
    with pytest.raises(ValueError, match="at least 3 frames"):
        usable_transitions(t, 2)


def test_teacher_forcing_covers_the_first_quarter_of_the_epochs() -> None:
    assert [e for e in range(200) if teacher_forcing(e, 200)] == list(range(51))


def test_resample_steps_on_a_hand_case_and_against_trilinear_maps() -> None:
    x = torch.arange(8.0).view(1, 1, 8)
    out = resample_steps(x, torch.tensor([[2, 5]]), fix_size=3)
    torch.testing.assert_close(out, torch.tensor([[[0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]]]))
    torch.manual_seed(0)
    maps = torch.randn(2, 4, 12, 3, 2)
    t = torch.tensor([[3, 7], [1, 11]])
    got = resample_steps(maps, t, fix_size=5)
    for b in range(2):  # the official seg_pool_3d: trilinear resampling of each step to (5, H, W)
        a, e = int(t[b, 0]), int(t[b, 1])
        ref = torch.cat(
            [
                F.interpolate(maps[b : b + 1, :, s:f], size=[5, 3, 2], mode="trilinear", align_corners=True)
                for s, f in ((0, a), (a, e), (e, 12))
            ],
            dim=2,
        )
        torch.testing.assert_close(got[b : b + 1], ref)
    with pytest.raises(ValueError, match="empty step"):
        resample_steps(x, torch.tensor([[0, 5]]))


def test_parameter_counts_match_the_reference() -> None:
    tsa = TSA()
    assert n_params(tsa.psnet) == 128_846
    assert n_params(tsa.decoder) == 149_760
    assert n_params(tsa.score) == 33_153
    assert n_params(tsa) == 311_759


def test_official_shapes() -> None:
    """9 windows of I3D features (1024-d, 4x4 maps at 112 px), 96 frames: 15 step tokens, 240 map tokens of 64-d."""
    torch.manual_seed(0)
    tsa = TSA().eval()
    a = _features(2, windows=9, dim=1024, hw=(4, 4))
    seg = tsa.segment(a)
    assert (
        seg.tokens.shape == (2, 96, 64)
        and seg.maps.shape == (2, 64, 96, 4, 4)
        and seg.probs.shape == (2, 96, 2)
    )
    tokens, maps = tsa._steps(seg, torch.tensor([[30, 70], [20, 60]]))
    assert tokens.shape == (2, 15, 64) and maps.shape == (2, 240, 64)
    with torch.no_grad():
        assert tsa.relative_to(
            a, _features(2, windows=9, dim=1024, hw=(4, 4), seed=1), torch.zeros(2)
        ).shape == (2,)


def test_step_contributions_split_the_score_difference_over_the_steps() -> None:
    """TSA's per-step account: three shares per pair that add up to ``relative_to``, with the query's own steps."""
    torch.manual_seed(0)
    tsa = TSA(num_windows=3, num_frames=24, feature_dim=64, num_heads=2).eval()
    query, exemplar = _features(4, seed=2), _features(4, seed=3)
    with torch.no_grad():
        shares, transitions = tsa.step_contributions(query, exemplar)
        delta = tsa.relative_to(query, exemplar, torch.zeros(4))
        own = usable_transitions(predict_transitions(tsa.segment(query).probs), 24)
    assert shares.shape == (4, 3) and torch.equal(transitions, own)
    torch.testing.assert_close(shares.sum(dim=1), delta, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(shares[:, 0], shares[:, 2])  # the steps get their own shares, not a third each


def _features(
    batch: int, windows: int = 3, dim: int = 64, hw: tuple[int, int] = (2, 2), seed: int = 0
) -> WindowFeatures:
    gen = torch.Generator().manual_seed(seed)
    return WindowFeatures(
        torch.randn(batch, windows, dim, generator=gen), torch.randn(batch, windows, dim, *hw, generator=gen)
    )


def test_pair_shapes_and_map_layouts() -> None:
    torch.manual_seed(0)
    tsa = TSA(num_windows=3, num_frames=16, feature_dim=64, num_heads=2).eval()
    a, b = _features(2), _features(2, seed=1)
    out = tsa.pair(a, b, torch.tensor([[4, 10], [5, 11]]), torch.tensor([[3, 9], [6, 12]]))
    assert out.delta_ab.shape == out.delta_ba.shape == (2,) and out.probs_a.shape == (2, 16, 2)
    seg = tsa.segment(a)
    assert seg.tokens.shape == (2, 16, 4) and seg.maps.shape == (2, 4, 16, 2, 2)
    # "official": the raw reshape (N, W, C, H, W') -> (N H W', W, C); equal to running PSNet on that reshape by hand
    raw = tsa.psnet.tokens(a.maps.reshape(-1, 3, 64)).reshape(2, 16, 4, 2, 2).transpose(1, 2)
    torch.testing.assert_close(seg.maps, raw)
    # "per_position": each spatial position only sees its own window sequence
    tsa.map_layout = "per_position"
    changed = WindowFeatures(a.pooled, a.maps.clone())
    changed.maps[:, :, :, 0, 0] += 1.0
    with torch.no_grad():
        diff = (tsa.segment(changed).maps - tsa.segment(a).maps).abs().sum(dim=(1, 2))  # (B, H, W)
    assert (diff[:, 0, 0] > 0).all() and float(diff[:, 1:].sum() + diff[:, 0, 1:].sum()) == 0.0
    with pytest.raises(ValueError, match="needs feature maps"):
        tsa.segment(WindowFeatures(a.pooled))
    with pytest.raises(ValueError, match="divisible by 16"):
        TSA(feature_dim=100)


def test_pair_loss_runs_under_autocast() -> None:
    torch.manual_seed(0)
    tsa = TSA(num_windows=3, num_frames=16, feature_dim=64, num_heads=2)
    a, b = _features(2), _features(2, seed=1)
    ta, tb = torch.tensor([[4, 10], [5, 11]]), torch.tensor([[3, 9], [6, 12]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = tsa.pair_loss(
            tsa.pair(a, b, ta, tb), torch.tensor([80.0, 60.0]), torch.tensor([70.0, 65.0]), ta, tb
        )
    assert loss.dim() == 0 and torch.isfinite(loss)


def _dives(
    n: int, frames: int = 16, size: int = 8, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Synthetic dives: 3 steps with distinct textures; the flight step's brightness is the score."""
    rng = np.random.default_rng(seed)
    t1 = rng.integers(3, 7, n)
    t2 = rng.integers(9, 13, n)
    scores = rng.uniform(40, 90, n)
    gen = torch.Generator().manual_seed(seed)
    clips = 0.1 * torch.randn(n, 3, frames, size, size, generator=gen)
    for i in range(n):
        clips[i, 0, : t1[i]] += 1.0
        clips[i, 1, t1[i] : t2[i]] += float((scores[i] - 40) / 50)
        clips[i, 2, t2[i] :] -= 1.0
    return clips, torch.as_tensor(np.stack([t1, t2], axis=1)), scores


def test_cached_and_uncached_tsa_predictions_agree() -> None:
    torch.manual_seed(0)
    clips, _, scores = _dives(7)
    backbone = TinyBackbone(64).eval()
    windowing = Windowing(16, 4, (0, 4, 8, 12))
    tsa = TSA(num_windows=4, num_frames=16, feature_dim=64, num_heads=2).eval()
    draw = draw_exemplars(["g"] * 3, ["g"] * 4, 4)
    kwargs = {
        "query_clip": lambda i: clips[4 + i],
        "num_queries": 3,
        "exemplar_clip": lambda i: clips[i],
        "draw": draw,
        "exemplar_scores": scores[:4],
        "maps": True,
    }
    backbone.calls = 0
    uncached = predict_with_exemplars(tsa.relative_to, backbone, windowing, cached=False, **kwargs)
    assert backbone.calls == 12
    backbone.calls = 0
    cached = predict_with_exemplars(tsa.relative_to, backbone, windowing, cached=True, **kwargs)
    assert backbone.calls == 2
    torch.testing.assert_close(cached, uncached, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_tsa_overfits_a_tiny_synthetic_set() -> None:
    torch.manual_seed(0)
    n = 10
    clips, transitions, scores = _dives(n)
    backbone = TinyBackbone(64)
    windowing = Windowing(16, 4, (0, 4, 8, 12))
    tsa = TSA(num_windows=4, num_frames=16, feature_dim=64, num_heads=2)
    s = torch.tensor(scores, dtype=torch.float32)
    groups = ["g"] * n
    rng = np.random.default_rng(0)
    draw = draw_exemplars(groups, groups, 4, seed=0)
    steps = 50
    step_no = [0]

    def step() -> torch.Tensor:
        backbone.train(), tsa.train()
        partners = torch.as_tensor(training_partners(groups, rng))
        feats = encode_windows(backbone, torch.cat([clips, clips[partners]]), windowing, maps=True)
        a, b = feats.select(slice(0, n)), feats.select(slice(n, 2 * n))
        teacher = teacher_forcing(step_no[0], steps)
        step_no[0] += 1
        ta, tb = transitions, transitions[partners]
        out = tsa.pair(a, b, ta if teacher else None, tb if teacher else None)
        return tsa.pair_loss(out, s, s[partners], ta, tb)

    def evaluate() -> np.ndarray:
        backbone.eval(), tsa.eval()
        return predict_against_own_clips(tsa.relative_to, backbone, windowing, clips, draw, scores, maps=True)

    params = [*backbone.parameters(), *tsa.parameters()]
    first, last, rho0, rho1 = train_and_rank(params, step, evaluate, scores, steps=steps, lr=3e-3)
    assert last < 0.5 * first
    assert rho1 > max(rho0, 0.85)
