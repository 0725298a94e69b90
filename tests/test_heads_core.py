"""CoRe: pair differences, group boundaries (hand-made and real MTL-AQA split 0), regression tree, losses,
exemplar choice, the cached test path (identical predictions, >= 10x fewer backbone calls), overfitting."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pecop_lib.data.safe_pickle import safe_load
from pecop_lib.heads.core import (
    CORE_SETTINGS,
    CoRe,
    RegressionTree,
    group_bounds,
    leaf_targets,
    pair_deltas,
    relative_from_leaves,
)
from pecop_lib.heads.exemplars import draw_exemplars, predict_with_exemplars, training_partners
from pecop_lib.heads.windows import Windowing, encode_windows
from pecop_lib.models import build_backbone
from tests._heads_stand_ins import (  # noqa: F401 (autouse fixture)
    TinyBackbone,
    brightness_clips,
    predict_against_own_clips,
    single_thread,
    train_and_rank,
)

SIMPLE = group_bounds(np.arange(17.0), high=30.0)  # edges 0, 2, 4, ..., 14, 30


def test_pair_deltas_are_same_group_absolute_differences() -> None:
    d = pair_deltas([1.0, 2.0, 4.0, 10.0, 3.0], ["a", "a", "a", "b", "b"])
    np.testing.assert_allclose(d, [1.0, 3.0, 2.0, 7.0])


def test_group_bounds_follow_the_quantile_rule_on_hand_made_deltas() -> None:
    # L = 17 sorted deltas 0..16: edge i = d[int(i / 8 * 16)] = 2 i, first forced to 0, last to theta
    np.testing.assert_allclose(
        SIMPLE[8:], [[0, 2], [2, 4], [4, 6], [6, 8], [8, 10], [10, 12], [12, 14], [14, 30]]
    )
    np.testing.assert_allclose(SIMPLE[:8], -SIMPLE[8:][::-1, ::-1])  # mirror images, leaves 0-7 negative
    assert not np.signbit(SIMPLE).any() or (SIMPLE[:8] <= 0).all()
    assert SIMPLE[7, 1] == 0.0 and not np.signbit(SIMPLE[7, 1])
    # L = 9 unsorted deltas: edges are the sorted values themselves (index i); a repeated value gives an empty group
    b = group_bounds([0.5, 0.1, 3, 2, 2, 7, 1, 0.2, 5], high=10.0)
    np.testing.assert_allclose(b[8:, 0], [0, 0.2, 0.5, 1, 2, 2, 3, 5])
    np.testing.assert_allclose(b[8:, 1], [0.2, 0.5, 1, 2, 2, 3, 5, 10])
    leaf, offset = leaf_targets(torch.tensor([2.0, -2.0]), torch.as_tensor(b))
    assert leaf.tolist() == [13, 2]  # 2.0 skips the empty [2, 2) and lands in [2, 3); -2.0 in (-3, -2]
    torch.testing.assert_close(offset, torch.tensor([0.0, 1.0]))
    assert group_bounds(np.arange(17.0), depth=3, high=30.0).tolist() == [[-30, -8], [-8, 0], [0, 8], [8, 30]]
    with pytest.raises(ValueError, match="exceeds the outer group edge"):
        group_bounds([1.0, 40.0])


def test_group_bounds_on_real_mtl_aqa_split_0(real_annotations) -> None:
    root = real_annotations / "mtl-aqa-core"
    ann = safe_load(root / "final_annotations_dict_with_dive_number.pkl")
    train = safe_load(root / "train_split_0.pkl")
    completeness = [ann[k]["final_score"] / ann[k]["difficulty"] for k in train]
    deltas = pair_deltas(completeness, [ann[k]["difficulty"] for k in train])
    assert len(deltas) == 67_562
    bounds = group_bounds(deltas, high=CORE_SETTINGS["mtl_aqa"].score_range)
    np.testing.assert_allclose(bounds[8:, 0], [0, 0.912, 1.5, 2.5, 3.0, 4.5, 6.0, 8.5], atol=5e-4)
    assert bounds[15, 1] == 30.0 and bounds[0, 0] == -30.0
    leaf, _ = leaf_targets(torch.as_tensor(deltas), torch.as_tensor(bounds))
    counts = np.bincount(leaf.numpy(), minlength=16)
    assert counts[:8].sum() == 0 and counts[8:].min() > 0.08 * len(
        deltas
    )  # quantile groups are roughly balanced


def test_real_mtl_aqa_test_exemplars(real_annotations) -> None:
    root = real_annotations / "mtl-aqa-core"
    ann = safe_load(root / "final_annotations_dict_with_dive_number.pkl")
    train, test = safe_load(root / "train_split_0.pkl"), safe_load(root / "test_split_0.pkl")
    train_dd, test_dd = [ann[k]["difficulty"] for k in train], [ann[k]["difficulty"] for k in test]
    draw = draw_exemplars(test_dd, train_dd, 10, seed=0)
    sizes = Counter(train_dd)
    assert draw.mask.sum(axis=1).tolist() == [
        min(10, sizes[d]) for d in test_dd
    ]  # DD 2.1 has 5, DD 4.1 has 4
    for q, row in enumerate(draw.indices):
        assert all(train_dd[i] == test_dd[q] for i in row[row >= 0])
    np.testing.assert_array_equal(draw.indices, draw_exemplars(test_dd, train_dd, 10, seed=0).indices)
    # test cost in backbone videos: the official loop encodes 2 x 3,454 pairs; caching encodes the 353 queries once and
    # the 1,009 distinct exemplars once (5.1x fewer); a shared per-group exemplar bank needs only 168 exemplars (13.3x)
    assert draw.videos_to_encode(cached=False) == 6_908
    assert draw.videos_to_encode(cached=True) == 353 + 1_009
    bank = draw_exemplars(test_dd, train_dd, 10, seed=0, shared=True)
    assert bank.videos_to_encode(cached=False) == 6_908 and bank.videos_to_encode(cached=True) == 353 + 168
    assert bank.videos_to_encode(cached=False) >= 10 * bank.videos_to_encode(cached=True)
    for d in set(test_dd):  # one exemplar list per difficulty
        rows = bank.indices[np.asarray(test_dd) == d]
        assert (rows == rows[0]).all()


def test_leaf_targets_membership_and_offsets() -> None:
    bounds = torch.as_tensor(SIMPLE)
    delta = torch.tensor([0.0, 3.0, 2.0, -3.0, -2.0, 30.0, -30.0, 1.999, -0.5, 14.0])
    leaf, offset = leaf_targets(delta, bounds)
    assert leaf.tolist() == [8, 9, 9, 6, 6, 15, 0, 8, 7, 15]
    torch.testing.assert_close(offset, torch.tensor([0.0, 0.5, 0.0, 0.5, 1.0, 1.0, 0.0, 0.9995, 0.75, 0.0]))
    with pytest.raises(ValueError, match="exceed the group range"):
        leaf_targets(torch.tensor([30.5]), bounds)
    # decoding the true leaf and offset gives the difference back
    one_hot = torch.log(F.one_hot(leaf, 16).float().clamp_min(1e-20))
    torch.testing.assert_close(relative_from_leaves(one_hot, offset[:, None].expand(-1, 16), bounds), delta)


def test_regression_tree_leaf_probabilities_and_parameter_count() -> None:
    tree = RegressionTree()
    assert sum(p.numel() for p in tree.parameters()) == 2_510_382
    assert sum(p.numel() for p in tree.first_layer.parameters()) == 524_800
    assert sum(p.numel() for p in tree.feature_layers.parameters()) == 1_973_760
    assert sum(p.numel() for p in tree.clf_layers.parameters()) == 7_710
    assert sum(p.numel() for p in tree.reg_layer.parameters()) == 4_112
    torch.manual_seed(0)
    small = RegressionTree(in_dim=9, hidden=4, depth=5)
    log_p, offsets = small(torch.randn(6, 9))
    assert log_p.shape == offsets.shape == (6, 16)
    torch.testing.assert_close(log_p.exp().sum(dim=1), torch.ones(6))


def test_regression_tree_leaf_is_the_product_of_its_path_decisions() -> None:
    torch.manual_seed(0)
    tree = RegressionTree(in_dim=5, hidden=3, depth=3)  # 2 levels, 4 leaves
    x = torch.randn(2, 5)
    log_p, _ = tree(x)
    h = tree.first_layer(x).unsqueeze(-1)
    root = F.log_softmax(tree.clf_layers[0](h).squeeze(-1), dim=-1)  # (2, 2)
    level1 = F.log_softmax(tree.clf_layers[1](tree.feature_layers[0](h)).squeeze(-1).reshape(2, 2, 2), dim=-1)
    for node in range(2):
        for child in range(2):
            torch.testing.assert_close(log_p[:, 2 * node + child], root[:, node] + level1[:, node, child])


def test_direction_loss_is_nll_plus_per_leaf_mean_squared_offsets() -> None:
    torch.manual_seed(0)
    head = CoRe(SIMPLE, 30.0, in_dim=4, hidden=8)
    log_p = torch.log_softmax(torch.randn(4, 16), dim=1)
    offsets = torch.rand(4, 16)
    delta = torch.tensor([3.0, 3.5, -1.0, 20.0])  # leaves 9, 9, 7, 15
    expected = -(log_p[0, 9] + log_p[1, 9] + log_p[2, 7] + log_p[3, 15]) / 4
    expected = expected + ((offsets[0, 9] - 0.5) ** 2 + (offsets[1, 9] - 0.75) ** 2) / 2
    expected = expected + (offsets[2, 7] - 0.5) ** 2 + (offsets[3, 15] - 6 / 16) ** 2
    torch.testing.assert_close(head.direction_loss(log_p, offsets, delta), expected)
    f_a, f_b = torch.randn(4, 4), torch.randn(4, 4)
    s_a, s_b = torch.tensor([10.0, 20.0, 5.0, 1.0]), torch.tensor([12.0, 19.0, 5.0, 25.0])
    both = head.pair_loss(f_a, f_b, s_a, s_b)
    torch.testing.assert_close(both, head.pair_loss(f_b, f_a, s_b, s_a))
    assert head.bounds.dtype == torch.float64 and "bounds" in head.state_dict()
    with pytest.raises(ValueError, match="bounds must have shape"):
        CoRe(SIMPLE[:8], 30.0)


def test_training_partners_and_exemplar_draws() -> None:
    groups = ["a", "b", "a", "a", "c", "b"]
    partners = training_partners(groups, np.random.default_rng(0))
    for i, p in enumerate(partners):
        assert groups[p] == groups[i] and (p != i or groups.count(groups[i]) == 1)
    assert partners[4] == 4
    draw = draw_exemplars(["a", "c", "b"], groups, 2, seed=3)
    assert draw.indices.shape == (3, 2) and draw.indices[1].tolist() == [4, -1]
    assert set(draw.indices[0]) <= {0, 2, 3} and set(draw.indices[2]) == {1, 5}
    bank = draw_exemplars(["a", "b", "a", "a"], groups, 2, seed=3, shared=True)
    assert (bank.indices[0] == bank.indices[2]).all() and (bank.indices[0] == bank.indices[3]).all()
    assert bank.videos_to_encode(cached=True) == 4 + 4 and bank.videos_to_encode(cached=False) == 2 * 8
    with pytest.raises(ValueError, match="no training video does"):
        draw_exemplars(["z"], groups, 2)
    assert draw_exemplars(["z"], groups, 6, missing="any").mask.all()


def _pair_setup(n_train: int, n_test: int, frames: int, size: int):
    rng = np.random.default_rng(1)
    train_scores = rng.uniform(0, 30, n_train)
    test_scores = rng.uniform(0, 30, n_test)
    train_clips = brightness_clips(train_scores, frames, size, seed=1)
    test_clips = brightness_clips(test_scores, frames, size, seed=2)
    return train_scores, test_scores, train_clips, test_clips


def test_cached_and_uncached_core_predictions_agree_with_10x_fewer_backbone_calls() -> None:
    torch.manual_seed(0)
    train_scores, _, train_clips, test_clips = _pair_setup(10, 16, 12, 8)
    backbone = TinyBackbone(8).eval()
    windowing = Windowing(12, 4, (0, 4, 8))
    head = CoRe(
        group_bounds(pair_deltas(train_scores, ["g"] * 10), high=30.0), 30.0, in_dim=8, hidden=16
    ).eval()
    draw = draw_exemplars(["g"] * 16, ["g"] * 10, 10)
    kwargs = {
        "query_clip": lambda i: test_clips[i],
        "num_queries": 16,
        "exemplar_clip": lambda i: train_clips[i],
        "draw": draw,
        "exemplar_scores": train_scores,
    }
    backbone.calls = backbone.windows = 0
    uncached = predict_with_exemplars(head.relative_to, backbone, windowing, cached=False, **kwargs)
    calls_uncached, windows_uncached = backbone.calls, backbone.windows
    backbone.calls = backbone.windows = 0
    cached = predict_with_exemplars(
        head.relative_to, backbone, windowing, cached=True, batch_size=8, **kwargs
    )
    assert (calls_uncached, windows_uncached) == (160, 160 * 2 * 3)  # one call per (query, exemplar) pair
    assert (backbone.calls, backbone.windows) == (4, 26 * 3)  # 16 queries + 10 exemplars, batches of 8
    assert windows_uncached == 3 * draw.videos_to_encode(cached=False)
    assert backbone.windows == 3 * draw.videos_to_encode(cached=True)
    assert calls_uncached >= 10 * backbone.calls and windows_uncached >= 10 * backbone.windows
    torch.testing.assert_close(cached, uncached, rtol=0, atol=1e-5)
    assert cached.shape == (16,) and torch.isfinite(cached).all()
    with pytest.raises(ValueError, match="needs backbone.eval"):
        predict_with_exemplars(head.relative_to, backbone.train(), windowing, **kwargs)


def test_cached_predictions_are_exact_on_a_real_i3d() -> None:
    backbone = build_backbone("i3d", seed=0).eval()
    clips = torch.randn(5, 3, 16, 32, 32, generator=torch.Generator().manual_seed(0))
    windowing = Windowing(16, 16, (0,))
    scores = np.array([10.0, 14.0, 20.0])
    head = CoRe(SIMPLE, 30.0, in_dim=backbone.feature_dim, hidden=8).eval()
    draw = draw_exemplars(["g"] * 2, ["g"] * 3, 3)
    kwargs = {
        "query_clip": lambda i: clips[3 + i],
        "num_queries": 2,
        "exemplar_clip": lambda i: clips[i],
        "draw": draw,
        "exemplar_scores": scores,
    }
    torch.testing.assert_close(
        predict_with_exemplars(head.relative_to, backbone, windowing, cached=True, **kwargs),
        predict_with_exemplars(head.relative_to, backbone, windowing, cached=False, **kwargs),
        rtol=0,
        atol=1e-5,
    )


def test_core_overfits_a_tiny_synthetic_set() -> None:
    torch.manual_seed(0)
    n = 12
    scores, _, clips, _ = _pair_setup(n, 1, 8, 8)
    groups = ["a", "b"] * (n // 2)
    backbone = TinyBackbone(16)
    windowing = Windowing(8, 4, (0, 4))
    head = CoRe(group_bounds(pair_deltas(scores, groups), high=30.0), 30.0, in_dim=16, hidden=16)
    s = torch.tensor(scores, dtype=torch.float32)
    rng = np.random.default_rng(0)
    draw = draw_exemplars(groups, groups, 5, seed=0)

    def step() -> torch.Tensor:
        backbone.train(), head.train()
        partners = torch.as_tensor(training_partners(groups, rng))
        feats = encode_windows(
            backbone, torch.cat([clips, clips[partners]]), windowing
        ).video()  # one packed call
        return head.pair_loss(feats[:n], feats[n:], s, s[partners])

    def evaluate() -> np.ndarray:
        backbone.eval(), head.eval()
        return predict_against_own_clips(head.relative_to, backbone, windowing, clips, draw, scores)

    params = [*backbone.parameters(), *head.parameters()]
    first, last, rho0, rho1 = train_and_rank(params, step, evaluate, scores, steps=80, lr=3e-3)
    assert last < 0.5 * first
    assert rho1 > max(rho0, 0.85)
